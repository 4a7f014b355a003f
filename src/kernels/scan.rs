//! A layer's recurrence over a whole window as one operation: what a GPU runs as one persistent
//! kernel (`cuda/scan.cu`) instead of T small launches. [`Recurrence`] names the three forms: the
//! plain one of the Elman cell, the LSTM's and the GRU's.
//!
//! ```text
//! plain     forward   S_t = σ(P_t + S_{t−1}·Wᵀ)             t = 0 … T−1, S_{−1} = h0
//!           backward  D_t = σ′(S_t) ⊙ (G_t + D_{t+1}·W)      t = T−1 … 0, D_T = 0
//! LSTM      forward   Z = P_t + h_{t−1}·Wᵀ (i, f, g, o), c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh c_t
//!           backward  dh_t = G_h + dZ_{t+1}·W, dc_t = G_c + dc_{t+1}⊙f_{t+1}; dZ_t as in cell/lstm.rs
//! GRU       forward   A = h_{t−1}·Wᵀ (r, z, n), r = σ(P_r + A_r), z = σ(P_z + A_z),
//!                     n = tanh(P_n + r⊙(A_n + b_hn)), h_t = (1 − z)⊙n + z⊙h_{t−1}
//!           backward  dh_t = G_h + dA_{t+1}·W + z_{t+1}⊙dh_{t+1}; dP_t, dA_t as in cell/gru.rs
//! ```
//!
//! Everything is time-major: P and D are (T, B, gates·H); the forward's output Y is (T, B, saved·H)
//! (the plain form saves S; the LSTM h, c, i, f, g, o and c_{t−1}; the GRU h, r, z, n, A_n + b_hn
//! and h_{t−1}: the backward needs no product again); G, the gradient reaching Y from outside,
//! has Y's shape. W is (gates·H, H) row-major as PyTorch stores `weight_hh` (the GRU's with b_hn
//! as one more row: it sits inside the reset gate's product); the backward reads Wᵀ,
//! (H, gates·H), so that in both
//! directions a unit's work is dot products with rows of one matrix. That is the CUDA kernels'
//! shape: a block owns units and keeps their rows on chip for all T steps. The plain loops here
//! are their reference (the tests hold the network built on them to candle's per-step graph).
//!
//! [`Plan`] is the CUDA kernels' launch arithmetic, kept here in plain Rust so that it is tested
//! on machines without a GPU: how many blocks (never more than can be resident at once, since the
//! blocks wait for each other between steps), how many units each owns, and whether their rows fit
//! in shared memory.

use super::math::{act_fwd_scalar, Nonlinearity};

/// Which recurrence a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// S_t = σ(P_t + S_{t−1}·Wᵀ).
    Plain(Nonlinearity),
    /// PyTorch's LSTM: gates i, f, g, o; h and c carried.
    Lstm,
    /// PyTorch's GRU: gates r, z, n; b_hn inside the reset gate's product.
    Gru,
}

impl Recurrence {
    /// Gate blocks of P, W and D's first part.
    pub fn gates(self) -> usize {
        match self {
            Recurrence::Plain(_) => 1,
            Recurrence::Lstm => 4,
            Recurrence::Gru => 3,
        }
    }

    /// The gate block of `bias_hh` that stays inside the recurrence (the GRU's b_hn): it is
    /// passed as W's last row. `None`: all of it is folded into P.
    pub fn inner_bias_block(self) -> Option<usize> {
        match self {
            Recurrence::Gru => Some(2),
            _ => None,
        }
    }

    /// Vectors of H carried from step to step (the first state's width: h, then c).
    pub fn carried(self) -> usize {
        match self {
            Recurrence::Plain(_) | Recurrence::Gru => 1,
            Recurrence::Lstm => 2,
        }
    }

    /// Vectors of H saved per position (Y's width): h first, then the carried c.
    pub fn saved(self) -> usize {
        match self {
            Recurrence::Plain(_) => 1,
            Recurrence::Lstm => 7,
            Recurrence::Gru => 6,
        }
    }

