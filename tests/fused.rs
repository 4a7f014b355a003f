//! The fused BPTT path against the reference candle autograd graph: same loss, same gradients,
//! same carried state, for every activation, one and two layers, any thread split. Every check
//! also holds the whole-window graph (what `--device cuda` runs, here on the CPU) to the
//! reference.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use elman::cell::Activation;
use elman::config::ModelConfig;
use elman::fused::{FusedWindow, Params};
use elman::model::WindowMasks;
use elman::model::{cross_entropy, init_params, sampled_softmax_loss, GraphModel};
use elman::optim::grads_in_order;
use elman::stochastic::Sample;
use elman::stochastic::{Dropout, EmbedDrop, Masks, WeightDrop};
use rand::SeedableRng;

fn check(act: Activation, layers: usize, threads: usize, batch: usize, bptt: usize) {
    check_shape(act, layers, threads, batch, bptt, 11, 9);
}

fn check_shape(
    act: Activation,
    layers: usize,
    threads: usize,
    batch: usize,
    bptt: usize,
    vocab: usize,
    hidden: usize,
) {
    check_loss(act, layers, threads, batch, bptt, vocab, hidden, None, None);
}

/// One window's inputs, targets and carried state, and the model they run through.
struct Fixture {
    cfg: ModelConfig,
    model: GraphModel,
    vars: Vec<(String, candle_core::Var)>,
    batch: usize,
    bptt: usize,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    h0: Vec<Vec<f32>>,
    sample: Option<Sample>,
    dropout: Option<f32>,
    /// The dropout mask kept at every time step.
    locked: bool,
    /// DropConnect's and embedding dropout's rates.
    weight_drop: Option<f32>,
    embed_drop: Option<f32>,
}

/// What a window gives: its mean loss, the gradients in layout order, each layer's last state.
struct Outcome {
    loss: f64,
    grads: Vec<Vec<f32>>,
    last: Vec<Vec<f32>>,
}

