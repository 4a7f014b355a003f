//! The kernel layer: every hot numeric loop elman runs, and the one place that decides which
//! instruction set runs it.
//!
//! - [`gemm`]: the large strided products (through the `gemm` crate), bias rows and column sums;
//! - [`packed`]: the recurrence's small sequential products against a matrix packed once;
//! - [`math`]: exp, the activations and their derivatives, softmax cross-entropy, dot products.
//!
//! Each kernel is written once as plain Rust (or, for the packed tile and scoring's tanh, as
//! intrinsics) and compiled per instruction-set level with `#[target_feature]`. [`isa()`] picks the
//! level once per process from what the CPU reports, capped by `ELMAN_ISA` when it is set (so a
//! benchmark or a test can run a lower path on a faster machine); the `*_on` forms take the level
//! explicitly, which is how the tests hold every available path to the portable one.

use serde::Serialize;

pub mod columns;
pub mod gemm;
pub mod isa;
pub mod math;
pub mod packed;
pub mod scan;

pub use isa::{detected, isa, Isa};

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
