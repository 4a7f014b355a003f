//! One thread's share of a training window: its streams' forward pass through every layer, the
//! decoder (in `decoder.rs`), and back-propagation through time, layer by layer from the top, into
//! the thread's own gradient buffers (`frame.rs` sums them in thread order). The cell's own step is
//! `FusedCell::forward_layer` / `FusedCell::backward_layer`; what is common to every cell (the input term,
//! the recurrent product's packing, dropout, the weight gradients) is here; DropConnect on W_hh is
//! the caller's (`mod.rs` packs the thinned matrix and masks its gradient).

use super::frame::{Shared, Work};
use crate::cell::{BwdBufs, LayerBwd, LayerFwd, LayerInput, PreGrad, Window};
use crate::config::Param;
use crate::kernels::gemm::{col_sums, mm};
use crate::kernels::packed;

/// What layer `l` passes up (to the layer above, or the decoder) over the window's positions:
/// its states S_0 … S_{T−1} (`states` holds S_{−1} first, b·H = `bh` values per step; `rows_h` =
/// T·b·H), or with dropout their masked copy.
pub(super) fn passed_up<'a>(
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

impl Work {
    pub(super) fn run(&mut self, sh: &Shared, state: &[Vec<f32>]) {
        self.forward(sh, state);
        if let Some(sm) = &sh.sampled {
            self.sampled_decoder(sh, sm);
        } else {
            self.full_decoder(sh);
        }
        if sh.backward {
            self.backward_through_time(sh);
        }
    }

    /// Every layer's states over the window, bottom up, each from its carried state.
    fn forward(&mut self, sh: &Shared, state: &[Vec<f32>]) {
        let (h, t_len, bsz) = (sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let (rows, bh) = (t_len * b, b * h);
        let win = Window { t_len, b, h };
        // Scoring with more threads than streams (one exact stream): share each step's product
        // by columns instead of leaving the helper threads idle until the decoder.
        let column_parts = if sh.backward {
            1
        } else {
            sh.column_parts.min(h.div_ceil(packed::NR))
        };
        for l in 0..sh.cfg.layers {
            let (below, here) = self.layers.split_at_mut(l);
            let buf = &mut here[0];
            buf.states[..bh].copy_from_slice(&state[l][s0 * h..(s0 + b) * h]);
            if let Some(c) = state.get(sh.cfg.layers + l) {
                buf.cells[..bh].copy_from_slice(&c[s0 * h..(s0 + b) * h]);
            }
            // Layer 0 reads a row per token; a higher layer the layer below's output (masked
            // when training with dropout).
            let input = if l == 0 {
                LayerInput::Tokens {
                    table: sh.u0_t,
                    ids: sh.inputs,
                    stride: bsz,
                    first: s0,
                }
            } else {
                LayerInput::Dense {
                    x: passed_up(
                        &below[l - 1].states,
                        &self.dropped,
                        l - 1,
                        sh,
                        (bh, rows * h),
                    ),
                    w_ih: sh.params.get(Param::WeightIh(l)),
                    bias: &sh.bias[l],
                }
            };
            let cx = LayerFwd {
                win,
                w_fwd: &sh.w_fwd[l],
                b_hh: sh.params.get(Param::BiasHh(l)),
                scoring: !sh.backward,
                column_parts,
            };
            sh.cell.fused().forward_layer(&cx, &input, buf);
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
                    .zip(
                        out.chunks_exact_mut(h)
                            .zip(buf.states[bh..].chunks_exact(h)),
                    )
                    .enumerate()
                {
                    d.mask_row(l, r / b, s0 + r % b, m);
                    o.iter_mut()
                        .zip(m.iter().zip(s))
                        .for_each(|(o, (m, s))| *o = m * s);
                }
            }
        }
    }

