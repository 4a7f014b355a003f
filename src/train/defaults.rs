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
//!   A small alphabet needs few dimensions (64 beat 128 there). `--one-hot` keeps the book's model.
//! - **The hidden size** follows the cost of a step: a small alphabet's decoder is cheap, so the
//!   recurrence can be 512 wide (1.567 against 1.626 at 256 on tiny Shakespeare); with thousands
//!   of Chinese characters the decoder dominates and 256 sees twice the text in the same time
//!   (4.684 against 4.709 on 西游记). A gated cell's step is 3–4 recurrent products, so an LSTM or
//!   GRU gets 256 on an alphabet too.
//! - **Words and Chinese characters** (any vocabulary over 256 tokens) get word_language_model's
//!   recipe: an embedding as wide as the hidden layer, tied to the decoder (`--tie`). Thousands of
//!   tokens make the decoder most of the weights; sharing it with the input halves them and is the
//!   regularisation a text read many times needs (三国演义 in 10 minutes: 4.632 nats/char tied,
//!   4.722 with a separate embedding of H/2, 4.705 for the PyTorch peer).
//! - **Dropout and a weight average** by how many times the budget will read the text: a small
//!   text read hundreds of times is memorised (唐诗三百首's best model without dropout comes after
//!   ~15 readings), while a text read a few times gains nothing from either (see [`dropout`] and
//!   [`average`]).
//! - The learning rate and its schedule are set in `setup::train_config` (Adam 3e-3 falling
//!   linearly to 0: with the schedule a higher start pays).

use super::options::Hyper;
use super::schedule::training_flops_per_token;
use crate::cell::CellKind;
use crate::checkpoint::TrainConfig;
use crate::config::ModelConfig;
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

/// The Elman cell on an alphabet is widened to the first of these that a time budget still reads
/// the text [`WIDEN_READINGS`] times with (else it stays at 512): past ~20 readings a 512-wide
/// model has learned what it can and memorises (tiny Shakespeare: 3 and 10 minutes at 512 scored
/// the same, 1.5196 and 1.5194; 768 in 10 minutes, 1.5128). Not 1024: in 30 minutes it read the
/// text only ~25 times on one thread and memorised all the same (1.5306, train 1.39).
pub const WIDER: [usize; 1] = [768];

/// See [`WIDER`].
pub const WIDEN_READINGS: f64 = 20.0;

/// A large vocabulary's tied embedding pays while the budget reads the text fewer times than this.
pub const TIE_READINGS: f64 = 100.0;

