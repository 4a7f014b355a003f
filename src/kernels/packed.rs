//! A GEMM for the recurrence's sequential products, with the H×H matrix packed once per window.
//!
//! Every BPTT window multiplies a small block of states (b streams × H) by the same recurrent
//! matrix T times forward and T times backward. The `gemm` crate packs that matrix into its panel
//! layout inside every call: an H² copy per step, measured at ~17% of the whole training step at
//! H = 1024 (its unpacked path is slower still). Here the matrix is packed once into panels of
//! `NR` = 16 columns, and a register tile runs over them: with AVX2, 6 rows × 16 columns (12
//! accumulators, 2 panel vectors and one broadcast: 15 of the 16 registers); with AVX-512, up to
//! 12 rows × 2 panels (24 accumulators of 16 floats, 2 panel vectors and a broadcast: 27 of 32),
//! edges written with masked stores. Both accumulate each element of C with FMAs in the same
//! order, so they give the same bits. Tested against a plain triple loop on every level this CPU
//! has (`tests/packed.rs`); measured in `elman bench`.

use super::isa::{by_level, Isa};

/// The register tile this level runs (for `elman bench`'s report).
pub fn path(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 => "avx512, up to 12×32 register tile",
        Isa::Avx2 => "avx2+fma, 6×16 register tile",
        Isa::Portable => "portable, one row × 16 columns",
    }
}

/// Columns per packed panel: two 8-float AVX2 vectors.
pub const NR: usize = 16;
/// Rows of C per register tile.
const MR: usize = 6;
/// Depth of one pass over a panel: 512 × 16 floats = 32 KiB, about the L1 cache.
const KC: usize = 512;

/// From this many panels (256 columns) on, and with A's rows at least `PACK_A_STRIDE` floats
/// apart, the AVX-512 tiles read A's depth block from a copy packed step-major (each tile's rows'
/// p-th elements side by side, see `pack_a`) instead of from its rows a row stride apart: at
/// H = 1024 that stride is 4 KiB, and every row of a tile falls in one set of the L1 cache. 1.2×
/// the training rate at H = 1024; with fewer panels (the decoder's 65 columns) the copy costs more
/// than it saves, and with rows 1 KiB apart (an LSTM's h at H = 256) a 12-row tile spreads over
/// four sets and the copy cost ~3% of scoring. The AVX2 path's 6-row tiles lost ~5% with it at
/// H = 256. The sums are unchanged: the same FMAs in the same order.
#[cfg(target_arch = "x86_64")]
const PACK_A_PANELS: usize = 16;
/// See `PACK_A_PANELS`: rows of A 2 KiB or more apart.
#[cfg(target_arch = "x86_64")]
const PACK_A_STRIDE: usize = 512;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The AVX-512 matmul's copy of A's depth block (m × KC floats), one per thread.
    static PACKED_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies rows `0..m` of A's depth block `k0..k0 + kc` into `buf`, tile by tile (`tiles` gives
/// the row count of each tile in order), each tile step-major: row i's p-th element of a tile
/// of R rows starting at row r lands at `r·kc + p·R + i`.
///
/// # Safety
/// A (`ap`, row stride `lda`) must hold rows `0..m`, columns `k0..k0 + kc`.
#[cfg(target_arch = "x86_64")]
unsafe fn pack_a(
    buf: &mut Vec<f32>,
    ap: *const f32,
    lda: usize,
    k0: usize,
    kc: usize,
    m: usize,
    tiles: impl Iterator<Item = usize>,
) {
    buf.clear();
    buf.resize(m * kc, 0.0);
    let mut r = 0;
    for rows in tiles {
        let dst = &mut buf[r * kc..(r + rows) * kc];
        for i in 0..rows {
            let src = std::slice::from_raw_parts(ap.add((r + i) * lda + k0), kc);
            for (p, &x) in src.iter().enumerate() {
                dst[p * rows + i] = x;
            }
        }
        r += rows;
    }
}

