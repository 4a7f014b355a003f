//! The cells a recurrent layer can be made of, and the seam every form of the network runs them
//! through (`seam.rs`: what a cell is; `graph.rs`, `fused.rs`, `stream.rs`: one trait per
//! backend). Each cell's file holds all of its forms side by side, so its forward and backward
//! equations read together.
//!
//! Every cell stores its parameters under PyTorch's names and layouts (`weight_ih_l{k}` is
//! (gates·H) × input, gate blocks stacked by rows), so a checkpoint loads into the matching
//! `torch.nn` module. Adding a cell is its kind in `kind.rs`, one file implementing [`Cell`] and
//! the three forms, a line in [`of`], and its tests (the fused path against the graph, the graph
//! against finite differences).

pub mod elman;
pub mod fused;
pub mod graph;
pub mod gru;
pub mod kind;
pub mod lstm;
pub mod seam;
pub mod stream;

pub use elman::Elman;
pub use fused::{BwdBufs, FusedCell, LayerBuf, LayerBwd, LayerFwd, LayerInput, PreGrad, Window};
pub use graph::{GraphCell, GraphWeights, LayerState};
pub use gru::Gru;
pub use kind::{Activation, CellKind};
pub use lstm::Lstm;
pub use seam::Cell;
pub use stream::{StateGrad, StepRecord, StreamCell, StreamWeights};

/// The cell of `kind` (an Elman cell with nonlinearity `act`; the gated cells have their own).
pub fn of(kind: CellKind, act: Activation) -> &'static dyn Cell {
    static ELMAN: [Elman; 3] = [
        Elman {
            act: Activation::Tanh,
        },
        Elman {
            act: Activation::Sigmoid,
        },
        Elman {
            act: Activation::Relu,
        },
    ];
    match (kind, act) {
        (CellKind::Lstm, _) => &Lstm,
        (CellKind::Gru, _) => &Gru,
        (CellKind::Elman, Activation::Tanh) => &ELMAN[0],
        (CellKind::Elman, Activation::Sigmoid) => &ELMAN[1],
        (CellKind::Elman, Activation::Relu) => &ELMAN[2],
    }
}