/// The shape of a new model on a vocabulary of `vocab` tokens at `level`. `readings` says how many
/// times the budget would read the text with a given shape ([`planned_epochs`]): a large
/// vocabulary of characters is tied to the decoder only when that is under [`TIE_READINGS`].
pub fn shape(h: &Hyper, level: Level, vocab: usize, readings: impl Fn(&Shape) -> f64) -> Shape {
    let mut chosen = Vec::new();
    let small = vocab <= SMALL_VOCAB;
    let gated = h.cell.is_some_and(CellKind::is_gated);
    let hidden = h.hidden.unwrap_or_else(|| {
        // A gated cell's step costs 3–4 recurrent products: at 256 an LSTM's step costs what the
        // Elman cell's does at 512.
        let alphabet_elman = small && level == Level::Char && !gated;
        let base = if alphabet_elman { 512 } else { 256 };
        // A time budget long enough to read the text many times at 512 buys width instead: the
        // widest that still reads it WIDEN_READINGS times. (Under --epochs or --steps a wider
        // model reads the text as often, only slower: no trade to make.)
        let input = if h.one_hot {
            None
        } else {
            Some(h.embed.unwrap_or(64))
        };
        let reads_at = |hidden| {
            readings(&Shape {
                hidden,
                embed: input,
                tied: h.tie,
                chosen: Vec::new(),
            })
        };
        let at_base = reads_at(base);
        let wider = WIDER
            .into_iter()
            .find(|&w| alphabet_elman && reads_at(w) >= WIDEN_READINGS && reads_at(w) < at_base);
        let hidden = wider.unwrap_or(base);
        chosen.push(format!(
            "{hidden} hidden units (a {} vocabulary{})",
            if small { "small" } else { "large" },
            if gated && small && level == Level::Char {
                ", a gated cell".to_string()
            } else if wider.is_some() {
                format!(
                    "; the budget still reads the text {WIDEN_READINGS:.0} times or more at this width"
                )
            } else {
                String::new()
            }
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
    // Words, and a large vocabulary of characters, get an embedding as wide as the hidden layer
    // tied to the decoder: one V×H matrix instead of two, which keeps a text read a dozen times
    // from being memorised (三国演义 in 10 minutes: 4.632 nats/char tied, 4.722 with a separate
    // embedding of H/2). A text read hundreds of times (a book of poems) is memorised either way
    // within a few readings, and there the untied model, which learns faster per reading, is
    // better at its best (唐诗三百首 in 3 minutes: 4.825 untied, 4.921 tied).
    let mut tied = h.tie || (level == Level::Word && h.embed.is_none());
    if !tied && !small && level == Level::Char && h.embed.is_none() {
        let candidate = Shape {
            hidden,
            embed: Some(hidden),
            tied: true,
            chosen: Vec::new(),
        };
        tied = readings(&candidate) < TIE_READINGS;
    }
    let embed = match h.embed {
        Some(e) => Some(e),
        None if tied => Some(hidden),
        None if small => Some(64),
        None => Some((hidden / 2).max(1)),
    };
    if h.embed.is_none() {
        chosen.push(if tied && !h.tie {
            let words = if level == Level::Word { " (words)" } else { "" };
            format!("an embedding of {hidden} tied to the decoder{words}")
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

/// The FLOP rate that turns a budget in time into tokens for the defaults that go by readings
/// (width, dropout, the weight average): about what one of this project's 2-core machines
/// sustains while training (110–190 GFLOP/s measured on the AVX2 kind at 1–2 threads, more on
/// AVX-512). A fixed rate, not this machine's, so the same command makes the same model anywhere.
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
/// large the vocabulary is. An alphabet's model is small beside its text: none below 20 readings,
/// 0.2 up to 100, 0.3 beyond (tiny Shakespeare in 10 minutes, ~46 readings: 1.5177 with 0.2 and
/// the weight average, 1.5263 with the average alone, 1.5333 with 0.3; without the average, under
/// the old plateau schedule, 0.2 had been unstable). Thousands of characters or words give the
/// decoder millions of weights that memorise a text within a few readings (西游记 without dropout:
/// best after 4 readings, then 0.2 nats worse by 21): none below 10 readings, 0.5 from there. A
/// gated cell on an alphabet memorises sooner than the Elman cell (an LSTM on tiny Shakespeare:
/// best after 7 readings without dropout, 1.5225, then 1.613 by 46): none below 20 readings, 0.5
/// from there (1.4847 in 10 minutes, against 1.4971 with 0.2).
pub fn dropout(planned_epochs: f64, vocab: usize, cell: CellKind) -> f64 {
    let (light, heavy, rate) = if vocab > SMALL_VOCAB {
        (10.0, 10.0, 0.5)
    } else if cell.is_gated() {
        (20.0, 20.0, 0.5)
    } else {
        (20.0, 100.0, 0.3)
    };
    if planned_epochs < light {
        0.0
    } else if planned_epochs < heavy {
        0.2
    } else {
        rate
    }
}

/// A run that reads its text this many times or more validates and saves a moving average of its
/// weights ([`AVERAGE_DECAY`]) where `--average` is silent: by then the best model comes before the
/// end, while the model is already memorising, and the average of the last thousand steps is
/// better than any one of them (tiny Shakespeare in 10 minutes: Elman 1.5263 against 1.5375,
/// LSTM 1.4788 against 1.4835). Shorter runs end on a learning rate annealed to 0, which averages
/// already, and are left as they were.
pub const AVERAGE_FROM: f64 = 15.0;

/// The decay of the default weight average: about the last thousand steps.
pub const AVERAGE_DECAY: f64 = 0.999;

/// The weight average's decay where `--average` is silent (0: none): see [`AVERAGE_FROM`].
pub fn average(planned_epochs: f64) -> f64 {
    if planned_epochs >= AVERAGE_FROM {
        AVERAGE_DECAY
    } else {
        0.0
    }
}