impl Fixture {
    fn new(
        cfg: ModelConfig,
        (batch, bptt): (usize, usize),
        samples: Option<usize>,
        dropout: Option<f32>,
    ) -> Fixture {
        let dev = Device::Cpu;
        let (vocab, hidden, layers) = (cfg.vocab_size, cfg.hidden, cfg.layers);
        let vm = init_params(&cfg, 17, DType::F32, &dev).unwrap();
        for (_, v) in vm.data().lock().unwrap().iter() {
            v.set(&v.as_tensor().affine(3.0, 0.0).unwrap()).unwrap();
        }
        let model = GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let vars: Vec<(String, candle_core::Var)> = {
            let d = vm.data().lock().unwrap();
            cfg.param_shapes()
                .into_iter()
                .map(|(n, _)| (n.clone(), d[&n].clone()))
                .collect()
        };
        let n = bptt * batch;
        // Each layer's h, then (LSTM) each layer's c.
        let h0: Vec<Vec<f32>> = (0..layers * cfg.cell().carried())
            .map(|l| {
                (0..batch * hidden)
                    .map(|i| 0.4 * ((i * 3 + l) as f32).sin())
                    .collect()
            })
            .collect();
        let sample = samples.map(|k| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(99);
            Sample::draw(vocab, k, &mut rng)
        });
        Fixture {
            cfg,
            model,
            vars,
            batch,
            bptt,
            inputs: (0..n).map(|i| ((i * 7 + 3) % vocab) as u32).collect(),
            targets: (0..n).map(|i| ((i * 5 + 1) % vocab) as u32).collect(),
            h0,
            sample,
            dropout,
            locked: false,
            weight_drop: None,
            embed_drop: None,
        }
    }

    fn masks_at(&self, step: u64) -> Masks {
        Masks {
            dropout: self.dropout.map(|p| Dropout {
                p,
                seed: 5,
                step,
                locked: self.locked,
            }),
            weight_drop: self.weight_drop.map(|p| WeightDrop { p, seed: 5, step }),
            embed_drop: self.embed_drop.map(|p| EmbedDrop { p, seed: 5, step }),
        }
    }

    /// The window's tensors for candle's graph: inputs (T, B), targets, each carried state, the
    /// masks of step 3.
    fn tensors(&self) -> (Tensor, Tensor, Vec<Tensor>, WindowMasks) {
        let dev = Device::Cpu;
        let (batch, bptt, n) = (self.batch, self.bptt, self.batch * self.bptt);
        let inp = Tensor::from_vec(self.inputs.clone(), (bptt, batch), &dev).unwrap();
        let tgt = Tensor::from_vec(self.targets.clone(), n, &dev).unwrap();
        let h0_t: Vec<Tensor> = self
            .h0
            .iter()
            .map(|h| Tensor::from_slice(h, (batch, self.cfg.hidden), &dev).unwrap())
            .collect();
        let masks = WindowMasks::of(
            &self.masks_at(3).active(),
            &self.cfg,
            &self.inputs,
            batch,
            &dev,
        )
        .unwrap();
        (inp, tgt, h0_t, masks)
    }

    /// A graph window's loss, its gradients by autograd and the state it carries on.
    fn outcome(&self, loss: &Tensor, last: &[Tensor]) -> Outcome {
        Outcome {
            loss: loss.to_scalar::<f32>().unwrap() as f64,
            grads: grads_in_order(&loss.backward().unwrap(), &self.vars).unwrap(),
            last: last
                .iter()
                .map(|h| h.flatten_all().unwrap().to_vec1().unwrap())
                .collect(),
        }
    }

    /// The window through candle's graph and autograd.
    fn reference(&self) -> Outcome {
        let model = &self.model;
        let (inp, tgt, h0_t, masks) = self.tensors();
        let (loss, last) = match &self.sample {
            None => {
                let (logits, last) = model.forward_masked(&inp, &h0_t, &masks).unwrap();
                (cross_entropy(&logits, &tgt).unwrap(), last)
            }
            Some(smp) => {
                let (hs, last) = model.forward_states_masked(&inp, &h0_t, &masks).unwrap();
                let w = model.decoder.weight();
                let b = model.decoder.bias().unwrap();
                (
                    sampled_softmax_loss(&hs, w, b, &self.targets, smp).unwrap(),
                    last,
                )
            }
        };
        self.outcome(&loss, &last)
    }

    /// The window as the GPU path runs it (`--device cuda`): the whole-window graph, each Elman
    /// layer's recurrence one scan operation, here on the CPU device (the scan's CPU body).
    fn window(&self) -> Outcome {
        let model = &self.model;
        let (inp, tgt, h0_t, masks) = self.tensors();
        let (hs, last) = model.forward_window_states(&inp, &h0_t, &masks).unwrap();
        let w = model.decoder.weight();
        let b = model.decoder.bias().unwrap();
        let loss = match &self.sample {
            None => {
                let logits = hs
                    .matmul(&w.t().unwrap())
                    .unwrap()
                    .broadcast_add(b)
                    .unwrap();
                cross_entropy(&logits, &tgt).unwrap()
            }
            Some(smp) => sampled_softmax_loss(&hs, w, b, &self.targets, smp).unwrap(),
        };
        self.outcome(&loss, &last)
    }

    /// The window on the fused path with `threads` threads.
    fn fused(&self, threads: usize) -> Outcome {
        let flat: Vec<Vec<f32>> = self
            .vars
            .iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let params = Params::new(&self.cfg, flat.iter().map(|v| v.as_slice()).collect());
        let mut fast = FusedWindow::new(self.cfg, self.batch, self.bptt, threads);
        // A window on other tokens (and other samples) first, through the same trainer: the checked
        // one must not see anything it leaves behind (the compact gradient rows and their maps).
        {
            let vocab = self.cfg.vocab_size as u32;
            let other: Vec<u32> = self
                .targets
                .iter()
                .rev()
                .map(|&x| (x * 3 + 2) % vocab)
                .collect();
            let mut st = self.h0.clone();
            // (Other dropout masks too.)
            fast.set_masks(self.masks_at(2));
            match &self.sample {
                None => fast.step(&params, &other, &self.inputs, &mut st),
                Some(smp) => {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                    let s2 = Sample::draw(self.cfg.vocab_size, smp.ids.len(), &mut rng);
                    fast.step_sampled(&params, &other, &self.inputs, &mut st, &s2)
                }
            };
        }
        let mut state = self.h0.clone();
        fast.set_masks(self.masks_at(3));
        let (inputs, targets) = (&self.inputs, &self.targets);
        let loss = match &self.sample {
            None => fast.step(&params, inputs, targets, &mut state),
            Some(smp) => fast.step_sampled(&params, inputs, targets, &mut state, smp),
        };
        Outcome {
            loss,
            grads: fast.grads.clone(),
            last: state,
        }
    }
}

