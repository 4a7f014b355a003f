//! Stage 3b — the fast training path: one window of truncated BPTT written out by hand.
//!
//! The chapter's algorithm, with every product that is not sequential batched into one GEMM:
//!
//! ```text
//! forward   S_t = σ(U[x_t] + S_{t−1}·Wᵀ + b)                 T sequential (B×H)·(H×H) GEMMs
//!           O   = S·Vᵀ + c                                     one (T·B×H)·(H×V) GEMM
//!           loss = mean CE(softmax(O), y);  dO = (softmax(O) − onehot(y)) / (T·B)
//! backward  dV = dOᵀ·S,  dc = Σ dO,  dS = dO·V                 three big GEMMs
//!           dP_t = (dS_t + dP_{t+1}·W) ⊙ σ′(S_t)              T sequential GEMMs, t = T−1 … 0
//!           dW = dPᵀ·S_prev,  db = Σ dP,  dU[x_t] += dP_t      one big GEMM and a scatter
//! ```
//!
//! Useful work is 6·(H² + H·V) FLOP per token (the one-hot input is a lookup). The B streams are
//! independent, so they are split across threads: each thread runs the whole window for its share
//! of streams with its own preallocated buffers, and the per-thread gradients are summed in thread
//! order at the end (deterministic for a given thread count). No step allocates.
//!
//! `model.rs`'s candle graph stays the reference: tests hold this path's loss and gradients to it.

use crate::kernels::gemm::{add_rows, col_sums, mm};
use crate::kernels::math::{act_bwd, act_fwd, act_fwd_add, dot, nll, scoring_tanh, softmax_ce};
use crate::kernels::packed::{self, PackedB};
use crate::model::{Activation, Dropout, ModelConfig};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The parameters as flat row-major slices, in `ModelConfig::param_shapes` order.
pub struct Params<'a> {
    pub flat: Vec<&'a [f32]>,
}

impl Params<'_> {
    fn w_ih(&self, l: usize) -> &[f32] {
        self.flat[4 * l]
    }
    fn w_hh(&self, l: usize) -> &[f32] {
        self.flat[4 * l + 1]
    }
    fn dec_w(&self) -> &[f32] {
        self.flat[self.flat.len() - 2]
    }
    fn dec_b(&self) -> &[f32] {
        self.flat[self.flat.len() - 1]
    }
}

/// Runs `f` on the tensors' data as `Params`, read in place where a tensor is a contiguous f32 CPU
/// tensor (the model's own weights are: no copy of them, tens of MB at the word level), else
/// through a converted copy. The tensors are read-locked meanwhile: `f` must not write them.
pub fn with_params<R>(
    tensors: &[&candle_core::Tensor],
    f: impl FnOnce(&Params) -> R,
) -> candle_core::Result<R> {
    use candle_core::{CpuStorage, DType, Storage};
    let in_place = |t: &candle_core::Tensor| {
        t.dtype() == DType::F32 && t.device().is_cpu() && t.is_contiguous()
    };
    // Copies first, for the others (before any lock is held).
    let copies: Vec<Option<Vec<f32>>> = tensors
        .iter()
        .map(|t| {
            if in_place(t) {
                Ok(None)
            } else {
                Ok(Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?))
            }
        })
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = tensors
        .iter()
        .zip(&copies)
        .map(|(t, c)| c.is_none().then(|| t.storage_and_layout()))
        .collect();
    let mut flat = Vec::with_capacity(tensors.len());
    for (g, c) in guards.iter().zip(&copies) {
        flat.push(match (g, c) {
            (_, Some(c)) => c.as_slice(),
            (Some((storage, layout)), None) => match (&**storage, layout.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) => &data[a..b],
                _ => candle_core::bail!("a parameter changed layout while being read"),
            },
            (None, None) => unreachable!("every tensor is either locked or copied"),
        });
    }
    Ok(f(&Params { flat }))
}

/// The shared negatives of one sampled-softmax step (TensorFlow's `sampled_softmax_loss` with its
/// log-uniform sampler): K distinct ids drawn from Q(id) = ln((id+2)/(id+1)) / ln(V+1), which fits
/// ids sorted by frequency (the vocabulary's order). Each logit in the loss is corrected by the log
/// of how often its id is expected among the draws, so the sampled loss estimates the full one.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ids: Vec<u32>,
    /// Draws it took to find `ids.len()` distinct ids.
    pub tries: u64,
    pub vocab: usize,
}

impl Sample {
    /// Draws `k` distinct ids (k < vocab).
    pub fn draw(vocab: usize, k: usize, rng: &mut impl rand::Rng) -> Sample {
        assert!(k < vocab, "sampled softmax needs fewer samples than tokens");
        let mut seen = vec![false; vocab];
        let mut ids = Vec::with_capacity(k);
        let mut tries = 0u64;
        let log_range = ((vocab + 1) as f64).ln();
        while ids.len() < k {
            tries += 1;
            let u: f64 = rng.random();
            let id = (((u * log_range).exp() - 1.0) as usize).min(vocab - 1);
            if !seen[id] {
                seen[id] = true;
                ids.push(id as u32);
            }
        }
        Sample { ids, tries, vocab }
    }

    /// Q(id) of the log-uniform sampler.
    pub fn q(&self, id: u32) -> f64 {
        let id = id as f64;
        ((id + 2.0) / (id + 1.0)).ln() / ((self.vocab + 1) as f64).ln()
    }

    /// ln E[times `id` is drawn in `tries` draws] as the sampler with rejection sees it:
    /// ln(1 − (1 − Q)^tries).
    pub fn log_expected(&self, id: u32) -> f32 {
        let q = self.q(id);
        (-(self.tries as f64 * (-q).ln_1p()).exp_m1()).ln() as f32
    }
}

