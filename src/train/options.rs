//! What a run is asked for: `elman train`'s options as the library takes them ([`TrainArgs`],
//! [`Hyper`]), the defaults that are plain numbers, and the bounds every run's settings must keep
//! ([`check_hyper`], the one place they live). The command line's own types stay in `cli/`.

use crate::cell::{Activation, CellKind};
use crate::checkpoint::{Config, Schedule, TrainConfig};
use crate::config::ModelConfig;
use crate::optim::OptimizerKind;
use crate::vocab::{Level, Segmenter};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Everything `elman train` takes.
#[derive(Debug, Clone, Default)]
pub struct TrainArgs {
    pub files: Vec<PathBuf>,
    /// Validation text of its own (instead of the last --val-fraction of `files`).
    pub val_files: Vec<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// Fine-tune: a new run from this checkpoint's weights and vocabulary.
    pub init_from: Option<PathBuf>,
    /// Fine-tuning: keep the checkpoint's vocabulary as it is (new characters become <unk>, or
    /// are refused without one) instead of growing it by the new text's characters.
    pub keep_vocab: bool,
    pub force: bool,
    pub hyper: Hyper,
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub time: Option<Duration>,
    pub quiet: bool,
    /// Train through candle's autograd graph instead of the fused BPTT path (slower; the
    /// reference the fused path is tested against).
    pub reference: bool,
    /// Recorded as the checkpoint's `made_by` (the demo marks its model, so that it never
    /// replaces one it did not make).
    pub made_by: Option<String>,
    /// Where token files of big texts are kept (`--cache-dir`; naming it caches every text).
    pub cache_dir: Option<PathBuf>,
}

impl TrainArgs {
    /// No stopping option given: the session then runs to `DEFAULT_EPOCHS`.
    pub fn no_budget(&self) -> bool {
        self.epochs.is_none() && self.steps.is_none() && self.time.is_none()
    }

    /// The epoch limit of this session: `--epochs`, or the default when nothing else stops it.
    pub fn epochs_or_default(&self) -> Option<u64> {
        self.epochs
            .or((self.steps.is_none() && self.time.is_none()).then_some(DEFAULT_EPOCHS))
    }
}

/// Hyperparameters fixed by a checkpoint; `None` means "the default" for a new run and "keep" when
/// resuming (giving one when resuming is an error, since it would break the run). `cli/train.rs` fills
/// it from `elman train`'s options; each field's help is there, with its default.
#[derive(Debug, Clone, Default)]
pub struct Hyper {
    /// Token level: one token per character, or words and punctuation [default: char].
    pub level: Option<Level>,
    /// Word level: how text is cut into words. auto: jieba for text with Chinese, else words;
    /// words: spaces and punctuation (Chinese characters one by one); jieba: Chinese words by
    /// jieba, other text as words; spaces: whitespace only (WikiText) [default: auto].
    pub segmenter: Option<Segmenter>,
    /// Normalise the text to Unicode NFC first.
    pub nfc: bool,
    /// Keep only the N most frequent tokens (special tokens included); the rest become <unk>.
    pub max_vocab: Option<usize>,
    /// Tokens seen fewer than N times become <unk> [default: 1; 2 over more than 256 distinct
    /// tokens without --max-vocab].
    pub min_count: Option<u64>,