/// The fused step against candle's graph: full softmax, or with `samples = Some(K)` the sampled
/// softmax over K log-uniform negatives; with `dropout = Some(p)` both drop the layers' outputs
/// with the same masks.
#[allow(clippy::too_many_arguments)]
fn check_loss(
    act: Activation,
    layers: usize,
    threads: usize,
    batch: usize,
    bptt: usize,
    vocab: usize,
    hidden: usize,
    samples: Option<usize>,
    dropout: Option<f32>,
) {
    let cfg = ModelConfig {
        vocab_size: vocab,
        hidden,
        layers,
        activation: act,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    check_cfg(cfg, threads, (batch, bptt), samples, dropout);
}

/// The fused window of `cfg` against the graph (see `check_loss`).
fn check_cfg(
    cfg: ModelConfig,
    threads: usize,
    (batch, bptt): (usize, usize),
    samples: Option<usize>,
    dropout: Option<f32>,
) {
    compare(&Fixture::new(cfg, (batch, bptt), samples, dropout), threads);
}

/// The fused window of `fx` against the graph, and the whole-window graph (the GPU path's form,
/// on the CPU) against it too.
fn compare(fx: &Fixture, threads: usize) {
    let want = fx.reference();
    let what = format!("{} {}", fx.cfg.cell, fx.cfg.activation);
    assert_close(
        fx,
        &format!("{what} threads={threads}"),
        &fx.fused(threads),
        &want,
    );
    assert_close(fx, &format!("{what} whole-window"), &fx.window(), &want);
}

/// `got` equals `want` to ~1e-5 relative: loss, every gradient, the carried state.
fn assert_close(fx: &Fixture, what: &str, got: &Outcome, want: &Outcome) {
    let layers = fx.cfg.layers;
    assert!(
        (got.loss - want.loss).abs() < 1e-5 * want.loss.abs(),
        "{what} L={layers}: loss {} vs {}",
        got.loss,
        want.loss
    );
    for ((name, _), (g, w)) in fx.vars.iter().zip(got.grads.iter().zip(&want.grads)) {
        let diff: f64 = g
            .iter()
            .zip(w)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            diff <= 1e-5 * norm.max(1e-3),
            "{what} L={layers} {name}: |Δ| {diff} vs |g| {norm}"
        );
    }
    assert_eq!(got.last.len(), want.last.len(), "{what}: carried state");
    for (l, want) in want.last.iter().enumerate() {
        for (a, b) in got.last[l].iter().zip(want) {
            assert!(
                (a - b).abs() < 1e-5 * b.abs().max(1.0),
                "{what} L={layers} last state {l}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn fused_bptt_matches_autograd_for_every_activation() {
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        check(act, 1, 1, 4, 7);
    }
}

#[test]
fn fused_bptt_matches_autograd_with_two_layers() {
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        check(act, 2, 1, 3, 5);
    }
}

/// Shapes like real training (where gemm picks other kernels and blockings than for tiny ones).
#[test]
fn fused_bptt_matches_autograd_at_training_shapes() {
    check_shape(Activation::Tanh, 1, 2, 16, 32, 65, 128);
    check_shape(Activation::Tanh, 2, 2, 8, 20, 97, 72);
}

#[test]
fn sampled_softmax_matches_autograd() {
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        // 5 of 11 ids sampled: most rows meet their own target among the samples (masked).
        check_loss(act, 1, 1, 4, 7, 11, 9, Some(5), None);
    }
    check_loss(Activation::Tanh, 2, 3, 5, 6, 40, 16, Some(12), None);
    // Training-like shapes, two threads.
    check_loss(Activation::Tanh, 1, 2, 16, 32, 700, 64, Some(100), None);
}

/// Dropout on the layers' outputs: the fused path applies the reference graph's masks, forward and
/// backward, between layers and before the decoder (full and sampled softmax), on any thread split.
#[test]
fn dropout_matches_autograd() {
    for act in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        check_loss(act, 1, 1, 4, 7, 11, 9, None, Some(0.3));
        check_loss(act, 3, 2, 4, 5, 11, 9, None, Some(0.5));
    }
    check_loss(Activation::Tanh, 2, 3, 5, 6, 40, 16, Some(12), Some(0.2));
    check_loss(Activation::Tanh, 2, 2, 16, 32, 97, 72, None, Some(0.25));
}