/// B (k × n) packed into ⌈n / NR⌉ panels, each k rows of NR floats (zero past column n).
#[derive(Default, Clone, Debug)]
pub struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs B (k × n, element (p, q) at `b[p * rs + q * cs]`) into `self`, reusing its buffer.
    pub fn pack(&mut self, b: &[f32], k: usize, n: usize, (rs, cs): (usize, usize)) {
        assert!(k == 0 || n == 0 || b.len() > (k - 1) * rs + (n - 1) * cs);
        let panels = n.div_ceil(NR);
        self.k = k;
        self.n = n;
        self.data.resize(panels * k * NR, 0.0);
        if cs == 1 {
            // Rows of B are contiguous: read each once, front to back, dealing its 16-column
            // pieces out to the panels (a panel-by-panel walk would stride through memory).
            for p in 0..k {
                let row = &b[p * rs..p * rs + n];
                for j in 0..panels {
                    let cols = NR.min(n - j * NR);
                    let dst = &mut self.data[(j * k + p) * NR..(j * k + p + 1) * NR];
                    dst[..cols].copy_from_slice(&row[j * NR..j * NR + cols]);
                    dst[cols..].iter_mut().for_each(|x| *x = 0.0);
                }
            }
        } else {
            // Columns of B are contiguous (B = Wᵀ read from W): a panel reads 16 of them side
            // by side.
            for j in 0..panels {
                let cols = NR.min(n - j * NR);
                let panel = &mut self.data[j * k * NR..(j + 1) * k * NR];
                for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                    for (q, d) in dst[..cols].iter_mut().enumerate() {
                        *d = b[p * rs + (j * NR + q) * cs];
                    }
                    dst[cols..].iter_mut().for_each(|x| *x = 0.0);
                }
            }
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    fn panel(&self, j: usize) -> &[f32] {
        &self.data[j * self.k * NR..(j + 1) * self.k * NR]
    }
}

/// C (m × n, row stride `ldc`) = [C +] A (m × k, row stride `lda`) · B.
pub fn matmul(
    m: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &PackedB,
) {
    let n = b.n;
    if m == 0 || n == 0 {
        return;
    }
    check_c(m, c, ldc, n);
    // SAFETY: `check_c` bounds every element of C the product writes inside `c`, which is borrowed
    // mutably for the call; `matmul_columns` checks A.
    unsafe {
        matmul_columns(
            m,
            c.as_mut_ptr(),
            ldc,
            accumulate,
            a,
            lda,
            b,
            0..n.div_ceil(NR),
        )
    }
}

/// The columns of panels `panels` only: C[r][q] [+]= (A·B)[r][q] for r < m and q in
/// [panels.start·NR, min(panels.end·NR, n)); no other element of C is read or written. Lets
/// threads share one product by splitting its panels (`fast.rs`, scoring a single stream).
///
/// # Safety
/// `c` must be valid for reads and writes at `r * ldc + q` for those (r, q), and no other thread
/// may access those elements during the call. A must be as `matmul` checks it (it panics if not).
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_columns(
    m: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    panels: std::ops::Range<usize>,
) {
    let (k, n) = (b.k, b.n);
    assert!(panels.end <= n.div_ceil(NR) && panels.start <= panels.end);
    if m == 0 || n == 0 || panels.is_empty() {
        return;
    }
    check_a(m, a, lda, k);
    // SAFETY: A is checked above, C is the caller's promise.
    unsafe { dispatch(super::isa::isa(), m, c, ldc, accumulate, a, lda, b, panels) }
}

/// # Safety
/// As `matmul_columns`, with A checked and `isa` one this CPU runs.
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch(
    isa: Isa,
    m: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    panels: std::ops::Range<usize>,
) {
    // SAFETY (each arm): the CPU has the level's features (checked by `by_level!`); the operands
    // are the caller's promise. An empty inner dimension takes the portable loop at every level.
    by_level!(
        isa,
        avx512 => unsafe {
            if b.k > 0 {
                avx512::matmul(m, c, ldc, accumulate, a, lda, b, panels)
            } else {
                portable(m, c, ldc, accumulate, a, lda, b, panels)
            }
        },
        avx2 => unsafe {
            if b.k > 0 {
                avx2::matmul(m, c, ldc, accumulate, a, lda, b, panels)
            } else {
                portable(m, c, ldc, accumulate, a, lda, b, panels)
            }
        },
        portable => unsafe { portable(m, c, ldc, accumulate, a, lda, b, panels) },
    )
}