/// One thread's buffers, sized once for its share of the streams.
struct Work {
    /// First stream and number of streams.
    s0: usize,
    b: usize,
    /// Per layer: S_{−1}, S_0 … S_{T−1}, each b×H.
    hs: Vec<Vec<f32>>,
    /// T·b × V: logits, then dO.
    logits: Vec<f32>,
    /// T·b × H: dS of the current layer, turned into dP in place.
    dh: Vec<f32>,
    /// T·b × H: dS for the layer below.
    dx: Vec<f32>,
    /// Layer 0's dU, compact: a row of H (dUᵀ) per distinct token this share read in the window,
    /// `in_ids[j]` (ascending) the token of row j; `execute` scatters them into the summed gradient. Only the
    /// columns of tokens read are non-zero, and a full H × V buffer per thread was tens of MB
    /// at the word level, cleared and summed every step.
    in_ids: Vec<u32>,
    du_rows: Vec<f32>,
    /// Sampled softmax: the decoder's gradient rows, compact the same way: the K samples (in
    /// `Sample::ids` order), then this share's targets that are not among them.
    out_ids: Vec<u32>,
    dv_rows: Vec<f32>,
    /// Token → its row in `du_rows` / `dv_rows` (`u32::MAX` when none; reset every window).
    in_row: Vec<u32>,
    out_row: Vec<u32>,
    /// Gradients in `param_shapes` order; layer 0's U (`in_ids`/`du_rows`) and, with the sampled
    /// softmax, the decoder weights (`out_ids`/`dv_rows`) are held compact instead.
    grads: Vec<Vec<f32>>,
    /// Dropout (training only; empty without it): per layer, T·b × H masks (0 or 1/(1 − p)) and
    /// the masked outputs that go up to the next layer or the decoder.
    masks: Vec<Vec<f32>>,
    dropped: Vec<Vec<f32>>,
    loss: f64,
}

/// The fused trainer for a fixed model shape, batch and window.
pub struct FastBptt {
    pub config: ModelConfig,
    pub batch: usize,
    pub bptt: usize,
    works: Vec<Work>,
    /// Layer 0's input term per token (V × H): row x = Uᵀ's row x + b_ih + b_hh, contiguous;
    /// gathered for the tokens a window reads.
    u0_t: Vec<f32>,
    /// b_ih + b_hh per layer.
    bias: Vec<Vec<f32>>,
    /// Per layer, W packed once per window for the T sequential products that read it: as Wᵀ
    /// for the forward recurrence (S_{t−1}·Wᵀ) and as W for the backward one (dP_{t+1}·W).
    /// The `gemm` crate re-packed it inside every product (see `packed.rs`).
    w_fwd: Vec<PackedB>,
    w_bwd: Vec<PackedB>,
    /// Summed gradients, `param_shapes` order.
    pub grads: Vec<Vec<f32>>,
    /// Sampled softmax: the sampled decoder rows (K × H), their biases corrected by ln E[count],
    /// and each id's place among them (u32::MAX when not sampled).
    dec_s: Vec<f32>,
    bias_s: Vec<f32>,
    slot: Vec<u32>,
    /// Scratch marks, one per token (all false between steps).
    seen: Vec<bool>,
    /// Threads each stream-share may use for the decoder when only scoring (more threads than
    /// streams: `elman eval`'s single exact stream).
    helpers: usize,
    /// Threads that share each recurrence step of a stream-share when only scoring.
    column_parts: usize,
    /// Dropout for the next training window (`set_dropout`).
    dropout: Option<Dropout>,
}

impl FastBptt {
    pub fn new(config: ModelConfig, batch: usize, bptt: usize, threads: usize) -> FastBptt {
        FastBptt::build(config, batch, bptt, threads, true)
    }

    /// Buffers for `score_with` only: no gradients, no weights of its own (they come from a
    /// `ScoreWeights` that many of these may share). `threads` > 1 only helps fewer streams.
    pub fn for_scoring(config: ModelConfig, batch: usize, bptt: usize, threads: usize) -> FastBptt {
        FastBptt::build(config, batch, bptt, threads, false)
    }

    fn build(
        config: ModelConfig,
        batch: usize,
        bptt: usize,
        threads: usize,
        training: bool,
    ) -> FastBptt {
        let (v, h, t) = (config.vocab_size, config.hidden, bptt);
        // Sizes of the buffers only training (or this struct's own weights) needs.
        let (tv, th) = if training { (v, h) } else { (0, 0) };
        // Threads beyond one per stream help only the decoder of forward-only scoring.
        let helpers = (threads.max(1) / batch.max(1)).max(1);
        let threads = threads.clamp(1, batch);
        // The recurrence's column split spins at a barrier every step: never more spinning
        // threads than cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let column_parts = helpers.min(cores / threads).max(1);
        let shapes = config.param_shapes();
        let zeros = || -> Vec<Vec<f32>> {
            shapes
                .iter()
                .filter(|_| training)
                .map(|(_, s)| vec![0.0; s.iter().product()])
                .collect()
        };
        // Training keeps a window's logits for the backward pass. Scoring's (`SCORE_BLOCK` rows
        // per helper thread) are lent by the caller of `score_with` for each call.
        let logits_len = |rows: usize| if training { rows * v } else { 0 };
        let works = (0..threads)
            .map(|i| {
                let s0 = batch * i / threads;
                let b = batch * (i + 1) / threads - s0;
                Work {
                    s0,
                    b,
                    hs: (0..config.layers)
                        .map(|_| vec![0.0; (t + 1) * b * h])
                        .collect(),
                    logits: vec![0.0; logits_len(t * b)],
                    dh: vec![0.0; t * b * th],
                    dx: vec![0.0; t * b * th],
                    in_ids: Vec::new(),
                    du_rows: Vec::new(),
                    out_ids: Vec::new(),
                    dv_rows: Vec::new(),
                    in_row: vec![u32::MAX; tv],
                    out_row: vec![u32::MAX; tv],
                    // Layer 0's U is held compact (`du_rows`).
                    grads: {
                        let mut g = zeros();
                        if let Some(u) = g.first_mut() {
                            *u = Vec::new();
                        }
                        g
                    },
                    masks: Vec::new(),
                    dropped: Vec::new(),
                    loss: 0.0,
                }
            })
            .collect();
        FastBptt {
            config,
            batch,
            bptt,
            works,
            u0_t: vec![0.0; tv * th],
            bias: vec![vec![0.0; h]; config.layers],
            w_fwd: vec![PackedB::default(); config.layers],
            w_bwd: vec![PackedB::default(); config.layers],
            grads: zeros(),
            dec_s: Vec::new(),
            bias_s: Vec::new(),
            slot: Vec::new(),
            seen: Vec::new(),
            helpers,
            column_parts,
            dropout: None,
        }
    }

