//! Element-wise maths: e^x, the activations and their derivatives, softmax cross-entropy, dot
//! products. Written without libm calls so that LLVM vectorises them; each is compiled per
//! instruction-set level by `dispatch!` (see the module above), and scoring's tanh has an AVX2
//! version written in intrinsics.

use super::isa::{by_level, dispatch, Isa};

/// The nonlinearities the element-wise kernels compute (a cell maps its own choice onto one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nonlinearity {
    Tanh,
    Sigmoid,
    Relu,
}

const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `exp_f32`'s polynomial q (Cephes' expf: e^r ≈ 1 + r + r²·q(r)), highest degree first, as the
/// vector paths run it.
const EXP_Q: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];

/// e^x to ~1 ulp for x in [−87, 88] (Cephes' expf polynomial), branch-free.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x / ln 2) with the 1.5·2²³ trick (no floor call): `shifted` = 1.5·2²³ + n exactly,
    // so its bit pattern is 0x4B40_0000 + n and n is read back with integer ops. (An `as i32`
    // conversion is saturating in Rust and LLVM scalarises it: it made this function 2–3× slower.)
    let shifted = x * LOG2E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    e * scale
}

#[inline(always)]
pub fn act_fwd_scalar(act: Nonlinearity, p: f32) -> f32 {
    match act {
        Nonlinearity::Tanh => {
            // tanh(p) = 1 − 2/(e^{2p} + 1): exact at ±∞, ~1e-7 absolute near 0.
            1.0 - 2.0 / (exp_f32(2.0 * p) + 1.0)
        }
        Nonlinearity::Sigmoid => 1.0 / (1.0 + exp_f32(-p)),
        Nonlinearity::Relu => p.max(0.0),
    }
}

#[inline(always)]
fn act_fwd_generic(act: Nonlinearity, xs: &mut [f32]) {
    for x in xs {
        *x = act_fwd_scalar(act, *x);
    }
}

/// `xs ← σ(xs + add)`: the input term added where the activation reads it anyway.
#[inline(always)]
fn act_fwd_add_generic(act: Nonlinearity, xs: &mut [f32], add: &[f32]) {
    for (x, a) in xs.iter_mut().zip(add) {
        *x = act_fwd_scalar(act, *x + a);
    }
}

/// dP = dS ⊙ σ′ written from the output s = σ(p): tanh 1 − s², sigmoid s(1 − s), relu [s > 0].
#[inline(always)]
fn act_bwd_generic(act: Nonlinearity, ds: &mut [f32], s: &[f32]) {
    match act {
        Nonlinearity::Tanh => ds.iter_mut().zip(s).for_each(|(d, &s)| *d *= 1.0 - s * s),
        Nonlinearity::Sigmoid => ds.iter_mut().zip(s).for_each(|(d, &s)| *d *= s * (1.0 - s)),
        Nonlinearity::Relu => ds
            .iter_mut()
            .zip(s)
            .for_each(|(d, &s)| *d = if s > 0.0 { *d } else { 0.0 }),
    }
}

/// The largest element, in 8 independent lanes so LLVM keeps it in vector registers (a plain fold
/// is a serial dependency chain it may not reorder).
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    for &x in chunks.remainder() {
        acc[0] = acc[0].max(x);
    }
    acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Σ e^(x − m), writing each term back into `xs`, summed in 8 lanes (see `lane_max`).
#[inline(always)]
fn exp_in_place_sum(xs: &mut [f32], m: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *x = exp_f32(*x - m);
            *a += *x;
        }
    }
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - m);
        acc[0] += *x;
    }
    acc.iter().sum()
}

/// Softmax cross-entropy of one row: returns −log p(y) and writes (softmax − onehot(y))·scale.
#[inline(always)]
fn softmax_ce_generic(row: &mut [f32], y: usize, scale: f32) -> f64 {
    let m = lane_max(row);
    // −log p(y) = log Σ e^(o−m) − (o_y − m), from the logit itself: e^(o_y−m) may be clamped
    // (exp_f32 stops at e^−87) when the target is extremely unlikely.
    let below = (row[y] - m) as f64;
    let sum = exp_in_place_sum(row, m);
    let nll = (sum as f64).ln() - below;
    let k = scale / sum;
    for v in row.iter_mut() {
        *v *= k;
    }
    row[y] -= scale;
    nll
}

