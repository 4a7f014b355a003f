//! The stream form of a cell: one step of one stream (batch 1) as plain loops over `Vec<f32>`,
//! for sampling, completion, ranking, the REPL and heatmaps (`infer.rs`), and its backward step
//! in f64 for `gradflow`.

use crate::kernels::packed::PackedB;

/// A layer's weights at batch 1.
#[derive(Debug, Clone)]
pub struct StreamWeights {
    /// Layer 0: row x is token x's input term (`weight_ih_l0` transposed, vocab × gates·H);
    /// above: `weight_ih` as stored (gates·H × input).
    pub w_ih: Vec<f32>,
    /// `weight_hh` as stored (gates·H × H).
    pub w_hh: Vec<f32>,
    /// [`super::Cell::input_bias`] of the layer's biases.
    pub bias: Vec<f32>,
    /// `bias_hh` as stored.
    pub b_hh: Vec<f32>,
    /// `weight_hh`ᵀ packed (H × gates·H): a step's recurrent product as a one-row GEMM.
    pub w_hh_packed: PackedB,
    /// Above layer 0, `weight_ih`ᵀ packed the same way (input × gates·H).
    pub w_ih_packed: PackedB,
}

/// What one batch-1 step of a layer left: its state after the step and its scratch (the gate
/// values), as `gradflow` keeps them.
#[derive(Debug, Clone, Default)]
pub struct StepRecord {
    pub h: Vec<f32>,
    /// An LSTM's cell state (empty otherwise).
    pub c: Vec<f32>,
    pub gates: Vec<f32>,
}

/// ∂L/∂(a layer's state) at batch 1, in f64: the hidden state's part, and an LSTM's cell state's.
#[derive(Debug, Clone, Default)]
pub struct StateGrad {
    pub h: Vec<f64>,
    pub c: Vec<f64>,
    /// Scratch for the cell's backward step.
    pub scratch: Vec<f64>,
}

impl StateGrad {
    /// Zeros for a layer of `h` units of a cell with `gates` gate blocks carrying `carried`
    /// vectors.
    pub fn new(gates: usize, carried: usize, h: usize) -> StateGrad {
        StateGrad {
            h: vec![0.0; h],
            c: vec![0.0; if carried > 1 { h } else { 0 }],
            scratch: vec![0.0; gates * h],
        }
    }
}

/// A cell at batch 1.
pub trait StreamCell: Sync + Send {
    /// Floats of scratch [`StreamCell::step`] needs for a layer of `h` units (what it leaves
    /// there after a step is what [`StreamCell::backward`] reads: the gate values).
    fn scratch_len(&self, h: usize) -> usize;

    /// One step of a layer. `x_proj` is the input term without bias and `rec` the recurrent
    /// product h(t−1)·W_hhᵀ without bias (gates·H each); `h` (and an LSTM's `c`) the layer's
    /// state, updated in place.
    fn step(
        &self,
        w: &StreamWeights,
        x_proj: &[f32],
        rec: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        scratch: &mut [f32],
    );

    /// In f64, for `gradflow`: `d` holds ∂L/∂(state after step τ) on entry and ∂L/∂(state after
    /// step τ−1) on return, through this layer's own recurrence (the exact path for the top
    /// layer). `after` is what step τ left, `before` what step τ − 1 left.
    fn backward(
        &self,
        w: &StreamWeights,
        after: &StepRecord,
        before: &StepRecord,
        d: &mut StateGrad,
    );

    /// In f64, for `gradflow`: adds to `d.c` what the carried state of step τ gets from `d.h`
    /// within the step itself (an LSTM's h = o ⊙ tanh c): at k = 0 the only way the loss reaches
    /// c(t). A cell that carries h alone has nothing to add.
    fn carried_from_output(&self, _at: &StepRecord, _d: &mut StateGrad) {}
}

/// `out += W_hhᵀ · dp` in f64 (`w_hh` is gates·H × H as stored, `dp` gates·H): the part of
/// ∂L/∂h(t−1) that flows back through the recurrent product, for every cell.
pub fn add_recurrent_gradient(w_hh: &[f32], dp: &[f64], out: &mut [f64]) {
    let h = out.len();
    for (q, &dq) in dp.iter().enumerate() {
        if dq == 0.0 {
            continue;
        }
        let row = &w_hh[q * h..(q + 1) * h];
        for (x, &r) in out.iter_mut().zip(row) {
            *x += dq * r as f64;
        }
    }
}
