//! What a cell is, as data: the kinds of cell a model can be made of and the Elman cell's
//! nonlinearity, with every fact the rest of elman asks of them (gate blocks, carried states,
//! names for people and for PyTorch). Code outside `cell/` asks these questions instead of
//! matching on the kind, so adding a cell is a change here and in its own file, not a search.

use serde::{Deserialize, Serialize};

/// The kinds of cell a model can be made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
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
    pub const ALL: [CellKind; 3] = [CellKind::Elman, CellKind::Lstm, CellKind::Gru];

    /// Its name in `config.json`, on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Elman => "elman",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// What it is, in a line (`--help`).
    pub fn about(self) -> &'static str {
        match self {
            CellKind::Elman => {
                "The chapter's Elman network: s(t) = σ(U x(t) + W s(t−1) + b) (PyTorch's nn.RNN)"
            }
            CellKind::Lstm => {
                "Long short-term memory (PyTorch's nn.LSTM: gates i, f, g, o and a cell state c)"
            }
            CellKind::Gru => "Gated recurrent unit (PyTorch's nn.GRU: gates r, z, n)",
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

    /// Gate blocks per hidden unit: `weight_ih_l{k}` and `weight_hh_l{k}` have gates·H rows.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Elman => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// Vectors of H a layer carries from step to step (and window to window): 1, the hidden
    /// state h; 2 for an LSTM, h and its cell state c.
    pub fn carried(self) -> usize {
        match self {
            CellKind::Lstm => 2,
            CellKind::Elman | CellKind::Gru => 1,
        }
    }

    /// Whether it has gates that learn what to keep (the chapter's answer to vanishing
    /// gradients), at several recurrent products per step.
    pub fn is_gated(self) -> bool {
        self.gates() > 1
    }

    /// Whether `--activation` chooses its nonlinearity (the gated cells have their own).
    pub fn takes_activation(self) -> bool {
        self == CellKind::Elman
    }

    /// The oldest checkpoint format that describes a model of this cell (version 2 brought the
    /// gated cells), so an older elman reads what it can.
    pub fn format_version(self) -> u32 {
        match self {
            CellKind::Elman => 1,
            CellKind::Lstm | CellKind::Gru => 2,
        }
    }

    /// A short name with its nonlinearity: `tanh`, `sigmoid`, `relu` for an Elman cell, else the
    /// cell's name (`lstm`).
    pub fn short_label(self, act: Activation) -> String {
        if self.takes_activation() {
            act.to_string()
        } else {
            self.name().to_string()
        }
    }

    /// The long name people read: `Elman RNN (tanh)`, `LSTM`, `GRU`.
    pub fn long_label(self, act: Activation) -> String {
        if self.takes_activation() {
            format!("Elman RNN ({act})")
        } else {
            self.name().to_uppercase()
        }
    }

    /// What shapes a layer's output: `activation tanh`, or `cell lstm`.
    pub fn output_label(self, act: Activation) -> String {
        if self.takes_activation() {
            format!("activation {act}")
        } else {
            format!("cell {self}")
        }
    }

    /// sup σ′ of the nonlinearity between a state and the next, where one bounds the gradient
    /// (the chapter's ‖∂s(t)/∂s(t−1)‖ ≤ ‖W‖₂ · sup σ′): the Elman cell's; none for a gated cell,
    /// whose gates carry information past it.
    pub fn sup_slope(self, act: Activation) -> Option<f64> {
        self.takes_activation().then(|| act.max_slope())
    }

    /// Why a gated cell has no such bound (`None` for the Elman cell).
    pub fn gradient_path(self) -> Option<&'static str> {
        match self {
            CellKind::Elman => None,
            CellKind::Lstm => Some(
                "its cell state c is updated by addition (∂c(t)/∂c(t−1) = f, a learned gate)",
            ),
            CellKind::Gru => Some(
                "its update gate z mixes h(t−1) straight into h(t) (∂h(t)/∂h(t−1) ⊇ z, a learned gate)",
            ),
        }
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The nonlinearity σ of an Elman cell's hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// tanh: zero-centred, σ′ ≤ 1 (PyTorch's default).
    Tanh,
    /// The book's logistic sigmoid: σ′ ≤ 1/4, so gradients vanish fastest.
    Sigmoid,
    /// max(0, x): no saturation for positive inputs, may explode.
    Relu,
}

impl Activation {
    /// σ′ written in terms of σ's output s = σ(a), which is what BPTT has at hand.
    pub fn derivative_from_output(self, s: f32) -> f32 {
        match self {
            Activation::Tanh => 1.0 - s * s,
            Activation::Sigmoid => s * (1.0 - s),
            Activation::Relu => {
                if s > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// sup σ′: 1 for tanh and relu, the book's 1/4 for sigmoid.
    pub fn max_slope(self) -> f64 {
        match self {
            Activation::Sigmoid => 0.25,
            Activation::Tanh | Activation::Relu => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
