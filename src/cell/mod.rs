//! The cell seam: what one kind of recurrent cell is, written once for every place elman runs it.
//!
//! A layer of the network reads its input term (layer 0: a token's column of `weight_ih_l0`, a
//! lookup; above: the layer below's outputs times `weight_ih_l{k}`ᵀ), adds the recurrent product
//! `h(t−1)·weight_hh_l{k}ᵀ`, and turns the two into its new state. Everything up to those two
//! products is the same for every cell and lives with its user (`model.rs` for the reference
//! graph, `fast/` for the fused window, `infer.rs` for batch 1); what happens to them — the
//! pointwise step, its derivative, which states carry over, how the parameters start — is the
//! cell's, behind [`Cell`]:
//!
//! | form | used by | method |
//! |---|---|---|
//! | candle graph | `train --reference`, the tests' reference | [`Cell::graph_step`] |
//! | fused window, forward | training, validation, `eval` | [`Cell::forward_layer`] |
//! | fused window, backward | training | [`Cell::backward_layer`] |
//! | batch 1, forward | sample, complete, rank, repl, heatmap | [`Cell::engine_step`] |
//! | batch 1, backward (f64) | `gradflow` | [`Cell::engine_backward`] |
//!
//! Every cell stores its parameters under PyTorch's names and layouts (`weight_ih_l{k}` is
//! (gates·H) × input, gate blocks stacked by rows), so a checkpoint loads into the matching
//! `torch.nn` module. Adding a cell is one implementation of this trait, a line in [`of`], and
//! its tests (the fused path against the graph, the graph against finite differences).

pub mod elman;
pub mod gru;
pub mod lstm;

pub use elman::Elman;
pub use gru::Gru;
pub use lstm::Lstm;

use crate::kernels::packed::PackedB;
use crate::model::{Activation, LayerState, ModelConfig, Param};
use serde::{Deserialize, Serialize};

/// The kinds of cell a model can be made of.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// The chapter's Elman network: s(t) = σ(U x(t) + W s(t−1) + b) (PyTorch's nn.RNN).
    #[default]
    Elman,
    /// Long short-term memory (PyTorch's nn.LSTM: gates i, f, g, o and a cell state c).
    Lstm,
    /// Gated recurrent unit (PyTorch's nn.GRU: gates r, z, n).
    Gru,
}

