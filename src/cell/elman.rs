//! The Elman cell of the chapter (§13.5): `s(t) = σ(U x(t) + W s(t−1) + b)`, σ tanh (default),
//! the book's sigmoid, or ReLU. One gate: the input term and the recurrent product are added,
//! with both stored biases (PyTorch's `bias_ih` + `bias_hh`) folded into the input term.
//!
//! ```text
//! forward   S_t = σ(P_t + S_{t−1}·Wᵀ)                 P_t = U[x_t] + b (a lookup) or X_t·Uᵀ + b
//! backward  dP_t = (dS_t + dP_{t+1}·W) ⊙ σ′(S_t)       σ′ from the output: 1 − s², s(1 − s), [s > 0]
//! ```

use super::fused::{BwdBufs, FusedCell, LayerBuf, LayerBwd, LayerFwd, LayerInput, PreGrad, Window};
use super::graph::{GraphCell, GraphWeights, LayerState};
use super::kind::{Activation, CellKind};
use super::seam::Cell;
use super::stream::{add_recurrent_gradient, StateGrad, StepRecord, StreamCell, StreamWeights};
use crate::kernels::columns;
use crate::kernels::gemm::{add_rows, mm};
use crate::kernels::math::{act_bwd, act_fwd, act_fwd_add, scoring_tanh, Nonlinearity};
use crate::kernels::packed;
use crate::kernels::scan::Recurrence;
use candle_core::Tensor;

/// The Elman cell with its nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elman {
    pub act: Activation,
}

impl Cell for Elman {
    fn kind(&self) -> CellKind {
        CellKind::Elman
    }

    fn input_bias(&self, b_ih: &[f32], b_hh: &[f32], out: &mut [f32]) {
        out.iter_mut()
            .zip(b_ih.iter().zip(b_hh))
            .for_each(|(o, (a, b))| *o = a + b);
    }

    fn gradient_bound_rate(&self, w_hh_norm: f64) -> Option<f64> {
        Some(w_hh_norm * self.act.max_slope())
    }

    fn scan(&self) -> Option<Recurrence> {
        Some(Recurrence::Plain(self.kernel()))
    }

    fn graph(&self) -> &dyn GraphCell {
        self
    }

    fn fused(&self) -> &dyn FusedCell {
        self
    }

    fn stream(&self) -> &dyn StreamCell {
        self
    }
}

// ── The graph form ─────────────────────────────────────────────────────────────────────

impl GraphCell for Elman {
    fn input_bias(&self, b_ih: &Tensor, b_hh: &Tensor) -> candle_core::Result<Tensor> {
        b_ih + b_hh
    }

    fn step(
        &self,
        w: &GraphWeights,
        x_proj: &Tensor,
        state: &LayerState,
    ) -> candle_core::Result<LayerState> {
        let pre = (x_proj + state.h.matmul(&w.w_hh_t)?)?.broadcast_add(&w.bias)?;
        Ok(LayerState {
            h: match self.act {
                Activation::Tanh => pre.tanh()?,
                Activation::Sigmoid => candle_nn::ops::sigmoid(&pre)?,
                Activation::Relu => pre.relu()?,
            },
            c: None,
        })
    }
}

// ── The fused CPU form ─────────────────────────────────────────────────────────────────

impl FusedCell for Elman {
    fn forward_layer(&self, cx: &LayerFwd, input: &LayerInput, buf: &mut LayerBuf) {
        let Window { t_len, b, h } = cx.win;
        let (bh, rows) = (b * h, t_len * b);
        let hs = &mut buf.states;
        // Layer 0's input term is a row per token, added after each step's product; a higher
        // layer's is a product of its own, for all steps at once, that the steps accumulate on.
        let ready = match *input {
            LayerInput::Tokens { .. } => false,
            LayerInput::Dense { x, w_ih, bias } => {
                // P = X · Uᵀ for all steps at once; U is (H × H) row-major.
                mm(
                    rows,
                    h,
                    h,
                    &mut hs[bh..],
                    (h, 1),
                    false,
                    x,
                    (h, 1),
                    w_ih,
                    (1, h),
                );
                add_rows(&mut hs[bh..], bias);
                true
            }
        };
        if cx.column_parts > 1 {
            self.forward_by_columns(cx, input, ready, hs);
            return;
        }
        for t in 0..t_len {
            let (prev, cur) = hs.split_at_mut((t + 1) * bh);
            let cur = &mut cur[..bh];
            let prev = &prev[t * bh..(t + 1) * bh];
            packed::matmul(b, cur, h, ready, prev, h, cx.w_fwd);
            for (j, row) in cur.chunks_exact_mut(h).enumerate() {
                self.activate(cx.scoring, input, h, t, j, row, 0);
            }
        }
    }

    fn splits_steps(&self, _h: usize) -> bool {
        // A step is split by columns of W, at any H.
        true
    }

