//! `elman bench`: throughput on this machine, measured the way `../shared/bench/torch_charrnn.py`
//! measures the PyTorch peer, so the two can be compared run for run.
//!
//! - training tokens/s at the four reference shapes (vocabulary 65, random tokens, Adam, global-norm
//!   clipping 5, fp32): exactly the step `elman train` runs (`train::Stepper`);
//! - sampling chars/s at batch 1 (H = 256, 512), the path `elman sample` runs;
//! - scoring tokens/s (the forward pass of `elman eval`/validation);
//! - the machine's fp32 GEMM rate (2048³ through the `gemm` crate, all threads), and the share of it
//!   the H = 1024 training run turns into useful work, counted as 6·(H² + H·V) FLOP per token
//!   (forward: recurrence 2H², decoder 2HV; backward: twice that; the one-hot input is a lookup).

use crate::cell::CellKind;
use crate::config::ModelConfig;
use crate::eval::score;
use crate::generate::{generate, SampleOptions};
use crate::infer::StreamModel;
use crate::kernels::{self, gemm::mm};
use crate::model::{init_params, GraphModel};
use crate::optim::{Optimizer, OptimizerKind};
use crate::runtime::Runtime;
use crate::train::{Backend, StepResult, Stepper};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The reference vocabulary (tiny Shakespeare's characters); `elman bench --vocab` changes it.
pub const VOCAB: usize = 65;
/// (hidden, batch, bptt) of the PyTorch peer's reference table.
pub const TRAIN_SHAPES: [(usize, usize, usize); 4] = [
    (128, 32, 64),
    (256, 64, 64),
    (512, 64, 100),
    (1024, 128, 64),
];

#[derive(Debug, Clone, Serialize)]
pub struct TrainResult {
    pub hidden: usize,
    pub batch: usize,
    pub bptt: usize,
    pub tokens_per_s: f64,
    /// 6·(H² + H·V)·tokens/s, in GFLOP/s.
    pub useful_gflops: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    pub hidden: usize,
    pub per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub threads: usize,
    /// What ran the training windows: "CPU", or the GPU (`--device cuda`); scoring, sampling
    /// and GEMM always run on the CPU.
    pub device: String,
    pub cell: CellKind,
    pub vocab: usize,
    pub sampled_softmax: Option<usize>,
    pub train: Vec<TrainResult>,
    pub sample_chars_per_s: Vec<RateResult>,
    pub eval_tokens_per_s: Vec<RateResult>,
    pub gemm_gflops: Option<f64>,
    /// The instruction-set path each kernel family ran: every figure above names its code.
    pub kernels: kernels::Paths,
}

fn model(
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    seed: u64,
    dev: &Device,
) -> Result<GraphModel> {
    let cfg = ModelConfig {
        cell,
        ..ModelConfig::new(vocab, hidden)
    };
    let vm = init_params(&cfg, seed, DType::F32, dev)?;
    Ok(GraphModel::new(
        cfg,
        VarBuilder::from_varmap(&vm, DType::F32, dev),
    )?)
}

/// Runs `f` (which does `units` of work) until `budget` has passed, after one warm-up call;
/// returns units per second.
fn rate(budget: Duration, mut f: impl FnMut() -> Result<usize>) -> Result<f64> {
    f()?;
    let start = Instant::now();
    let mut units = 0usize;
    while start.elapsed() < budget || units == 0 {
        units += f()?;
    }
    Ok(units as f64 / start.elapsed().as_secs_f64())
}

/// Training tokens/s for one shape.
#[allow(clippy::too_many_arguments)]
pub fn train_rate(
    cell: CellKind,
    hidden: usize,
    batch: usize,
    bptt: usize,
    vocab: usize,
    samples: Option<usize>,
    rt: &Runtime,
    budget: Duration,
) -> Result<TrainResult> {
    let m = model(cell, hidden, vocab, 1, &rt.device)?;
    let gates = m.config.cell().gates();
    let vars = m
        .named_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, candle_core::Var::from_tensor(&t)?)))
        .collect::<Result<Vec<_>>>()?;
    // Train a model built on these very Vars, so the optimizer's updates are what it reads.
    let ts = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let m = GraphModel::new(
        m.config,
        VarBuilder::from_tensors(ts, DType::F32, &rt.device),
    )?;
    let mut opt = Optimizer::new(OptimizerKind::Adam, 2e-3, vars)?;
    let mut stepper =
        Stepper::new(&m, batch, bptt, Backend::of(rt, false)).with_sampled_softmax(samples, 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = batch * bptt;
    let mut state = vec![vec![0.0f32; batch * hidden]; m.config.cell().carried()];
    let tps = rate(budget, || {
        let inp: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
        let tgt: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
        match stepper.step(&mut opt, &inp, &tgt, &mut state, 5.0)? {
            StepResult::Ok(_) => Ok(n),
            StepResult::Diverged(w) => bail!("benchmark training diverged ({w})"),
        }
    })?;
    Ok(TrainResult {
        hidden,
        batch,
        bptt,
        tokens_per_s: tps,
        // With a sampled softmax the decoder's work is its K + 1 rows per token; a gated cell's
        // recurrence is its gates' worth of H × H products.
        useful_gflops: 6.0
            * (gates * hidden * hidden + hidden * samples.map_or(vocab, |k| k + 1)) as f64
            * tps
            / 1e9,
    })
}