/// −log softmax(row + bias)[y] for scoring: no gradient to write, so the logits stay as they are
/// and the bias is added on the fly. `tmp` is scratch of the row's length.
#[inline(always)]
fn nll_generic(row: &[f32], bias: &[f32], y: usize, tmp: &mut [f32]) -> f64 {
    tmp.iter_mut()
        .zip(row.iter().zip(bias))
        .for_each(|(t, (&o, &c))| *t = o + c);
    let m = lane_max(tmp);
    let below = (tmp[y] - m) as f64;
    (exp_in_place_sum(tmp, m) as f64).ln() - below
}

dispatch!(pub act_fwd / act_fwd_on, act_fwd_generic, (act: Nonlinearity, xs: &mut [f32]) -> ());
dispatch!(pub act_fwd_add / act_fwd_add_on, act_fwd_add_generic, (act: Nonlinearity, xs: &mut [f32], add: &[f32]) -> ());
dispatch!(pub act_bwd / act_bwd_on, act_bwd_generic, (act: Nonlinearity, ds: &mut [f32], s: &[f32]) -> ());
dispatch!(pub softmax_ce / softmax_ce_on, softmax_ce_generic, (row: &mut [f32], y: usize, scale: f32) -> f64);
dispatch!(pub nll / nll_on, nll_generic, (row: &[f32], bias: &[f32], y: usize, tmp: &mut [f32]) -> f64);

/// `xs ← tanh(xs [+ add])` for scoring. With AVX2 and FMA: tanh|p| = 1 − 2/(e^{2|p|} + 1) with
/// the reciprocal from `rcp` refined by one Newton step instead of a division (the division was
/// half of the activation's time in scoring), FMAs in `exp_f32`'s polynomial, and the sign put
/// back; within 3e-7 of tanh like `act_fwd_scalar` (a test holds both), NaN stays NaN. Training
/// keeps the division, so its numbers and every checkpoint stay what they were.
pub fn scoring_tanh(xs: &mut [f32], add: Option<&[f32]>) {
    scoring_tanh_on(super::isa::isa(), xs, add)
}

/// [`scoring_tanh`] at a given level.
pub fn scoring_tanh_on(isa: Isa, xs: &mut [f32], add: Option<&[f32]>) {
    by_level!(
        isa,
        // SAFETY: `by_level!` checked that the CPU has AVX-512.
        avx512 => unsafe { tanh_avx512::tanh_add(xs, add) },
        // SAFETY: `by_level!` checked that the CPU has AVX2 and FMA.
        avx2 => unsafe { tanh_avx2::tanh_add(xs, add) },
        portable => match add {
            Some(add) => act_fwd_add_on(isa, Nonlinearity::Tanh, xs, add),
            None => act_fwd_on(isa, Nonlinearity::Tanh, xs),
        },
    )
}

/// `xs ← σ(xs [+ add])` for scoring, as σ(p) = ½ + ½·tanh(p/2) on [`scoring_tanh`]'s road: the
/// gated cells' gates without a division (within 1.5e-7 of σ). Training keeps `act_fwd`.
pub fn scoring_sigmoid(xs: &mut [f32], add: Option<&[f32]>) {
    scoring_sigmoid_on(super::isa::isa(), xs, add)
}

/// [`scoring_sigmoid`] at a given level.
pub fn scoring_sigmoid_on(isa: Isa, xs: &mut [f32], add: Option<&[f32]>) {
    match add {
        Some(add) => xs
            .iter_mut()
            .zip(add)
            .for_each(|(x, a)| *x = 0.5 * (*x + a)),
        None => xs.iter_mut().for_each(|x| *x *= 0.5),
    }
    scoring_tanh_on(isa, xs, None);
    xs.iter_mut().for_each(|x| *x = 0.5 * *x + 0.5);
}

