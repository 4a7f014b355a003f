//! The packed recurrent GEMM (`src/kernels/packed.rs`) against a plain triple loop in f64, on every
//! instruction-set level this CPU runs, over the shapes that exercise its edges: row counts that
//! are not a multiple of the 6- or 12-row tiles (and the one- and two-row path that runs across 4 or
//! 8 panels at once), column counts around the 16-column panel and panel counts that are not a
//! multiple of 2, 4 or 8, depths past the 512-deep cache block, padded strides, both ways of
//! reading B (W and Wᵀ), and accumulating into C or overwriting it. The AVX2 and AVX-512 tiles
//! must also agree bit for bit (both are one FMA chain per element, in the same order).

use elman::kernels::packed::{matmul, matmul_on, matmul_portable, PackedB};
use elman::kernels::Isa;

/// A deterministic, irregular fill in [−1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn reference(
    m: usize,
    n: usize,
    k: usize,
    c: &[f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &[f32],
    (rs, cs): (usize, usize),
) -> Vec<f64> {
    let mut out: Vec<f64> = c.iter().map(|&x| x as f64).collect();
    for i in 0..m {
        for j in 0..n {
            let mut s = if accumulate {
                c[i * ldc + j] as f64
            } else {
                0.0
            };
            for p in 0..k {
                s += a[i * lda + p] as f64 * b[p * rs + j * cs] as f64;
            }
            out[i * ldc + j] = s;
        }
    }
    out
}

#[test]
fn packed_matmul_matches_a_plain_loop() {
    let mut cases = 0;
    let levels = Isa::available();
    eprintln!("packed GEMM checked at: {levels:?}");
    for &m in &[1usize, 2, 5, 6, 7, 13, 25, 32] {
        // 300 columns (19 panels) at depth 600 (rows of A 603 floats apart): the AVX-512 path
        // copies A's rows step-major first.
        for &n in &[1usize, 15, 16, 17, 40, 100, 300] {
            for &k in &[1usize, 7, 16, 600] {
                for transposed in [false, true] {
                    for accumulate in [false, true] {
                        let (lda, ldc) = (k + 3, n + 2);
                        let a = fill(m * lda, (m * 31 + k) as u64);
                        // B is k × n, stored either row-major (W) or as the transpose of an
                        // n × k row-major matrix (Wᵀ read from W).
                        let strides = if transposed { (1, k) } else { (n, 1) };
                        let b = fill(k * n, (n * 17 + k) as u64);
                        let c0 = fill(m * ldc, 99);
                        let want = reference(m, n, k, &c0, ldc, accumulate, &a, lda, &b, strides);
                        let mut pb = PackedB::default();
                        pb.pack(&b, k, n, strides);
                        assert_eq!((pb.k(), pb.n()), (k, n));
                        let mut fma_results: Vec<Vec<f32>> = Vec::new();
                        for &isa in &levels {
                            let mut c = c0.clone();
                            matmul_on(isa, m, &mut c, ldc, accumulate, &a, lda, &pb);
                            for (idx, (&got, &w)) in c.iter().zip(&want).enumerate() {
                                let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                                assert!(
                                    (got as f64 - w).abs() <= tol,
                                    "m={m} n={n} k={k} transposed={transposed} accumulate={accumulate} \
                                     {isa}: C[{idx}] = {got}, want {w}"
                                );
                            }
                            if isa >= Isa::Avx2 {
                                fma_results.push(c);
                            }
                            cases += 1;
                        }
                        // The FMA tiles sum alike.
                        for other in fma_results.iter().skip(1) {
                            assert!(
                                other == &fma_results[0],
                                "m={m} n={n} k={k}: AVX2 and AVX-512 differ"
                            );
                        }
                        // The process's own level and the portable entry point agree too.
                        let (mut c1, mut c2) = (c0.clone(), c0.clone());
                        matmul(m, &mut c1, ldc, accumulate, &a, lda, &pb);
                        matmul_portable(m, &mut c2, ldc, accumulate, &a, lda, &pb);
                        let isa = elman::kernels::isa();
                        let mut c3 = c0.clone();
                        matmul_on(isa, m, &mut c3, ldc, accumulate, &a, lda, &pb);
                        assert!(c1 == c3, "matmul runs the process's level");
                        let mut c4 = c0.clone();
                        matmul_on(Isa::Portable, m, &mut c4, ldc, accumulate, &a, lda, &pb);
                        assert!(c2 == c4, "matmul_portable is the portable level");
                    }
                }
            }
        }
    }
    assert_eq!(cases, 8 * 7 * 4 * 2 * 2 * levels.len());
}