    /// The recurrent cell: elman (the chapter's network, PyTorch's nn.RNN), lstm (nn.LSTM) or gru
    /// (nn.GRU). The gated cells carry information further back (the chapter's answer to
    /// vanishing gradients) at 4× and 3× the recurrence's cost per step [default: elman].
    pub cell: Option<CellKind>,
    /// Hidden units per layer [default: 512 for the Elman cell at char level on a vocabulary of at
    /// most 256 tokens (an alphabet: the decoder is cheap, so the recurrence can be wide; with
    /// --time, 768 when the budget still reads the text 20 times at that width), else 256].
    pub hidden: Option<usize>,
    /// Read the input as an embedding of E units (PyTorch's nn.Embedding, `encoder.weight`) that
    /// feeds the first layer through its input weights: every step trains the shared input
    /// weights, where the one-hot U trains only the rows of the tokens it saw, so a model learns
    /// more per token [default: 64 on a vocabulary of at most 256 tokens; on a larger one (Chinese
    /// characters, words) the hidden size, tied to the decoder, except characters that the budget
    /// will read 100 times or more: half the hidden size, untied].
    pub embed: Option<usize>,
    /// Share the decoder's weights with the input embedding (word_language_model's --tied): one
    /// V×H matrix reads tokens in and scores them out. Implies --embed equal to --hidden
    /// [default: on at word level, and on more than 256 characters read fewer than 100 times].
    pub tie: bool,
    /// The book's model: x(t) one-hot, Uᵀx(t) a column of U (no embedding; PyTorch's nn.RNN alone).
    pub one_hot: bool,
    /// Stacked recurrent layers [default: 1].
    pub layers: Option<usize>,
    /// The Elman cell's nonlinearity σ: tanh, or the book's sigmoid, or relu [default: tanh].
    pub activation: Option<Activation>,

    /// Train the decoder with a sampled softmax of K negatives per step instead of the full one
    /// (0 = full). Validation and every use of the model stay exact [default: 4096 for vocabularies
    /// of 20,000 tokens or more, else 0].
    pub sampled_softmax: Option<usize>,
    /// Parallel streams the text is cut into (the batch size) [default: 32].
    pub batch: Option<usize>,
    /// Steps of back-propagation through time per window [default: 64].
    pub bptt: Option<usize>,
    /// adam, adagrad or sgd [default: adam].
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate [default: adam 0.003 (0.002 with --schedule plateau), adagrad 0.05, sgd 1.0].
    pub lr: Option<f64>,
    /// Clip the global gradient norm to this (0 = off) [default: 5].
    pub clip: Option<f64>,
    /// How the learning rate moves: linear falls from --lr to 0 over the run's budget (--time,
    /// --steps or --epochs, whichever ends first), so a run of any length ends settled; plateau
    /// keeps --lr and multiplies it by --lr-decay after --patience evaluations without improvement
    /// (elman's rule before 0.9; on a small text it halves the rate at every evaluation once the
    /// model starts to overfit) [default: linear].
    pub schedule: Option<Schedule>,
    /// The same as --schedule linear (kept for older scripts).
    pub anneal: bool,
    /// --schedule plateau: multiply the learning rate by this when validation stops improving
    /// [default: 0.5].
    pub lr_decay: Option<f64>,
    /// --schedule plateau: evaluations without improvement before the learning rate decays
    /// [default: 1].
    pub patience: Option<u32>,
    /// Dropout: while training, zero each unit of a layer's output with probability P on its way
    /// up (to the layer above and the decoder; never along the recurrence), scaling the rest by
    /// 1/(1 − P). Fights overfitting of big models on small texts (0.2–0.5 is usual); sampling,
    /// scoring and validation run the whole network [default: by how many times the budget will
    /// read the text: on an alphabet 0 below 20 readings, 0.2 up to 100, 0.3 beyond (--cell lstm
    /// or gru: 0 below 20, 0.5 beyond); on more characters or words 0 below 10, 0.5 beyond].
    pub dropout: Option<f64>,
    /// Decoupled weight decay λ (AdamW's): every update first shrinks each weight by lr·λ of
    /// itself [default: 0].
    pub weight_decay: Option<f64>,
    /// Draw --dropout's mask once per window and stream and keep it at every time step.
    pub locked_dropout: bool,
    /// DropConnect on every layer's W_hh: each weight dropped with probability P for a window.
    pub weight_drop: Option<f64>,
    /// Embedding dropout: each token dropped from a window's input with probability P.
    pub embed_dropout: Option<f64>,
    /// Validate and save a moving average of the weights with this decay (0.999 is usual) instead
    /// of the latest ones [default: 0.999 from 15 readings of the text, else 0].
    pub average: Option<f64>,
    /// Fraction of the text (its end) held out for validation [default: 0.1].
    pub val_fraction: Option<f64>,
    /// Validation tokens scored at each evaluation: the first N of the validation text (0: all)
    /// [default: as many as cost a fifth of 2,000 training steps].
    pub val_tokens: Option<usize>,
    /// Evaluate and save every N steps [default: 200, more when scoring the validation text costs over a fifth of that training: a large vocabulary with the sampled softmax].
    pub eval_every: Option<u64>,
    /// Random seed (initial weights, epoch offsets) [default: 1234].
    pub seed: Option<u64>,
}