    /// dS (in `dh`) back through every layer and step: the recurrent and input gradients.
    fn backward_through_time(&mut self, sh: &Shared) {
        let (h, t_len) = (sh.cfg.hidden, sh.bptt);
        let b = self.b;
        let g = sh.cell.gates() * h;
        let rows = t_len * b;
        let bh = b * h;
        let win = Window { t_len, b, h };
        for l in (0..sh.cfg.layers).rev() {
            if sh.dropout.is_some() {
                // `dh` holds the gradient of this layer's masked outputs: through the mask.
                self.dh
                    .iter_mut()
                    .zip(&self.masks[l])
                    .for_each(|(d, m)| *d *= m);
            }
            let cx = LayerBwd {
                win,
                w_bwd: &sh.w_bwd[l],
            };
            let mut bufs = BwdBufs {
                d_out: &mut self.dh,
                d_pre: &mut self.d_pre,
                d_rec: &mut self.d_rec,
                scratch: &mut self.bwd_scratch,
            };
            let where_ = sh
                .cell
                .fused()
                .backward_layer(&cx, &self.layers[l], &mut bufs);
            // The gradients with respect to the input term's and the recurrent term's
            // pre-activations (the same for all but a GRU).
            let (d_in, d_rec): (&[f32], &[f32]) = match where_ {
                PreGrad::InPlace => (&self.dh, &self.dh),
                PreGrad::Gates => (&self.d_pre, &self.d_pre),
                PreGrad::Split => (&self.d_pre, &self.d_rec),
            };
            let (d_in, d_rec) = (&d_in[..rows * g], &d_rec[..rows * g]);
            // dW = dPᵀ · S_prev; db = Σ dP for each bias.
            let (iw, ibi, ibh) = (
                sh.layout.index(Param::WeightHh(l)),
                sh.layout.index(Param::BiasIh(l)),
                sh.layout.index(Param::BiasHh(l)),
            );
            mm(
                g,
                h,
                rows,
                &mut self.grads[iw],
                (h, 1),
                false,
                d_rec,
                (1, g),
                &self.layers[l].states[..rows * h],
                (h, 1),
            );
            col_sums(d_in, g, &mut self.grads[ibi]);
            if where_ == PreGrad::Split {
                col_sums(d_rec, g, &mut self.grads[ibh]);
            } else {
                let db = std::mem::take(&mut self.grads[ibi]);
                self.grads[ibh].copy_from_slice(&db);
                self.grads[ibi] = db;
            }
            if l == 0 {
                self.input_rows_gradient(sh, g, where_);
            } else {
                let x = passed_up(
                    &self.layers[l - 1].states,
                    &self.dropped,
                    l - 1,
                    sh,
                    (bh, rows * h),
                );
                mm(
                    g,
                    h,
                    rows,
                    &mut self.grads[sh.layout.index(Param::WeightIh(l))],
                    (h, 1),
                    false,
                    d_in,
                    (1, g),
                    x,
                    (h, 1),
                );
                mm(
                    rows,
                    h,
                    g,
                    &mut self.dx,
                    (h, 1),
                    false,
                    d_in,
                    (g, 1),
                    sh.params.get(Param::WeightIh(l)),
                    (h, 1),
                );
                std::mem::swap(&mut self.dh, &mut self.dx);
            }
        }
    }

    /// dU[:, x] += dP row for every position that read token x, into one compact row per distinct
    /// token (`reduce` scatters them into the G × V gradient).
    fn input_rows_gradient(&mut self, sh: &Shared, g: usize, src: PreGrad) {
        let (t_len, bsz) = (sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
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
        // In id order, here on this thread: `reduce` then writes each row of U front to back
        // without sorting anything itself.
        self.in_ids.sort_unstable();
        for (r, &x) in self.in_ids.iter().enumerate() {
            self.in_row[x as usize] = r as u32;
        }
        self.du_rows.clear();
        self.du_rows.resize(self.in_ids.len() * g, 0.0);
        let bg = b * g;
        for t in 0..t_len {
            for j in 0..b {
                let r = self.in_row[read(t, j)] as usize;
                let d_in = match src {
                    PreGrad::InPlace => &self.dh,
                    PreGrad::Gates | PreGrad::Split => &self.d_pre,
                };
                let src = &d_in[t * bg + j * g..t * bg + (j + 1) * g];
                self.du_rows[r * g..(r + 1) * g]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(a, b)| *a += b);
            }
        }
        if let Some(d) = sh.embed_drop {
            // The input term was the token's row times its factor: so is its gradient (and,
            // through it, W_ih's and the embedding's below).
            for (r, &x) in self.in_ids.iter().enumerate() {
                let k = d.keep(x);
                self.du_rows[r * g..(r + 1) * g]
                    .iter_mut()
                    .for_each(|a| *a *= k);
            }
        }
        if let Some(e) = sh.cfg.embed {
            // Through the embedding: dW_ih = dPᵀ · E[x] summed over the tokens read, and each
            // token's embedding row gets dP · W_ih.
            let n = self.in_ids.len();
            let emb = sh.params.get(Param::Embedding);
            self.e_rows.clear();
            for &x in &self.in_ids {
                let x = x as usize;
                self.e_rows.extend_from_slice(&emb[x * e..(x + 1) * e]);
            }
            let iw = sh.layout.index(Param::WeightIh(0));
            mm(
                g,
                e,
                n,
                &mut self.grads[iw],
                (e, 1),
                false,
                &self.du_rows,
                (1, g),
                &self.e_rows,
                (e, 1),
            );
            self.de_rows.clear();
            self.de_rows.resize(n * e, 0.0);
            mm(
                n,
                e,
                g,
                &mut self.de_rows,
                (e, 1),
                false,
                &self.du_rows,
                (g, 1),
                sh.params.get(Param::WeightIh(0)),
                (e, 1),
            );
        }
    }
}
