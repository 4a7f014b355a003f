//! Stage 3b — the fast training path: one window of truncated BPTT written out by hand.
//!
//! The chapter's algorithm, with every product that is not sequential batched into one GEMM:
//!
//! ```text
//! forward   S_t = cell(P_t, S_{t−1}·Wᵀ)   P_t = U[x_t] + b        T sequential (B×H)·(H×G) GEMMs
//!           O   = S·Vᵀ + c                                     one (T·B×H)·(H×V) GEMM
//!           loss = mean CE(softmax(O), y);  dO = (softmax(O) − onehot(y)) / (T·B)
//! backward  dV = dOᵀ·S,  dc = Σ dO,  dS = dO·V                 three big GEMMs
//!           dP_t = cell′(dS_t + dP_{t+1}·W)                     T sequential GEMMs, t = T−1 … 0
//!           dW = dPᵀ·S_prev,  db = Σ dP,  dU[x_t] += dP_t      one big GEMM and a scatter
//! ```
//!
//! (For the Elman cell, G = H and cell(P, R) = σ(P + R).) Useful work is 6·(H² + H·V) FLOP per
//! token for an Elman layer (the one-hot input is a lookup). The B streams are independent, so they
//! are split across threads: each thread runs the whole window for its share of streams with its
//! own preallocated buffers, and the per-thread gradients are summed in thread order at the end
//! (deterministic for a given thread count). No step allocates.
//!
//! This file is the frame: parameters by role, the window's shared constants, the threads and the
//! reduce. One thread's forward and BPTT over its streams is `window.rs`; the cell's own step is in
//! `cell/` ([`FusedCell::forward_layer`], [`FusedCell::backward_layer`]); the decoder and loss in
//! `decoder.rs`; scoring's weights in `score.rs`. `model.rs`'s candle graph stays the reference: tests hold this path's loss and
//! gradients to it.

mod decoder;
mod score;
mod window;

pub use score::ScoreWeights;

use crate::cell::{Cell, LayerBuf, Window};
use crate::config::{ModelConfig, Param, ParamLayout};
use crate::kernels::gemm::mm;
use crate::kernels::packed::PackedB;
use crate::stochastic::Dropout;
use crate::stochastic::Sample;
use decoder::Sampled;

/// The parameters as flat row-major slices, in layout order, found by role.
pub struct Params<'a> {
    layout: ParamLayout,
    flat: Vec<&'a [f32]>,
}

impl<'a> Params<'a> {
    /// `flat` holds every parameter of `cfg` in layout order ([`ModelConfig::layout`]). Panics if
    /// a length disagrees with the layout.
    pub fn new(cfg: &ModelConfig, flat: Vec<&'a [f32]>) -> Params<'a> {
        let layout = cfg.layout();
        assert_eq!(flat.len(), layout.len(), "one slice per parameter");
        for ((n, s), (p, _)) in layout.sizes().zip(&flat).zip(layout.iter()) {
            assert_eq!(
                s.len(),
                n,
                "parameter {p:?} has {} values, not {n}",
                s.len()
            );
        }
        Params { layout, flat }
    }

    /// The values of `p`.
    pub fn get(&self, p: Param) -> &'a [f32] {
        self.flat[self.layout.index(p)]
    }
}

/// Runs `f` on the tensors' data as `Params`, read in place where a tensor is a contiguous f32 CPU
/// tensor (the model's own weights are: no copy of them, tens of MB at the word level), else
/// through a converted copy. The tensors are read-locked meanwhile: `f` must not write them.
pub fn with_params<R>(
    cfg: &ModelConfig,
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
    Ok(f(&Params::new(cfg, flat)))
}