/// One LSTM step's element-wise part for scoring, one stream: the gates' pre-activations
/// `gates` (i, f, g, o, H each) [+ `add`, the input term] give c = σ(f) ⊙ c_prev + σ(i) ⊙ tanh(g)
/// and h = σ(o) ⊙ tanh(c), within ~5e-7 of the exact step (a test holds every level to it in
/// f64). With AVX-512 in two short passes, sixteen units at a time in registers, σ without a
/// division (`sigmoid16`): the separate passes (the input term, three activations, the cell
/// update, tanh c, the output gate) were ~20% of an LSTM's scoring time, the fused step is ~8%.
/// AVX2 runs the same passes eight units at a time; the portable level runs the separate passes
/// on [`scoring_tanh`]'s road. `gates` may be overwritten. The
/// gate blocks lie `stride` floats apart (H for a whole row; a thread scoring a range of units
/// passes its part of a row), in `add` too.
pub fn lstm_scoring_step(
    gates: &mut [f32],
    stride: usize,
    add: Option<&[f32]>,
    c_prev: &[f32],
    c: &mut [f32],
    h: &mut [f32],
) {
    lstm_scoring_step_on(super::isa::isa(), gates, stride, add, c_prev, c, h)
}

/// [`lstm_scoring_step`] at a given level.
pub fn lstm_scoring_step_on(
    isa: Isa,
    gates: &mut [f32],
    stride: usize,
    add: Option<&[f32]>,
    c_prev: &[f32],
    c: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    assert!(stride >= n && gates.len() >= 3 * stride + n);
    assert!(c_prev.len() == n && c.len() == n);
    if let Some(add) = add {
        assert!(add.len() >= 3 * stride + n);
    }
    by_level!(
        isa,
        // SAFETY: `by_level!` checked that the CPU has AVX-512; lengths checked above.
        avx512 => unsafe { tanh_avx512::lstm_step(gates, stride, add, c_prev, c, h) },
        // SAFETY: `by_level!` checked that the CPU has AVX2 and FMA; lengths checked above.
        avx2 => unsafe { tanh_avx2::lstm_step(gates, stride, add, c_prev, c, h) },
        portable => lstm_scoring_step_portable(isa, gates, stride, add, c_prev, c, h),
    )
}

/// The portable level of [`lstm_scoring_step`]: the gates' separate passes on [`scoring_tanh`]'s
/// road.
fn lstm_scoring_step_portable(
    isa: Isa,
    gates: &mut [f32],
    stride: usize,
    add: Option<&[f32]>,
    c_prev: &[f32],
    c: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    // Gate by gate: its n pre-activations (+ the input term), activated in place.
    for gate in 0..4 {
        let p = &mut gates[gate * stride..gate * stride + n];
        if let Some(add) = add {
            p.iter_mut()
                .zip(&add[gate * stride..gate * stride + n])
                .for_each(|(x, a)| *x += a);
        }
        if gate == 2 {
            scoring_tanh_on(isa, p, None);
        } else {
            scoring_sigmoid_on(isa, p, None);
        }
    }
    let gate = |g: usize, k: usize| gates[g * stride + k];
    for k in 0..n {
        c[k] = gate(1, k) * c_prev[k] + gate(0, k) * gate(2, k);
        h[k] = c[k];
    }
    scoring_tanh_on(isa, h, None);
    h.iter_mut().enumerate().for_each(|(k, x)| *x *= gate(3, k));
}