/// C (m × n, row stride `ldc`) = [C +] A · B on the kernel of level `isa` (tests hold every level
/// this CPU has to a plain loop). Panics if the CPU cannot run `isa`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_on(
    isa: Isa,
    m: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &PackedB,
) {
    let n = b.n;
    if m == 0 || n == 0 {
        return;
    }
    check_c(m, c, ldc, n);
    check_a(m, a, lda, b.k);
    // SAFETY: `check_c` bounds C inside the mutably borrowed `c`, `check_a` A; `dispatch`
    // checks the level.
    unsafe {
        dispatch(
            isa,
            m,
            c.as_mut_ptr(),
            ldc,
            accumulate,
            a,
            lda,
            b,
            0..n.div_ceil(NR),
        )
    }
}

/// The portable path (used without AVX2/FMA; public so tests can hold both paths to a plain
/// loop): one row of C at a time, a panel's 16 sums in a small array.
pub fn matmul_portable(
    m: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &PackedB,
) {
    let n = b.n;
    if m == 0 || n == 0 {
        return;
    }
    check_c(m, c, ldc, n);
    check_a(m, a, lda, b.k);
    // SAFETY: `check_c` bounds C inside the mutably borrowed `c`.
    unsafe {
        portable(
            m,
            c.as_mut_ptr(),
            ldc,
            accumulate,
            a,
            lda,
            b,
            0..n.div_ceil(NR),
        )
    }
}

/// # Safety
/// As `matmul_columns`, with A already checked.
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    m: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    panels: std::ops::Range<usize>,
) {
    let (k, n) = (b.k, b.n);
    for j in panels {
        let panel = b.panel(j);
        let cols = NR.min(n - j * NR);
        for r in 0..m {
            let mut acc = [0f32; NR];
            for (p, row) in panel.chunks_exact(NR).enumerate().take(k) {
                let x = a[r * lda + p];
                acc.iter_mut().zip(row).for_each(|(s, &w)| *s += x * w);
            }
            for (q, s) in acc[..cols].iter().enumerate() {
                // SAFETY: (r, j·NR + q) is one of the caller's elements.
                let d = unsafe { &mut *c.add(r * ldc + j * NR + q) };
                *d = if accumulate { *d + s } else { *s };
            }
        }
    }
}

/// The operands' shapes and lengths (m, n > 0): what keeps the unchecked kernel in bounds.
fn check_c(m: usize, c: &[f32], ldc: usize, n: usize) {
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "C is too small");
}