/// One thread's buffers, sized once for its share of the streams.
struct Work {
    /// First stream and number of streams.
    s0: usize,
    b: usize,
    /// Per layer: its states S_{−1}, S_0 … S_{T−1} (each b×H) and the cell's own per-step values.
    layers: Vec<LayerBuf>,
    /// T·b × V: logits, then dO.
    logits: Vec<f32>,
    /// T·b × H: dS of the current layer (turned into dP in place by a one-gate cell).
    dh: Vec<f32>,
    /// T·b × H: dS for the layer below.
    dx: Vec<f32>,
    /// Gated cells: T·b × G, the gradient with respect to the pre-activations (and, where the
    /// recurrent side's differs, its own), and the cell's backward scratch.
    d_pre: Vec<f32>,
    d_rec: Vec<f32>,
    bwd_scratch: Vec<f32>,
    /// Layer 0's dU, compact: a row of G (dUᵀ) per distinct token this share read in the window,
    /// `in_ids[j]` (ascending) the token of row j; `execute` scatters them into the summed gradient. Only the
    /// columns of tokens read are non-zero, and a full G × V buffer per thread was tens of MB
    /// at the word level, cleared and summed every step.
    in_ids: Vec<u32>,
    du_rows: Vec<f32>,
    /// With an input embedding: the embeddings of `in_ids` (n × E), and the embedding's gradient
    /// rows for them (n × E), which `reduce` scatters like `du_rows`.
    e_rows: Vec<f32>,
    de_rows: Vec<f32>,
    /// Sampled softmax: the decoder's gradient rows, compact the same way: the K samples (in
    /// `Sample::ids` order), then this share's targets that are not among them.
    out_ids: Vec<u32>,
    dv_rows: Vec<f32>,
    /// Token → its row in `du_rows` / `dv_rows` (`u32::MAX` when none; reset every window).
    in_row: Vec<u32>,
    out_row: Vec<u32>,
    /// Gradients in layout order; layer 0's U (`in_ids`/`du_rows`) and, with the sampled
    /// softmax, the decoder weights (`out_ids`/`dv_rows`) are held compact instead.
    grads: Vec<Vec<f32>>,
    /// Dropout (training only; empty without it): per layer, T·b × H masks (0 or 1/(1 − p)) and
    /// the masked outputs that go up to the next layer or the decoder.
    masks: Vec<Vec<f32>>,
    dropped: Vec<Vec<f32>>,
    loss: f64,
}

/// The fused trainer for a fixed model shape, batch and window.
pub struct FusedWindow {
    pub config: ModelConfig,
    pub batch: usize,
    pub bptt: usize,
    cell: &'static dyn Cell,
    layout: ParamLayout,
    works: Vec<Work>,
    /// Layer 0's input term per token (V × G): row x = Uᵀ's row x + the input bias, contiguous;
    /// gathered for the tokens a window reads.
    u0_t: Vec<f32>,
    /// The input bias per layer (`Cell::input_bias`).
    bias: Vec<Vec<f32>>,
    /// Per layer, W packed once per window for the T sequential products that read it: as Wᵀ
    /// for the forward recurrence (S_{t−1}·Wᵀ) and as W for the backward one (dP_{t+1}·W).
    /// The `gemm` crate re-packed it inside every product (see `kernels/packed.rs`).
    w_fwd: Vec<PackedB>,
    w_bwd: Vec<PackedB>,
    /// Summed gradients, layout order.
    pub grads: Vec<Vec<f32>>,
    /// Sampled softmax: the sampled decoder rows (K × H), their biases corrected by ln E[count],
    /// and each id's place among them (u32::MAX when not sampled).
    dec_s: Vec<f32>,
    bias_s: Vec<f32>,
    slot: Vec<u32>,
    /// Scratch marks, one per token (all false between steps), and the tokens a window reads.
    seen: Vec<bool>,
    distinct: Vec<u32>,
    /// With an input embedding: the embeddings of `distinct` and their products with W_ih.
    table_scratch: Vec<f32>,
    /// Threads each stream-share may use for the decoder when only scoring (more threads than
    /// streams: `elman eval`'s single exact stream).
    helpers: usize,
    /// Threads that share each recurrence step of a stream-share when only scoring.
    column_parts: usize,
    /// Dropout for the next training window (`set_dropout`).
    dropout: Option<Dropout>,
}

/// How the threads of one fused window are used: decided here, once, from the streams and the
/// threads and cores there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ThreadPlan {
    /// One share of streams per thread.
    shares: usize,
    /// Threads beyond one per stream help only forward-only scoring's decoder.
    helpers: usize,
    /// Threads that split each recurrence step by columns when scoring (never more spinning
    /// threads than cores).
    column_parts: usize,
}

/// Multiply-adds of one step's recurrent product (one stream: H × gates·H) below which scoring
/// one stream keeps to one thread (as does a gated cell whose H is not a multiple of 16: its
/// steps are not split, and a helper for the decoder alone made it slower). Helpers meet at every step of the recurrence and are woken
/// for every window's decoder; under this, on this project's 2-core machines, one thread scored
/// as fast or faster (a GRU at H = 128, 300 k chars: 0.57 s alone, 0.71 s with a helper). At it
/// the Elman cell (H = 256) breaks even, and above it they pay (an LSTM at H = 256: 2.6 s alone,
/// 1.7–2.0 s with a helper).
const MIN_SHARED_STEP: usize = 1 << 16;