#[cfg(target_arch = "x86_64")]
mod tanh_avx2 {
    use super::{act_fwd_scalar, Nonlinearity, EXP_Q, LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh_add(xs: &mut [f32], add: Option<&[f32]>) {
        if let Some(add) = add {
            assert_eq!(xs.len(), add.len());
        }
        let n = xs.len();
        let mut i = 0;
        while i + 8 <= n {
            let p = _mm256_loadu_ps(xs.as_ptr().add(i));
            let p = match add {
                Some(add) => _mm256_add_ps(p, _mm256_loadu_ps(add.as_ptr().add(i))),
                None => p,
            };
            _mm256_storeu_ps(xs.as_mut_ptr().add(i), tanh8(p));
            i += 8;
        }
        for (k, x) in xs.iter_mut().enumerate().skip(i) {
            let a = add.map_or(0.0, |a| a[k]);
            *x = act_fwd_scalar(Nonlinearity::Tanh, *x + a);
        }
    }

    /// `super::lstm_scoring_step` eight units at a time, in the AVX-512 version's two passes
    /// (the last few units through a zero-padded copy).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `gates` (and `add`) hold 3·stride + n floats, the
    /// others n.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn lstm_step(
        gates: &[f32],
        stride: usize,
        add: Option<&[f32]>,
        c_prev: &[f32],
        c: &mut [f32],
        h: &mut [f32],
    ) {
        let n = h.len();
        let load = |src: &[f32], at: usize, len: usize| {
            if len == 8 {
                _mm256_loadu_ps(src.as_ptr().add(at))
            } else {
                let mut t = [0f32; 8];
                t[..len].copy_from_slice(&src[at..at + len]);
                _mm256_loadu_ps(t.as_ptr())
            }
        };
        let store = |dst: &mut [f32], at: usize, len: usize, v: __m256| {
            if len == 8 {
                _mm256_storeu_ps(dst.as_mut_ptr().add(at), v);
            } else {
                let mut t = [0f32; 8];
                _mm256_storeu_ps(t.as_mut_ptr(), v);
                dst[at..at + len].copy_from_slice(&t[..len]);
            }
        };
        let pre = |gate: usize, k: usize, len: usize| {
            let p = load(gates, gate * stride + k, len);
            match add {
                Some(a) => _mm256_add_ps(p, load(a, gate * stride + k, len)),
                None => p,
            }
        };
        for k in (0..n).step_by(8) {
            let len = (n - k).min(8);
            let i = sigmoid8(pre(0, k, len));
            let f = sigmoid8(pre(1, k, len));
            let g = tanh_by_sigmoid(pre(2, k, len));
            let o = sigmoid8(pre(3, k, len));
            let cv = _mm256_fmadd_ps(f, load(c_prev, k, len), _mm256_mul_ps(i, g));
            store(c, k, len, cv);
            store(h, k, len, o);
        }
        for k in (0..n).step_by(8) {
            let len = (n - k).min(8);
            let (cv, o) = (load(c, k, len), load(h, k, len));
            store(h, k, len, _mm256_mul_ps(o, tanh_by_sigmoid(cv)));
        }
    }

    /// tanh p = 2σ(2p) − 1.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tanh_by_sigmoid(p: __m256) -> __m256 {
        let two = _mm256_set1_ps(2.0);
        _mm256_fmsub_ps(two, sigmoid8(_mm256_mul_ps(p, two)), _mm256_set1_ps(1.0))
    }

    /// σ(p) = 1/(1 + e^{−p}) on 8 lanes, as the AVX-512 `sigmoid16` but with p clamped to ±87
    /// (2^k is built in the exponent bits, which must stay a normal float), `rcp`'s 12 bits and
    /// one Newton step; NaN stays NaN.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn sigmoid8(p: __m256) -> __m256 {
        // `max(c, p)` and `min(c, p)` return p when p is NaN.
        let p = _mm256_min_ps(
            _mm256_set1_ps(87.0),
            _mm256_max_ps(_mm256_set1_ps(-87.0), p),
        );
        let k = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(p, _mm256_set1_ps(-LOG2E)),
        );
        let r = _mm256_fnmsub_ps(k, _mm256_set1_ps(LN2_HI), p);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
        let one = _mm256_set1_ps(1.0);
        let mut e = _mm256_set1_ps(EXP_Q[0]);
        for &c in EXP_Q[1..].iter().chain(&[1.0, 1.0]) {
            e = _mm256_fmadd_ps(e, r, _mm256_set1_ps(c));
        }
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(k),
            _mm256_set1_epi32(127),
        )));
        let d = _mm256_fmadd_ps(e, scale, one);
        let r0 = _mm256_rcp_ps(d);
        _mm256_fmadd_ps(r0, _mm256_fnmadd_ps(d, r0, one), r0)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub unsafe fn tanh8(p: __m256) -> __m256 {
        let sign_bit = _mm256_set1_ps(-0.0);
        let sign = _mm256_and_ps(p, sign_bit);
        // |p| ≤ 9 (tanh 9 rounds to 1 in f32); `min(9, a)` returns a when a is NaN.
        let a = _mm256_min_ps(_mm256_set1_ps(9.0), _mm256_andnot_ps(sign_bit, p));
        // e^{2a}, 2a in [0, 18]: `exp_f32`'s reduction and polynomial.
        let x = _mm256_add_ps(a, a);
        let magic = _mm256_set1_ps(12_582_912.0);
        let shifted = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), magic);
        let k = _mm256_sub_ps(shifted, magic);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(LN2_LO), r);
        let mut q = _mm256_set1_ps(EXP_Q[0]);
        for &c in &EXP_Q[1..] {
            q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(c));
        }
        let e = _mm256_add_ps(
            _mm256_fmadd_ps(q, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_sub_epi32(
            _mm256_castps_si256(shifted),
            _mm256_set1_epi32(0x4B40_0000 - 127),
        )));
        let d = _mm256_fmadd_ps(e, scale, _mm256_set1_ps(1.0));
        // 1/d: `rcp`'s 12 bits, then r + r(1 − d·r) (error ~ε², FMA keeps 1 − d·r exact).
        let one = _mm256_set1_ps(1.0);
        let r0 = _mm256_rcp_ps(d);
        let inv = _mm256_fmadd_ps(r0, _mm256_fnmadd_ps(d, r0, one), r0);
        let t = _mm256_fnmadd_ps(_mm256_set1_ps(2.0), inv, one);
        _mm256_or_ps(t, sign)
    }
}