    /// Dropout for the windows that follow (`None`, or p = 0: none); its `step` picks the masks,
    /// so set it before every window.
    pub fn set_dropout(&mut self, dropout: Option<Dropout>) {
        self.dropout = dropout.filter(|d| d.p > 0.0);
    }

    /// One window with a sampled softmax (the decoder sees the targets and `sample`'s K ids, not
    /// the whole vocabulary): returns the mean sampled loss; gradients land in `grads`.
    pub fn step_sampled(
        &mut self,
        params: &Params,
        inputs: &[u32],
        targets: &[u32],
        state: &mut [Vec<f32>],
        sample: &Sample,
    ) -> f64 {
        let (v, h) = (self.config.vocab_size, self.config.hidden);
        let k = sample.ids.len();
        assert!(k < v && sample.vocab == v);
        self.slot.resize(v, u32::MAX);
        self.dec_s.resize(k * h, 0.0);
        self.bias_s.resize(k, 0.0);
        let (dec_w, dec_b) = (params.dec_w(), params.dec_b());
        for (j, &id) in sample.ids.iter().enumerate() {
            let id = id as usize;
            self.slot[id] = j as u32;
            self.dec_s[j * h..(j + 1) * h].copy_from_slice(&dec_w[id * h..(id + 1) * h]);
            self.bias_s[j] = dec_b[id] - sample.log_expected(id as u32);
        }
        let loss = self.train_window(params, inputs, targets, state, Some(sample));
        for &id in &sample.ids {
            self.slot[id as usize] = u32::MAX;
        }
        loss / (self.bptt * self.batch) as f64
    }

    /// One window: `inputs`/`targets` are time-major (T × B), `state` holds each layer's S_{−1}
    /// (B × H) and receives S_{T−1}. Returns the mean cross-entropy; gradients land in `grads`.
    pub fn step(
        &mut self,
        params: &Params,
        inputs: &[u32],
        targets: &[u32],
        state: &mut [Vec<f32>],
    ) -> f64 {
        self.train_window(params, inputs, targets, state, None) / (self.bptt * self.batch) as f64
    }

    /// One training window, forward and backward (full or sampled softmax): the summed loss.
    fn train_window(
        &mut self,
        params: &Params,
        inputs: &[u32],
        targets: &[u32],
        state: &mut [Vec<f32>],
        sample: Option<&Sample>,
    ) -> f64 {
        let (v, h, t_len) = (self.config.vocab_size, self.config.hidden, self.bptt);
        assert_eq!(inputs.len(), t_len * self.batch);
        assert_eq!(targets.len(), t_len * self.batch);
        // Shared per-step constants.
        for l in 0..self.config.layers {
            let (bi, bh) = (params.flat[4 * l + 2], params.flat[4 * l + 3]);
            self.bias[l]
                .iter_mut()
                .zip(bi.iter().zip(bh))
                .for_each(|(o, (a, b))| *o = a + b);
        }
        // Uᵀ rows of the tokens this window reads (only those are looked up): a strided gather of
        // a few hundred columns, not a transpose of all V (which dominates at word level). Each
        // row holds layer 0's whole input term U x + b for its token, added once per step after
        // the recurrent product (no pre-filled states to stream through memory).
        let u0 = params.w_ih(0);
        self.seen.resize(v, false);
        for &x in inputs {
            let x = x as usize;
            if !std::mem::replace(&mut self.seen[x], true) {
                let row = &mut self.u0_t[x * h..(x + 1) * h];
                for (i, (r, b)) in row.iter_mut().zip(&self.bias[0]).enumerate() {
                    *r = u0[i * v + x] + b;
                }
            }
        }
        for &x in inputs {
            self.seen[x as usize] = false;
        }
        // The optimizer changed W in place since the last window: pack it afresh.
        for l in 0..self.config.layers {
            let w = params.w_hh(l);
            self.w_fwd[l].pack(w, h, h, (1, h));
            self.w_bwd[l].pack(w, h, h, (h, 1));
        }
        let shared = Shared {
            cfg: self.config,
            batch: self.batch,
            bptt: t_len,
            backward: true,
            params,
            u0_t: &self.u0_t,
            bias: &self.bias,
            w_fwd: &self.w_fwd,
            w_bwd: &self.w_bwd,
            // Read by scoring only (training's decoder products go through `mm`).
            dec_fwd: &PackedB::default(),
            inputs,
            targets,
            helpers: self.helpers,
            column_parts: self.column_parts,
            dropout: self.dropout,
            sampled: sample.map(|smp| Sampled {
                sample: smp,
                dec_s: &self.dec_s,
                bias_s: &self.bias_s,
                slot: &self.slot,
            }),
        };
        execute(&mut self.works, &mut self.grads, &shared, state)
    }

    /// Forward only over `t_len ≤ bptt` steps, with weights prepared once in `weights` (`params`
    /// are the slices they were made from): the summed −ln p of the targets (nats), no gradients.
    /// `inputs` are rows of `weights`' input table (`ScoreWeights::to_rows`), `targets` token ids.
    /// `scratch` holds the decoder's logits during the call (grown as needed and handed back, so a
    /// thread scoring many groups in turn keeps one set: `SCORE_BLOCK` × V floats per helper, 13
    /// MB at a 33k-word vocabulary). What each of `eval::score`'s groups of streams runs.
    #[allow(clippy::too_many_arguments)]
    pub fn score_with(
        &mut self,
        weights: &ScoreWeights,
        params: &Params,
        inputs: &[u32],
        targets: &[u32],
        state: &mut [Vec<f32>],
        t_len: usize,
        scratch: &mut Vec<Vec<f32>>,
    ) -> f64 {
        assert!(t_len <= self.bptt);
        assert_eq!(inputs.len(), t_len * self.batch);
        assert_eq!(targets.len(), t_len * self.batch);
        let shared = Shared {
            cfg: self.config,
            batch: self.batch,
            bptt: t_len,
            backward: false,
            params,
            u0_t: &weights.u0_t,
            bias: &weights.bias,
            w_fwd: &weights.w_fwd,
            w_bwd: &[],
            dec_fwd: &weights.dec_fwd,
            inputs,
            targets,
            helpers: self.helpers,
            column_parts: self.column_parts,
            // Scoring runs the plain model.
            dropout: None,
            sampled: None,
        };
        scratch.resize_with(self.works.len(), Vec::new);
        for (w, s) in self.works.iter_mut().zip(scratch.iter_mut()) {
            std::mem::swap(&mut w.logits, s);
        }
        let loss = execute(&mut self.works, &mut self.grads, &shared, state);
        for (w, s) in self.works.iter_mut().zip(scratch.iter_mut()) {
            std::mem::swap(&mut w.logits, s);
        }
        loss
    }
}