impl ThreadPlan {
    fn new(batch: usize, threads: usize, step_work: usize) -> ThreadPlan {
        let threads = if step_work < MIN_SHARED_STEP {
            threads.min(batch)
        } else {
            threads
        };
        let helpers = (threads.max(1) / batch.max(1)).max(1);
        let shares = threads.clamp(1, batch.max(1));
        let cores = crate::runtime::cores();
        ThreadPlan {
            shares,
            helpers,
            column_parts: helpers.min(cores / shares).max(1),
        }
    }
}

impl FusedWindow {
    pub fn new(config: ModelConfig, batch: usize, bptt: usize, threads: usize) -> FusedWindow {
        FusedWindow::build(config, batch, bptt, threads, true)
    }

    /// Buffers for `score_with` only: no gradients, no weights of its own (they come from a
    /// `ScoreWeights` that many of these may share). `threads` > 1 only helps fewer streams.
    pub fn for_scoring(
        config: ModelConfig,
        batch: usize,
        bptt: usize,
        threads: usize,
    ) -> FusedWindow {
        FusedWindow::build(config, batch, bptt, threads, false)
    }

    fn build(
        config: ModelConfig,
        batch: usize,
        bptt: usize,
        threads: usize,
        training: bool,
    ) -> FusedWindow {
        let cell = config.cell();
        let layout = config.layout();
        let (v, h, t) = (config.vocab_size, config.hidden, bptt);
        let g = cell.gates() * h;
        // Sizes of the buffers only training (or this struct's own weights) needs.
        let (tv, th) = if training { (v, h) } else { (0, 0) };
        // Whether the cell can split a step over threads (the gated cells only by whole panels
        // of each gate block).
        let step_work = if cell.fused().splits_steps(h) {
            h * g
        } else {
            0
        };
        let plan = ThreadPlan::new(batch, threads, step_work);
        let zeros = || -> Vec<Vec<f32>> {
            layout
                .sizes()
                .filter(|_| training)
                .map(|n| vec![0.0; n])
                .collect()
        };
        let u0 = layout.index(Param::WeightIh(0));
        // Training keeps a window's logits for the backward pass. Scoring's (`SCORE_BLOCK` rows
        // per helper thread) are lent by the caller of `score_with` for each call.
        let logits_len = |rows: usize| if training { rows * v } else { 0 };
        let grads = zeros();
        let works = (0..plan.shares)
            .map(|i| {
                let s0 = batch * i / plan.shares;
                let b = batch * (i + 1) / plan.shares - s0;
                let win = Window { t_len: t, b, h };
                Work {
                    s0,
                    b,
                    layers: (0..config.layers)
                        .map(|_| cell.fused().layer_buf(win))
                        .collect(),
                    logits: vec![0.0; logits_len(t * b)],
                    dh: vec![0.0; t * b * th],
                    dx: vec![0.0; t * b * th],
                    d_pre: vec![0.0; if g > h { t * b * th / h.max(1) * g } else { 0 }],
                    d_rec: vec![
                        0.0;
                        if cell.fused().splits_recurrent_grad() {
                            t * b * th / h.max(1) * g
                        } else {
                            0
                        }
                    ],
                    bwd_scratch: Vec::new(),
                    in_ids: Vec::new(),
                    du_rows: Vec::new(),
                    e_rows: Vec::new(),
                    de_rows: Vec::new(),
                    out_ids: Vec::new(),
                    dv_rows: Vec::new(),
                    in_row: vec![u32::MAX; tv],
                    out_row: vec![u32::MAX; tv],
                    // Held compact instead: layer 0's U with one-hot input (`du_rows`), or the
                    // embedding (`de_rows`) unless it is also the decoder.
                    grads: {
                        let mut gr = zeros();
                        let compact = match (config.embed, config.tied) {
                            (None, _) => Some(u0),
                            (Some(_), false) => Some(layout.index(Param::Embedding)),
                            (Some(_), true) => None,
                        };
                        if let Some(u) = compact.and_then(|i| gr.get_mut(i)) {
                            *u = Vec::new();
                        }
                        gr
                    },
                    masks: Vec::new(),
                    dropped: Vec::new(),
                    loss: 0.0,
                }
            })
            .collect();
        FusedWindow {
            config,
            batch,
            bptt,
            cell,
            layout,
            works,
            u0_t: vec![0.0; tv * if training { g } else { 0 }],
            bias: vec![vec![0.0; g]; config.layers],
            w_fwd: vec![PackedB::default(); config.layers],
            w_bwd: vec![PackedB::default(); config.layers],
            grads,
            dec_s: Vec::new(),
            bias_s: Vec::new(),
            slot: Vec::new(),
            seen: Vec::new(),
            distinct: Vec::new(),
            table_scratch: Vec::new(),
            helpers: plan.helpers,
            column_parts: plan.column_parts,
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
        let (dec_w, dec_b) = (
            params.get(Param::DecoderWeight),
            params.get(Param::DecoderBias),
        );
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
        let g = self.cell.gates() * h;
        assert_eq!(inputs.len(), t_len * self.batch);
        assert_eq!(targets.len(), t_len * self.batch);
        // Shared per-step constants.
        for l in 0..self.config.layers {
            let (bi, bh) = (params.get(Param::BiasIh(l)), params.get(Param::BiasHh(l)));
            self.cell.input_bias(bi, bh, &mut self.bias[l]);
        }
        // Uᵀ rows of the tokens this window reads (only those are looked up): a strided gather of
        // a few hundred columns, not a transpose of all V (which dominates at word level). Each
        // row holds layer 0's whole input term U x + b for its token, added once per step after
        // the recurrent product (no pre-filled states to stream through memory).
        self.seen.resize(v, false);
        self.distinct.clear();
        for &x in inputs {
            if !std::mem::replace(&mut self.seen[x as usize], true) {
                self.distinct.push(x);
            }
        }
        for &x in &self.distinct {
            self.seen[x as usize] = false;
        }
        input_table(
            &self.config,
            params,
            &self.distinct,
            &self.bias[0],
            &mut self.u0_t,
            &mut self.table_scratch,
            |x| x as usize,
        );
        // The optimizer changed W in place since the last window: pack it afresh.
        for l in 0..self.config.layers {
            let w = params.get(Param::WeightHh(l));
            self.w_fwd[l].pack(w, h, g, (1, h));
            self.w_bwd[l].pack(w, g, h, (h, 1));
        }
        let shared = Shared {
            cfg: self.config,
            cell: self.cell,
            layout: &self.layout,
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
}

/// Layer 0's input term for each token of `tokens`: the token's column of W_ih (one-hot input), or
/// its embedding times W_ihᵀ (one small product for all of them), plus the input `bias`; token x's
/// row goes to row `row_of(x)` of `table` (G floats a row). `scratch` holds the embeddings and
/// their products meanwhile.
pub(crate) fn input_table(
    cfg: &ModelConfig,
    params: &Params,
    tokens: &[u32],
    bias: &[f32],
    table: &mut [f32],
    scratch: &mut Vec<f32>,
    row_of: impl Fn(u32) -> usize,
) {
    let g = bias.len();
    let v = cfg.vocab_size;
    let w_ih = params.get(Param::WeightIh(0));
    match cfg.embed {
        None => {
            // Uᵀ rows of the tokens read: a strided gather of their columns, not a transpose of
            // all V (which dominates at word level).
            for &x in tokens {
                let r = row_of(x);
                let row = &mut table[r * g..(r + 1) * g];
                for (i, (o, b)) in row.iter_mut().zip(bias).enumerate() {
                    *o = w_ih[i * v + x as usize] + b;
                }
            }
        }
        Some(e) => {
            let n = tokens.len();
            let emb = params.get(Param::Embedding);
            scratch.clear();
            scratch.resize(n * (e + g), 0.0);
            let (rows, prod) = scratch.split_at_mut(n * e);
            for (j, &x) in tokens.iter().enumerate() {
                let x = x as usize;
                rows[j * e..(j + 1) * e].copy_from_slice(&emb[x * e..(x + 1) * e]);
            }
            // (n × E) · W_ihᵀ (E × G); W_ih is G × E row-major.
            mm(n, g, e, prod, (g, 1), false, rows, (e, 1), w_ih, (1, e));
            for (j, &x) in tokens.iter().enumerate() {
                let r = row_of(x);
                let row = &mut table[r * g..(r + 1) * g];
                for ((o, p), b) in row.iter_mut().zip(&prod[j * g..(j + 1) * g]).zip(bias) {
                    *o = p + b;
                }
            }
        }
    }
}

/// What every thread of a window reads.
struct Shared<'a> {
    cfg: ModelConfig,
    cell: &'static dyn Cell,
    layout: &'a ParamLayout,
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

/// Runs one window on the works (one thread each, the first on the caller's), sums the
/// gradients in thread order and hands back each layer's last state. Returns the summed loss.
fn execute(
    works: &mut [Work],
    grads: &mut [Vec<f32>],
    shared: &Shared,
    state: &mut [Vec<f32>],
) -> f64 {
    let (h, t_len) = (shared.cfg.hidden, shared.bptt);
    assert_eq!(
        state.len(),
        shared.cfg.layers * shared.cell.carried(),
        "the carried state is every layer's h (and an LSTM's c)"
    );
    let state_ref: &[Vec<f32>] = state;
    if works.len() == 1 {
        works[0].run(shared, state_ref);
    } else {
        // The first share on this thread, the others on the persistent team (threads spawned
        // per window can start on this core and wait there).
        crate::kernels::columns::team(works.len() - 1).in_place_scope(|sc| {
            let mut it = works.iter_mut();
            let first = it.next().expect("one work");
            for w in it {
                let sh = shared;
                sc.spawn(move |_| w.run(sh, state_ref));
            }
            first.run(shared, state_ref);
        });
    }
    if shared.backward {
        reduce(works, grads, shared);
    }
    // Hand back the last state: each layer's h, then (LSTM) each layer's c.
    let layers = shared.cfg.layers;
    let mut loss = 0.0;
    for w in works.iter() {
        loss += w.loss;
        for (i, st) in state.iter_mut().enumerate() {
            let buf = &w.layers[i % layers];
            let from = if i < layers { &buf.states } else { &buf.cells };
            let last = &from[t_len * w.b * h..(t_len + 1) * w.b * h];
            st[w.s0 * h..(w.s0 + w.b) * h].copy_from_slice(last);
        }
    }
    loss
}

/// Sums the threads' gradients in thread order (element by element the same sums as adding whole
/// buffers), then scatters the compact ones: layer 0's U (one-hot input) or the embedding's rows,
/// and with the sampled softmax the decoder's rows.
fn reduce(works: &[Work], grads: &mut [Vec<f32>], sh: &Shared) {
    let h = sh.cfg.hidden;
    let v = sh.cfg.vocab_size;
    let dec = sh.layout.index(Param::DecoderWeight);
    let sampled = sh.sampled.is_some();
    for (gi, g) in grads.iter_mut().enumerate() {
        // Under the sampled softmax the decoder's dense per-thread gradients are not written.
        if works[0].grads[gi].is_empty() || (gi == dec && sampled) {
            g.fill(0.0);
        } else {
            g.copy_from_slice(&works[0].grads[gi]);
            for w in &works[1..] {
                g.iter_mut().zip(&w.grads[gi]).for_each(|(a, b)| *a += b);
            }
        }
    }
    if sampled {
        // The decoder's weights (V × H) under the sampled softmax: each thread's rows.
        let g = &mut grads[dec];
        for w in works.iter() {
            for (j, &id) in w.out_ids.iter().enumerate() {
                let id = id as usize;
                g[id * h..(id + 1) * h]
                    .iter_mut()
                    .zip(&w.dv_rows[j * h..(j + 1) * h])
                    .for_each(|(a, b)| *a += b);
            }
        }
    }
    match sh.cfg.embed {
        None => {
            // Layer 0's U (G × V): each thread's compact columns. Row by row of U, so that the
            // writes run forward through memory (a token's column is G floats V apart).
            let g = &mut grads[sh.layout.index(Param::WeightIh(0))];
            let width = g.len() / v;
            for w in works.iter() {
                for (i, row) in g.chunks_exact_mut(v).enumerate() {
                    for (r, &x) in w.in_ids.iter().enumerate() {
                        row[x as usize] += w.du_rows[r * width + i];
                    }
                }
            }
        }
        Some(e) => {
            // The embedding (V × E): each thread's rows.
            let g = &mut grads[sh.layout.index(Param::Embedding)];
            for w in works.iter() {
                for (r, &x) in w.in_ids.iter().enumerate() {
                    let x = x as usize;
                    g[x * e..(x + 1) * e]
                        .iter_mut()
                        .zip(&w.de_rows[r * e..(r + 1) * e])
                        .for_each(|(a, b)| *a += b);
                }
            }
        }
    }
}
