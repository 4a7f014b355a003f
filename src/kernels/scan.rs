//! The plain recurrence over a whole window, as one operation: what a GPU runs as one persistent
//! kernel (`cuda/scan.cu`) instead of T small launches. Two loops with one shape:
//!
//! ```text
//! forward   S_t = σ(P_t + S_{t−1}·Mᵀ)             t = 0 … T−1, S_{−1} = h0
//! backward  D_t = σ′(S_t) ⊙ (G_t + D_{t+1}·M)      t = T−1 … 0, D_T = 0
//! ```
//!
//! P, S, G, D are (T, B, H) time-major, M is (H, H) row-major (row j: unit j's weights from every
//! unit of the previous step). The backward is the forward run backwards in time on Mᵀ with the
//! derivative in place of σ: the CUDA file has one kernel body for both, and the plain loops here
//! are its reference (the tests hold the network built on them to candle's per-step graph).
//!
//! [`Plan`] is the CUDA kernel's launch arithmetic, kept here in plain Rust so that it is tested
//! on machines without a GPU: how many blocks (never more than can be resident at once, since the
//! blocks wait for each other between steps), how many units each owns, and whether its rows of M
//! fit in shared memory.

use super::math::{act_fwd_scalar, Nonlinearity};

/// The code the CUDA kernels take for a nonlinearity (`cuda/scan.cu`'s `act_code`).
pub fn act_code(act: Nonlinearity) -> i32 {
    match act {
        Nonlinearity::Tanh => 0,
        Nonlinearity::Sigmoid => 1,
        Nonlinearity::Relu => 2,
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

/// Forward: `s` (T·B·H) receives every state, from `p` (T·B·H), `m` (H·H) and `h0` (B·H).
pub fn forward(act: Nonlinearity, p: &[f32], m: &[f32], h0: &[f32], s: &mut [f32], b: usize) {
    let h = m.len().isqrt();
    assert_eq!(h * h, m.len(), "M is square");
    assert_eq!(h0.len(), b * h);
    assert_eq!(p.len(), s.len());
    let step = b * h;
    for t in 0..p.len() / step.max(1) {
        let (done, rest) = s.split_at_mut(t * step);
        let prev = if t == 0 { h0 } else { &done[(t - 1) * step..] };
        for i in 0..b {
            let sp = &prev[i * h..(i + 1) * h];
            for j in 0..h {
                let row = &m[j * h..(j + 1) * h];
                let a = p[t * step + i * h + j] + dot(row, sp);
                rest[i * h + j] = act_fwd_scalar(act, a);
            }
        }
    }
}

/// Backward: `d` (T·B·H) receives ∂L/∂P from the states `s`, `mt` = Mᵀ (H·H, row k: column k
/// of M) and the gradient `g` reaching each state from outside the recurrence (the layer above,
/// the decoder). The forward's loop run backwards in time: D_t[k] = σ′(S_t[k])·(G_t[k] + Mᵀ[k]·D_{t+1}).
pub fn backward(act: Nonlinearity, s: &[f32], mt: &[f32], g: &[f32], d: &mut [f32], b: usize) {
    let h = mt.len().isqrt();
    assert_eq!(h * h, mt.len(), "M is square");
    assert_eq!(s.len(), g.len());
    assert_eq!(s.len(), d.len());
    let step = b * h;
    let t_len = s.len() / step.max(1);
    for t in (0..t_len).rev() {
        let (now, next) = d.split_at_mut((t + 1) * step);
        for i in 0..b {
            let dn = (t + 1 < t_len).then(|| &next[i * h..(i + 1) * h]);
            for k in 0..h {
                let at = t * step + i * h + k;
                let carry = dn.map_or(0.0, |dn| dot(&mt[k * h..(k + 1) * h], dn));
                now[at] = slope_from_output(act, s[at]) * (g[at] + carry);
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
    /// Units (rows of M) each block owns; the last block may own fewer.
    pub rows: u32,
    /// Bytes of shared memory per block: its rows of M, or 0 when they do not fit (then they are
    /// read from global memory, where the L2 cache holds them).
    pub shared_bytes: u32,
}

impl Plan {
    /// The launch for `hidden` units on a GPU with `sms` multiprocessors.
    pub fn new(sms: usize, hidden: usize) -> Plan {
        let sms = sms.max(1);
        // Rows per block so that every multiprocessor has work, and no block is idle.
        let rows = hidden.div_ceil(sms).max(1);
        let blocks = hidden.div_ceil(rows);
        let bytes = rows * hidden * std::mem::size_of::<f32>();
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
        for sms in [1, 7, 66, 108, 132, 144] {
            for hidden in [1, 9, 64, 255, 256, 1000, 1024, 4096, 16_384] {
                let plan = Plan::new(sms, hidden);
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
                let bytes = plan.rows as usize * hidden * 4;
                let want = if bytes <= SHARED_LIMIT { bytes } else { 0 };
                assert_eq!(plan.shared_bytes as usize, want, "{sms} SMs, H={hidden}");
            }
        }
        // An H100/H200 (132 SMs) at H = 1024: 8 units a block, their rows of M (32 KiB) on chip.
        assert_eq!(
            Plan::new(132, 1024),
            Plan {
                blocks: 128,
                rows: 8,
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
        forward(Nonlinearity::Tanh, &p, &[m], &[h0], &mut s, 1);
        let s0 = (p[0] + m * h0).tanh();
        let s1 = (p[1] + m * s0).tanh();
        assert!(
            (s[0] - s0).abs() < 1e-6 && (s[1] - s1).abs() < 1e-6,
            "{s:?}"
        );
        // L = g0·s0 + g1·s1: d1 = (1 − s1²)·g1, d0 = (1 − s0²)·(g0 + m·d1).
        let g = [0.7f32, -1.1];
        let mut d = [0.0f32; 2];
        backward(Nonlinearity::Tanh, &s, &[m], &g, &mut d, 1);
        let d1 = (1.0 - s1 * s1) * g[1];
        let d0 = (1.0 - s0 * s0) * (g[0] + m * d1);
        assert!(
            (d[0] - d0).abs() < 1e-6 && (d[1] - d1).abs() < 1e-6,
            "{d:?}"
        );
    }
}
