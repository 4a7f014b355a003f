//! The gated recurrent unit, exactly as PyTorch's `nn.GRU` defines it: three gate blocks stacked
//! by rows in `weight_ih_l{k}` / `weight_hh_l{k}` (3H × input, 3H × H) in the order r, z, n, with
//! b_hn inside the reset gate's product.
//!
//! ```text
//! r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)        z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
//! n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))
//! h(t) = (1 − z) ⊙ n + z ⊙ h(t−1)
//! ```
//!
//! b_ir + b_hr and b_iz + b_hz are folded into the input term, b_hn is not. The reset gate makes
//! the input term's gradient and the recurrent term's differ in the n block:
//!
//! ```text
//! dn = dh ⊙ (1 − z)   dP_n = dn ⊙ (1 − n²)   dP_z = dh ⊙ (h(t−1) − n) ⊙ z(1 − z)
//! dP_r = dP_n ⊙ (h W_hnᵀ + b_hn) ⊙ r(1 − r)
//! input side [dP_r, dP_z, dP_n]     recurrent side [dP_r, dP_z, dP_n ⊙ r]
//! dh(t−1) = recurrent side · W_hh + dh ⊙ z
//! ```

use super::fused::{BwdBufs, FusedCell, LayerBuf, LayerBwd, LayerFwd, LayerInput, PreGrad, Window};
use super::graph::{GraphCell, GraphWeights, LayerState};
use super::kind::CellKind;
use super::seam::Cell;
use super::stream::{add_recurrent_gradient, StateGrad, StepRecord, StreamCell, StreamWeights};
use crate::kernels::columns;
use crate::kernels::gemm::{add_rows, mm};
use crate::kernels::math::{act_fwd, act_fwd_add, scoring_sigmoid, scoring_tanh, Nonlinearity};
use crate::kernels::packed;
use crate::kernels::scan::Recurrence;
use candle_core::Tensor;

/// The GRU cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gru;

impl Cell for Gru {
    fn kind(&self) -> CellKind {
        CellKind::Gru
    }

    fn input_bias(&self, b_ih: &[f32], b_hh: &[f32], out: &mut [f32]) {
        let h2 = 2 * out.len() / 3;
        for (q, o) in out.iter_mut().enumerate() {
            *o = if q < h2 { b_ih[q] + b_hh[q] } else { b_ih[q] };
        }
    }

    fn gradient_bound_rate(&self, _w_hh_norm: f64) -> Option<f64> {
        None
    }

