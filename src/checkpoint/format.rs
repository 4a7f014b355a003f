//! What a checkpoint folder holds: its files' names, the format version, and the types of
//! `config.json` and `metrics.jsonl`.

use crate::config::ModelConfig;
use crate::optim::OptimizerKind;
use crate::vocab::Level;
use serde::{Deserialize, Serialize};

/// The newest checkpoint format this elman reads. Version 2 adds the `cell` of a model (an LSTM
/// or GRU); an Elman network is still written as version 1, which every elman reads.
pub const FORMAT_VERSION: u32 = 2;

/// The format version a checkpoint of `mc` is written with: the oldest that describes it, so that
/// an older elman reads what it can and names the upgrade for what it cannot.
pub fn format_version_for(mc: &ModelConfig) -> u32 {
    mc.cell.format_version()
}
pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "state.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const LOSS_CHART_FILE: &str = "loss.svg";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VocabConfig {
    pub level: Level,
    pub nfc: bool,
    pub max_vocab: Option<usize>,
    pub min_count: u64,
    /// Word level: how text is cut into words (checkpoints before it was recorded used `words`).
    #[serde(default)]
    pub segmenter: crate::vocab::Segmenter,
    pub size: usize,
    pub unk: Option<u32>,
    pub eos: Option<u32>,
    /// Distinct tokens of the training text mapped to `<unk>` (see `Vocab::unknown_types`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_types: Option<u64>,
}

impl VocabConfig {
    /// The options that build this vocabulary again (resuming and fine-tuning read with them).
    pub fn options(&self) -> crate::vocab::VocabOptions {
        crate::vocab::VocabOptions {
            level: self.level,
            nfc: self.nfc,
            max_vocab: self.max_vocab,
            min_count: self.min_count,
            rare_to_unk_above: None,
            grow: false,
            segmenter: self.segmenter,
        }
    }
}

fn yes() -> bool {
    true
}

/// How the learning rate moves over a run (`train --schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Falls linearly from --lr to 0 over the budget (--time, --steps or --epochs, whichever ends
    /// first): the run ends settled, whatever its length.
    Linear,
    /// Stays at --lr, multiplied by --lr-decay after --patience evaluations without improvement.
    Plateau,
}

impl Schedule {
    /// The (anneal, plateau) flags of a `TrainConfig` that follows it.
    pub fn flags(self) -> (bool, bool) {
        match self {
            Schedule::Linear => (true, false),
            Schedule::Plateau => (false, true),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Linear => "linear",
            Schedule::Plateau => "plateau",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub batch: usize,
    pub bptt: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub clip: f64,
    pub lr_decay: f64,
    pub patience: u32,
    pub val_fraction: f64,
    pub eval_every: u64,
    /// Validation tokens scored: the first N of the validation text (`None`: all; runs saved
    /// before `--val-tokens` scored all).
    #[serde(default)]
    pub val_tokens: Option<usize>,
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub time_limit_s: Option<f64>,
    pub seed: u64,
    pub threads: usize,
    /// Sampled softmax with this many negatives per step (`None`: the full softmax).
    #[serde(default)]
    pub softmax_samples: Option<usize>,
    /// The learning rate falls linearly to 0 over the budget (--steps, --epochs and --time all
    /// count the whole run).
    #[serde(default)]
    pub anneal: bool,
    /// Where a resumed run's budget was changed: the linear schedule goes on from the rate it had
    /// there and falls to 0 at the new budget's end (instead of jumping to the rate the new budget
    /// alone would give).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_restart: Option<LrRestart>,
    /// The plateau rule: the rate is multiplied by `lr_decay` after `patience` evaluations without
    /// improvement. Runs made before `--schedule` had it always (hence the default).
    #[serde(default = "yes")]
    pub plateau: bool,
    /// Dropout probability on the layers' outputs while training (0: none).
    #[serde(default)]
    pub dropout: f64,
    /// Decoupled weight decay λ (AdamW's; 0: none). Absent from runs made without it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_decay: f64,
    /// Decay of the moving average of the weights that validation scores and the model file holds
    /// (0: none, the latest weights). Absent from runs made without it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub average: f64,
    /// Dropout's mask is drawn once per window and stream and kept at every time step (variational
    /// dropout). Absent from runs made without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked_dropout: bool,
    /// DropConnect's rate on every layer's W_hh, one mask per window (0: none). Absent from runs
    /// made without it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_drop: f64,
    /// Embedding dropout's rate: whole tokens dropped from a window's input (0: none). Absent from
    /// runs made without it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub embed_dropout: f64,
}

impl TrainConfig {
    /// The regularisers in use, as the run's header and `elman info` name them: ", dropout 0.2
    /// (locked), DropConnect 0.3, ..." (empty when none).
    pub fn regularisers(&self) -> String {
        let mut s = String::new();
        if self.dropout > 0.0 {
            s += &format!(", dropout {}", self.dropout);
            if self.locked_dropout {
                s += " (locked)";
            }
        }
        if self.weight_drop > 0.0 {
            s += &format!(", DropConnect {} on W_hh", self.weight_drop);
        }
        if self.embed_dropout > 0.0 {
            s += &format!(", embedding dropout {}", self.embed_dropout);
        }
        if self.weight_decay > 0.0 {
            s += &format!(", weight decay {}", self.weight_decay);
        }
        if self.average > 0.0 {
            s += &format!(", weights averaged ({})", self.average);
        }
        s
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// A change of budget in a resumed run under `--schedule linear`: the share of the base rate in use
/// there (`factor`), and the share of the new budget already used (`done`). From there on the rate
/// is `factor · (1 − used) / (1 − done)`: continuous where the budget changed, 0 at its end.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LrRestart {
    pub factor: f64,
    pub done: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CorpusInfo {
    pub name: String,
    pub files: Vec<String>,
    /// `--val` files, when validation had a text of its own.
    #[serde(default)]
    pub val_files: Vec<String>,
    pub sha256: String,
    pub chars: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub val_chars: usize,
    /// The `--cache-dir` the run was started with, where `--resume` looks too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub step: u64,
    pub epoch: u64,
    pub tokens_seen: u64,
    pub lr: f64,
    pub best_val_loss: Option<f64>,
    pub best_val_bpc: Option<f64>,
    pub best_step: Option<u64>,
    pub last_val_loss: Option<f64>,
    pub train_seconds: f64,
    /// Why the last session stopped: "steps", "epochs", "time", "interrupted", "diverged".
    pub stopped: Option<String>,
}

/// `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    pub format_version: u32,
    pub elman_version: String,
    /// `"demo"` for the model `elman demo` trains (it replaces only its own); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_by: Option<String>,
    /// Fine-tuning: the checkpoint the run started from (`train --init-from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    pub model: ModelConfig,
    pub vocab: VocabConfig,
    pub training: TrainConfig,
    pub corpus: CorpusInfo,
    pub progress: Progress,
}

/// Where the training loop is, beyond the weights: saved as `state.safetensors` metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    pub step: u64,
    pub epoch: u64,
    /// Index of the next window within the epoch.
    pub window: u64,
    pub optimizer_t: u64,
    pub lr: f64,
    pub bad_evals: u32,
    pub tokens_seen: u64,
    pub train_loss_sum: f64,
    pub train_loss_count: u64,
    pub train_seconds: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metric {
    pub step: u64,
    pub epoch: u64,
    pub tokens_seen: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_bpc: f64,
    pub tokens_per_s: f64,
    pub lr: f64,
    pub wall_time_s: f64,
    /// The train loss is the sampled-softmax estimate (validation is always the exact loss).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub train_loss_sampled: bool,
}