/// The weights as scoring reads them, prepared once per `eval::score` call and shared read-only
/// by every group of streams it runs (one copy whatever the number of groups).
pub struct ScoreWeights {
    /// Layer 0's input term (U x + b_ih + b_hh) of each token the scored text holds, one row of
    /// H per token in the order of `row`: at word level a text reads a fraction of the
    /// vocabulary, and a table of all V rows would be one more copy of U.
    u0_t: Vec<f32>,
    /// Token id → its row in `u0_t` (`u32::MAX` for a token the text does not hold).
    row: Vec<u32>,
    /// b_ih + b_hh per layer.
    bias: Vec<Vec<f32>>,
    /// Per layer, Wᵀ packed for the recurrence.
    w_fwd: Vec<PackedB>,
    /// The decoder as Vᵀ (H × V), packed but for its last `dot_columns(V)` columns: its product
    /// runs on the recurrence's kernel (the `gemm` crate's took ~1.4× as long per FLOP at V = 65).
    dec_fwd: PackedB,
}

impl ScoreWeights {
    /// The weights for scoring `ids` (every id must be below the vocabulary size).
    pub fn new(params: &Params, config: ModelConfig, ids: &[u32]) -> ScoreWeights {
        let (v, h) = (config.vocab_size, config.hidden);
        let bias: Vec<Vec<f32>> = (0..config.layers)
            .map(|l| {
                let (bi, bh) = (params.flat[4 * l + 2], params.flat[4 * l + 3]);
                bi.iter().zip(bh).map(|(a, b)| a + b).collect()
            })
            .collect();
        // The tokens the text holds, in id order (so that neighbouring rows of the table come
        // from neighbouring columns of U).
        let mut row = vec![u32::MAX; v];
        for &x in ids {
            row[x as usize] = 0;
        }
        let held: Vec<usize> = (0..v).filter(|&x| row[x] == 0).collect();
        for (r, &x) in held.iter().enumerate() {
            row[x] = r as u32;
        }
        // Their columns of U, transposed in tiles of 32 × 32 so that neither side is walked with
        // a stride through all of it (U is H × V: a word-level vocabulary makes it tens of MB).
        let u0 = params.w_ih(0);
        let mut u0_t = vec![0.0; held.len() * h];
        for i0 in (0..h).step_by(32) {
            for r0 in (0..held.len()).step_by(32) {
                for i in i0..(i0 + 32).min(h) {
                    for (r, &x) in held.iter().enumerate().skip(r0).take(32) {
                        u0_t[r * h + i] = u0[i * v + x] + bias[0][i];
                    }
                }
            }
        }
        let w_fwd = (0..config.layers)
            .map(|l| {
                let mut w = PackedB::default();
                w.pack(params.w_hh(l), h, h, (1, h));
                w
            })
            .collect();
        let mut dec_fwd = PackedB::default();
        dec_fwd.pack(params.dec_w(), h, v - dot_columns(v), (1, h));
        ScoreWeights {
            u0_t,
            row,
            bias,
            w_fwd,
            dec_fwd,
        }
    }

    /// Turns a window's input ids into their rows of the input table, in place (what
    /// `FastBptt::score_with` reads). Panics on a token the text given to `new` did not hold.
    pub fn to_rows(&self, inputs: &mut [u32]) {
        for x in inputs {
            let r = self.row[*x as usize];
            assert!(r != u32::MAX, "token {x} is not in the scored text");
            *x = r;
        }
    }
}

/// Runs one window on the works (one thread each, the first on the caller's), sums the
/// gradients in thread order and hands back each layer's last state. Returns the summed loss.
fn execute(
    works: &mut [Work],
    grads: &mut [Vec<f32>],
    shared: &Shared,
    state: &mut [Vec<f32>],
) -> f64 {
    let (h, t_len, backward) = (shared.cfg.hidden, shared.bptt, shared.backward);
    let state_ref: &[Vec<f32>] = state;
    if works.len() == 1 {
        works[0].run(shared, state_ref);
    } else {
        std::thread::scope(|sc| {
            let mut it = works.iter_mut();
            let first = it.next().expect("one work");
            let handles: Vec<_> = it
                .map(|w| {
                    let sh = shared;
                    sc.spawn(move || w.run(sh, state_ref))
                })
                .collect();
            first.run(shared, state_ref);
            for hd in handles {
                hd.join().expect("a training thread panicked");
            }
        });
    }
    // Reduce in thread order (element by element the same sums as adding whole buffers); hand
    // back the last state.
    let mut loss = 0.0;
    let ng = grads.len();
    let sampled = shared.sampled.is_some();
    for (gi, g) in grads.iter_mut().enumerate().filter(|_| backward) {
        if gi == 0 {
            // Layer 0's U (H × V): each thread's compact columns. Row by row of U, so that the
            // writes run forward through memory (a token's column is H floats V apart).
            g.fill(0.0);
            let v = shared.cfg.vocab_size;
            for w in works.iter() {
                for (i, row) in g.chunks_exact_mut(v).enumerate() {
                    for (r, &x) in w.in_ids.iter().enumerate() {
                        row[x as usize] += w.du_rows[r * h + i];
                    }
                }
            }
        } else if gi == ng - 2 && sampled {
            // The decoder's weights (V × H) under the sampled softmax: each thread's rows.
            g.fill(0.0);
            for w in works.iter() {
                for (j, &id) in w.out_ids.iter().enumerate() {
                    let id = id as usize;
                    g[id * h..(id + 1) * h]
                        .iter_mut()
                        .zip(&w.dv_rows[j * h..(j + 1) * h])
                        .for_each(|(a, b)| *a += b);
                }
            }
        } else {
            g.copy_from_slice(&works[0].grads[gi]);
            for w in &works[1..] {
                g.iter_mut().zip(&w.grads[gi]).for_each(|(a, b)| *a += b);
            }
        }
    }
    for w in works.iter() {
        loss += w.loss;
        for (l, st) in state.iter_mut().enumerate() {
            let last = &w.hs[l][t_len * w.b * h..(t_len + 1) * w.b * h];
            st[w.s0 * h..(w.s0 + w.b) * h].copy_from_slice(last);
        }
    }
    loss
}