/// Batch-1 sampling chars/s.
pub fn sample_rate(
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    rt: &Runtime,
    budget: Duration,
) -> Result<f64> {
    let m = model(cell, hidden, vocab, 2, &rt.device)?;
    let e = StreamModel::new(&m)?;
    let mut st = e.zero_state();
    e.step(&mut st, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let opts = SampleOptions::default();
    rate(budget, || {
        Ok(generate(&e, &mut st, 1000, &opts, &mut rng, |_| true).len())
    })
}

/// Scoring tokens/s: `streams` streams, windows of 64.
pub fn eval_rate(
    cell: CellKind,
    hidden: usize,
    vocab: usize,
    streams: usize,
    rt: &Runtime,
    budget: Duration,
) -> Result<f64> {
    let threads = rt.threads;
    let m = model(cell, hidden, vocab, 3, &rt.device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let ids: Vec<u32> = (0..streams * 1024)
        .map(|_| rng.random_range(0..vocab as u32))
        .collect();
    rate(budget, || {
        Ok(score(&m, &ids, streams, 64, threads)?.predicted)
    })
}

/// fp32 GEMM GFLOP/s at 2048³ with `threads` threads, each running its own single-threaded
/// product — the way the training path uses the cores (the `gemm` crate's own split of one product
/// was measured slower on this project's 2-core machine).
pub fn gemm_rate(threads: usize, budget: Duration) -> Result<f64> {
    let n = 2048;
    let threads = threads.max(1);
    let start = Instant::now();
    let counts: Vec<usize> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(move || {
                    let a = vec![1.0f32; n * n];
                    let b = vec![0.5f32; n * n];
                    let mut c = vec![0.0f32; n * n];
                    let mut k = 0;
                    while k == 0 || start.elapsed() < budget {
                        mm(n, n, n, &mut c, (n, 1), false, &a, (n, 1), &b, (n, 1));
                        k += 1;
                    }
                    k
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("gemm thread"))
            .collect()
    });
    let total: usize = counts.iter().sum();
    Ok(total as f64 * 2.0 * (n * n * n) as f64 / 1e9 / start.elapsed().as_secs_f64())
}

/// What to measure.
pub struct BenchArgs {
    /// The device and threads every measurement runs on.
    pub rt: Runtime,
    /// The cell of every measured model.
    pub cell: CellKind,
    pub seconds: f64,
    pub shapes: Vec<(usize, usize, usize)>,
    /// Vocabulary size of every measurement.
    pub vocab: usize,
    /// Train with a sampled softmax of K negatives.
    pub samples: Option<usize>,
    pub sample: bool,
    /// Scoring tokens/s at these widths (64 streams).
    pub eval_hidden: Vec<usize>,
    pub gemm: bool,
}

pub fn run(a: &BenchArgs, mut progress: impl FnMut(&str)) -> Result<Report> {
    let budget = Duration::from_secs_f64(a.seconds);
    let mut rep = Report {
        threads: a.rt.threads,
        device: a.rt.window_label(),
        cell: a.cell,
        vocab: a.vocab,
        sampled_softmax: a.samples,
        train: Vec::new(),
        sample_chars_per_s: Vec::new(),
        eval_tokens_per_s: Vec::new(),
        gemm_gflops: None,
        kernels: kernels::paths(),
    };
    for &(h, b, t) in &a.shapes {
        progress(&format!("training H={h} B={b} T={t}"));
        rep.train.push(train_rate(
            a.cell, h, b, t, a.vocab, a.samples, &a.rt, budget,
        )?);
    }
    if a.sample {
        for h in [256, 512] {
            progress(&format!("sampling H={h}"));
            rep.sample_chars_per_s.push(RateResult {
                hidden: h,
                per_s: sample_rate(a.cell, h, a.vocab, &a.rt, budget)?,
            });
        }
    }
    for &h in &a.eval_hidden {
        progress(&format!("scoring H={h}"));
        rep.eval_tokens_per_s.push(RateResult {
            hidden: h,
            per_s: eval_rate(a.cell, h, a.vocab, 64, &a.rt, budget)?,
        });
    }
    if a.gemm {
        progress("GEMM 2048³");
        rep.gemm_gflops = Some(gemm_rate(a.rt.threads, budget)?);
    }
    Ok(rep)
}

pub fn render(r: &Report) -> String {
    let mut s = format!(
        "elman bench ({} cell, training windows on the {}, {} CPU thread(s), fp32, vocabulary {}{})\n",
        r.cell,
        r.device,
        r.threads,
        r.vocab,
        r.sampled_softmax
            .map_or(String::new(), |k| format!(", sampled softmax K={k}"))
    );
    if !r.train.is_empty() {
        s += "training (Adam, clip 5)   tokens/s   useful GFLOP/s";
        if r.gemm_gflops.is_some() {
            s += "   share of GEMM peak";
        }
        s += "\n";
        for t in &r.train {
            s += &format!(
                "  H={:<4} B={:<3} T={:<3}     {:>9.0}   {:>14.1}",
                t.hidden, t.batch, t.bptt, t.tokens_per_s, t.useful_gflops
            );
            if let Some(g) = r.gemm_gflops {
                s += &format!("   {:>17.0}%", 100.0 * t.useful_gflops / g);
            }
            s += "\n";
        }
    }
    for x in &r.sample_chars_per_s {
        s += &format!(
            "sampling H={:<4} (batch 1)  {:>9.0} chars/s\n",
            x.hidden, x.per_s
        );
    }
    for x in &r.eval_tokens_per_s {
        s += &format!(
            "scoring  H={:<4} (64 streams) {:>8.0} tokens/s\n",
            x.hidden, x.per_s
        );
    }
    if let Some(g) = r.gemm_gflops {
        s += &format!("GEMM 2048³ (gemm crate)   {g:>9.1} GFLOP/s\n");
    }
    s += &kernels_line(&r.kernels);
    s
}

/// Which code ran: the instruction-set level and each kernel family's path.
pub fn kernels_line(k: &kernels::Paths) -> String {
    format!(
        "kernels: {} (recurrence: {}; large products: {}; element-wise: {})\n",
        k.isa, k.packed, k.gemm, k.elementwise
    )
}