    fn scan(&self) -> Option<Recurrence> {
        Some(Recurrence::Gru)
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

impl GraphCell for Gru {
    fn input_bias(&self, b_ih: &Tensor, b_hh: &Tensor) -> candle_core::Result<Tensor> {
        let h = b_hh.dim(0)? / 3;
        let rz = b_hh.narrow(0, 0, 2 * h)?;
        let zeros = Tensor::zeros(h, b_hh.dtype(), b_hh.device())?;
        b_ih + Tensor::cat(&[&rz, &zeros], 0)?
    }

    fn step(
        &self,
        w: &GraphWeights,
        x_proj: &Tensor,
        state: &LayerState,
    ) -> candle_core::Result<LayerState> {
        let x = x_proj.broadcast_add(&w.bias)?;
        let rec = state.h.matmul(&w.w_hh_t)?;
        let (xs, rs) = (x.chunk(3, 1)?, rec.chunk(3, 1)?);
        let h = state.h.dim(1)?;
        let b_hn = w.b_hh.narrow(0, 2 * h, h)?.unsqueeze(0)?;
        let r = candle_nn::ops::sigmoid(&(&xs[0] + &rs[0])?)?;
        let z = candle_nn::ops::sigmoid(&(&xs[1] + &rs[1])?)?;
        let n = (&xs[2] + (r * rs[2].broadcast_add(&b_hn)?)?)?.tanh()?;
        // (1 − z) ⊙ n + z ⊙ h
        let next = ((&z * &state.h)? + ((1.0 - &z)? * n)?)?;
        Ok(LayerState { h: next, c: None })
    }
}

// ── The fused CPU form ─────────────────────────────────────────────────────────────────

impl FusedCell for Gru {
    fn splits_recurrent_grad(&self) -> bool {
        // r multiplies only the recurrent part of n.
        true
    }

    fn layer_buf(&self, win: Window) -> LayerBuf {
        let (rows, h) = (win.t_len * win.b, win.h);
        LayerBuf {
            states: vec![0.0; (win.t_len + 1) * win.b * h],
            cells: Vec::new(),
            // r, z, n and the recurrent n term (h W_hnᵀ + b_hn) of every step: T·b × 4H.
            cache: vec![0.0; rows * 4 * h],
            // The input term above layer 0: T·b × 3H.
            input: Vec::new(),
        }
    }

    fn forward_layer(&self, cx: &LayerFwd, input: &LayerInput, buf: &mut LayerBuf) {
        let Window { t_len, b, h } = cx.win;
        let (g3, g4) = (3 * h, 4 * h);
        let (bh, rows) = (b * h, t_len * b);
        if let LayerInput::Dense { x, w_ih, bias } = *input {
            buf.input.resize(rows * g3, 0.0);
            let p = &mut buf.input[..rows * g3];
            mm(rows, g3, h, p, (g3, 1), false, x, (h, 1), w_ih, (1, h));
            add_rows(p, bias);
        }
        let b_hn = &cx.b_hh[2 * h..3 * h];
        if cx.column_parts > 1 && h % packed::NR == 0 {
            // One stream with threads to spare (scoring): each step's units split over them.
            let input_rows = &buf.input;
            let point =
                |t: usize, j: usize, u0: usize, part: &mut [f32], prev: &[f32], out: &mut [f32]| {
                    let n = out.len();
                    let x_row: &[f32] = match input.token_row(g3, t, j) {
                        Some(row) => row,
                        None => &input_rows[(t * b + j) * g3..(t * b + j + 1) * g3],
                    };
                    // [R_r R_z R_n | scratch] for `step_pointwise`, then this thread's input term.
                    let (row, x) = part.split_at_mut(4 * n);
                    for (gate, xs) in x.chunks_exact_mut(n).enumerate() {
                        xs.copy_from_slice(&x_row[gate * h + u0..gate * h + u0 + n]);
                    }
                    let h_prev = &prev[u0..u0 + n];
                    step_pointwise(row, x, &b_hn[u0..u0 + n], h_prev, out, true);
                };
            let w = (cx.w_fwd, 3, 4, g4);
            let (states, cache) = (&mut buf.states, &mut buf.cache);
            columns::by_units(
                states,
                cache,
                (b, h, t_len),
                w,
                false,
                cx.column_parts,
                point,
            );
            return;
        }
        for t in 0..t_len {
            // The recurrent products r, z, n of every stream, into the first 3H of its cache row.
            // Scoring keeps nothing for a backward pass: every step reuses the first step's
            // rows, which stay in cache.
            let slot = if cx.scoring { 0 } else { t };
            let ct = &mut buf.cache[slot * b * g4..(slot + 1) * b * g4];
            let (done, next) = buf.states.split_at_mut((t + 1) * bh);
            let prev = &done[t * bh..];
            packed::matmul(b, ct, g4, false, prev, h, cx.w_fwd);
            for j in 0..b {
                let x_row: &[f32] = match input.token_row(g3, t, j) {
                    Some(row) => row,
                    None => &buf.input[(t * b + j) * g3..(t * b + j + 1) * g3],
                };
                let row = &mut ct[j * g4..(j + 1) * g4];
                let h_prev = &prev[j * h..(j + 1) * h];
                let out = &mut next[j * h..(j + 1) * h];
                step_pointwise(row, x_row, b_hn, h_prev, out, cx.scoring);
            }
        }
    }

    fn backward_layer(&self, cx: &LayerBwd, buf: &LayerBuf, g: &mut BwdBufs) -> PreGrad {
        let Window { t_len, b, h } = cx.win;
        let (g3, g4) = (3 * h, 4 * h);
        let bh = b * h;
        let bg = b * g3;
        for t in (0..t_len).rev() {
            let (done, rest) = g.d_out.split_at_mut(t * bh);
            let dh = &mut rest[..bh];
            if t + 1 < t_len {
                let next = &g.d_rec[(t + 1) * bg..(t + 2) * bg];
                packed::matmul(b, dh, h, true, next, g3, cx.w_bwd);
            }
            for j in 0..b {
                let c = &buf.cache[(t * b + j) * g4..(t * b + j + 1) * g4];
                let (r, rest) = c.split_at(h);
                let (z, rest) = rest.split_at(h);
                let (n, rn) = rest.split_at(h);
                let h_prev = &buf.states[t * bh + j * h..t * bh + (j + 1) * h];
                let d_in = &mut g.d_pre[t * bg + j * g3..t * bg + (j + 1) * g3];
                let d_rec = &mut g.d_rec[t * bg + j * g3..t * bg + (j + 1) * g3];
                let dhj = &dh[j * h..(j + 1) * h];
                for k in 0..h {
                    let dn_pre = dhj[k] * (1.0 - z[k]) * (1.0 - n[k] * n[k]);
                    let dz_pre = dhj[k] * (h_prev[k] - n[k]) * z[k] * (1.0 - z[k]);
                    let dr_pre = dn_pre * rn[k] * r[k] * (1.0 - r[k]);
                    d_in[k] = dr_pre;
                    d_in[h + k] = dz_pre;
                    d_in[2 * h + k] = dn_pre;
                    d_rec[k] = dr_pre;
                    d_rec[h + k] = dz_pre;
                    d_rec[2 * h + k] = dn_pre * r[k];
                }
                // The direct path h(t−1) → z ⊙ h(t−1).
                if t > 0 {
                    let below = &mut done[(t - 1) * bh + j * h..(t - 1) * bh + (j + 1) * h];
                    for k in 0..h {
                        below[k] += dhj[k] * z[k];
                    }
                }
            }
        }
        PreGrad::Split
    }
}

// ── The batch-1 form ───────────────────────────────────────────────────────────────────

impl StreamCell for Gru {
    fn scratch_len(&self, h: usize) -> usize {
        // r, z, n and the recurrent n term (what `StreamCell::backward` reads), then the input term
        // with its bias (3H) and h(t−1) (H).
        8 * h
    }

    fn step(
        &self,
        w: &StreamWeights,
        x_proj: &[f32],
        rec: &[f32],
        h: &mut [f32],
        _c: &mut [f32],
        scratch: &mut [f32],
    ) {
        let hdim = h.len();
        let (row, rest) = scratch.split_at_mut(4 * hdim);
        let (x, h_prev) = rest.split_at_mut(3 * hdim);
        row[..3 * hdim].copy_from_slice(rec);
        x.iter_mut()
            .zip(x_proj.iter().zip(&w.bias))
            .for_each(|(x, (p, b))| *x = p + b);
        h_prev.copy_from_slice(h);
        step_pointwise(row, x, &w.b_hh[2 * hdim..3 * hdim], h_prev, h, false);
    }

    fn backward(
        &self,
        w: &StreamWeights,
        after: &StepRecord,
        before: &StepRecord,
        d: &mut StateGrad,
    ) {
        let h = d.h.len();
        let c = &after.gates;
        let d_rec = &mut d.scratch[..3 * h];
        for k in 0..h {
            let (r, z, n, rn) = (
                c[k] as f64,
                c[h + k] as f64,
                c[2 * h + k] as f64,
                c[3 * h + k] as f64,
            );
            let dh = d.h[k];
            let dn_pre = dh * (1.0 - z) * (1.0 - n * n);
            let dz_pre = dh * (before.h[k] as f64 - n) * z * (1.0 - z);
            d_rec[k] = dn_pre * rn * r * (1.0 - r);
            d_rec[h + k] = dz_pre;
            d_rec[2 * h + k] = dn_pre * r;
            // The direct path first; the products are added below.
            d.h[k] = dh * z;
        }
        add_recurrent_gradient(&w.w_hh, d_rec, &mut d.h);
    }
}

/// One stream's step of the fused path: `row` holds the recurrent products [R_r, R_z, R_n] in
/// its first 3H (4H long); `x` is the input term with its folded bias (3H). Leaves r, z, n and
/// R_n + b_hn in `row` for the backward pass and writes h(t).
#[inline]
fn step_pointwise(
    row: &mut [f32],
    x: &[f32],
    b_hn: &[f32],
    h_prev: &[f32],
    out: &mut [f32],
    scoring: bool,
) {
    let h = out.len();
    let (rz, rest) = row.split_at_mut(2 * h);
    let (n, rn) = rest.split_at_mut(h);
    // R_n + b_hn moves to the last block; r and z from their sums.
    for k in 0..h {
        rn[k] = n[k] + b_hn[k];
    }
    if scoring {
        scoring_sigmoid(rz, Some(&x[..2 * h]));
    } else {
        act_fwd_add(Nonlinearity::Sigmoid, rz, &x[..2 * h]);
    }
    let (r, z) = rz.split_at(h);
    for k in 0..h {
        n[k] = x[2 * h + k] + r[k] * rn[k];
    }
    if scoring {
        scoring_tanh(n, None);
    } else {
        act_fwd(Nonlinearity::Tanh, n);
    }
    for k in 0..h {
        out[k] = (1.0 - z[k]) * n[k] + z[k] * h_prev[k];
    }
}