/// A barrier for a few threads that meet every few microseconds (one recurrence step): spins
/// briefly, then yields (a condition variable's wake-up costs as much as the step). A thread
/// that panics poisons it (`Poison`), so the others panic too instead of waiting forever.
struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

/// Poisons the barrier if dropped while its thread unwinds from a panic.
struct Poison<'a>(&'a SpinBarrier);

impl Drop for Poison<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Release);
        }
    }
}

impl SpinBarrier {
    fn new(parties: usize) -> SpinBarrier {
        SpinBarrier {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if self.poisoned.load(Ordering::Acquire) {
                panic!("another scoring thread panicked");
            }
            if spins < 2000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// The states' buffer, shared by the threads of `recurrence_by_columns`.
struct SharedStates(*mut f32);
// SAFETY: the threads write disjoint columns of one step and read the previous step only after
// the barrier that ends it (see `recurrence_by_columns`).
unsafe impl Sync for SharedStates {}

/// The forward recurrence S_t = σ(P_t + S_{t−1}·Wᵀ) with each step's columns split over `parts`
/// threads (ranges of W's panels), which meet at a barrier after every step: step t + 1 reads
/// all of S_t. `hs` holds S_{−1}, then (with `Input::Ready`) P_0 … P_{T−1}; S_0 … S_{T−1} are
/// written there.
#[allow(clippy::too_many_arguments)]
fn recurrence_by_columns(
    hs: &mut [f32],
    t_len: usize,
    b: usize,
    h: usize,
    w: &PackedB,
    act: Activation,
    input: &Input,
    parts: usize,
) {
    let bh = b * h;
    assert!(hs.len() >= (t_len + 1) * bh && w.k() == h && w.n() == h);
    let panels = h.div_ceil(packed::NR);
    let barrier = SpinBarrier::new(parts);
    let states = SharedStates(hs.as_mut_ptr());
    let run = |i: usize| {
        let _poison = Poison(&barrier);
        let (p0, p1) = (panels * i / parts, panels * (i + 1) / parts);
        let (c0, c1) = (p0 * packed::NR, (p1 * packed::NR).min(h));
        let states = &states;
        for t in 0..t_len {
            // SAFETY: rows t (read) and t + 1 (written) of `hs` are disjoint and inside it (the
            // assert above); in step t every thread writes only columns c0..c1 of its own panel
            // range in row t + 1, and row t was completed by all threads before the barrier that
            // ended step t − 1. Nothing else touches `hs` while the threads run.
            unsafe {
                let prev = std::slice::from_raw_parts(states.0.add(t * bh), bh);
                let cur = states.0.add((t + 1) * bh);
                packed::matmul_columns(b, cur, h, input.is_ready(), prev, h, w, p0..p1);
                for r in 0..b {
                    let row = std::slice::from_raw_parts_mut(cur.add(r * h + c0), c1 - c0);
                    input.activate(act, true, t, r, row, c0);
                }
            }
            barrier.wait();
        }
    };
    std::thread::scope(|sc| {
        for i in 1..parts {
            let run = &run;
            sc.spawn(move || run(i));
        }
        run(0);
    });
}

/// Where a layer's input term P_t (everything but the recurrent product) comes from.
enum Input<'a> {
    /// Layer 0: row `ids[t · stride + first + j]` of `table` for stream j at step t (U x + b).
    Rows {
        table: &'a [f32],
        hidden: usize,
        ids: &'a [u32],
        stride: usize,
        first: usize,
    },
    /// Already in the states buffer, where the recurrent product accumulates onto it.
    Ready,
}

impl Input<'_> {
    fn is_ready(&self) -> bool {
        matches!(self, Input::Ready)
    }

    /// `row` (columns `c0..` of stream j's product at step t) becomes σ(row + P). `scoring`:
    /// nothing will be differentiated, so tanh may take `scoring_tanh`'s faster road.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn activate(
        &self,
        act: Activation,
        scoring: bool,
        t: usize,
        j: usize,
        row: &mut [f32],
        c0: usize,
    ) {
        let add = match *self {
            Input::Rows {
                table,
                hidden,
                ids,
                stride,
                first,
            } => {
                let x = ids[t * stride + first + j] as usize;
                Some(&table[x * hidden + c0..][..row.len()])
            }
            Input::Ready => None,
        };
        match (add, scoring && act == Activation::Tanh) {
            (_, true) => scoring_tanh(row, add),
            (Some(add), false) => act_fwd_add(act, row, add),
            (None, false) => act_fwd(act, row),
        }
    }
}

struct Shared<'a> {
    cfg: ModelConfig,
    batch: usize,
    /// Steps in this window (≤ the buffers' size).
    bptt: usize,
    backward: bool,
    params: &'a Params<'a>,
    u0_t: &'a [f32],
    bias: &'a [Vec<f32>],
    w_fwd: &'a [PackedB],
    w_bwd: &'a [PackedB],
    dec_fwd: &'a PackedB,
    inputs: &'a [u32],
    targets: &'a [u32],
    sampled: Option<Sampled<'a>>,
    helpers: usize,
    column_parts: usize,
    /// Training with dropout on the layers' outputs (`model::Dropout`).
    dropout: Option<Dropout>,
}

/// What every thread reads in a sampled-softmax step.
struct Sampled<'a> {
    sample: &'a Sample,
    dec_s: &'a [f32],
    bias_s: &'a [f32],
    slot: &'a [u32],
}

