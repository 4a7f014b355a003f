//! clap's `ValueEnum` for the library's enums, so that the library itself needs no clap: each
//! value's name on the command line and its help.

use crate::cell::{Activation, CellKind};
use crate::checkpoint::Schedule;
use crate::generate::RankBy;
use crate::optim::OptimizerKind;
use crate::plot::XAxis;
use crate::runtime::DeviceKind;
use crate::vocab::{Level, Segmenter};

/// Implements clap's `ValueEnum` for a library type, so the library's enums need no clap: each
/// variant's name on the command line and its help.
macro_rules! value_enum {
    ($ty:ty { $($variant:path => $name:literal: $help:literal),+ $(,)? }) => {
        impl clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($variant),+]
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(match self {
                    $($variant => clap::builder::PossibleValue::new($name).help($help)),+
                })
            }
        }
    };
}

impl clap::ValueEnum for CellKind {
    fn value_variants<'a>() -> &'a [Self] {
        &CellKind::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.about()))
    }
}
value_enum!(Activation {
    Activation::Tanh => "tanh": "tanh: zero-centred, σ′ ≤ 1 (PyTorch's default)",
    Activation::Sigmoid => "sigmoid": "The book's logistic sigmoid: σ′ ≤ 1/4, so gradients vanish fastest",
    Activation::Relu => "relu": "max(0, x): no saturation for positive inputs, may explode",
});
// `gpu` and PyTorch's `cuda:0` are what users coming from other tools type for the one GPU elman uses.
impl clap::ValueEnum for DeviceKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[DeviceKind::Cpu, DeviceKind::Cuda]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            DeviceKind::Cpu => PossibleValue::new("cpu")
                .help("The CPU: training's fused window on --threads threads (the default)"),
            DeviceKind::Cuda => PossibleValue::new("cuda").aliases(["gpu", "cuda:0"]).help(
                "An NVIDIA GPU (the first CUDA lists) runs each training window; everything else stays on the CPU",
            ),
        })
    }
}
value_enum!(Level {
    Level::Char => "char": "One token per Unicode character (exactly reversible)",
    Level::Word => "word": "Words and punctuation; newline becomes <eos>",
});
value_enum!(Segmenter {
    Segmenter::Auto => "auto": "jieba when the text has Chinese characters, else `words` (resolved when the vocabulary is built; the checkpoint records the result)",
    Segmenter::Words => "words": "Split at spaces and punctuation; Chinese characters one by one",
    Segmenter::Jieba => "jieba": "Chinese cut into words by jieba (its dictionary and HMM); other text as `words`",
    Segmenter::Spaces => "spaces": "Split at whitespace only, punctuation attached (WikiText's convention)",
});
value_enum!(OptimizerKind {
    OptimizerKind::Adam => "adam": "Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8)",
    OptimizerKind::Adagrad => "adagrad": "Adagrad (ε = 1e-10), the classic char-rnn choice",
    OptimizerKind::Sgd => "sgd": "Plain gradient descent, the book's",
});
value_enum!(Schedule {
    Schedule::Linear => "linear": "Falls linearly from --lr to 0 over the budget (--time, --steps or --epochs, whichever ends first): the run ends settled, whatever its length",
    Schedule::Plateau => "plateau": "Stays at --lr, multiplied by --lr-decay after --patience evaluations without improvement",
});
value_enum!(RankBy {
    RankBy::Total => "total": "Total log-probability of the candidate's tokens: the probability of the whole candidate",
    RankBy::Mean => "mean": "Mean log-probability per token: does not favour short candidates",
});
value_enum!(XAxis {
    XAxis::Tokens => "tokens": "Tokens trained on: per-token learning, whatever the speed",
    XAxis::Time => "time": "Seconds of training: what a budget buys",
});
