//! The decoder and the loss of the fused window: o(t) = V s(t) + c for every position at once,
//! with the full softmax over the vocabulary or a sampled one (targets plus K shared negatives),
//! and scoring's forward-only version that holds a block of logits at a time.

use super::frame::{Sampled, Shared, Work};
use super::window::passed_up;
use crate::config::Param;
use crate::kernels::gemm::{add_rows, col_sums, mm};
use crate::kernels::math::{dot, nll, softmax_ce};
use crate::kernels::packed::{self, PackedB};

/// Columns of the decoder that scoring computes as dot products rather than in a panel of the
/// packed kernel: a last panel holding only a few real columns (V = 65 is 4 panels and 1 column)
/// would cost a whole panel's FLOPs for them.
pub(super) fn dot_columns(v: usize) -> usize {
    match v % packed::NR {
        tail if v > packed::NR && tail <= 4 => tail,
        _ => 0,
    }
}

/// Scoring's decoder for positions `range` of `top` (rows of width h): the logits of a block of
/// rows at a time into `out` (the range's rows × V), then −ln p of each row's target. Blocks keep
/// the states they read and the decoder's panels in cache between the product and the loss.
#[allow(clippy::too_many_arguments)]
pub(super) fn score_rows(
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

/// Positions whose logits scoring holds at once, per thread: 96 × V floats (25 KB at V = 65,
/// 13 MB for a 33,000-word vocabulary) rather than a whole window's (T × B × V, gigabytes for
/// word-level streams).
pub(super) const SCORE_BLOCK: usize = 96;

/// Scoring only (no gradient): −ln p of every position's target, summed. The positions'
/// decoder rows are independent; with helper threads (one exact stream) they are split over
/// them and the losses added in order (deterministic).
fn scoring_decoder(
    sh: &Shared,
    (b, s0): (usize, usize),
    top: &[f32],
    scratch: &mut Vec<f32>,
) -> f64 {
    let (v, h, t_len, bsz) = (sh.cfg.vocab_size, sh.cfg.hidden, sh.bptt, sh.batch);
    let rows = t_len * b;
    let p = sh.params;
    let (dec_w, dec_b) = (p.get(Param::DecoderWeight), p.get(Param::DecoderBias));
    // Scoring only: the positions' decoder rows are independent; with helper threads
    // (one exact stream) they are split over them and the losses added in order
    // (deterministic).
    let parts = sh.helpers.min(rows).max(1);
    let targets = |r: usize| sh.targets[(r / b) * bsz + s0 + r % b] as usize;
    // Each part's scratch: `SCORE_BLOCK` rows of logits and one row for the softmax, in
    // the buffer `score_with` lent.
    let per_part = (SCORE_BLOCK.min(rows.div_ceil(parts)) + 1) * v;
    if scratch.len() < parts * per_part {
        scratch.resize(parts * per_part, 0.0);
    }
    let logits = &mut scratch[..parts * per_part];
    if parts == 1 {
        return score_rows(
            top,
            h,
            0..rows,
            logits,
            sh.dec_fwd,
            (dec_w, dec_b),
            &targets,
        );
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
    // Part 0 on this thread, the others on the helper team (`columns::team`: threads spawned
    // per window would start on this core); the losses added in part order.
    let mut losses = vec![0f64; parts];
    let mut jobs = pieces.into_iter().zip(losses.iter_mut());
    let ((range0, out0), loss0) = jobs.next().expect("two parts or more");
    let dec = (dec_w, dec_b);
    let targets = &targets;
    crate::kernels::columns::team(parts - 1).in_place_scope(|sc| {
        for ((range, out), loss) in jobs {
            let top = &top[range.start * h..range.end * h];
            sc.spawn(move |_| *loss = score_rows(top, h, range, out, sh.dec_fwd, dec, targets));
        }
        let top = &top[range0.start * h..range0.end * h];
        *loss0 = score_rows(top, h, range0, out0, sh.dec_fwd, dec, targets);
    });
    losses.iter().sum()
}

impl Work {
    /// The full softmax over the vocabulary: loss, and with `backward` the decoder's gradients and
    /// dS in `dh`.
    pub(super) fn full_decoder(&mut self, sh: &Shared) {
        let (v, h, t_len, bsz) = (sh.cfg.vocab_size, sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;
        let top_l = sh.cfg.layers - 1;
        let top = passed_up(
            &self.layers[top_l].states,
            &self.dropped,
            top_l,
            sh,
            (bh, rows * h),
        );
        let (dec_w, dec_b) = (p.get(Param::DecoderWeight), p.get(Param::DecoderBias));
        let scale = 1.0 / (t_len * bsz) as f32;
        if !sh.backward {
            self.loss = scoring_decoder(sh, (self.b, self.s0), top, &mut self.logits);
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
        let (iw, ib) = (
            sh.layout.index(Param::DecoderWeight),
            sh.layout.index(Param::DecoderBias),
        );
        mm(
            v,
            h,
            rows,
            &mut self.grads[iw],
            (h, 1),
            false,
            &self.logits,
            (1, v),
            top,
            (h, 1),
        );
        col_sums(&self.logits, v, &mut self.grads[ib]);
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
    pub(super) fn sampled_decoder(&mut self, sh: &Shared, sm: &Sampled) {
        let (h, t_len, bsz) = (sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;
        let k = sm.sample.ids.len();
        let w = k + 1;
        let top_l = sh.cfg.layers - 1;
        let top = passed_up(
            &self.layers[top_l].states,
            &self.dropped,
            top_l,
            sh,
            (bh, rows * h),
        );
        let (dec_w, dec_b) = (p.get(Param::DecoderWeight), p.get(Param::DecoderBias));
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
        if sh.backward {
            self.sampled_decoder_backward(sh, sm);
        }
    }

    /// The sampled softmax's gradients: the decoder rows involved (compact, scattered into the
    /// full-size gradient by `reduce`), their biases, and dS in `dh`. `logits` holds each row's
    /// (softmax − onehot) / (T·B) from the forward part.
    fn sampled_decoder_backward(&mut self, sh: &Shared, sm: &Sampled) {
        let (h, t_len, bsz) = (sh.cfg.hidden, sh.bptt, sh.batch);
        let (b, s0) = (self.b, self.s0);
        let p = sh.params;
        let rows = t_len * b;
        let bh = b * h;
        let k = sm.sample.ids.len();
        let w = k + 1;
        let top_l = sh.cfg.layers - 1;
        let top = passed_up(
            &self.layers[top_l].states,
            &self.dropped,
            top_l,
            sh,
            (bh, rows * h),
        );
        let dec_w = p.get(Param::DecoderWeight);
        let target = |r: usize| sh.targets[(r / b) * bsz + s0 + r % b] as usize;
        let gb = &mut self.grads[sh.layout.index(Param::DecoderBias)];
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
}