    fn backward_layer(&self, cx: &LayerBwd, buf: &LayerBuf, g: &mut BwdBufs) -> PreGrad {
        let Window { t_len, b, h } = cx.win;
        let d_out = &mut *g.d_out;
        let bh = b * h;
        let hs = &buf.states;
        for t in (0..t_len).rev() {
            let (cur, next) = d_out.split_at_mut((t + 1) * bh);
            let cur = &mut cur[t * bh..];
            if t + 1 < t_len {
                packed::matmul(b, cur, h, true, &next[..bh], h, cx.w_bwd);
            }
            act_bwd(self.kernel(), cur, &hs[(t + 1) * bh..(t + 2) * bh]);
        }
        PreGrad::InPlace
    }
}

// ── The batch-1 form ───────────────────────────────────────────────────────────────────

impl StreamCell for Elman {
    fn scratch_len(&self, h: usize) -> usize {
        h
    }

    fn step(
        &self,
        w: &StreamWeights,
        x_proj: &[f32],
        rec: &[f32],
        h: &mut [f32],
        _c: &mut [f32],
        _scratch: &mut [f32],
    ) {
        for (i, p) in h.iter_mut().enumerate() {
            *p = x_proj[i] + (rec[i] + w.bias[i]);
        }
        act_fwd(self.kernel(), h);
    }

    fn backward(
        &self,
        w: &StreamWeights,
        after: &StepRecord,
        _before: &StepRecord,
        d: &mut StateGrad,
    ) {
        // δ(k) = Wᵀ (σ′(s(t−k+1)) ⊙ δ(k−1)); σ′ from the stored output s.
        let h = d.h.len();
        let scaled = &mut d.scratch[..h];
        for ((o, &dd), &si) in scaled.iter_mut().zip(d.h.iter()).zip(&after.h) {
            *o = self.act.derivative_from_output(si) as f64 * dd;
        }
        d.h.iter_mut().for_each(|x| *x = 0.0);
        add_recurrent_gradient(&w.w_hh, scaled, &mut d.h);
    }
}

impl Elman {
    /// Its nonlinearity as the element-wise kernels name it.
    fn kernel(&self) -> Nonlinearity {
        match self.act {
            Activation::Tanh => Nonlinearity::Tanh,
            Activation::Sigmoid => Nonlinearity::Sigmoid,
            Activation::Relu => Nonlinearity::Relu,
        }
    }

    /// `row` (columns `c0..` of stream j's product at step t; the table's rows are `h` wide)
    /// becomes σ(row + P). `scoring`: nothing will be differentiated, so tanh may take
    /// `scoring_tanh`'s faster road.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn activate(
        &self,
        scoring: bool,
        input: &LayerInput,
        h: usize,
        t: usize,
        j: usize,
        row: &mut [f32],
        c0: usize,
    ) {
        let add = match *input {
            LayerInput::Tokens {
                table,
                ids,
                stride,
                first,
            } => {
                let x = ids[t * stride + first + j] as usize;
                Some(&table[x * h + c0..][..row.len()])
            }
            LayerInput::Dense { .. } => None,
        };
        match (add, scoring && self.act == Activation::Tanh) {
            (_, true) => scoring_tanh(row, add),
            (Some(add), false) => act_fwd_add(self.kernel(), row, add),
            (None, false) => act_fwd(self.kernel(), row),
        }
    }

    /// The forward recurrence with each step's columns split over `cx.column_parts` threads
    /// (ranges of W's panels) that meet after every step (step t + 1 reads all of S_t): scoring
    /// one stream with threads to spare. `hs` holds S_{−1}, then (`ready`) P_0 … P_{T−1}.
    fn forward_by_columns(&self, cx: &LayerFwd, input: &LayerInput, ready: bool, hs: &mut [f32]) {
        let Window { t_len, b, h } = cx.win;
        let bh = b * h;
        let parts = cx.column_parts;
        let w = cx.w_fwd;
        assert!(hs.len() >= (t_len + 1) * bh && w.k() == h && w.n() == h);
        let panels = h.div_ceil(packed::NR);
        columns::by_columns(hs, parts, t_len, |states, t, i| {
            let (p0, p1) = (panels * i / parts, panels * (i + 1) / parts);
            let (c0, c1) = (p0 * packed::NR, (p1 * packed::NR).min(h));
            // SAFETY: rows t (read) and t + 1 (written) of `hs` are disjoint and inside it (the
            // assert above); in step t every thread writes only columns c0..c1 of its own panel
            // range in row t + 1, and row t was completed by all threads before the barrier that
            // ended step t − 1. Nothing else touches `hs` while the threads run.
            unsafe {
                let prev = std::slice::from_raw_parts(states.ptr().add(t * bh), bh);
                let cur = states.ptr().add((t + 1) * bh);
                packed::matmul_columns(b, cur, h, ready, prev, h, w, p0..p1);
                for r in 0..b {
                    let row = std::slice::from_raw_parts_mut(cur.add(r * h + c0), c1 - c0);
                    self.activate(true, input, h, t, r, row, c0);
                }
            }
        });
    }
}
