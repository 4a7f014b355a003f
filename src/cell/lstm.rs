//! The long short-term memory cell, exactly as PyTorch's `nn.LSTM` defines it: four gate blocks
//! stacked by rows in `weight_ih_l{k}` / `weight_hh_l{k}` (4H × input, 4H × H) in the order
//! i, f, g, o, and a cell state c carried beside h. The chapter's answer to vanishing gradients:
//! the cell state is updated by addition, so ∂c(t)/∂c(t−1) = f, a gate the network learns to keep
//! near 1, instead of a product through σ′ ≤ 1/4 at every step.
//!
//! ```text
//! P = x W_ihᵀ + b_ih + h(t−1) W_hhᵀ + b_hh           (both biases are folded into the input term)
//! i = σ(P_i)   f = σ(P_f)   g = tanh(P_g)   o = σ(P_o)
//! c(t) = f ⊙ c(t−1) + i ⊙ g        h(t) = o ⊙ tanh(c(t))
//!
//! backward, given dh(t) (from above and from step t+1) and dc carried from step t+1:
//! dc = dh ⊙ o ⊙ (1 − tanh²c(t)) + dc_carry         dc_carry(t−1) = dc ⊙ f
//! dP_i = dc ⊙ g ⊙ i(1−i)   dP_f = dc ⊙ c(t−1) ⊙ f(1−f)   dP_g = dc ⊙ i ⊙ (1−g²)
//! dP_o = dh ⊙ tanh c(t) ⊙ o(1−o)                     dh(t−1) += dP · W_hh
//! ```

use super::fused::{BwdBufs, FusedCell, LayerBuf, LayerBwd, LayerFwd, LayerInput, PreGrad, Window};
use super::graph::{GraphCell, GraphWeights, LayerState};
use super::kind::CellKind;
use super::seam::Cell;
use super::stream::{add_recurrent_gradient, StateGrad, StepRecord, StreamCell, StreamWeights};
use crate::kernels::columns;
use crate::kernels::gemm::{add_rows, mm};
use crate::kernels::math::{act_fwd, lstm_scoring_step, Nonlinearity};
use crate::kernels::packed;
use crate::kernels::scan::Recurrence;
use candle_core::Tensor;

/// The LSTM cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lstm;

impl Cell for Lstm {
    fn kind(&self) -> CellKind {
        CellKind::Lstm
    }

    fn input_bias(&self, b_ih: &[f32], b_hh: &[f32], out: &mut [f32]) {
        out.iter_mut()
            .zip(b_ih.iter().zip(b_hh))
            .for_each(|(o, (a, b))| *o = a + b);
    }

    fn gradient_bound_rate(&self, _w_hh_norm: f64) -> Option<f64> {
        None
    }

    fn scan(&self) -> Option<Recurrence> {
        Some(Recurrence::Lstm)
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

impl GraphCell for Lstm {
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
        let chunks = pre.chunk(4, 1)?;
        let i = candle_nn::ops::sigmoid(&chunks[0])?;
        let f = candle_nn::ops::sigmoid(&chunks[1])?;
        let g = chunks[2].tanh()?;
        let o = candle_nn::ops::sigmoid(&chunks[3])?;
        let c_prev = state.c.as_ref().expect("an LSTM layer carries c");
        let c = ((f * c_prev)? + (i * g)?)?;
        let h = (o * c.tanh()?)?;
        Ok(LayerState { h, c: Some(c) })
    }
}

// ── The fused CPU form ─────────────────────────────────────────────────────────────────

impl FusedCell for Lstm {
    fn layer_buf(&self, win: Window) -> LayerBuf {
        let n = (win.t_len + 1) * win.b * win.h;
        LayerBuf {
            states: vec![0.0; n],
            cells: vec![0.0; n],
            // The four gates' values at every step (T·b × 4H).
            cache: vec![0.0; win.t_len * win.b * 4 * win.h],
            input: Vec::new(),
        }
    }

