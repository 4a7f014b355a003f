//! Stage 3b — the fused training path: one window of truncated BPTT written out by hand.
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
//! This file is `FusedWindow`: the window's shared constants, W packed once per window, the
//! thread plan. What every thread shares (parameters by role, buffers, running the threads and
//! the reduce) is `frame.rs`; one thread's forward and BPTT over its streams is `window.rs`; the
//! cell's own step is in `cell/` ([`FusedCell::forward_layer`], [`FusedCell::backward_layer`]);
//! the decoder and loss in `decoder.rs`; scoring in `score.rs`. `model.rs`'s candle graph stays
//! the reference: tests hold this path's loss and gradients to it.
//!
//! [`FusedCell::forward_layer`]: crate::cell::FusedCell::forward_layer
//! [`FusedCell::backward_layer`]: crate::cell::FusedCell::backward_layer

mod decoder;
mod frame;
pub mod score;
mod window;

pub use frame::{with_params, Params};

use crate::cell::{Cell, Window};
use crate::config::{ModelConfig, Param, ParamLayout};
use crate::kernels::packed::PackedB;
use crate::stochastic::Masks;
use crate::stochastic::Sample;
use frame::{execute, input_table, Sampled, Shared, Work};

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
    /// The masks of the next training window (`set_masks`).
    masks: Masks,
    /// DropConnect: each layer's W_hh mask and the thinned W_hh that is packed instead of W_hh.
    w_mask: Vec<Vec<f32>>,
    w_thin: Vec<f32>,
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
            masks: Masks::default(),
            w_mask: Vec::new(),
            w_thin: Vec::new(),
        }
    }

    /// The masks of the windows that follow (a rate of 0: none); their `step` picks them, so set
    /// them before every window.
    pub fn set_masks(&mut self, masks: Masks) {
        self.masks = masks.active();
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
            self.masks.embed_drop.as_ref(),
            &mut self.u0_t,
            &mut self.table_scratch,
            |x| x as usize,
        );
        // The optimizer changed W in place since the last window: pack it afresh (with
        // DropConnect, the window's thinned W ⊙ M instead).
        self.w_mask.resize_with(self.config.layers, Vec::new);
        for l in 0..self.config.layers {
            let mut w = params.get(Param::WeightHh(l));
            if let Some(d) = self.masks.weight_drop {
                let mask = &mut self.w_mask[l];
                mask.resize(w.len(), 0.0);
                d.mask(l, mask);
                self.w_thin.clear();
                self.w_thin
                    .extend(w.iter().zip(mask.iter()).map(|(w, m)| w * m));
                w = &self.w_thin;
            }
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
            dropout: self.masks.dropout,
            embed_drop: self.masks.embed_drop,
            sampled: sample.map(|smp| Sampled {
                sample: smp,
                dec_s: &self.dec_s,
                bias_s: &self.bias_s,
                slot: &self.slot,
            }),
        };
        let loss = execute(&mut self.works, &mut self.grads, &shared, state);
        if self.masks.weight_drop.is_some() {
            // The window ran on W ⊙ M: dL/dW = dL/d(W ⊙ M) ⊙ M.
            for l in 0..self.config.layers {
                let gw = &mut self.grads[self.layout.index(Param::WeightHh(l))];
                gw.iter_mut()
                    .zip(&self.w_mask[l])
                    .for_each(|(g, m)| *g *= m);
            }
        }
        loss
    }
}