#[test]
fn log_uniform_sampler_draws_distinct_ids_at_its_rate() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let v = 1000;
    let mut hits = vec![0u64; v];
    let mut tries = 0;
    for _ in 0..400 {
        let s = Sample::draw(v, 50, &mut rng);
        let mut ids = s.ids.clone();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50, "distinct");
        assert!(ids.iter().all(|&i| (i as usize) < v));
        for &i in &s.ids {
            hits[i as usize] += 1;
        }
        tries += s.tries;
        // E[count] in [Q, 1] and ≈ tries·Q for rare ids.
        let rare = s.log_expected(999).exp() as f64;
        assert!((rare / (s.tries as f64 * s.q(999)) - 1.0).abs() < 0.05);
        assert!(s.log_expected(0) <= 0.0);
    }
    // Inclusion frequency of an id ≈ 1 − (1 − Q)^tries, averaged over the draws.
    let s = Sample {
        ids: vec![],
        tries: tries / 400,
        vocab: v,
    };
    for id in [0u32, 3, 30, 300] {
        let want = s.log_expected(id).exp() as f64 * 400.0;
        let got = hits[id as usize] as f64;
        assert!(
            (got - want).abs() < 4.0 * want.sqrt() + 0.05 * want,
            "id {id}: drawn {got} times, expected {want:.1}"
        );
    }
}

#[test]
fn fused_bptt_splits_streams_across_threads_exactly() {
    // Uneven splits too: 5 streams over 2 and 3 threads, more threads than streams.
    for threads in [2, 3, 8] {
        check(Activation::Tanh, 2, threads, 5, 6);
    }
}

#[test]
fn fused_training_follows_the_reference_loss_curve() {
    use elman::train::{train, Hyper, TrainArgs};
    let tmp = tempfile::tempdir().unwrap();
    let text = "天空飞过一只小鸟, the bird flies over the sky.\n".repeat(60);
    let f = tmp.path().join("c.txt");
    std::fs::write(&f, text).unwrap();
    let run = |name: &str, reference: bool, rt: elman::runtime::Runtime| {
        let out = tmp.path().join(name);
        train(
            &TrainArgs {
                files: vec![f.clone()],
                out: Some(out.clone()),
                hyper: Hyper {
                    hidden: Some(20),
                    layers: Some(2),
                    batch: Some(4),
                    bptt: Some(12),
                    eval_every: Some(10),
                    ..Default::default()
                },
                steps: Some(40),
                quiet: true,
                reference,
                ..Default::default()
            },
            &rt,
        )
        .unwrap();
        elman::checkpoint::read_metrics(&out).unwrap()
    };
    let cpu = elman::runtime::Runtime::with_threads(2);
    let fused = run("fused", false, cpu.clone());
    let reference = run("reference", true, cpu);
    // What `--device cuda` runs (the whole-window graph, weights up, gradients down), here on
    // the CPU device: the same run.
    let window = run(
        "window",
        false,
        elman::runtime::Runtime::with_window_graph_on_cpu(2),
    );
    assert_eq!(fused.len(), reference.len());
    assert_eq!(window.len(), reference.len());
    for (a, b) in fused.iter().chain(&window).zip(reference.iter().cycle()) {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-4 && (a.val_loss - b.val_loss).abs() < 1e-4,
            "step {}: fused {}/{} vs reference {}/{}",
            a.step,
            a.train_loss,
            a.val_loss,
            b.train_loss,
            b.val_loss
        );
    }
}

/// A model with `init_params`' weights for `seed`.
fn model_of(cfg: ModelConfig, seed: u64) -> GraphModel {
    let dev = Device::Cpu;
    let vm = init_params(&cfg, seed, DType::F32, &dev).unwrap();
    GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap()
}