impl CellKind {
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Elman => "elman",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// The PyTorch module a checkpoint of this cell loads into.
    pub fn torch_module(self) -> &'static str {
        match self {
            CellKind::Elman => "nn.RNN",
            CellKind::Lstm => "nn.LSTM",
            CellKind::Gru => "nn.GRU",
        }
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kind of recurrent cell. Implementations are stateless descriptions (the weights live with
/// each form's user); [`of`] gives the one a model uses.
pub trait Cell: Sync + Send + std::fmt::Debug {
    /// Its name in `config.json`, `--help` and reports.
    fn kind(&self) -> CellKind;

    /// Gate blocks per hidden unit: `weight_ih_l{k}` and `weight_hh_l{k}` have gates·H rows.
    fn gates(&self) -> usize;

    /// Vectors of H a layer carries from step to step (and window to window): 1, the hidden
    /// state h; 2 for an LSTM, h and its cell state c.
    fn carried(&self) -> usize {
        1
    }

    /// Half-width of the uniform initialisation of `p` (PyTorch draws every weight of its
    /// recurrent modules from ±1/√H).
    fn init_bound(&self, p: Param, cfg: &ModelConfig) -> f64;

    /// The bias folded into a layer's input term (added once per token row or per position,
    /// never inside the recurrence), from the layer's two stored biases.
    fn input_bias(&self, b_ih: &[f32], b_hh: &[f32], out: &mut [f32]);

    /// [`Cell::input_bias`] on the graph (differentiable: both biases get their gradients).
    fn graph_input_bias(
        &self,
        b_ih: &candle_core::Tensor,
        b_hh: &candle_core::Tensor,
    ) -> candle_core::Result<candle_core::Tensor>;

    /// The reference graph: one step of a layer for a batch. `x_proj` is the input term without
    /// any bias ((batch, gates·H)); `w` holds the layer's recurrent weight and biases.
    fn graph_step(
        &self,
        w: &GraphWeights,
        x_proj: &candle_core::Tensor,
        state: &LayerState,
    ) -> candle_core::Result<LayerState>;

    /// The buffers one layer needs in one thread's share of a window.
    fn layer_buf(&self, win: Window) -> LayerBuf {
        LayerBuf::new(win)
    }

    /// The fused window's forward pass through one layer for one thread's streams: reads
    /// `buf.states[..b·H]` (and for an LSTM `buf.cells[..b·H]`: the carried state) and `input`,
    /// writes the states of every step and what the backward pass will read.
    fn forward_layer(&self, cx: &LayerFwd, input: &LayerInput, buf: &mut LayerBuf);

    /// The fused window's backward pass through one layer's recurrence: on entry `g.d_out`
    /// holds ∂loss/∂(this layer's outputs) for every step (T·b × H); on return the gradient with
    /// respect to the layer's pre-activations is where the returned [`PreGrad`] says.
    fn backward_layer(&self, cx: &LayerBwd, buf: &LayerBuf, g: &mut BwdBufs) -> PreGrad;

    /// Floats of scratch [`Cell::engine_step`] needs for a layer of `h` units (what it leaves
    /// there after a step is what [`Cell::engine_backward`] reads: the gate values).
    fn engine_scratch(&self, h: usize) -> usize {
        self.gates() * h
    }

    /// Batch 1: one step of a layer. `x_proj` is the input term without bias and `rec` the
    /// recurrent product h(t−1)·W_hhᵀ without bias (gates·H each); `h` (and an LSTM's `c`) the
    /// layer's state, updated in place.
    fn engine_step(
        &self,
        w: &EngineWeights,
        x_proj: &[f32],
        rec: &[f32],
        h: &mut [f32],
        c: &mut [f32],
        scratch: &mut [f32],
    );

    /// Batch 1, in f64, for `gradflow`: `d` holds ∂L/∂(state after step τ) on entry and
    /// ∂L/∂(state after step τ−1) on return, through this layer's own recurrence (the exact path
    /// for the top layer). `after` is what step τ left, `before` what step τ − 1 left.
    fn engine_backward(
        &self,
        w: &EngineWeights,
        after: &StepRecord,
        before: &StepRecord,
        d: &mut StateGrad,
    );

    /// A guaranteed per-step shrink factor of ‖∂L/∂h‖, when the cell has one (the chapter's
    /// ‖W‖₂ · sup σ′ for an Elman layer); `w_hh_norm` is ‖W‖₂.
    fn gradient_bound_rate(&self, w_hh_norm: f64) -> Option<f64>;
}

/// The cell a model is made of.
pub fn of(cfg: &ModelConfig) -> &'static dyn Cell {
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
    match (cfg.cell, cfg.activation) {
        (CellKind::Lstm, _) => &Lstm,
        (CellKind::Gru, _) => &Gru,
        (CellKind::Elman, Activation::Tanh) => &ELMAN[0],
        (CellKind::Elman, Activation::Sigmoid) => &ELMAN[1],
        (CellKind::Elman, Activation::Relu) => &ELMAN[2],
    }
}

/// A layer's recurrent weight and biases as the reference graph reads them.
pub struct GraphWeights {
    /// `weight_hh`ᵀ, (H, gates·H), contiguous.
    pub w_hh_t: candle_core::Tensor,
    pub b_ih: candle_core::Tensor,
    pub b_hh: candle_core::Tensor,
    /// `Cell::graph_input_bias` of the two, (1, gates·H).
    pub bias: candle_core::Tensor,
}

/// The shape of one thread's share of a window: `t_len` steps of `b` streams, H units.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub t_len: usize,
    pub b: usize,
    pub h: usize,
}

/// What a layer's forward pass reads besides its input.
pub struct LayerFwd<'a> {
    pub win: Window,
    /// `weight_hh`ᵀ packed for S(t−1)·Wᵀ (H × gates·H).
    pub w_fwd: &'a PackedB,
    /// `bias_hh` (a GRU keeps b_hn inside its reset gate's product).
    pub b_hh: &'a [f32],
    /// Nothing will be differentiated (validation, `eval`): faster activations may be used, and
    /// the cache (gate values kept for the backward pass) need not be kept past each step.
    pub scoring: bool,
    /// Threads that may share each step's product by columns (scoring a single stream); 1
    /// otherwise. A cell may use fewer.
    pub column_parts: usize,
}