/// Columns of the decoder that scoring computes as dot products rather than in a panel of the
/// packed kernel: a last panel holding only a few real columns (V = 65 is 4 panels and 1 column)
/// would cost a whole panel's FLOPs for them.
fn dot_columns(v: usize) -> usize {
    match v % packed::NR {
        tail if v > packed::NR && tail <= 4 => tail,
        _ => 0,
    }
}

/// Scoring's decoder for positions `range` of `top` (rows of width h): the logits of a block of
/// rows at a time into `out` (the range's rows × V), then −ln p of each row's target. Blocks keep
/// the states they read and the decoder's panels in cache between the product and the loss.
#[allow(clippy::too_many_arguments)]
fn score_rows(
    top: &[f32],
    h: usize,
    range: std::ops::Range<usize>,
    scratch: &mut [f32],
    dec: &PackedB,
    (dec_w, dec_b): (&[f32], &[f32]),
    target: &dyn Fn(usize) -> usize,
) -> f64 {
    let v = dec_b.len();
    // Blocks of as many rows as the scratch holds less the softmax's row (`SCORE_BLOCK` at most).
    let (scratch, tmp) = scratch.split_at_mut(scratch.len() - v);
    let block_rows = scratch.len() / v;
    assert!(block_rows > 0 || range.is_empty());
    // Columns past the packed ones are `dot_columns`, done as dot products.
    let packed_cols = dec.n();
    let mut loss = 0.0;
    let mut r = range.start;
    while r < range.end {
        let m = block_rows.min(range.end - r);
        let block = &mut scratch[..m * v];
        let states = &top[(r - range.start) * h..][..m * h];
        packed::matmul(m, block, v, false, states, h, dec);
        for (row, s) in block.chunks_exact_mut(v).zip(states.chunks_exact(h)) {
            for (q, o) in row.iter_mut().enumerate().skip(packed_cols) {
                *o = dot(s, &dec_w[q * h..(q + 1) * h]);
            }
            loss += nll(row, dec_b, target(r), tmp);
            r += 1;
        }
    }
    loss
}

/// What layer `l` passes up (to the layer above, or the decoder) over the window's positions:
/// its states S_0 … S_{T−1} (`states` holds S_{−1} first, b·H = `bh` values per step; `rows_h` =
/// T·b·H), or with dropout their masked copy.
fn passed_up<'a>(
    states: &'a [f32],
    dropped: &'a [Vec<f32>],
    l: usize,
    sh: &Shared,
    (bh, rows_h): (usize, usize),
) -> &'a [f32] {
    match sh.dropout {
        Some(_) => &dropped[l][..rows_h],
        None => &states[bh..bh + rows_h],
    }
}

/// Positions whose logits scoring holds at once, per thread: 96 × V floats (25 KB at V = 65,
/// 13 MB for a 33,000-word vocabulary) rather than a whole window's (T × B × V, gigabytes for
/// word-level streams).
const SCORE_BLOCK: usize = 96;