/// A (m × k, row stride `lda`) lies inside `a` (m > 0).
fn check_a(m: usize, a: &[f32], lda: usize, k: usize) {
    assert!(
        k == 0 || (lda >= k && a.len() >= (m - 1) * lda + k),
        "A is too small"
    );
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PackedB, KC, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA must be available; the operands as `super::matmul_columns` requires, k > 0.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul(
        m: usize,
        cp: *mut f32,
        ldc: usize,
        accumulate: bool,
        a: &[f32],
        lda: usize,
        b: &PackedB,
        panels: std::ops::Range<usize>,
    ) {
        let (k, n) = (b.k, b.n);
        let ap = a.as_ptr();
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            // The first depth block writes C (or adds to it), the later ones add.
            let add = accumulate || k0 > 0;
            if m <= 2 {
                // One or two rows (a single stream: `elman eval`'s exact score): a 1-row tile
                // has 2 accumulators and waits on FMA latency, so run a row across 4 panels
                // at once instead (8 accumulators).
                for r in 0..m {
                    let (a, c) = (ap.add(r * lda + k0), cp.add(r * ldc));
                    let mut j = panels.start;
                    while j < panels.end {
                        let group = (panels.end - j).min(4);
                        let panel = b.panel(j).as_ptr().add(k0 * NR);
                        let (c, cols) = (c.add(j * NR), (n - j * NR).min(group * NR));
                        match group {
                            4 => row::<4>(kc, a, panel, k * NR, c, cols, add),
                            3 => row::<3>(kc, a, panel, k * NR, c, cols, add),
                            2 => row::<2>(kc, a, panel, k * NR, c, cols, add),
                            _ => row::<1>(kc, a, panel, k * NR, c, cols, add),
                        }
                        j += group;
                    }
                }
                k0 += kc;
                continue;
            }
            for j in panels.clone() {
                let panel = b.panel(j).as_ptr().add(k0 * NR);
                let cols = NR.min(n - j * NR);
                let mut r = 0;
                while r < m {
                    let (a, c) = (ap.add(r * lda + k0), cp.add(r * ldc + j * NR));
                    let rows = tile_rows(m - r);
                    match rows {
                        6 => tile::<6>(kc, a, lda, panel, c, ldc, cols, add),
                        5 => tile::<5>(kc, a, lda, panel, c, ldc, cols, add),
                        4 => tile::<4>(kc, a, lda, panel, c, ldc, cols, add),
                        3 => tile::<3>(kc, a, lda, panel, c, ldc, cols, add),
                        2 => tile::<2>(kc, a, lda, panel, c, ldc, cols, add),
                        _ => tile::<1>(kc, a, lda, panel, c, ldc, cols, add),
                    }
                    r += rows;
                }
            }
            k0 += kc;
        }
    }

    /// One row of C across P consecutive panels (`stride` floats apart): C [+]= a (kc) · panels;
    /// only the first `cols` of the P·NR columns are touched.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn row<const P: usize>(
        kc: usize,
        a: *const f32,
        panel: *const f32,
        stride: usize,
        c: *mut f32,
        cols: usize,
        add: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; P];
        for p in 0..kc {
            let x = _mm256_broadcast_ss(&*a.add(p));
            for (j, pair) in acc.iter_mut().enumerate() {
                let w = panel.add(j * stride + p * NR);
                pair[0] = _mm256_fmadd_ps(x, _mm256_loadu_ps(w), pair[0]);
                pair[1] = _mm256_fmadd_ps(x, _mm256_loadu_ps(w.add(8)), pair[1]);
            }
        }
        let mut tmp = [0f32; 4 * NR];
        for (j, pair) in acc.iter().enumerate() {
            _mm256_storeu_ps(tmp.as_mut_ptr().add(j * NR), pair[0]);
            _mm256_storeu_ps(tmp.as_mut_ptr().add(j * NR + 8), pair[1]);
        }
        for (q, &t) in tmp[..cols].iter().enumerate() {
            *c.add(q) = if add { *c.add(q) + t } else { t };
        }
    }

    /// Rows of the next tile when `left` rows remain: 6 while that leaves no 1- or 2-row tile at
    /// the end (2 or 4 accumulators cannot hide the FMA latency: half speed or worse), else 4
    /// (so 32 = 6·4 + 4 + 4 and 7 = 4 + 3).
    #[inline]
    fn tile_rows(left: usize) -> usize {
        match left {
            7 | 8 => 4,
            _ => MR.min(left),
        }
    }

    /// R rows × NR columns: C [+]= A (R × kc, row stride lda) · panel (kc × NR); only the first
    /// `cols` columns of C are touched.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // One pointer per row of A and 4 depth steps per loop: the compiler otherwise rebuilds
        // each broadcast's address from the last (a chain of adds per step) and pays the loop's
        // bookkeeping on every step. Scoring gained ~5% in paired runs. (A is read in place:
        // the AVX-512 path's step-major copy of A made this path ~5% slower at H = 256.)
        let rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * lda));
        let step = |acc: &mut [[__m256; 2]; R], p: usize| {
            let b0 = _mm256_loadu_ps(panel.add(p * NR));
            let b1 = _mm256_loadu_ps(panel.add(p * NR + 8));
            for (row, ap) in acc.iter_mut().zip(&rows) {
                let x = _mm256_broadcast_ss(&*ap.add(p));
                row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                row[1] = _mm256_fmadd_ps(x, b1, row[1]);
            }
        };
        let mut p = 0;
        while p + 4 <= kc {
            step(&mut acc, p);
            step(&mut acc, p + 1);
            step(&mut acc, p + 2);
            step(&mut acc, p + 3);
            p += 4;
        }
        while p < kc {
            step(&mut acc, p);
            p += 1;
        }
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            if cols == NR {
                for (q, v) in row.iter().enumerate() {
                    let v = if add {
                        _mm256_add_ps(*v, _mm256_loadu_ps(dst.add(8 * q)))
                    } else {
                        *v
                    };
                    _mm256_storeu_ps(dst.add(8 * q), v);
                }
            } else {
                let mut tmp = [0f32; NR];
                _mm256_storeu_ps(tmp.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), row[1]);
                for (q, &t) in tmp[..cols].iter().enumerate() {
                    *dst.add(q) = if add { *dst.add(q) + t } else { t };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{pack_a, PackedB, KC, NR, PACKED_A, PACK_A_PANELS, PACK_A_STRIDE};
    use std::arch::x86_64::*;

    /// Rows of the tallest tile: 12 rows × 2 panels = 24 accumulators of the 32 registers.
    const MR: usize = 12;

    /// # Safety
    /// AVX-512 (F) must be available; the operands as `super::matmul_columns` requires, k > 0.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub unsafe fn matmul(
        m: usize,
        cp: *mut f32,
        ldc: usize,
        accumulate: bool,
        a: &[f32],
        lda: usize,
        b: &PackedB,
        panels: std::ops::Range<usize>,
    ) {
        let (k, n) = (b.k, b.n);
        let ap = a.as_ptr();
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            // The first depth block writes C (or adds to it), the later ones add.
            let add = accumulate || k0 > 0;
            if m <= 2 {
                // One or two rows (a single stream): a row across 8 panels at once, 8
                // accumulators in flight.
                for r in 0..m {
                    let (a, c) = (ap.add(r * lda + k0), cp.add(r * ldc));
                    let mut j = panels.start;
                    while j < panels.end {
                        let group = (panels.end - j).min(8);
                        let panel = b.panel(j).as_ptr().add(k0 * NR);
                        let c = c.add(j * NR);
                        let cols = (n - j * NR).min(group * NR);
                        match group {
                            8 => row::<8>(kc, a, panel, k * NR, c, cols, add),
                            7 => row::<7>(kc, a, panel, k * NR, c, cols, add),
                            6 => row::<6>(kc, a, panel, k * NR, c, cols, add),
                            5 => row::<5>(kc, a, panel, k * NR, c, cols, add),
                            4 => row::<4>(kc, a, panel, k * NR, c, cols, add),
                            3 => row::<3>(kc, a, panel, k * NR, c, cols, add),
                            2 => row::<2>(kc, a, panel, k * NR, c, cols, add),
                            _ => row::<1>(kc, a, panel, k * NR, c, cols, add),
                        }
                        j += group;
                    }
                }
                k0 += kc;
                continue;
            }
            // Panels two at a time (the last alone when their number is odd), rows in tiles of
            // at most 12 as even as the rows allow (32 = 11 + 11 + 10: no thin last tile).
            let tiles = m.div_ceil(MR);
            let sizes = || (0..tiles).map(|t| m * (t + 1) / tiles - m * t / tiles);
            let run = |a0: *const f32, packed: bool| {
                let mut j = panels.start;
                while j < panels.end {
                    let pair = (panels.end - j).min(2);
                    let panel = b.panel(j).as_ptr().add(k0 * NR);
                    let cols = (n - j * NR).min(pair * NR);
                    let mut r = 0;
                    for rows in sizes() {
                        // A's element (i, p): in place at i·lda + p, packed at p·rows + i.
                        let (a, steps) = if packed {
                            (a0.add(r * kc), (1, rows))
                        } else {
                            (a0.add(r * lda + k0), (lda, 1))
                        };
                        let c = cp.add(r * ldc + j * NR);
                        if pair == 2 {
                            tile::<2>(rows, kc, a, steps, panel, k * NR, c, ldc, cols, add);
                        } else {
                            tile::<1>(rows, kc, a, steps, panel, k * NR, c, ldc, cols, add);
                        }
                        r += rows;
                    }
                    j += pair;
                }
            };
            if panels.len() < PACK_A_PANELS || lda < PACK_A_STRIDE {
                run(ap, false);
            } else {
                PACKED_A.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    pack_a(&mut buf, ap, lda, k0, kc, m, sizes());
                    run(buf.as_ptr(), true);
                });
            }
            k0 += kc;
        }
    }

    /// The mask of the first `cols` (≤ 16) lanes.
    #[inline]
    fn lanes(cols: usize) -> __mmask16 {
        if cols >= 16 {
            0xFFFF
        } else {
            ((1u32 << cols) - 1) as __mmask16
        }
    }

    /// Writes (or adds) `v` into the first `cols` floats at `dst`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn put(dst: *mut f32, v: __m512, cols: usize, add: bool) {
        let mask = lanes(cols);
        let v = if add {
            _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst))
        } else {
            v
        };
        _mm512_mask_storeu_ps(dst, mask, v);
    }

    /// One row of C across P consecutive panels (`stride` floats apart): C [+]= a (kc) · panels;
    /// only the first `cols` of the P·NR columns are touched.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn row<const P: usize>(
        kc: usize,
        a: *const f32,
        panel: *const f32,
        stride: usize,
        c: *mut f32,
        cols: usize,
        add: bool,
    ) {
        let mut acc = [_mm512_setzero_ps(); P];
        for p in 0..kc {
            let x = _mm512_set1_ps(*a.add(p));
            for (j, s) in acc.iter_mut().enumerate() {
                *s = _mm512_fmadd_ps(x, _mm512_loadu_ps(panel.add(j * stride + p * NR)), *s);
            }
        }
        for (j, s) in acc.iter().enumerate() {
            let left = cols.saturating_sub(j * NR);
            if left > 0 {
                put(c.add(j * NR), *s, left, add);
            }
        }
    }

    /// `rows` (≤ 12) rows × P panels: C [+]= A (rows × kc, row stride lda) · the panels
    /// (`stride` floats apart); only the first `cols` of the P·NR columns are touched. Every
    /// element is one FMA chain over the depth, in order: the same sums as the AVX2 tile.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    // Never inlined, so its code does not depend on where it is called from: when an unrelated
    // change moved code around and LLVM inlined and specialised it differently, its inner loop
    // spilled registers and training at H = 256 ran 10–15% slower (AMD EPYC Zen 4, AVX-512).
    #[inline(never)]
    unsafe fn tile<const P: usize>(
        rows: usize,
        kc: usize,
        a: *const f32,
        steps: (usize, usize),
        panel: *const f32,
        stride: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
    ) {
        match rows {
            12 => tile_r::<12, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            11 => tile_r::<11, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            10 => tile_r::<10, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            9 => tile_r::<9, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            8 => tile_r::<8, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            7 => tile_r::<7, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            6 => tile_r::<6, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            5 => tile_r::<5, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            4 => tile_r::<4, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            3 => tile_r::<3, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            2 => tile_r::<2, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
            _ => tile_r::<1, P>(kc, a, steps, panel, stride, c, ldc, cols, add),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn tile_r<const R: usize, const P: usize>(
        kc: usize,
        a: *const f32,
        (row_step, depth_step): (usize, usize),
        panel: *const f32,
        stride: usize,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        add: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        // One pointer per row of A (see the AVX2 tile: the address chains otherwise cost); A's
        // element (i, p) is at i·row_step + p·depth_step (a row-major A: (lda, 1); packed
        // step-major: (1, R)).
        let rows: [*const f32; R] = std::array::from_fn(|i| a.add(i * row_step));
        let step = |acc: &mut [[__m512; P]; R], p: usize| {
            let mut bv = [_mm512_setzero_ps(); P];
            for (q, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(panel.add(q * stride + p * NR));
            }
            let at = p * depth_step;
            for (row, ap) in acc.iter_mut().zip(&rows) {
                let x = _mm512_set1_ps(*ap.add(at));
                for (s, v) in row.iter_mut().zip(&bv) {
                    *s = _mm512_fmadd_ps(x, *v, *s);
                }
            }
        };
        let mut p = 0;
        while p + 4 <= kc {
            step(&mut acc, p);
            step(&mut acc, p + 1);
            step(&mut acc, p + 2);
            step(&mut acc, p + 3);
            p += 4;
        }
        while p < kc {
            step(&mut acc, p);
            p += 1;
        }
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            for (q, v) in row.iter().enumerate() {
                let left = cols.saturating_sub(q * NR);
                if left > 0 {
                    put(dst.add(q * NR), *v, left, add);
                }
            }
        }
    }
}
