//! The kernel layer: every hot numeric loop elman runs, and the one place that decides which
//! instruction set runs it.
//!
//! - [`gemm`]: the large strided products (through the `gemm` crate), bias rows and column sums;
//! - [`packed`]: the recurrence's small sequential products against a matrix packed once;
//! - [`math`]: exp, the activations and their derivatives, softmax cross-entropy, dot products.
//!
//! Each kernel is written once as plain Rust (or, for the packed tile and scoring's tanh, as
//! intrinsics) and compiled per instruction-set level with `#[target_feature]`. [`isa`] picks the
//! level once per process from what the CPU reports, capped by `ELMAN_ISA` when it is set (so a
//! benchmark or a test can run a lower path on a faster machine); the `*_on` forms take the level
//! explicitly, which is how the tests hold every available path to the portable one.

use serde::Serialize;
use std::sync::OnceLock;

/// The instruction-set levels elman has kernels for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// Plain Rust, whatever the compiler makes of it for the baseline target.
    Portable,
    /// x86-64 with AVX2 and FMA (256-bit vectors, 16 registers).
    Avx2,
    /// x86-64 with AVX-512 (F, VL, BW, DQ: the x86-64-v4 level; 512-bit vectors, 32 registers,
    /// masked loads and stores).
    Avx512,
}

/// Every level, lowest first.
const LEVELS: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Every level this CPU can run, lowest first (always starts with `Portable`).
    pub fn available() -> Vec<Isa> {
        let best = detected();
        LEVELS.into_iter().filter(|&i| i <= best).collect()
    }

    /// Panics unless this CPU can run `self`: what keeps the `*_on` functions sound, since they
    /// call code compiled for the level they are given.
    #[inline]
    pub fn assert_supported(self) {
        assert!(
            self <= detected(),
            "this CPU cannot run the {} kernels",
            self.name()
        );
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The best level this CPU runs, by its feature flags (checked once).
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma");
            if avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

/// The level every kernel runs at in this process: the best the CPU has, or lower when the
/// environment variable `ELMAN_ISA` (portable, avx2, avx512) asks for it. A request above what the CPU
/// has is capped to what it has.
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let best = detected();
        let asked = std::env::var("ELMAN_ISA").ok().and_then(|v| {
            LEVELS
                .into_iter()
                .find(|i| i.name() == v.trim().to_ascii_lowercase())
        });
        asked.map_or(best, |a| a.min(best))
    })
}

/// Defines `$on(isa, args…)`, which runs the plain-Rust `$generic` compiled for `isa`'s target
/// features, and `$name(args…)`, the same at the process's level ([`isa`]). Adding a level is
/// adding an arm here.
macro_rules! dispatch {
    ($vis:vis $name:ident / $on:ident, $generic:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        #[inline]
        #[allow(unused_variables)]
        $vis fn $on(isa: $crate::kernels::Isa, $($arg: $ty),*) -> $ret {
            isa.assert_supported();
            match isa {
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Isa::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn avx2($($arg: $ty),*) -> $ret {
                        $generic($($arg),*)
                    }
                    // SAFETY: `assert_supported` checked that the CPU has AVX2 and FMA.
                    unsafe { avx2($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Isa::Avx512 => {
                    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                    unsafe fn avx512($($arg: $ty),*) -> $ret {
                        $generic($($arg),*)
                    }
                    // SAFETY: `assert_supported` checked that the CPU has these features.
                    unsafe { avx512($($arg),*) }
                }
                _ => $generic($($arg),*),
            }
        }

        #[inline]
        $vis fn $name($($arg: $ty),*) -> $ret {
            $on($crate::kernels::isa(), $($arg),*)
        }
    };
}

pub mod columns;
pub mod gemm;
pub mod math;
pub mod packed;

/// Which path each kernel family runs at the process's level: what `elman bench` reports beside
/// its figures, so that every published number names the code that produced it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Paths {
    /// The level chosen for this process.
    pub isa: Isa,
    /// The large products (the `gemm` crate picks its own kernels at run time).
    pub gemm: String,
    /// The recurrence's packed product.
    pub packed: String,
    /// Activations, softmax and dot products.
    pub elementwise: String,
}

pub fn paths() -> Paths {
    let isa = isa();
    Paths {
        isa,
        gemm: gemm::path().to_string(),
        packed: packed::path(isa).to_string(),
        elementwise: isa.name().to_string(),
    }
}
