//! The large products: row-major strided GEMMs through the `gemm` crate (the kernels candle itself
//! uses), with bias rows and column sums beside them. The `gemm` crate chooses its own kernels at
//! run time from the CPU's features.

use gemm::{gemm, Parallelism};

/// Which kernels the `gemm` crate runs on this CPU (for `elman bench`'s report). It picks them
/// itself, from the CPU alone (`ELMAN_ISA` does not reach it); its AVX-512 kernels are enabled at
/// build time by its `x86-v4` feature (Cargo.toml).
pub fn path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
            return "gemm crate, avx512 kernels";
        }
        if has!("avx2") && has!("fma") {
            return "gemm crate, avx2+fma kernels";
        }
    }
    "gemm crate, baseline kernels"
}

/// Row-major C (m×n) = [C +] A (m×k) · B (k×n), every operand given by (row stride, column stride).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    // Bounds: the largest index each operand is read or written at.
    assert!(c.len() > (m - 1) * c_rs + (n - 1) * c_cs);
    assert!(k == 0 || a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(k == 0 || b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above keep every access inside the slices; `c` does not alias `a`/`b`
    // (it is a distinct `&mut`).
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs as isize,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// Adds `bias` to every row of `rows` (row length = bias length).
#[inline]
pub fn add_rows(rows: &mut [f32], bias: &[f32]) {
    for r in rows.chunks_exact_mut(bias.len()) {
        r.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

/// `out[i] = Σ_rows rows[r][i]`.
#[inline]
pub fn col_sums(rows: &[f32], width: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|x| *x = 0.0);
    for r in rows.chunks_exact(width) {
        out.iter_mut().zip(r).for_each(|(o, v)| *o += v);
    }
}