    fn forward_layer(&self, cx: &LayerFwd, input: &LayerInput, buf: &mut LayerBuf) {
        let Window { t_len, b, h } = cx.win;
        let g4 = 4 * h;
        let (bh, bg, rows) = (b * h, b * g4, t_len * b);
        let gates = &mut buf.cache;
        // Above layer 0 the input term of every step is one product, which each step's
        // recurrent product then accumulates onto.
        let ready = match *input {
            LayerInput::Tokens { .. } => false,
            LayerInput::Dense { x, w_ih, bias } => {
                let p = &mut gates[..rows * g4];
                mm(rows, g4, h, p, (g4, 1), false, x, (h, 1), w_ih, (1, h));
                add_rows(p, bias);
                true
            }
        };
        if cx.column_parts > 1 && h % packed::NR == 0 {
            self.forward_by_columns(cx, input, ready, buf);
            return;
        }
        for t in 0..t_len {
            // Scoring keeps no gates for a backward pass: with token input every step reuses
            // the first step's rows, which stay in cache (a window's worth, b·4H floats per
            // step, would be written to cold memory each step).
            let slot = if cx.scoring && !ready { 0 } else { t };
            let gt = &mut gates[slot * bg..(slot + 1) * bg];
            let prev = &buf.states[t * bh..(t + 1) * bh];
            packed::matmul(b, gt, g4, ready, prev, h, cx.w_fwd);
            let h_next = &mut buf.states[(t + 1) * bh..(t + 2) * bh];
            let (c_done, c_next) = buf.cells.split_at_mut((t + 1) * bh);
            for j in 0..b {
                let row = &mut gt[j * g4..(j + 1) * g4];
                if cx.scoring {
                    // The input term, activations and cell update in one pass.
                    let c_prev = &c_done[t * bh + j * h..t * bh + (j + 1) * h];
                    let c = &mut c_next[j * h..(j + 1) * h];
                    let out = &mut h_next[j * h..(j + 1) * h];
                    lstm_scoring_step(row, h, input.token_row(g4, t, j), c_prev, c, out);
                    continue;
                }
                if let Some(add) = input.token_row(g4, t, j) {
                    row.iter_mut().zip(add).for_each(|(r, a)| *r += a);
                }
                let c_prev = &c_done[t * bh + j * h..t * bh + (j + 1) * h];
                let c = &mut c_next[j * h..(j + 1) * h];
                let out = &mut h_next[j * h..(j + 1) * h];
                step_pointwise(row, c_prev, c, out);
            }
        }
    }

    fn backward_layer(&self, cx: &LayerBwd, buf: &LayerBuf, g: &mut BwdBufs) -> PreGrad {
        let Window { t_len, b, h } = cx.win;
        let g4 = 4 * h;
        let (bh, bg) = (b * h, b * g4);
        // Scratch: dc carried from step t + 1 (b × H), then tanh c(t) for one stream (H).
        g.scratch.clear();
        g.scratch.resize(bh + h, 0.0);
        let (carry, tc) = g.scratch.split_at_mut(bh);
        for t in (0..t_len).rev() {
            let dh = &mut g.d_out[t * bh..(t + 1) * bh];
            if t + 1 < t_len {
                let next = &g.d_pre[(t + 1) * bg..(t + 2) * bg];
                packed::matmul(b, dh, h, true, next, g4, cx.w_bwd);
            }
            for j in 0..b {
                let gates = &buf.cache[t * bg + j * g4..t * bg + (j + 1) * g4];
                let c = &buf.cells[(t + 1) * bh + j * h..(t + 1) * bh + (j + 1) * h];
                let c_prev = &buf.cells[t * bh + j * h..t * bh + (j + 1) * h];
                tc.copy_from_slice(c);
                act_fwd(Nonlinearity::Tanh, tc);
                let dp = &mut g.d_pre[t * bg + j * g4..t * bg + (j + 1) * g4];
                let dh = &dh[j * h..(j + 1) * h];
                let carry = &mut carry[j * h..(j + 1) * h];
                let (ig, rest) = gates.split_at(h);
                let (fg, rest) = rest.split_at(h);
                let (gg, og) = rest.split_at(h);
                let (dpi, rest) = dp.split_at_mut(h);
                let (dpf, rest) = rest.split_at_mut(h);
                let (dpg, dpo) = rest.split_at_mut(h);
                for k in 0..h {
                    let (i, f, gv, o) = (ig[k], fg[k], gg[k], og[k]);
                    let dc = dh[k] * o * (1.0 - tc[k] * tc[k]) + carry[k];
                    dpi[k] = dc * gv * i * (1.0 - i);
                    dpf[k] = dc * c_prev[k] * f * (1.0 - f);
                    dpg[k] = dc * i * (1.0 - gv * gv);
                    dpo[k] = dh[k] * tc[k] * o * (1.0 - o);
                    carry[k] = dc * f;
                }
            }
        }
        PreGrad::Gates
    }
}

// ── The batch-1 form ───────────────────────────────────────────────────────────────────

impl StreamCell for Lstm {
    fn scratch_len(&self, h: usize) -> usize {
        // The four gates, then c(t−1).
        5 * h
    }

    fn step(
        &self,
        w: &StreamWeights,
        x_proj: &[f32],
        rec: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        scratch: &mut [f32],
    ) {
        let hdim = h.len();
        let (pre, c_prev) = scratch.split_at_mut(4 * hdim);
        for (q, p) in pre.iter_mut().enumerate() {
            *p = x_proj[q] + (rec[q] + w.bias[q]);
        }
        c_prev.copy_from_slice(c);
        step_pointwise(pre, c_prev, c, h);
    }