#[cfg(target_arch = "x86_64")]
mod tanh_avx512 {
    use super::{act_fwd_scalar, Nonlinearity, EXP_Q, LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    /// [`super::tanh_avx2::tanh_add`] sixteen lanes at a time, the tail in one masked step.
    ///
    /// # Safety
    /// AVX-512 (F) and FMA must be available.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn tanh_add(xs: &mut [f32], add: Option<&[f32]>) {
        if let Some(add) = add {
            assert_eq!(xs.len(), add.len());
        }
        let n = xs.len();
        let mut i = 0;
        while i + 16 <= n {
            let p = _mm512_loadu_ps(xs.as_ptr().add(i));
            let p = match add {
                Some(add) => _mm512_add_ps(p, _mm512_loadu_ps(add.as_ptr().add(i))),
                None => p,
            };
            _mm512_storeu_ps(xs.as_mut_ptr().add(i), tanh16(p));
            i += 16;
        }
        for (k, x) in xs.iter_mut().enumerate().skip(i) {
            let a = add.map_or(0.0, |a| a[k]);
            *x = act_fwd_scalar(Nonlinearity::Tanh, *x + a);
        }
    }

    /// `super::lstm_scoring_step` sixteen units at a time (the last few under a mask).
    ///
    /// # Safety
    /// AVX-512 (F) must be available; `gates` (and `add`) hold 3·stride + n floats, the
    /// others n.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn lstm_step(
        gates: &[f32],
        stride: usize,
        add: Option<&[f32]>,
        c_prev: &[f32],
        c: &mut [f32],
        h: &mut [f32],
    ) {
        let n = h.len();
        let pre = |gate: usize, k: usize, m: __mmask16| {
            let at = gate * stride + k;
            let p = _mm512_maskz_loadu_ps(m, gates.as_ptr().add(at));
            match add {
                Some(a) => _mm512_add_ps(p, _mm512_maskz_loadu_ps(m, a.as_ptr().add(at))),
                None => p,
            }
        };
        let mask = |k: usize| -> __mmask16 {
            if n - k >= 16 {
                0xFFFF
            } else {
                ((1u32 << (n - k)) - 1) as __mmask16
            }
        };
        // Two passes, so that each block's chain of dependent instructions is short and the
        // blocks overlap: c and σ(o) (held in h), then h = σ(o) ⊙ tanh(c). In one pass the
        // tanh of c waited on the whole block before it (+3% of an LSTM's scoring rate).
        for k in (0..n).step_by(16) {
            let m = mask(k);
            let i = sigmoid16(pre(0, k, m));
            let f = sigmoid16(pre(1, k, m));
            let g = tanh_by_sigmoid(pre(2, k, m));
            let o = sigmoid16(pre(3, k, m));
            let cp = _mm512_maskz_loadu_ps(m, c_prev.as_ptr().add(k));
            let cv = _mm512_fmadd_ps(f, cp, _mm512_mul_ps(i, g));
            _mm512_mask_storeu_ps(c.as_mut_ptr().add(k), m, cv);
            _mm512_mask_storeu_ps(h.as_mut_ptr().add(k), m, o);
        }
        for k in (0..n).step_by(16) {
            let m = mask(k);
            let cv = _mm512_maskz_loadu_ps(m, c.as_ptr().add(k));
            let o = _mm512_maskz_loadu_ps(m, h.as_ptr().add(k));
            _mm512_mask_storeu_ps(
                h.as_mut_ptr().add(k),
                m,
                _mm512_mul_ps(o, tanh_by_sigmoid(cv)),
            );
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn tanh_by_sigmoid(p: __m512) -> __m512 {
        let two = _mm512_set1_ps(2.0);
        _mm512_fmsub_ps(two, sigmoid16(_mm512_mul_ps(p, two)), _mm512_set1_ps(1.0))
    }

    /// σ(p) = 1/(1 + e^{−p}) on 16 lanes: e^{−p} by `exp_f32`'s polynomial with the rounding and
    /// the 2^k scaling in one instruction each (`roundscale`, `scalef`), the reciprocal by
    /// `rcp14` and one Newton step; NaN stays NaN. 18 instructions, where σ through `tanh16`
    /// took 26.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn sigmoid16(p: __m512) -> __m512 {
        // p ≥ −87 keeps e^{−p} finite; a large p needs no bound (e^{−p} goes to 0 through
        // `scalef`). `max(c, p)` returns p when p is NaN.
        let p = _mm512_max_ps(_mm512_set1_ps(-87.0), p);
        // e^{−p} = 2^k · e^r with k = round(−p·log₂e) and r = −p − k·ln 2 (in two parts).
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(p, _mm512_set1_ps(-LOG2E)),
        );
        let r = _mm512_fnmsub_ps(k, _mm512_set1_ps(LN2_HI), p);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
        // e^r = 1 + r + r²·q(r) with `exp_f32`'s coefficients, all in one Horner chain.
        let one = _mm512_set1_ps(1.0);
        let mut e = _mm512_set1_ps(EXP_Q[0]);
        for &c in EXP_Q[1..].iter().chain(&[1.0, 1.0]) {
            e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(c));
        }
        let d = _mm512_add_ps(_mm512_scalef_ps(e, k), one);
        let r0 = _mm512_rcp14_ps(d);
        _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(d, r0, one), r0)
    }

    /// The AVX2 version's formula on 16 lanes: |p| clamped to 9, e^{2|p|} by `exp_f32`'s
    /// reduction and polynomial, 1 − 2/(e + 1) with `rcp14` refined by one Newton step, the sign
    /// put back; NaN stays NaN.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn tanh16(p: __m512) -> __m512 {
        let abs_mask = _mm512_set1_epi32(0x7FFF_FFFF);
        let bits = _mm512_castps_si512(p);
        let sign = _mm512_andnot_si512(abs_mask, bits);
        let a = _mm512_castsi512_ps(_mm512_and_si512(bits, abs_mask));
        // `min(9, a)` returns a when a is NaN.
        let a = _mm512_min_ps(_mm512_set1_ps(9.0), a);
        let x = _mm512_add_ps(a, a);
        let magic = _mm512_set1_ps(12_582_912.0);
        let shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), magic);
        let k = _mm512_sub_ps(shifted, magic);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(LN2_LO), r);
        let mut q = _mm512_set1_ps(EXP_Q[0]);
        for &c in &EXP_Q[1..] {
            q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(c));
        }
        let e = _mm512_add_ps(
            _mm512_fmadd_ps(q, _mm512_mul_ps(r, r), r),
            _mm512_set1_ps(1.0),
        );
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_sub_epi32(
            _mm512_castps_si512(shifted),
            _mm512_set1_epi32(0x4B40_0000 - 127),
        )));
        let d = _mm512_fmadd_ps(e, scale, _mm512_set1_ps(1.0));
        let one = _mm512_set1_ps(1.0);
        let r0 = _mm512_rcp14_ps(d);
        let inv = _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(d, r0, one), r0);
        let t = _mm512_fnmadd_ps(_mm512_set1_ps(2.0), inv, one);
        _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), sign))
    }
}