#[test]
fn repacking_a_smaller_matrix_reuses_the_buffer_correctly() {
    // The training loop packs W into the same PackedB every window; a later, smaller pack must
    // not read stale panels from the earlier one.
    let mut pb = PackedB::default();
    let big = fill(40 * 40, 1);
    pb.pack(&big, 40, 40, (40, 1));
    let (k, n) = (9, 20);
    let b = fill(k * n, 2);
    pb.pack(&b, k, n, (n, 1));
    let a = fill(3 * k, 3);
    let mut c = vec![0.0; 3 * n];
    matmul(3, &mut c, n, false, &a, k, &pb);
    let want = reference(3, n, k, &c, n, false, &a, k, &b, (n, 1));
    for (got, w) in c.iter().zip(&want) {
        assert!((*got as f64 - w).abs() < 1e-5, "{got} vs {w}");
    }
}

#[test]
#[should_panic(expected = "A is too small")]
fn a_short_operand_is_refused_before_the_unchecked_kernel_runs() {
    let mut pb = PackedB::default();
    pb.pack(&fill(8 * 8, 1), 8, 8, (8, 1));
    let mut c = vec![0.0; 2 * 8];
    matmul(2, &mut c, 8, false, &fill(8 + 7, 2), 8, &pb);
}

#[test]
fn panel_ranges_write_only_their_columns_and_tile_the_product() {
    // Threads share one product by taking ranges of panels: each range must write exactly its
    // columns (the rest of C untouched, NaN here), and the ranges together give the whole product.
    // (13, 700, 600): the whole product copies A step-major, the narrower ranges read it in place.
    for &(m, n, k) in &[
        (1usize, 100usize, 37usize),
        (2, 40, 600),
        (7, 33, 16),
        (13, 700, 600),
    ] {
        let a = fill(m * k, 5);
        let b = fill(k * n, 6);
        let mut pb = PackedB::default();
        pb.pack(&b, k, n, (n, 1));
        let mut whole = vec![0.0; m * n];
        matmul(m, &mut whole, n, false, &a, k, &pb);
        let panels = n.div_ceil(16);
        let mut parts = vec![f32::NAN; m * n];
        for (lo, hi) in [
            (0, panels / 3),
            (panels / 3, panels - 1),
            (panels - 1, panels),
        ] {
            let mut only = vec![f32::NAN; m * n];
            // SAFETY: `only`/`parts` are m × n with row stride n, and this thread alone uses them.
            unsafe {
                elman::kernels::packed::matmul_columns(
                    m,
                    only.as_mut_ptr(),
                    n,
                    false,
                    &a,
                    k,
                    &pb,
                    lo..hi,
                );
                elman::kernels::packed::matmul_columns(
                    m,
                    parts.as_mut_ptr(),
                    n,
                    false,
                    &a,
                    k,
                    &pb,
                    lo..hi,
                );
            }
            for r in 0..m {
                for q in 0..n {
                    let inside = q >= lo * 16 && q < (hi * 16).min(n);
                    let x = only[r * n + q];
                    assert_eq!(
                        !x.is_nan(),
                        inside,
                        "m={m} n={n} panels {lo}..{hi}: C[{r}][{q}]"
                    );
                }
            }
        }
        assert_eq!(parts, whole, "m={m} n={n} k={k}");
    }
}
