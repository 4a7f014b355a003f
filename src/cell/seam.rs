//! The cell seam: what one kind of recurrent cell is, apart from how each backend runs it.
//!
//! A layer of the network reads its input term (layer 0: a token's column of `weight_ih_l0`, a
//! lookup; above: the layer below's outputs times `weight_ih_l{k}`ᵀ), adds the recurrent product
//! `h(t−1)·weight_hh_l{k}ᵀ`, and turns the two into its new state. Everything up to those two
//! products is the same for every cell and lives with its user (`model.rs` for the reference
//! graph, `fused/` for the fused window, `infer.rs` for batch 1); what happens to them — the
//! pointwise step, its derivative, which states carry over — is the cell's: [`Cell`] says what
//! the cell is, and each backend reaches the cell's own form of it through one accessor:
//!
//! | form | trait | used by |
//! |---|---|---|
//! | candle graph | [`GraphCell`] | `train --reference`, the tests' reference |
//! | fused CPU window | [`FusedCell`] | training, validation, `eval` |
//! | batch 1 (and its f64 backward) | [`StreamCell`] | sample, complete, rank, repl, heatmap, gradflow |
//!
//! | whole-window graph (a GPU) | [`Cell::scan`] | `--device cuda` |
//!
//! The whole-window form is the graph form with the recurrence of a window as one operation
//! (`runtime::scan`, one kernel on a GPU). A cell says which recurrence kernel computes its
//! layer through [`Cell::scan`]; one without runs there step by step.

use super::fused::FusedCell;
use super::graph::GraphCell;
use super::kind::CellKind;
use super::stream::StreamCell;

/// A kind of recurrent cell. Implementations are stateless descriptions (the weights live with
/// each form's user); `cell::of` gives the one a model uses.
pub trait Cell: Sync + Send + std::fmt::Debug {
    /// Which kind it is; its gate blocks, carried states and names are the kind's.
    fn kind(&self) -> CellKind;

    /// Gate blocks per hidden unit: `weight_ih_l{k}` and `weight_hh_l{k}` have gates·H rows.
    fn gates(&self) -> usize {
        self.kind().gates()
    }

    /// Vectors of H a layer carries from step to step: 1, or 2 for an LSTM (h and c).
    fn carried(&self) -> usize {
        self.kind().carried()
    }

    /// The bias folded into a layer's input term (added once per token row or per position,
    /// never inside the recurrence), from the layer's two stored biases.
    fn input_bias(&self, b_ih: &[f32], b_hh: &[f32], out: &mut [f32]);

    /// A guaranteed per-step shrink factor of ‖∂L/∂h‖, when the cell has one (the chapter's
    /// ‖W‖₂ · sup σ′ for an Elman layer); `w_hh_norm` is ‖W‖₂.
    fn gradient_bound_rate(&self, w_hh_norm: f64) -> Option<f64>;

    /// The window-scan kernel that computes a layer of this cell over a whole window in one
    /// operation (`kernels::scan`), if there is one.
    fn scan(&self) -> Option<crate::kernels::scan::Recurrence> {
        None
    }

    /// Its step on candle's graph.
    fn graph(&self) -> &dyn GraphCell;

    /// Its pass through a layer of the fused CPU window.
    fn fused(&self) -> &dyn FusedCell;

    /// Its step at batch 1.
    fn stream(&self) -> &dyn StreamCell;
}