/// Σ a[i]·b[i] in eight independent lanes (SIMD lanes once compiled for AVX2), then the lanes
/// and the remainder in order: the same sums on every CPU.
#[inline(always)]
fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

dispatch!(pub dot / dot_on, dot_generic, (a: &[f32], b: &[f32]) -> f32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_tanh_are_accurate() {
        let mut worst_exp = 0f64;
        let mut worst_tanh = 0f64;
        let mut x = -20.0f32;
        while x < 20.0 {
            let e = exp_f32(x) as f64;
            worst_exp = worst_exp.max(((e - (x as f64).exp()) / (x as f64).exp()).abs());
            let t = act_fwd_scalar(Nonlinearity::Tanh, x) as f64;
            worst_tanh = worst_tanh.max((t - (x as f64).tanh()).abs());
            x += 0.001;
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh}");
        assert_eq!(act_fwd_scalar(Nonlinearity::Tanh, 100.0), 1.0);
        assert_eq!(act_fwd_scalar(Nonlinearity::Tanh, -100.0), -1.0);
    }

    #[test]
    fn scoring_tanh_is_accurate() {
        // Every 0.0007 over [−20, 20] plus edge values, with and without an added row, in rows of
        // odd length (the last few go through the scalar formula).
        let mut xs: Vec<f32> = (0..57_143).map(|i| -20.0 + i as f32 * 0.0007).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 9.0, -9.0, 1e30, -1e30]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE]);
        let add: Vec<f32> = (0..xs.len())
            .map(|i| ((i % 7) as f32 - 3.0) * 0.25)
            .collect();
        // Every instruction-set path this CPU has.
        for isa in Isa::available() {
            for with_add in [false, true] {
                let mut got = xs.clone();
                scoring_tanh_on(isa, &mut got, with_add.then_some(&add[..]));
                for (i, (&g, &x)) in got.iter().zip(&xs).enumerate() {
                    let p = if with_add { x + add[i] } else { x };
                    let err = (g as f64 - (p as f64).tanh()).abs();
                    assert!(err < 3e-7, "{isa}: tanh({p}) = {g}: error {err}");
                }
            }
            let mut nan = [f32::NAN; 9];
            scoring_tanh_on(isa, &mut nan, None);
            assert!(nan.iter().all(|x| x.is_nan()), "{isa}");
        }
    }

    #[test]
    fn scoring_sigmoid_is_accurate() {
        // Over [−40, 40] with and without an added row: σ within 1.5e-7 (half tanh's bound).
        let xs: Vec<f32> = (0..80_003).map(|i| -40.0 + i as f32 * 0.001).collect();
        let add: Vec<f32> = (0..xs.len())
            .map(|i| ((i % 5) as f32 - 2.0) * 0.5)
            .collect();
        for with_add in [false, true] {
            let mut got = xs.clone();
            scoring_sigmoid(&mut got, with_add.then_some(&add[..]));
            for (i, (&g, &x)) in got.iter().zip(&xs).enumerate() {
                let p = if with_add { x + add[i] } else { x } as f64;
                let err = (g as f64 - 1.0 / (1.0 + (-p).exp())).abs();
                assert!(err < 1.6e-7, "σ({p}) = {g}: error {err}");
            }
        }
    }

    /// Every element-wise kernel, on every instruction-set level this CPU runs, against the
    /// portable build of the same code: the activations and their derivatives, softmax
    /// cross-entropy and its gradient, scoring's loss, dot products. Row lengths leave remainders
    /// past every vector width.
    #[test]
    fn lstm_scoring_step_is_accurate() {
        // Every level this CPU has, against the step in f64: H = 37 (two full vectors and a
        // masked tail), pre-activations swept over [−30, 30] plus ±100, with and without an
        // input term, c_prev over [−4, 4]; gate blocks side by side (stride 37) or 45 apart with
        // NaN between them (a thread's part of a row), which must not be read.
        let n = 37;
        let sweep = |i: usize| -30.0 + (i as f32 * 0.013_7) % 60.0;
        for isa in Isa::available() {
            let mut worst = (0f64, 0f64);
            for case in 0..400 {
                let stride = if case % 2 == 0 { n } else { n + 8 };
                let gap = |q: usize| q % stride >= n;
                let mut pre: Vec<f32> = (0..4 * stride)
                    .map(|q| {
                        if gap(q) {
                            f32::NAN
                        } else {
                            sweep(case * 4 * n + q * 31)
                        }
                    })
                    .collect();
                if case == 0 {
                    pre[..4].copy_from_slice(&[100.0, -100.0, 100.0, -100.0]);
                }
                let add: Vec<f32> = (0..4 * stride)
                    .map(|q| {
                        if gap(q) {
                            f32::NAN
                        } else {
                            ((q + case) % 9) as f32 * 0.3 - 1.2
                        }
                    })
                    .collect();
                let c_prev: Vec<f32> = (0..n)
                    .map(|k| ((k * 7 + case) % 17) as f32 * 0.5 - 4.0)
                    .collect();
                for with_add in [false, true] {
                    let (mut c, mut h, mut g) = (vec![0.0; n], vec![0.0; n], pre.clone());
                    let a = with_add.then_some(&add[..]);
                    lstm_scoring_step_on(isa, &mut g, stride, a, &c_prev, &mut c, &mut h);
                    let p = |gate: usize, k: usize| {
                        let q = gate * stride + k;
                        pre[q] as f64 + if with_add { add[q] as f64 } else { 0.0 }
                    };
                    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
                    for k in 0..n {
                        let cr = sig(p(1, k)) * c_prev[k] as f64 + sig(p(0, k)) * p(2, k).tanh();
                        let hr = sig(p(3, k)) * cr.tanh();
                        let (ec, eh) = ((c[k] as f64 - cr).abs(), (h[k] as f64 - hr).abs());
                        worst = (worst.0.max(ec), worst.1.max(eh));
                        assert!(ec < 6e-7 * (1.0 + cr.abs()), "{isa}: c = {} for {cr}", c[k]);
                        assert!(eh < 6e-7, "{isa}: h = {} for {hr}", h[k]);
                    }
                }
            }
            let (mut c, mut h) = (vec![0.0; n], vec![0.0; n]);
            let mut nan = vec![f32::NAN; 4 * n];
            lstm_scoring_step_on(isa, &mut nan, n, None, &vec![0.0; n], &mut c, &mut h);
            assert!(c.iter().chain(&h).all(|x| x.is_nan()), "{isa}");
            eprintln!("{isa}: worst errors: c {:.2e}, h {:.2e}", worst.0, worst.1);
        }
    }

    #[test]
    fn every_level_matches_the_portable_kernels() {
        let row = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    ((((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 - 1000.0) / 97.0
                })
                .collect()
        };
        let close = |a: f32, b: f32, tol: f32| (a - b).abs() <= tol * (1.0 + b.abs());
        let levels = Isa::available();
        eprintln!("element-wise kernels checked at: {levels:?}");
        for isa in levels {
            for n in [1usize, 7, 8, 9, 31, 65, 256, 1000] {
                let (x, y) = (row(n, 1), row(n, 2));
                for act in [
                    Nonlinearity::Tanh,
                    Nonlinearity::Sigmoid,
                    Nonlinearity::Relu,
                ] {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    act_fwd_on(isa, act, &mut a);
                    act_fwd_on(Isa::Portable, act, &mut b);
                    assert!(
                        a.iter().zip(&b).all(|(a, b)| close(*a, *b, 1e-6)),
                        "{isa} {act:?} fwd"
                    );
                    let (mut a, mut b) = (x.clone(), x.clone());
                    act_fwd_add_on(isa, act, &mut a, &y);
                    act_fwd_add_on(Isa::Portable, act, &mut b, &y);
                    assert!(
                        a.iter().zip(&b).all(|(a, b)| close(*a, *b, 1e-6)),
                        "{isa} {act:?} add"
                    );
                    let s: Vec<f32> = b.clone();
                    let (mut a, mut b) = (y.clone(), y.clone());
                    act_bwd_on(isa, act, &mut a, &s);
                    act_bwd_on(Isa::Portable, act, &mut b, &s);
                    assert!(
                        a.iter().zip(&b).all(|(a, b)| close(*a, *b, 1e-6)),
                        "{isa} {act:?} bwd"
                    );
                }
                let target = n / 2;
                let (mut a, mut b) = (x.clone(), x.clone());
                let la = softmax_ce_on(isa, &mut a, target, 0.5);
                let lb = softmax_ce_on(Isa::Portable, &mut b, target, 0.5);
                assert!(
                    (la - lb).abs() <= 1e-5 * (1.0 + lb.abs()),
                    "{isa} softmax loss"
                );
                assert!(
                    a.iter().zip(&b).all(|(a, b)| close(*a, *b, 1e-5)),
                    "{isa} softmax grad"
                );
                let (mut ta, mut tb) = (vec![0.0; n], vec![0.0; n]);
                let na = nll_on(isa, &x, &y, target, &mut ta);
                let nb = nll_on(Isa::Portable, &x, &y, target, &mut tb);
                assert!((na - nb).abs() <= 1e-5 * (1.0 + nb.abs()), "{isa} nll");
                let (da, db) = (dot_on(isa, &x, &y), dot_on(Isa::Portable, &x, &y));
                let scale: f32 = x.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum();
                assert!(
                    (da - db).abs() <= 1e-5 * (1.0 + scale),
                    "{isa} dot {da} vs {db}"
                );
            }
        }
    }
}
