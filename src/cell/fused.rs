//! The fused form of a cell: its forward and backward pass through one layer for one thread's
//! share of a BPTT window, on the CPU kernels (`kernels/`). What training, validation and `eval`
//! run (`fused/`); everything up to the input term and after the layer's outputs is the
//! window's, this is only the recurrence.

use crate::kernels::packed::{PackedB, NR};

/// A cell on the fused CPU window.
pub trait FusedCell: Sync + Send {
    /// The buffers one layer needs in one thread's share of a window.
    fn layer_buf(&self, win: Window) -> LayerBuf {
        LayerBuf::new(win)
    }

    /// The forward pass through one layer for one thread's streams: reads `buf.states[..b·H]`
    /// (and for an LSTM `buf.cells[..b·H]`: the carried state) and `input`, writes the states of
    /// every step and what the backward pass will read.
    fn forward_layer(&self, cx: &LayerFwd, input: &LayerInput, buf: &mut LayerBuf);

    /// The backward pass through one layer's recurrence: on entry `g.d_out` holds
    /// ∂loss/∂(this layer's outputs) for every step (T·b × H); on return the gradient with
    /// respect to the layer's pre-activations is where the returned [`PreGrad`] says.
    fn backward_layer(&self, cx: &LayerBwd, buf: &LayerBuf, g: &mut BwdBufs) -> PreGrad;

    /// Whether scoring may split each step of a layer of `h` units over threads
    /// ([`LayerFwd::column_parts`]): the Elman cell by columns always, the gated cells by whole
    /// panels of each gate block, so only when H is a multiple of the panel width.
    fn splits_steps(&self, h: usize) -> bool {
        h.is_multiple_of(NR)
    }

    /// Whether [`FusedCell::backward_layer`] keeps the recurrent term's gradient apart
    /// ([`PreGrad::Split`]), so the window must lend it `BwdBufs::d_rec`.
    fn splits_recurrent_grad(&self) -> bool {
        false
    }
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

/// Where [`FusedCell::backward_layer`] left the gradient with respect to the pre-activations.
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