    fn carried_from_output(&self, at: &StepRecord, d: &mut StateGrad) {
        let h = d.h.len();
        for k in 0..h {
            let (o, tc) = (at.gates[3 * h + k] as f64, (at.c[k] as f64).tanh());
            d.c[k] += d.h[k] * o * (1.0 - tc * tc);
        }
    }

    fn backward(
        &self,
        w: &StreamWeights,
        after: &StepRecord,
        before: &StepRecord,
        d: &mut StateGrad,
    ) {
        let h = d.h.len();
        let g = &after.gates;
        let dp = &mut d.scratch[..4 * h];
        for k in 0..h {
            let (i, f, gv, o) = (
                g[k] as f64,
                g[h + k] as f64,
                g[2 * h + k] as f64,
                g[3 * h + k] as f64,
            );
            let tc = (after.c[k] as f64).tanh();
            let dc = d.h[k] * o * (1.0 - tc * tc) + d.c[k];
            dp[k] = dc * gv * i * (1.0 - i);
            dp[h + k] = dc * before.c[k] as f64 * f * (1.0 - f);
            dp[2 * h + k] = dc * i * (1.0 - gv * gv);
            dp[3 * h + k] = d.h[k] * tc * o * (1.0 - o);
            d.c[k] = dc * f;
        }
        // dh(t−1) = W_hhᵀ dP.
        d.h.iter_mut().for_each(|x| *x = 0.0);
        add_recurrent_gradient(&w.w_hh, dp, &mut d.h);
    }
}

impl Lstm {
    /// The forward recurrence (scoring) with each step's units split over `cx.column_parts`
    /// threads (`columns::by_units`): one stream with threads to spare. A thread's c never
    /// leaves it. `cache` holds the gates (P_0 … P_{T−1} when `ready`).
    fn forward_by_columns(
        &self,
        cx: &LayerFwd,
        input: &LayerInput,
        ready: bool,
        buf: &mut LayerBuf,
    ) {
        let Window { t_len, b, h } = cx.win;
        let (g4, bh) = (4 * h, b * h);
        assert!(buf.cells.len() >= (t_len + 1) * bh);
        let cells = columns::SharedBuf::new(&mut buf.cells);
        let dims = (b, h, t_len);
        let w = (cx.w_fwd, 4, 0, g4);
        let point =
            |t: usize, j: usize, u0: usize, part: &mut [f32], _: &[f32], out: &mut [f32]| {
                let n = out.len();
                if let Some(a) = input.token_row(g4, t, j) {
                    for (gate, p) in part[..4 * n].chunks_exact_mut(n).enumerate() {
                        let a = &a[gate * h + u0..gate * h + u0 + n];
                        p.iter_mut().zip(a).for_each(|(x, a)| *x += a);
                    }
                }
                let at = j * h + u0;
                // SAFETY: this thread's units of `cells` rows t (which it wrote itself in step
                // t − 1, or the carried state) and t + 1; no other thread touches them.
                let (c_prev, c) = unsafe {
                    (
                        std::slice::from_raw_parts(cells.ptr().add(t * bh + at), n),
                        std::slice::from_raw_parts_mut(cells.ptr().add((t + 1) * bh + at), n),
                    )
                };
                lstm_scoring_step(part, n, None, c_prev, c, out);
            };
        columns::by_units(
            &mut buf.states,
            &mut buf.cache,
            dims,
            w,
            ready,
            cx.column_parts,
            point,
        );
    }
}

/// One stream's step after the products: `gates` (the 4H pre-activations, i f g o) become the
/// gate values in place (the backward pass reads them); c = f ⊙ c_prev + i ⊙ g; h = o ⊙ tanh(c).
/// Scoring runs `lstm_scoring_step` instead.
#[inline]
fn step_pointwise(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h: &mut [f32]) {
    let n = h.len();
    let (ifg, og) = gates.split_at_mut(3 * n);
    let (if_, gg) = ifg.split_at_mut(2 * n);
    act_fwd(Nonlinearity::Sigmoid, if_);
    act_fwd(Nonlinearity::Sigmoid, og);
    act_fwd(Nonlinearity::Tanh, gg);
    let (ig, fg) = if_.split_at(n);
    for k in 0..n {
        c[k] = fg[k] * c_prev[k] + ig[k] * gg[k];
        h[k] = c[k];
    }
    act_fwd(Nonlinearity::Tanh, h);
    h.iter_mut().zip(og.iter()).for_each(|(x, o)| *x *= o);
}