    /// Vectors of H the backward gives per position: ∂L/∂P, then (LSTM) ∂L/∂c_{t−1}; the GRU's
    /// are dP_r, dP_z, dA_n, dP_n, then z⊙dh (∂L/∂h_{t−1} past the product), so that the
    /// recurrent side [dP_r, dP_z, dA_n] is one run.
    pub fn back(self) -> usize {
        match self {
            Recurrence::Plain(_) => 1,
            Recurrence::Lstm | Recurrence::Gru => 5,
        }
    }

    /// The code the CUDA kernels take (`cuda/scan.cu`'s `act`): 0–2 the plain form's tanh,
    /// sigmoid, ReLU; 3 the LSTM; 4 the GRU.
    pub fn code(self) -> i32 {
        match self {
            Recurrence::Plain(Nonlinearity::Tanh) => 0,
            Recurrence::Plain(Nonlinearity::Sigmoid) => 1,
            Recurrence::Plain(Nonlinearity::Relu) => 2,
            Recurrence::Lstm => 3,
            Recurrence::Gru => 4,
        }
    }
}

/// σ′ from σ's output: 1 − s², s(1 − s), [s > 0].
#[inline]
fn slope_from_output(act: Nonlinearity, s: f32) -> f32 {
    match act {
        Nonlinearity::Tanh => 1.0 - s * s,
        Nonlinearity::Sigmoid => s * (1.0 - s),
        Nonlinearity::Relu => {
            if s > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    act_fwd_scalar(Nonlinearity::Sigmoid, x)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Forward: `y` (T·B·saved·H) from `p` (T·B·gates·H), `w` (gates·H·H, then the GRU's b_hn) and
/// the first state `s0` (B·carried·H: each stream's h, then its c), for `b` streams.
pub fn forward(rec: Recurrence, p: &[f32], w: &[f32], s0: &[f32], y: &mut [f32], b: usize) {
    let (g, k, carried) = (rec.gates(), rec.saved(), rec.carried());
    let h = s0.len() / (b * carried).max(1);
    let extra = rec.inner_bias_block().map_or(0, |_| h);
    assert_eq!(
        w.len(),
        g * h * h + extra,
        "W is (gates·H, H), then the inner bias"
    );
    let inner_bias = &w[g * h * h..];
    let t_len = p.len() / (b * g * h).max(1);
    assert_eq!(y.len(), t_len * b * k * h, "Y is (T, B, saved·H)");
    // The recurrent product A = h_{t−1}·Wᵀ of one stream.
    let mut a = vec![0f32; g * h];
    for t in 0..t_len {
        for i in 0..b {
            // The previous h and (LSTM) c: the first state, or Y's first slots at t − 1.
            let prev: Vec<f32> = if t == 0 {
                s0[i * carried * h..(i + 1) * carried * h].to_vec()
            } else {
                let at = ((t - 1) * b + i) * k * h;
                y[at..at + carried * h].to_vec()
            };
            let (h_prev, c_prev) = prev.split_at(h);
            for (r, ar) in a.iter_mut().enumerate() {
                *ar = dot(&w[r * h..(r + 1) * h], h_prev);
            }
            let pt = &p[(t * b + i) * g * h..(t * b + i + 1) * g * h];
            let out = &mut y[(t * b + i) * k * h..(t * b + i + 1) * k * h];
            for u in 0..h {
                let slots: &[f32] = match rec {
                    Recurrence::Plain(act) => &[act_fwd_scalar(act, pt[u] + a[u])],
                    Recurrence::Lstm => {
                        let ig = sigmoid(pt[u] + a[u]);
                        let fg = sigmoid(pt[h + u] + a[h + u]);
                        let gg = (pt[2 * h + u] + a[2 * h + u]).tanh();
                        let og = sigmoid(pt[3 * h + u] + a[3 * h + u]);
                        let c = fg * c_prev[u] + ig * gg;
                        &[og * c.tanh(), c, ig, fg, gg, og, c_prev[u]]
                    }
                    Recurrence::Gru => {
                        let r = sigmoid(pt[u] + a[u]);
                        let z = sigmoid(pt[h + u] + a[h + u]);
                        let hn = a[2 * h + u] + inner_bias[u];
                        let n = (pt[2 * h + u] + r * hn).tanh();
                        &[(1.0 - z) * n + z * h_prev[u], r, z, n, hn, h_prev[u]]
                    }
                };
                for (s, &v) in slots.iter().enumerate() {
                    out[s * h + u] = v;
                }
            }
        }
    }
}

/// Backward: `d` (T·B·back·H) from the forward's `y`, `wt` = Wᵀ (H·gates·H, row k: unit k's column
/// of every gate) and `gy`, the gradient reaching `y` from outside the recurrence (the layer above,
/// the decoder). The forward's loop run backwards in time.
pub fn backward(rec: Recurrence, y: &[f32], wt: &[f32], gy: &[f32], d: &mut [f32], b: usize) {
    let (g, k, nb) = (rec.gates(), rec.saved(), rec.back());
    let h = (wt.len() / g).isqrt();
    assert_eq!(wt.len(), g * h * h, "Wᵀ is (H, gates·H)");
    assert_eq!(y.len(), gy.len());
    let t_len = y.len() / (b * k * h).max(1);
    assert_eq!(d.len(), t_len * b * nb * h);
    for t in (0..t_len).rev() {
        let (now, next) = d.split_at_mut((t + 1) * b * nb * h);
        for i in 0..b {
            let at = (t * b + i) * k * h;
            let (yt, gt) = (&y[at..at + k * h], &gy[at..at + k * h]);
            let dn = (t + 1 < t_len).then(|| &next[i * nb * h..(i + 1) * nb * h]);
            let out = &mut now[(t * b + i) * nb * h..(t * b + i + 1) * nb * h];
            for u in 0..h {
                // ∂L/∂h_t: from outside, and through every gate of step t + 1.
                let dh =
                    gt[u] + dn.map_or(0.0, |dn| dot(&wt[u * g * h..(u + 1) * g * h], &dn[..g * h]));
                match rec {
                    Recurrence::Plain(act) => out[u] = slope_from_output(act, yt[u]) * dh,
                    Recurrence::Lstm => {
                        let [_, c, ig, fg, gg, og, cp] = std::array::from_fn(|s| yt[s * h + u]);
                        let tc = c.tanh();
                        // ∂L/∂c_t: from outside, through h_t, and carried from t + 1.
                        let dc = gt[h + u]
                            + dh * og * (1.0 - tc * tc)
                            + dn.map_or(0.0, |dn| dn[4 * h + u]);
                        let di = dc * gg + gt[2 * h + u];
                        let df = dc * cp + gt[3 * h + u];
                        let dg = dc * ig + gt[4 * h + u];
                        let d_o = dh * tc + gt[5 * h + u];
                        out[u] = di * ig * (1.0 - ig);
                        out[h + u] = df * fg * (1.0 - fg);
                        out[2 * h + u] = dg * (1.0 - gg * gg);
                        out[3 * h + u] = d_o * og * (1.0 - og);
                        out[4 * h + u] = dc * fg + gt[6 * h + u];
                    }
                    Recurrence::Gru => {
                        let [_, r, z, n, hn, hp] = std::array::from_fn(|s| yt[s * h + u]);
                        // Past the product, h_t reached h_{t+1} as z_{t+1}⊙h_t.
                        let dh = dh + dn.map_or(0.0, |dn| dn[4 * h + u]);
                        let dn_ = dh * (1.0 - z) + gt[3 * h + u];
                        let dz = dh * (hp - n) + gt[2 * h + u];
                        let dpn = dn_ * (1.0 - n * n);
                        let dr = dpn * hn + gt[h + u];
                        out[u] = dr * r * (1.0 - r);
                        out[h + u] = dz * z * (1.0 - z);
                        out[2 * h + u] = dpn * r + gt[4 * h + u];
                        out[3 * h + u] = dpn;
                        out[4 * h + u] = dh * z + gt[5 * h + u];
                    }
                }
            }
        }
    }
}

/// Threads per block of the CUDA scan kernels: 8 warps, each computing whole dot products.
pub const THREADS: u32 = 256;
/// The shared memory a block may use without asking the driver for more (48 KiB).
pub const SHARED_LIMIT: usize = 48 * 1024;

/// How the CUDA scan kernel is launched for one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Blocks: at most one per multiprocessor, so all are resident and can wait for each other.
    pub blocks: u32,
    /// Units each block owns (with every gate's row of W); the last block may own fewer.
    pub rows: u32,
    /// Bytes of shared memory per block: its units' rows of W (every gate's), or 0 when they do
    /// not fit (then they are read from global memory, where the L2 cache holds them).
    pub shared_bytes: u32,
}

impl Plan {
    /// The launch for `hidden` units of `gates` gate blocks on a GPU with `sms` multiprocessors.
    pub fn new(sms: usize, hidden: usize, gates: usize) -> Plan {
        let sms = sms.max(1);
        // Rows per block so that every multiprocessor has work, and no block is idle.
        let rows = hidden.div_ceil(sms).max(1);
        let blocks = hidden.div_ceil(rows);
        let bytes = rows * gates * hidden * std::mem::size_of::<f32>();
        Plan {
            blocks: blocks as u32,
            rows: rows as u32,
            shared_bytes: if bytes <= SHARED_LIMIT {
                bytes as u32
            } else {
                0
            },
        }
    }

    /// The units block `blk` owns.
    pub fn units(&self, blk: u32, hidden: usize) -> std::ops::Range<usize> {
        let a = (blk * self.rows) as usize;
        a.min(hidden)..(((blk + 1) * self.rows) as usize).min(hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_owns_every_unit_once_and_stays_resident() {
        for (sms, gates) in [1, 7, 66, 108, 132, 144]
            .into_iter()
            .flat_map(|s| [(s, 1), (s, 4)])
        {
            for hidden in [1, 9, 64, 255, 256, 1000, 1024, 4096, 16_384] {
                let plan = Plan::new(sms, hidden, gates);
                assert!(
                    plan.blocks as usize <= sms,
                    "{sms} SMs, H={hidden}: {plan:?}"
                );
                let mut next = 0;
                for blk in 0..plan.blocks {
                    let units = plan.units(blk, hidden);
                    assert_eq!(units.start, next, "{sms} SMs, H={hidden}: block {blk}");
                    assert!(!units.is_empty(), "{sms} SMs, H={hidden}: block {blk} idle");
                    next = units.end;
                }
                assert_eq!(next, hidden, "{sms} SMs, H={hidden}: units left over");
                let bytes = plan.rows as usize * gates * hidden * 4;
                let want = if bytes <= SHARED_LIMIT { bytes } else { 0 };
                assert_eq!(plan.shared_bytes as usize, want, "{sms} SMs, H={hidden}");
            }
        }
        // An H100/H200 (132 SMs) at H = 1024: 8 units a block, their rows of M (32 KiB) on chip.
        assert_eq!(
            Plan::new(132, 1024, 1),
            Plan {
                blocks: 128,
                rows: 8,
                shared_bytes: 32 * 1024
            }
        );
        // An LSTM at H = 512: 4 units a block, their 16 rows (32 KiB) on chip.
        assert_eq!(
            Plan::new(132, 512, 4),
            Plan {
                blocks: 128,
                rows: 4,
                shared_bytes: 32 * 1024
            }
        );
    }

    /// The two loops against the recurrence written out for one unit and two steps.
    #[test]
    fn the_loops_match_a_hand_worked_case() {
        // H = 1, B = 1: s0 = tanh(p0 + m·h0), s1 = tanh(p1 + m·s0).
        let (m, h0, p) = (0.5f32, 0.2f32, [0.1f32, -0.3]);
        let mut s = [0.0f32; 2];
        let tanh = Recurrence::Plain(Nonlinearity::Tanh);
        forward(tanh, &p, &[m], &[h0], &mut s, 1);
        let s0 = (p[0] + m * h0).tanh();
        let s1 = (p[1] + m * s0).tanh();
        assert!(
            (s[0] - s0).abs() < 1e-6 && (s[1] - s1).abs() < 1e-6,
            "{s:?}"
        );
        // L = g0·s0 + g1·s1: d1 = (1 − s1²)·g1, d0 = (1 − s0²)·(g0 + m·d1).
        let g = [0.7f32, -1.1];
        let mut d = [0.0f32; 2];
        backward(tanh, &s, &[m], &g, &mut d, 1);
        let d1 = (1.0 - s1 * s1) * g[1];
        let d0 = (1.0 - s0 * s0) * (g[0] + m * d1);
        assert!(
            (d[0] - d0).abs() < 1e-6 && (d[1] - d1).abs() < 1e-6,
            "{d:?}"
        );
    }
}
