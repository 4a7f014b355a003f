//! The instruction-set levels the kernels are compiled for, which one this process runs (chosen
//! once: [`isa`]), and the one mechanism every kernel uses to run the code of a level
//! ([`by_level!`], and [`dispatch!`] for plain Rust compiled per level).

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

/// Runs the arm of level `isa` once the CPU is known to have it: the one way every kernel picks
/// its code by instruction set (generic code compiled per level through [`dispatch!`],
/// intrinsics written per level, the packed tile). The avx arms exist on x86-64 only.
macro_rules! by_level {
    ($isa:expr, avx512 => $avx512:expr, avx2 => $avx2:expr, portable => $portable:expr $(,)?) => {{
        let isa: $crate::kernels::isa::Isa = $isa;
        isa.assert_supported();
        match isa {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::isa::Isa::Avx512 => $avx512,
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::isa::Isa::Avx2 => $avx2,
            _ => $portable,
        }
    }};
}
pub(crate) use by_level;

/// Defines `$on(isa, args…)`, which runs the plain-Rust `$generic` compiled for `isa`'s target
/// features, and `$name(args…)`, the same at the process's level ([`isa()`]). Adding a level is
/// adding an arm to [`by_level!`] and a compiled copy here.
macro_rules! dispatch {
    ($vis:vis $name:ident / $on:ident, $generic:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        #[inline]
        #[allow(unused_variables)]
        $vis fn $on(isa: $crate::kernels::isa::Isa, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                $generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) -> $ret {
                $generic($($arg),*)
            }
            $crate::kernels::isa::by_level!(
                isa,
                // SAFETY: `by_level!` checked that the CPU has these features.
                avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: `by_level!` checked that the CPU has AVX2 and FMA.
                avx2 => unsafe { avx2($($arg),*) },
                portable => $generic($($arg),*),
            )
        }

        #[inline]
        $vis fn $name($($arg: $ty),*) -> $ret {
            $on($crate::kernels::isa::isa(), $($arg),*)
        }
    };
}
pub(crate) use dispatch;