pub const DEFAULT_BATCH: usize = 32;
pub const DEFAULT_BPTT: usize = 64;
pub const DEFAULT_CLIP: f64 = 5.0;
pub const DEFAULT_EPOCHS: u64 = 10;
/// Vocabularies at least this large train with a sampled softmax unless told otherwise: the full
/// decoder would be nearly all of the work (see the README's WikiText-2 section).
pub const SAMPLED_SOFTMAX_FROM: usize = 20_000;
pub const DEFAULT_SAMPLES: usize = 4096;
/// Steps between evaluations unless `--eval-every` says otherwise.
pub const DEFAULT_EVAL_EVERY: u64 = 200;

impl Hyper {
    /// The schedule asked for (`--anneal` is `--schedule linear`).
    pub fn chosen_schedule(&self) -> Option<Schedule> {
        self.schedule.or(self.anneal.then_some(Schedule::Linear))
    }

    /// The options that would make the run `config` describes: every setting given, as
    /// `elman train` would take it.
    pub fn of(config: &Config) -> Hyper {
        let (mc, tc, vc) = (&config.model, &config.training, &config.vocab);
        Hyper {
            level: Some(vc.level),
            segmenter: Some(vc.segmenter),
            nfc: vc.nfc,
            max_vocab: vc.max_vocab,
            min_count: Some(vc.min_count),
            cell: Some(mc.cell),
            hidden: Some(mc.hidden),
            embed: mc.embed,
            tie: mc.tied,
            one_hot: mc.embed.is_none(),
            layers: Some(mc.layers),
            activation: Some(mc.activation),
            sampled_softmax: Some(tc.softmax_samples.unwrap_or(0)),
            batch: Some(tc.batch),
            bptt: Some(tc.bptt),
            optimizer: Some(tc.optimizer),
            lr: Some(tc.lr),
            clip: Some(tc.clip),
            schedule: match (tc.anneal, tc.plateau) {
                (true, _) => Some(Schedule::Linear),
                (false, true) => Some(Schedule::Plateau),
                (false, false) => None,
            },
            anneal: false,
            lr_decay: Some(tc.lr_decay),
            patience: Some(tc.patience),
            dropout: Some(tc.dropout),
            weight_decay: Some(tc.weight_decay),
            locked_dropout: tc.locked_dropout,
            weight_drop: Some(tc.weight_drop),
            embed_dropout: Some(tc.embed_dropout),
            average: Some(tc.average),
            val_fraction: Some(tc.val_fraction),
            eval_every: Some(tc.eval_every),
            val_tokens: Some(tc.val_tokens.unwrap_or(0)),
            seed: Some(tc.seed),
        }
    }

    /// The options given whose values differ from the run `config` describes, each with whether
    /// it fixes the model or its vocabulary (what a fine-tuning run cannot change either).
    fn differences(&self, config: &Config) -> Vec<(&'static str, bool)> {
        let saved = Hyper::of(config);
        let given = Hyper {
            // `auto` resolves to what the text needs: it asks for nothing in particular.
            segmenter: self.segmenter.filter(|&s| s != Segmenter::Auto),
            schedule: self.chosen_schedule(),
            ..self.clone()
        };
        let mut out = Vec::new();
        // Given and not the run's: an option set to another value, or a switch turned on.
        macro_rules! differ {
            ($model:literal: $($field:ident $flag:literal),+ $(,)?) => {$(
                if given.$field != Hyper::default().$field && given.$field != saved.$field {
                    out.push(($flag, $model));
                }
            )+};
        }
        differ!(true: cell "--cell", hidden "--hidden", embed "--embed", tie "--tie",
            one_hot "--one-hot", layers "--layers", activation "--activation");
        differ!(false: batch "--batch", bptt "--bptt", optimizer "--optimizer", lr "--lr",
            clip "--clip", lr_decay "--lr-decay", patience "--patience",
            val_fraction "--val-fraction", eval_every "--eval-every", seed "--seed",
            val_tokens "--val-tokens",
            dropout "--dropout", sampled_softmax "--sampled-softmax",
            weight_decay "--weight-decay", average "--average",
            locked_dropout "--locked-dropout", weight_drop "--weight-drop",
            embed_dropout "--embed-dropout");
        differ!(true: level "--level", max_vocab "--max-vocab", min_count "--min-count",
            segmenter "--segmenter", nfc "--nfc");
        differ!(false: schedule "--schedule");
        out
    }