#[test]
fn fused_scoring_matches_the_reference_graph() {
    // Vocabularies of 13 (one partial decoder panel), 35 (two panels and 3 columns as dot
    // products) and 44 (two panels and a partial one).
    use elman::cell::CellKind;
    for (cell, act, layers, vocab) in [
        (CellKind::Elman, Activation::Tanh, 1, 13),
        (CellKind::Elman, Activation::Sigmoid, 2, 35),
        (CellKind::Elman, Activation::Relu, 2, 44),
        (CellKind::Elman, Activation::Tanh, 1, 35),
        (CellKind::Lstm, Activation::Tanh, 2, 35),
        (CellKind::Gru, Activation::Tanh, 2, 44),
    ] {
        let cfg = ModelConfig {
            layers,
            activation: act,
            cell,
            ..ModelConfig::new(vocab, 10)
        };
        let model = model_of(cfg, 23);
        let ids: Vec<u32> = (0..1001)
            .map(|i| ((i * i + 3 * i) % vocab) as u32)
            .collect();
        // Streams and chunks that leave a partial last chunk and a dropped remainder.
        // One stream over 2 and 3 threads, and 2 streams over 5: models this small keep to one
        // thread per stream (the splits are tested below, on larger ones).
        // 7 streams × 33 steps = 231 positions: the decoder's blocks of 96 rows and a partial one.
        // 20 streams over 2 threads and 32 over 3 are scored in 6 and 9 groups of unequal size,
        // windows taken by whichever thread is free: every run must give the same sum.
        for (streams, chunk, threads) in [
            (20, 9, 2),
            (32, 6, 3),
            (1, 64, 1),
            (1, 64, 2),
            (1, 33, 3),
            (2, 9, 5),
            (3, 17, 2),
            (7, 5, 3),
            (7, 33, 1),
            (7, 33, 2),
        ] {
            let a = elman::eval::score(&model, &ids, streams, chunk, threads).unwrap();
            let b = elman::eval::score_reference(&model, &ids, streams, chunk).unwrap();
            assert_eq!(a.predicted, b.predicted);
            let again = elman::eval::score(&model, &ids, streams, chunk, threads).unwrap();
            assert_eq!(
                a, again,
                "streams={streams} threads={threads}: not reproducible"
            );
            assert!(
                (a.nats - b.nats).abs() < 1e-5 * b.nats,
                "{cell} {act} L={layers} V={vocab} streams={streams}: {} vs {}",
                a.nats,
                b.nats
            );
        }
    }
}

#[test]
fn single_stream_scoring_shares_each_step_across_threads_exactly() {
    // One stream with 2 or 3 threads splits every recurrence step by columns (the Elman cell: 16
    // panels of W at H = 256) or by units (the gated cells: 8 or 10 panels of each gate block at
    // H = 128 or 160, unevenly over 3 threads), and the decoder's rows; the models are just large
    // enough for that (`MIN_SHARED_STEP`). Two layers (above layer 0 the input term is one
    // product made before the steps), a partial last window; the threads meet at a barrier every
    // step: the score must equal the graph's, and one thread's to 1e-7 (each state column is
    // still one thread's dot products, in the same order).
    use elman::cell::CellKind;
    for (cell, hidden) in [
        (CellKind::Elman, 256),
        (CellKind::Lstm, 128),
        (CellKind::Gru, 160),
    ] {
        let cfg = ModelConfig {
            vocab_size: 9,
            hidden,
            layers: 2,
            activation: Activation::Tanh,
            cell,
            embed: None,
            tied: false,
        };
        let model = model_of(cfg, 31);
        let ids: Vec<u32> = (0..700).map(|i| ((i * 5 + i / 7) % 9) as u32).collect();
        let want = elman::eval::score_reference(&model, &ids, 1, 64).unwrap();
        let one = elman::eval::score(&model, &ids, 1, 64, 1).unwrap();
        for threads in [2, 3] {
            let got = elman::eval::score(&model, &ids, 1, 64, threads).unwrap();
            assert_eq!(got.predicted, want.predicted);
            assert!(
                (got.nats - want.nats).abs() < 1e-5 * want.nats,
                "{cell} {threads} threads: {} vs {}",
                got.nats,
                want.nats
            );
            // The same states and logits (each a row of one kernel tile, summed in the same
            // order however the positions are split); only the order the losses are added in
            // differs.
            assert!(
                (got.nats - one.nats).abs() < 1e-7 * one.nats,
                "{cell} {threads} threads: {} vs one thread's {}",
                got.nats,
                one.nats
            );
        }
    }
}

/// The gated cells on the fused path against the graph: one to three layers, the threads
/// splitting the streams unevenly, the sampled softmax, dropout, and training-like shapes.
#[test]
fn gated_cells_fused_bptt_matches_autograd() {
    use elman::cell::CellKind;
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let cfg = |layers, vocab, hidden| ModelConfig {
            layers,
            cell,
            ..ModelConfig::new(vocab, hidden)
        };
        check_cfg(cfg(1, 11, 9), 1, (4, 7), None, None);
        check_cfg(cfg(2, 11, 9), 2, (5, 6), None, None);
        check_cfg(cfg(3, 11, 9), 3, (4, 5), None, Some(0.5));
        check_cfg(cfg(1, 11, 9), 1, (4, 7), Some(5), None);
        check_cfg(cfg(2, 40, 16), 3, (5, 6), Some(12), Some(0.2));
        check_cfg(cfg(1, 65, 64), 2, (16, 32), None, None);
    }
}

