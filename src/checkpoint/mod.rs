//! Stage 4 — checkpoints: what a training run leaves behind, and loading it back.
//!
//! A checkpoint is a folder:
//! - `model.safetensors` — the best-validation weights, PyTorch names (see `model.rs`);
//! - `config.json` — format version, vocabulary, every hyperparameter, corpus name and hash, progress;
//! - `tokenizer.json` — the vocabulary as a standard HF tokenizer;
//! - `metrics.jsonl` — one line per evaluation;
//! - `loss.svg` — those lines as a chart (train and validation loss against tokens seen);
//! - `state.safetensors` — the latest weights, optimizer moments, hidden state and loop position,
//!   everything `--resume` needs to continue exactly.
//!
//! Invariant: the folder is replaced as a whole. A new version is written into a sibling staging
//! folder (each file itself via temp file + fsync + rename), then swapped in with one atomic
//! `renameat2(RENAME_EXCHANGE)`. A `kill -9` at any instant leaves either the old or the new
//! folder, never a mix. Writing is `save.rs`: the streamed tensor files, the resume state (its one
//! writer and reader) and the atomic folder swap; this file holds the config and loading.

mod save;
pub use save::*;

use crate::config::ModelConfig;
use crate::corpus::file_error;
use crate::model::GraphModel;
use crate::optim::OptimizerKind;
use crate::vocab::{Level, Vocab};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The newest checkpoint format this elman reads. Version 2 adds the `cell` of a model (an LSTM
/// or GRU); an Elman network is still written as version 1, which every elman reads.
pub const FORMAT_VERSION: u32 = 2;

/// The format version a checkpoint of `mc` is written with: the oldest that describes it, so that
/// an older elman reads what it can and names the upgrade for what it cannot.
pub fn format_version_for(mc: &ModelConfig) -> u32 {
    mc.cell.format_version()
}
/// Size limits checked before a checkpoint file is read, so a damaged or hostile file cannot make
/// elman allocate without bound.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
const MAX_TOKENIZER_BYTES: u64 = 256 << 20;
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
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub time_limit_s: Option<f64>,
    pub seed: u64,
    pub threads: usize,
    /// Sampled softmax with this many negatives per step (`None`: the full softmax).
    #[serde(default)]
    pub softmax_samples: Option<usize>,
    /// The learning rate falls linearly to 0 over the budget (--steps and --epochs count the whole run, --time the session).
    #[serde(default)]
    pub anneal: bool,
    /// The plateau rule: the rate is multiplied by `lr_decay` after `patience` evaluations without
    /// improvement. Runs made before `--schedule` had it always (hence the default).
    #[serde(default = "yes")]
    pub plateau: bool,
    /// Dropout probability on the layers' outputs while training (0: none).
    #[serde(default)]
    pub dropout: f64,
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

/// A loaded, ready-to-use model.
pub struct Loaded {
    pub dir: PathBuf,
    pub config: Config,
    pub vocab: Vocab,
    pub model: GraphModel,
}

/// Resolves `checkpoints/NAME`, or a bare `NAME` that exists under `checkpoints/`.
pub fn resolve_dir(p: &Path) -> PathBuf {
    if !p.exists() && p.components().count() == 1 {
        let alt = Path::new("checkpoints").join(p);
        if alt.exists() {
            return alt;
        }
    }
    p.to_path_buf()
}

/// Refuses a file larger than `max` bytes (or not a regular file) before reading it.
fn check_size(path: &Path, max: u64) -> Result<()> {
    let m = fs::metadata(path).map_err(|e| file_error(path, &e))?;
    if !m.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    if m.len() > max {
        bail!(
            "{}: {} bytes is far larger than this checkpoint's config allows ({max}); the file is damaged or not elman's",
            path.display(),
            m.len()
        );
    }
    Ok(())
}

/// Reads and checks `config.json`.
pub fn read_config(dir: &Path) -> Result<Config> {
    if !dir.exists() {
        bail!(
            "{}: no such checkpoint folder (train one with `elman train FILE --out {}`)",
            dir.display(),
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!("{}: not a checkpoint folder", dir.display());
    }
    let path = dir.join(CONFIG_FILE);
    if !path.exists() {
        bail!(
            "{}: not a checkpoint folder (it has no {CONFIG_FILE}); give the folder `elman train` wrote, such as checkpoints/NAME",
            dir.display()
        );
    }
    check_size(&path, MAX_CONFIG_BYTES)?;
    let text = fs::read_to_string(&path).map_err(|e| file_error(&path, &e))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not valid JSON ({e})", path.display()))?;
    let ver = v.get("format_version").and_then(|x| x.as_u64());
    match ver {
        Some(x) if (1..=FORMAT_VERSION as u64).contains(&x) => {}
        Some(x) if x > FORMAT_VERSION as u64 => bail!(
            "{}: checkpoint format version {x} is newer than this elman understands ({FORMAT_VERSION}); upgrade elman",
            path.display()
        ),
        Some(x) => bail!("{}: unknown checkpoint format version {x}", path.display()),
        None => bail!("{}: no format_version: not an elman checkpoint", path.display()),
    }
    let cfg: Config = serde_json::from_value(v)
        .map_err(|e| anyhow!("{}: malformed config ({e})", path.display()))?;
    cfg.model
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    if cfg.vocab.size != cfg.model.vocab_size {
        bail!(
            "{}: vocabulary size {} disagrees with the model's {}",
            path.display(),
            cfg.vocab.size,
            cfg.model.vocab_size
        );
    }
    Ok(cfg)
}

/// Reads a safetensors file into named tensors, checking that every parameter of `cfg` is there
/// (under `prefix` + its name) with the right shape and a float dtype.
pub fn read_weights(
    path: &Path,
    cfg: &ModelConfig,
    prefix: &str,
    dev: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    // Weights, optimizer slots and hidden state are all a few times the parameter count: anything
    // far larger is not a file this config could have written.
    check_size(path, cfg.num_params() as u64 * 4 * 4 + (64 << 20))?;
    let bytes = fs::read(path).map_err(|e| file_error(path, &e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: damaged safetensors file ({e})", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        // Training stops on a non-finite loss or gradient before anything is saved, so a NaN or
        // an infinity here is damage: refused by name, instead of NaN scores and '&&&&' samples.
        if let Some(i) = first_non_finite(view.data(), view.dtype()) {
            bail!(
                "{}: tensor {name} holds a non-finite value (element {i}): the file is damaged; use another checkpoint",
                path.display()
            );
        }
        let t = Tensor::from_raw_buffer(
            view.data(),
            match view.dtype() {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F64 => DType::F64,
                d => bail!(
                    "{}: tensor {name} has dtype {d:?}; elman stores F32",
                    path.display()
                ),
            },
            view.shape(),
            dev,
        )?;
        out.insert(name, t);
    }
    for (name, shape) in cfg.param_shapes() {
        let name = format!("{prefix}{name}");
        match out.get(&name) {
            None => bail!(
                "{}: tensor {name} is missing (not an elman model of this config)",
                path.display()
            ),
            Some(t) if t.dims() != shape.as_slice() => bail!(
                "{}: tensor {name} has shape {:?} but config.json says {:?}",
                path.display(),
                t.dims(),
                shape
            ),
            Some(_) => {}
        }
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// The index of the first NaN or infinity in a little-endian F32 or F64 buffer (other dtypes are
/// refused by the caller).
fn first_non_finite(data: &[u8], dtype: safetensors::Dtype) -> Option<usize> {
    match dtype {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        safetensors::Dtype::F64 => data
            .chunks_exact(8)
            .position(|b| !f64::from_le_bytes(b.try_into().expect("8 bytes")).is_finite()),
        _ => None,
    }
}

/// Loads a checkpoint for use: the best weights, the vocabulary, the config.
pub fn load(dir: &Path, dev: &Device) -> Result<Loaded> {
    let dir = resolve_dir(dir);
    let config = read_config(&dir)?;
    let tok_path = dir.join(TOKENIZER_FILE);
    if !tok_path.exists() {
        bail!(
            "{}: missing; the checkpoint is incomplete",
            tok_path.display()
        );
    }
    check_size(&tok_path, MAX_TOKENIZER_BYTES)?;
    let mut vocab = Vocab::from_tokenizer_json(
        &tok_path,
        config.vocab.level,
        config.vocab.nfc,
        config.vocab.segmenter,
    )?;
    vocab.unknown_types = config.vocab.unknown_types;
    if vocab.len() != config.model.vocab_size {
        bail!(
            "{}: holds {} tokens but config.json says the model has {}",
            tok_path.display(),
            vocab.len(),
            config.model.vocab_size
        );
    }
    let (weights, _) = read_weights(&dir.join(MODEL_FILE), &config.model, "", dev)?;
    let model = model_from_tensors(&config.model, weights, DType::F32, dev)?;
    Ok(Loaded {
        dir,
        config,
        vocab,
        model,
    })
}

pub fn model_from_tensors(
    cfg: &ModelConfig,
    ts: HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> Result<GraphModel> {
    let vb = VarBuilder::from_tensors(ts, dtype, dev);
    Ok(GraphModel::new(*cfg, vb)?)
}

/// Reads `metrics.jsonl` (missing file: no metrics).
pub fn read_metrics(dir: &Path) -> Result<Vec<Metric>> {
    read_metrics_file(&dir.join(METRICS_FILE))
}

/// The evaluations in a metrics.jsonl file (none if it does not exist).
pub fn read_metrics_file(path: &Path) -> Result<Vec<Metric>> {
    let path = path.to_path_buf();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_error(&path, &e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| anyhow!("{}: line {}: {e}", path.display(), i + 1))
        })
        .collect()
}