    /// The options given whose values differ from the run `config` describes.
    pub fn changes(&self, config: &Config) -> Vec<&'static str> {
        self.differences(config)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    /// The options given that fix the model or its vocabulary and differ from `config`'s (what a
    /// fine-tuning run cannot change).
    pub fn model_changes(&self, config: &Config) -> Vec<&'static str> {
        self.differences(config)
            .into_iter()
            .filter_map(|(f, model)| model.then_some(f))
            .collect()
    }
}

/// Validates a run's hyperparameters (one message per bad value): the one place these bounds
/// live, for new runs and for the settings a resumed run reads back.
pub fn check_hyper(tc: &TrainConfig, mc: &ModelConfig) -> Result<()> {
    if tc.batch == 0 || tc.batch > 1 << 16 {
        bail!("--batch {} is out of range 1..=65536", tc.batch);
    }
    if tc.bptt == 0 || tc.bptt > 1 << 16 {
        bail!("--bptt {} is out of range 1..=65536", tc.bptt);
    }
    if !(tc.lr.is_finite() && tc.lr > 0.0) {
        bail!("--lr {} must be a positive number", tc.lr);
    }
    if !(tc.clip.is_finite() && tc.clip >= 0.0) {
        bail!("--clip {} must be ≥ 0 (0 turns clipping off)", tc.clip);
    }
    if !(tc.dropout >= 0.0 && tc.dropout < 1.0) {
        // (NaN fails this too.)
        bail!(
            "--dropout {} must be in [0, 1): the probability of dropping a unit (0 = off)",
            tc.dropout
        );
    }
    if !(tc.weight_decay >= 0.0 && tc.lr * tc.weight_decay < 1.0) {
        // (NaN fails this too.)
        bail!(
            "--weight-decay {} must be ≥ 0 and below 1/lr = {:.4} (each update shrinks the weights by lr·λ of themselves)",
            tc.weight_decay,
            1.0 / tc.lr
        );
    }
    for (p, flag, what) in [
        (tc.weight_drop, "--weight-drop", "a recurrent weight"),
        (tc.embed_dropout, "--embed-dropout", "a token's input"),
    ] {
        if !(0.0..1.0).contains(&p) {
            // (NaN fails this too.)
            bail!("{flag} {p} must be in [0, 1): the probability of dropping {what} (0 = off)");
        }
    }
    if tc.locked_dropout && tc.dropout == 0.0 {
        bail!("--locked-dropout keeps --dropout's mask across time steps: give --dropout P too");
    }
    if !(tc.average >= 0.0 && tc.average < 1.0) {
        // (NaN fails this too.)
        bail!(
            "--average {} must be in [0, 1): the decay of the weights' moving average (0 = off)",
            tc.average
        );
    }
    if !(tc.lr_decay > 0.0 && tc.lr_decay <= 1.0) {
        bail!("--lr-decay {} must be in (0, 1]", tc.lr_decay);
    }
    if !(tc.val_fraction > 0.0 && tc.val_fraction < 1.0) {
        // (NaN fails this too.)
        bail!(
            "--val-fraction {} must be strictly between 0 and 1",
            tc.val_fraction
        );
    }
    if tc.eval_every == 0 {
        bail!("--eval-every must be at least 1");
    }
    // The model's sizes, in the words of the options that set them (`ModelConfig::validate`
    // then checks the parameter count as for any config.json).
    mc.validate_sizes(("--hidden", "--layers"))?;
    if let Some(n) = tc.val_tokens.filter(|&n| n < 2) {
        bail!("--val-tokens {n}: validation needs at least 2 tokens (0 scores all of the validation text)");
    }
    Ok(())
}