/// What a layer's backward pass reads.
pub struct LayerBwd<'a> {
    pub win: Window,
    /// `weight_hh` packed for dP(t+1)·W (gates·H × H).
    pub w_bwd: &'a PackedB,
}

/// The gradient buffers of one layer's backward pass in one thread's share of a window.
pub struct BwdBufs<'a> {
    /// ∂loss/∂(the layer's outputs), T·b × H; a one-gate cell turns it into dP in place.
    pub d_out: &'a mut [f32],
    /// T·b × gates·H: the gradient with respect to the pre-activations (gated cells).
    pub d_pre: &'a mut [f32],
    /// T·b × gates·H: the recurrent side's, where it differs (a GRU's reset gate).
    pub d_rec: &'a mut [f32],
    /// Scratch the cell may use (grown as needed).
    pub scratch: &'a mut Vec<f32>,
}

/// Where a layer's input term comes from.
pub enum LayerInput<'a> {
    /// Layer 0: stream j at step t reads row `ids[t · stride + first + j]` of `table`, which holds
    /// the token's column of `weight_ih_l0` plus the input bias (gates·H floats per row).
    Tokens {
        table: &'a [f32],
        ids: &'a [u32],
        stride: usize,
        first: usize,
    },
    /// A layer above the first: the layer below's outputs `x` (T·b × input), times `w_ih`ᵀ
    /// (`w_ih` is gates·H × input) plus `bias` (gates·H).
    Dense {
        x: &'a [f32],
        w_ih: &'a [f32],
        bias: &'a [f32],
    },
}

impl LayerInput<'_> {
    /// Stream j's input-term row at step t (layer 0's table row, gates·H wide).
    #[inline]
    pub fn token_row(&self, g: usize, t: usize, j: usize) -> Option<&[f32]> {
        match *self {
            LayerInput::Tokens {
                table,
                ids,
                stride,
                first,
            } => {
                let x = ids[t * stride + first + j] as usize;
                Some(&table[x * g..(x + 1) * g])
            }
            LayerInput::Dense { .. } => None,
        }
    }
}

/// One layer's buffers in one thread's share of a window.
#[derive(Debug, Default)]
pub struct LayerBuf {
    /// S(−1), S(0) … S(T−1), each b × H: the layer's outputs, the carried state first.
    pub states: Vec<f32>,
    /// An LSTM's cell states, laid out as `states` (empty for other cells).
    pub cells: Vec<f32>,
    /// What each step leaves for the backward pass (gate values), the cell's own layout.
    pub cache: Vec<f32>,
    /// The input term of every step, T·b × gates·H, where a cell keeps it apart (a GRU above
    /// layer 0).
    pub input: Vec<f32>,
}

impl LayerBuf {
    pub fn new(win: Window) -> LayerBuf {
        LayerBuf {
            states: vec![0.0; (win.t_len + 1) * win.b * win.h],
            ..Default::default()
        }
    }
}

/// Where [`Cell::backward_layer`] left the gradient with respect to the pre-activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreGrad {
    /// In `d_out`, in place (T·b × H): one gate, whose input and recurrent terms are simply added.
    InPlace,
    /// In `d_pre` (T·b × gates·H), the same for the input and the recurrent term.
    Gates,
    /// The input term's in `d_pre`, the recurrent term's in `d_rec` (a GRU: its reset gate
    /// multiplies only the recurrent part of n).
    Split,
}

/// A layer's weights at batch 1.
#[derive(Debug, Clone)]
pub struct EngineWeights {
    /// Layer 0: row x is token x's input term (`weight_ih_l0` transposed, vocab × gates·H);
    /// above: `weight_ih` as stored (gates·H × input).
    pub w_ih: Vec<f32>,
    /// `weight_hh` as stored (gates·H × H).
    pub w_hh: Vec<f32>,
    /// `Cell::input_bias` of the layer's biases.
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
    /// Zeros for a layer of `h` units of `cell`.
    pub fn new(cell: &dyn Cell, h: usize) -> StateGrad {
        StateGrad {
            h: vec![0.0; h],
            c: vec![0.0; if cell.carried() > 1 { h } else { 0 }],
            scratch: vec![0.0; cell.gates() * h],
        }
    }
}