/// An input embedding (`--embed`), and one tied to the decoder (`--tie`), on the fused path
/// against the graph: the table built from the embedding, its gradient rows scattered into the
/// embedding, the tied weight's two gradients added; with every cell, threads, the sampled
/// softmax and dropout.
#[test]
fn embeddings_fused_bptt_matches_autograd() {
    use elman::cell::CellKind;
    for cell in [CellKind::Elman, CellKind::Lstm, CellKind::Gru] {
        let cfg = |layers, vocab, hidden, embed, tied| ModelConfig {
            layers,
            cell,
            embed: Some(embed),
            tied,
            ..ModelConfig::new(vocab, hidden)
        };
        check_cfg(cfg(1, 11, 9, 5, false), 1, (4, 7), None, None);
        check_cfg(cfg(2, 11, 9, 9, true), 3, (5, 6), None, None);
        check_cfg(cfg(2, 40, 16, 16, true), 2, (5, 6), Some(12), Some(0.3));
        check_cfg(cfg(1, 40, 16, 7, false), 2, (5, 6), Some(12), None);
    }
}

#[test]
fn more_streams_than_the_text_can_fill_are_capped() {
    // `--streams 1000000` on a 700-token text: every stream still gets two tokens (one read, one
    // predicted) instead of none, which scored 0 positions and printed NaN.
    let cfg = ModelConfig::new(9, 10);
    let model = model_of(cfg, 7);
    let ids: Vec<u32> = (0..701).map(|i| ((i * 5 + i / 7) % 9) as u32).collect();
    let s = elman::eval::score(&model, &ids, 1_000_000, 64, 2).unwrap();
    assert_eq!(s.predicted, 350);
    let per_token = s.nats / s.predicted as f64;
    assert!(per_token.is_finite() && per_token > 0.0, "{per_token}");
    let reference = elman::eval::score_reference(&model, &ids, 1_000_000, 64).unwrap();
    assert_eq!(reference.predicted, 350);
}

/// Locked (variational) dropout: the fused path and the graph drop the same units, each kept
/// dropped for the whole window, for every cell.
#[test]
fn locked_dropout_fused_equals_graph() {
    use elman::cell::CellKind;
    for (cell, layers, threads) in [
        (CellKind::Elman, 2, 2),
        (CellKind::Lstm, 2, 1),
        (CellKind::Gru, 1, 3),
    ] {
        let cfg = ModelConfig {
            cell,
            layers,
            ..ModelConfig::new(11, 16)
        };
        let mut fx = Fixture::new(cfg, (4, 5), None, Some(0.4));
        fx.locked = true;
        compare(&fx, threads);
        // And it is not plain dropout's mask.
        let plain = Fixture::new(cfg, (4, 5), None, Some(0.4)).reference();
        assert_ne!(plain.loss, fx.reference().loss, "{cell}");
    }
}

/// DropConnect on W_hh and embedding dropout: the fused window and the graph drop the same
/// weights and tokens and agree on the loss, every gradient and the carried state, for every cell,
/// one-hot and through an embedding (tied too), with and without dropout on the outputs, any
/// thread split; and a rate of 0 is bit for bit the window without it.
#[test]
fn weight_and_embedding_drop_fused_equals_graph() {
    use elman::cell::CellKind;
    for (cell, layers, threads, embed, tied, dropout) in [
        (CellKind::Elman, 2, 2, None, false, Some(0.3)),
        (CellKind::Elman, 1, 1, Some(6), false, None),
        (CellKind::Lstm, 2, 3, Some(16), true, Some(0.2)),
        (CellKind::Gru, 1, 2, None, false, None),
    ] {
        let cfg = ModelConfig {
            cell,
            layers,
            embed,
            tied,
            ..ModelConfig::new(11, 16)
        };
        let mut fx = Fixture::new(cfg, (4, 5), None, dropout);
        fx.weight_drop = Some(0.4);
        fx.embed_drop = Some(0.3);
        compare(&fx, threads);
        // The masks change the window (they are not all ones).
        let plain = Fixture::new(cfg, (4, 5), None, dropout);
        assert_ne!(plain.reference().loss, fx.reference().loss, "{cell}");
        // Rates of 0: exactly the plain window.
        fx.weight_drop = Some(0.0);
        fx.embed_drop = Some(0.0);
        let (zero, none) = (fx.fused(threads), plain.fused(threads));
        assert_eq!(zero.loss.to_bits(), none.loss.to_bits(), "{cell}");
        assert_eq!(zero.grads, none.grads, "{cell}");
        assert_eq!(zero.last, none.last, "{cell}");
    }
}