impl Work {
    fn run(&mut self, sh: &Shared, state: &[Vec<f32>]) {
        let (h, t_len, bsz) = (sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let act = sh.cfg.activation;
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;

        // ---- forward through the layers ----
        for l in 0..sh.cfg.layers {
            let (below, here) = self.hs.split_at_mut(l);
            let hs = &mut here[0];
            hs[..bh].copy_from_slice(&state[l][s0 * h..(s0 + b) * h]);
            // Layer 0's input term is a row per token, added after each step's product; a higher
            // layer's is a product of its own, for all steps at once, that the steps accumulate on.
            let input = if l == 0 {
                Input::Rows {
                    table: sh.u0_t,
                    hidden: h,
                    ids: sh.inputs,
                    stride: bsz,
                    first: s0,
                }
            } else {
                // P = X · U_lᵀ for all steps at once; U_l is (H × H) row-major. X is the layer
                // below's output, masked when training with dropout.
                let x = passed_up(&below[l - 1], &self.dropped, l - 1, sh, (bh, rows * h));
                mm(
                    rows,
                    h,
                    h,
                    &mut hs[bh..],
                    (h, 1),
                    false,
                    x,
                    (h, 1),
                    p.w_ih(l),
                    (1, h),
                );
                add_rows(&mut hs[bh..], &sh.bias[l]);
                Input::Ready
            };
            let wt = &sh.w_fwd[l];
            // Scoring with more threads than streams (one exact stream): share each step's
            // product by columns instead of leaving the helper threads idle until the decoder.
            let parts = if sh.backward {
                1
            } else {
                sh.column_parts.min(h.div_ceil(packed::NR))
            };
            if parts > 1 {
                recurrence_by_columns(hs, t_len, b, h, wt, act, &input, parts);
                continue;
            }
            for t in 0..t_len {
                let (prev, cur) = hs.split_at_mut((t + 1) * bh);
                let cur = &mut cur[..bh];
                let prev = &prev[t * bh..(t + 1) * bh];
                packed::matmul(b, cur, h, input.is_ready(), prev, h, wt);
                for (j, row) in cur.chunks_exact_mut(h).enumerate() {
                    input.activate(act, !sh.backward, t, j, row, 0);
                }
            }
            if let Some(d) = sh.dropout {
                // The copy of this layer's outputs that goes up, masked (the states themselves
                // stay as they are: the next step and the backward pass read them).
                self.masks.resize_with(sh.cfg.layers, Vec::new);
                self.dropped.resize_with(sh.cfg.layers, Vec::new);
                let (mask, out) = (&mut self.masks[l], &mut self.dropped[l]);
                mask.resize(rows * h, 0.0);
                out.resize(rows * h, 0.0);
                for (r, (m, (o, s))) in mask
                    .chunks_exact_mut(h)
                    .zip(out.chunks_exact_mut(h).zip(hs[bh..].chunks_exact(h)))
                    .enumerate()
                {
                    d.mask_row(l, r / b, s0 + r % b, m);
                    o.iter_mut()
                        .zip(m.iter().zip(s))
                        .for_each(|(o, (m, s))| *o = m * s);
                }
            }
        }

        // ---- decoder and loss ----
        if let Some(sm) = &sh.sampled {
            self.sampled_decoder(sh, sm);
        } else {
            self.full_decoder(sh);
        }
        if !sh.backward {
            return;
        }
        self.backward_through_time(sh);
    }

    /// The full softmax over the vocabulary: loss, and with `backward` the decoder's gradients and
    /// dS in `dh`.
    fn full_decoder(&mut self, sh: &Shared) {
        let (v, h, t_len, bsz) = (sh.cfg.vocab_size, sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;
        let top_l = sh.cfg.layers - 1;
        let top = passed_up(&self.hs[top_l], &self.dropped, top_l, sh, (bh, rows * h));
        let (dec_w, dec_b) = (p.dec_w(), p.dec_b());
        let scale = 1.0 / (t_len * bsz) as f32;
        if !sh.backward {
            // Scoring only: the positions' decoder rows are independent; with helper threads
            // (one exact stream) they are split over them and the losses added in order
            // (deterministic).
            let parts = sh.helpers.min(rows).max(1);
            let targets = |r: usize| sh.targets[(r / b) * bsz + s0 + r % b] as usize;
            // Each part's scratch: `SCORE_BLOCK` rows of logits and one row for the softmax, in
            // the buffer `score_with` lent.
            let per_part = (SCORE_BLOCK.min(rows.div_ceil(parts)) + 1) * v;
            if self.logits.len() < parts * per_part {
                self.logits.resize(parts * per_part, 0.0);
            }
            let logits = &mut self.logits[..parts * per_part];
            if parts == 1 {
                self.loss = score_rows(
                    top,
                    h,
                    0..rows,
                    logits,
                    sh.dec_fwd,
                    (dec_w, dec_b),
                    &targets,
                );
                return;
            }
            let mut pieces = Vec::with_capacity(parts);
            let mut rest = logits;
            let mut r0 = 0;
            for i in 0..parts {
                let r1 = rows * (i + 1) / parts;
                let (a, b) = rest.split_at_mut(per_part);
                pieces.push((r0..r1, a));
                rest = b;
                r0 = r1;
            }
            let losses: Vec<f64> = std::thread::scope(|sc| {
                let handles: Vec<_> = pieces
                    .into_iter()
                    .map(|(range, out)| {
                        let targets = &targets;
                        let top = &top[range.start * h..range.end * h];
                        let dec = (dec_w, dec_b);
                        sc.spawn(move || score_rows(top, h, range, out, sh.dec_fwd, dec, targets))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|hd| hd.join().expect("a scoring thread panicked"))
                    .collect()
            });
            self.loss = losses.iter().sum();
            return;
        }
        mm(
            rows,
            v,
            h,
            &mut self.logits,
            (v, 1),
            false,
            top,
            (h, 1),
            dec_w,
            (1, h),
        );
        let mut loss = 0.0;
        add_rows(&mut self.logits[..rows * v], dec_b);
        for (r, row) in self.logits[..rows * v].chunks_exact_mut(v).enumerate() {
            let (t, j) = (r / b, r % b);
            let y = sh.targets[t * bsz + s0 + j] as usize;
            loss += softmax_ce(row, y, scale);
        }
        self.loss = loss;
        let ng = self.grads.len();
        let (g_dec, g_rest) = self.grads.split_at_mut(ng - 2);
        let _ = g_dec;
        let (gw, gb) = g_rest.split_at_mut(1);
        mm(
            v,
            h,
            rows,
            &mut gw[0],
            (h, 1),
            false,
            &self.logits,
            (1, v),
            top,
            (h, 1),
        );
        col_sums(&self.logits, v, &mut gb[0]);
        mm(
            rows,
            h,
            v,
            &mut self.dh,
            (h, 1),
            false,
            &self.logits,
            (v, 1),
            dec_w,
            (h, 1),
        );
    }

    /// The sampled softmax: each position's logits are its target's and the K shared samples',
    /// row r of `logits` = [z(y_r), z(s_1) … z(s_K)], each corrected by −ln E[count]; a sample that
    /// is the position's own target is masked out. With `backward`, the gradients of the decoder
    /// rows involved (scattered into the full-size gradient) and dS in `dh`.
    fn sampled_decoder(&mut self, sh: &Shared, sm: &Sampled) {
        let (h, t_len, bsz) = (sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;
        let k = sm.sample.ids.len();
        let w = k + 1;
        let top_l = sh.cfg.layers - 1;
        let top = passed_up(&self.hs[top_l], &self.dropped, top_l, sh, (bh, rows * h));
        let (dec_w, dec_b) = (p.dec_w(), p.dec_b());
        let target = |r: usize| sh.targets[(r / b) * bsz + s0 + r % b] as usize;
        // Negatives: one (rows × H)·(H × K) product, then their corrected biases.
        mm(
            rows,
            k,
            h,
            &mut self.logits[1..],
            (w, 1),
            false,
            top,
            (h, 1),
            sm.dec_s,
            (1, h),
        );
        let scale = 1.0 / (t_len * bsz) as f32;
        let mut loss = 0.0;
        for r in 0..rows {
            let y = target(r);
            let row = &mut self.logits[r * w..(r + 1) * w];
            row[1..]
                .iter_mut()
                .zip(sm.bias_s)
                .for_each(|(z, c)| *z += c);
            let s_r = &top[r * h..(r + 1) * h];
            let dw = &dec_w[y * h..(y + 1) * h];
            row[0] = s_r.iter().zip(dw).map(|(a, b)| a * b).sum::<f32>() + dec_b[y]
                - sm.sample.log_expected(y as u32);
            let hit = sm.slot[y];
            if hit != u32::MAX {
                row[1 + hit as usize] = f32::MIN;
            }
            loss += softmax_ce(row, 0, scale);
            if hit != u32::MAX {
                row[1 + hit as usize] = 0.0;
            }
        }
        self.loss = loss;
        if !sh.backward {
            return;
        }
        let gb = self.grads.last_mut().expect("the decoder bias's gradient");
        gb.iter_mut().for_each(|x| *x = 0.0);
        // The decoder rows this share's gradient touches, compact: the K samples, then its
        // targets that are not among them (`execute` scatters them into the V × H gradient).
        for &id in &self.out_ids {
            self.out_row[id as usize] = u32::MAX;
        }
        self.out_ids.clear();
        for &id in &sm.sample.ids {
            self.out_row[id as usize] = self.out_ids.len() as u32;
            self.out_ids.push(id);
        }
        for r in 0..rows {
            let y = target(r);
            if self.out_row[y] == u32::MAX {
                self.out_row[y] = self.out_ids.len() as u32;
                self.out_ids.push(y as u32);
            }
        }
        self.dv_rows.clear();
        self.dv_rows.resize(self.out_ids.len() * h, 0.0);
        // dV_S = G_negᵀ · S, the first K rows; dc_S = column sums of G_neg.
        mm(
            k,
            h,
            rows,
            &mut self.dv_rows[..k * h],
            (h, 1),
            false,
            &self.logits[1..],
            (1, w),
            top,
            (h, 1),
        );
        // Row by row (contiguous), not column by column (a stride of K + 1 per read).
        for row in self.logits[..rows * w].chunks_exact(w) {
            for (&id, &g) in sm.sample.ids.iter().zip(&row[1..]) {
                gb[id as usize] += g;
            }
        }
        // dS = G_neg · V_S, then each target's own row.
        mm(
            rows,
            h,
            k,
            &mut self.dh,
            (h, 1),
            false,
            &self.logits[1..],
            (w, 1),
            sm.dec_s,
            (h, 1),
        );
        for r in 0..rows {
            let y = target(r);
            let g0 = self.logits[r * w];
            let s_r = &top[r * h..(r + 1) * h];
            let j = self.out_row[y] as usize;
            self.dv_rows[j * h..(j + 1) * h]
                .iter_mut()
                .zip(s_r)
                .for_each(|(a, s)| *a += g0 * s);
            gb[y] += g0;
            self.dh[r * h..(r + 1) * h]
                .iter_mut()
                .zip(&dec_w[y * h..(y + 1) * h])
                .for_each(|(d, v)| *d += g0 * v);
        }
    }

    /// dS (in `dh`) back through every layer and step: the recurrent and input gradients.
    fn backward_through_time(&mut self, sh: &Shared) {
        let (h, t_len, bsz) = (sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let act = sh.cfg.activation;
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;

        // ---- backward through time, top layer down ----
        for l in (0..sh.cfg.layers).rev() {
            if sh.dropout.is_some() {
                // `dh` holds the gradient of this layer's masked outputs: through the mask.
                self.dh
                    .iter_mut()
                    .zip(&self.masks[l])
                    .for_each(|(d, m)| *d *= m);
            }
            let hs = &self.hs[l];
            let w = &sh.w_bwd[l];
            for t in (0..t_len).rev() {
                let (cur, next) = self.dh.split_at_mut((t + 1) * bh);
                let cur = &mut cur[t * bh..];
                if t + 1 < t_len {
                    packed::matmul(b, cur, h, true, &next[..bh], h, w);
                }
                act_bwd(act, cur, &hs[(t + 1) * bh..(t + 2) * bh]);
            }
            // dW = dPᵀ · S_prev; db = Σ dP (for both biases).
            let base = 4 * l;
            mm(
                h,
                h,
                rows,
                &mut self.grads[base + 1],
                (h, 1),
                false,
                &self.dh,
                (1, h),
                &hs[..rows * h],
                (h, 1),
            );
            col_sums(&self.dh, h, &mut self.grads[base + 2]);
            let (a, bb) = self.grads.split_at_mut(base + 3);
            bb[0].copy_from_slice(&a[base + 2]);
            if l == 0 {
                // dU[:, x] += dP row for every position that read token x, into one compact row
                // per distinct token (`execute` scatters them into the H × V gradient).
                let read = |t: usize, j: usize| sh.inputs[t * bsz + s0 + j] as usize;
                for &x in &self.in_ids {
                    self.in_row[x as usize] = u32::MAX;
                }
                self.in_ids.clear();
                for t in 0..t_len {
                    for j in 0..b {
                        let x = read(t, j);
                        if self.in_row[x] == u32::MAX {
                            self.in_row[x] = 0;
                            self.in_ids.push(x as u32);
                        }
                    }
                }
                // In id order, here on this thread: `execute` then writes each row of U front to
                // back without sorting anything itself.
                self.in_ids.sort_unstable();
                for (r, &x) in self.in_ids.iter().enumerate() {
                    self.in_row[x as usize] = r as u32;
                }
                self.du_rows.clear();
                self.du_rows.resize(self.in_ids.len() * h, 0.0);
                for t in 0..t_len {
                    for j in 0..b {
                        let r = self.in_row[read(t, j)] as usize;
                        let src = &self.dh[t * bh + j * h..t * bh + (j + 1) * h];
                        self.du_rows[r * h..(r + 1) * h]
                            .iter_mut()
                            .zip(src)
                            .for_each(|(a, b)| *a += b);
                    }
                }
            } else {
                let x = passed_up(&self.hs[l - 1], &self.dropped, l - 1, sh, (bh, rows * h));
                mm(
                    h,
                    h,
                    rows,
                    &mut self.grads[base],
                    (h, 1),
                    false,
                    &self.dh,
                    (1, h),
                    x,
                    (h, 1),
                );
                mm(
                    rows,
                    h,
                    h,
                    &mut self.dx,
                    (h, 1),
                    false,
                    &self.dh,
                    (h, 1),
                    p.w_ih(l),
                    (h, 1),
                );
                std::mem::swap(&mut self.dh, &mut self.dx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_party_poisons_the_spin_barrier_instead_of_hanging_the_others() {
        let barrier = SpinBarrier::new(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    let _poison = Poison(&barrier);
                    panic!("a bug in one thread");
                });
                let _poison = Poison(&barrier);
                barrier.wait();
            })
        }));
        assert!(
            result.is_err(),
            "the waiting thread must not return normally"
        );
        // And without a panic the barrier just lets both through, twice.
        let barrier = SpinBarrier::new(2);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                barrier.wait();
                barrier.wait();
            });
            barrier.wait();
            barrier.wait();
        });
    }
}
