//! The graph form of a cell: one step on candle's autograd graph, for a batch. What the reference
//! network (`model.rs`, `train --reference`) runs and what the tests hold every other form to.
//! Written with candle's own ops, so it runs wherever candle does.

use candle_core::Tensor;

/// The recurrent state of one layer: h(t), shape (batch, hidden), and an LSTM's cell state c(t).
#[derive(Debug, Clone)]
pub struct LayerState {
    pub h: Tensor,
    pub c: Option<Tensor>,
}

/// A layer's recurrent weight and biases as the reference graph reads them.
pub struct GraphWeights {
    /// `weight_hh`ᵀ, (H, gates·H), contiguous.
    pub w_hh_t: Tensor,
    pub b_ih: Tensor,
    pub b_hh: Tensor,
    /// [`GraphCell::input_bias`] of the two, (1, gates·H).
    pub bias: Tensor,
}

/// A cell on candle's graph.
pub trait GraphCell: Sync + Send {
    /// The bias folded into a layer's input term ([`super::Cell::input_bias`]), differentiable:
    /// both stored biases get their gradients.
    fn input_bias(&self, b_ih: &Tensor, b_hh: &Tensor) -> candle_core::Result<Tensor>;

    /// One step of a layer for a batch. `x_proj` is the input term without any bias
    /// ((batch, gates·H)); `w` holds the layer's recurrent weight and biases.
    fn step(
        &self,
        w: &GraphWeights,
        x_proj: &Tensor,
        state: &LayerState,
    ) -> candle_core::Result<LayerState>;
}
