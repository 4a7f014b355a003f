//! The model a new run gets where its command line is silent, and why.
//!
//! A user types `elman train mybook.txt --time 10m`; what they get should be the best model elman
//! can train in those minutes, not the book's smallest network. The choices depend only on what is
//! known before the first step — the token level, the vocabulary's size and the budget — never on
//! the machine's speed, so the same command makes the same model everywhere. Measured on the
//! reference corpora against the PyTorch peer (docs/benchmarks.md, "Choosing the defaults"):
//!
//! - **An input embedding.** Read through `nn.Embedding`-style rows and W_ih, every step trains the
//!   shared input weights, where the one-hot U trains only the rows of the tokens it saw: on tiny
//!   Shakespeare in 180 s, 1.516 nats/char with a 64-wide embedding against 1.567 one-hot, same H.
//!   A small alphabet needs few dimensions (64 beat 128 there); a large one (Chinese characters,
//!   words) gets half the hidden size. `--one-hot` keeps the book's model.
//! - **The hidden size** follows the cost of a step: a small alphabet's decoder is cheap, so the
//!   recurrence can be 512 wide (1.567 against 1.626 at 256 on tiny Shakespeare); with thousands
//!   of Chinese characters the decoder dominates and 256 sees twice the text in the same time
//!   (4.684 against 4.709 on 西游记).
//! - **Words** get word_language_model's recipe: an embedding as wide as the hidden layer, tied to
//!   the decoder (`--tie`).
//! - **Dropout** by how many times the budget will read the text: a small text read hundreds of
//!   times is memorised (唐诗三百首's best model without dropout comes after ~15 readings), while
//!   a text read a few dozen times gains nothing from it and can lose (see [`dropout`]).
//! - The learning rate and its schedule are set in `setup::train_config` (Adam 3e-3 falling
//!   linearly to 0: with the schedule a higher start pays).

use super::schedule::training_flops_per_token;
use super::setup::Hyper;
use crate::checkpoint::TrainConfig;
use crate::model::ModelConfig;
use crate::vocab::Level;
use std::time::Duration;

/// A vocabulary this small is an alphabet (letters, digits, punctuation): a cheap decoder.
pub const SMALL_VOCAB: usize = 256;

/// The model's shape for a new run: what the user gave, the defaults for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub hidden: usize,
    pub embed: Option<usize>,
    pub tied: bool,
    /// What was chosen for the user (empty when they gave everything), for the line a run
    /// prints before it starts.
    pub chosen: Vec<String>,
}

/// The shape of a new model on a vocabulary of `vocab` tokens at `level`.
pub fn shape(h: &Hyper, level: Level, vocab: usize) -> Shape {
    let mut chosen = Vec::new();
    let small = vocab <= SMALL_VOCAB;
    let hidden = h.hidden.unwrap_or_else(|| {
        let hidden = if small && level == Level::Char {
            512
        } else {
            256
        };
        chosen.push(format!(
            "{hidden} hidden units (a {} vocabulary)",
            if small { "small" } else { "large" }
        ));
        hidden
    });
    if h.one_hot {
        return Shape {
            hidden,
            embed: None,
            tied: false,
            chosen,
        };
    }
    // Words: an embedding as wide as the hidden layer, tied to the decoder.
    let tied = h.tie || (level == Level::Word && h.embed.is_none());
    let embed = match h.embed {
        Some(e) => Some(e),
        None if tied => Some(hidden),
        None => {
            let e = if small { 64 } else { (hidden / 2).max(1) };
            Some(e)
        }
    };
    if h.embed.is_none() {
        chosen.push(if tied && !h.tie {
            format!("an embedding of {hidden} tied to the decoder (words)")
        } else {
            format!("an embedding of {}", embed.unwrap_or(hidden))
        });
    }
    Shape {
        hidden,
        embed,
        tied,
        chosen,
    }
}

/// The FLOP rate that turns a budget in time into tokens, for the default dropout only: about what
/// one of this project's 2-core machines sustains while training (110–190 GFLOP/s measured on
/// the AVX2 kind at 1–2 threads, more on AVX-512). Within a factor of three either way the rule
/// below picks the same dropout for every reference corpus.
pub const NOMINAL_FLOPS: f64 = 150e9;

/// How many times a run will read its training text before its budget ends: the nearest of
/// `epochs`, `steps` and `time` (time converted at [`NOMINAL_FLOPS`]).
pub fn planned_epochs(
    mc: &ModelConfig,
    tc: &TrainConfig,
    train_tokens: usize,
    epochs: Option<u64>,
    steps: Option<u64>,
    time: Option<Duration>,
) -> f64 {
    let n = train_tokens.max(1) as f64;
    let mut planned = f64::INFINITY;
    if let Some(e) = epochs {
        planned = planned.min(e as f64);
    }
    if let Some(s) = steps {
        planned = planned.min((s * (tc.batch * tc.bptt) as u64) as f64 / n);
    }
    if let Some(t) = time {
        let tokens = NOMINAL_FLOPS * t.as_secs_f64() / training_flops_per_token(mc, tc).max(1.0);
        planned = planned.min(tokens / n);
    }
    planned
}

/// Dropout where the options are silent, by how often the budget will read the text and how
/// large the vocabulary is. An alphabet's model is small beside its text: none below 50 readings
/// (tiny Shakespeare in 10 minutes, ~50 readings: 0.2 made Adam's long high-rate stretch unstable,
/// 1.615 against 1.546 without), 0.2 up to 100, 0.5 beyond (a book of poems). Thousands of
/// characters or words give the decoder millions of weights that memorise a text within a few
/// readings (西游记 without dropout: best after 4 readings, then 0.2 nats worse by 21): none below
/// 10 readings, 0.5 from there.
pub fn dropout(planned_epochs: f64, vocab: usize) -> f64 {
    let (light, heavy) = if vocab <= SMALL_VOCAB {
        (50.0, 100.0)
    } else {
        (10.0, 10.0)
    };
    if planned_epochs < light {
        0.0
    } else if planned_epochs < heavy {
        0.2
    } else {
        0.5
    }
}
