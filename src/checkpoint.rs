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
//! folder, never a mix.

use crate::corpus::file_error;
use crate::model::{ElmanLM, ModelConfig};
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
    match mc.cell {
        crate::cell::CellKind::Elman => 1,
        _ => 2,
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    /// The learning rate falls linearly to 0 over each session's budget (--steps, --time, --epochs).
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
    pub model: ElmanLM,
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
) -> Result<ElmanLM> {
    let vb = VarBuilder::from_tensors(ts, dtype, dev);
    Ok(ElmanLM::new(*cfg, vb)?)
}

/// One tensor of a safetensors file a save streams out: a candle tensor (F32, turned into bytes
/// only when its turn to be written comes) or f32 data borrowed as it lies (the optimizer's
/// moments). A save so never holds a serialised copy of the whole file: at word level that copy
/// was the largest allocation of a run.
pub enum Entry<'a> {
    Tensor(Tensor),
    F32(&'a [f32], Vec<usize>),
}

impl<'a> Entry<'a> {
    /// A tensor as an entry, converted to contiguous F32 (a no-op for the model's own weights).
    pub fn tensor(t: &Tensor) -> Result<Entry<'static>> {
        Ok(Entry::Tensor(t.to_dtype(DType::F32)?.contiguous()?))
    }

    /// Another entry for the same data (a tensor is a shared handle: nothing is copied).
    pub fn share(&self) -> Entry<'a> {
        match self {
            Entry::Tensor(t) => Entry::Tensor(t.clone()),
            Entry::F32(d, shape) => Entry::F32(d, shape.clone()),
        }
    }
}

impl safetensors::View for &Entry<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        match self {
            Entry::Tensor(t) => t.dims(),
            Entry::F32(_, shape) => shape,
        }
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Entry::Tensor(t) => <Tensor as safetensors::View>::data(t),
            // Safetensors is little-endian: the data as it lies on a little-endian machine.
            Entry::F32(d, _) if cfg!(target_endian = "little") => {
                std::borrow::Cow::Borrowed(bytemuck::cast_slice(d))
            }
            Entry::F32(d, _) => d.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn data_len(&self) -> usize {
        4 * match self {
            Entry::Tensor(t) => t.elem_count(),
            Entry::F32(d, _) => d.len(),
        }
    }
}

/// Writes named entries as one safetensors file at `path`, tensor by tensor, via a temporary
/// file in the same folder, fsync and rename (as `write_atomic`).
pub fn write_entries(
    path: &Path,
    entries: &[(String, Entry)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let tmp = tmp_path(path);
    safetensors::tensor::serialize_to_file(
        entries.iter().map(|(n, e)| (n.as_str(), e)),
        metadata,
        &tmp,
    )
    .map_err(|e| match e {
        safetensors::SafeTensorError::IoError(io) => file_error(&tmp, &io),
        e => anyhow!("{}: {e}", tmp.display()),
    })?;
    sync_and_rename(&tmp, path)
}

/// Everything one save writes.
pub struct Snapshot<'a> {
    pub config: &'a Config,
    pub tokenizer_json: &'a str,
    /// The weights to write as `model.safetensors` (PyTorch names): the best so far, when this
    /// save follows an evaluation that improved on it, or the latest on a first save without
    /// one. `None` keeps the existing `model.safetensors`.
    pub best: Option<Vec<(String, Entry<'a>)>>,
    /// `state.safetensors`: the latest weights (`param.` names), optimizer slots, hidden state.
    pub state: Vec<(String, Entry<'a>)>,
    pub state_meta: HashMap<String, String>,
    pub metrics: &'a [Metric],
}

/// One optimizer slot of one parameter, borrowed as it lies (Adam's `exp_avg` of
/// `rnn.weight_hh_l0`, say).
pub struct OptimizerSlot<'a> {
    pub slot: &'static str,
    pub param: &'a str,
    pub data: &'a [f32],
    pub shape: Vec<usize>,
}

/// Everything `--resume` needs beyond `config.json`: the latest weights, the optimizer's slots,
/// each layer's carried state, the loop position and the plateau rule's best loss. In
/// `state.safetensors` they are `param.{name}`, `optim.{slot}.{name}`, `hidden.l{k}`, and the
/// metadata `loop` and `plateau_best`. [`TrainingState::entries`] is the one writer of that file
/// and [`TrainingState::read`] its one reader: bit-exact resume depends on the two agreeing.
pub struct TrainingState<'a> {
    /// The latest weights under their model names.
    pub weights: Vec<(String, Entry<'a>)>,
    pub optimizer: Vec<OptimizerSlot<'a>>,
    /// Each layer's carried state, batch × hidden: every layer's h, then (LSTM) every layer's c.
    pub hidden: Vec<Entry<'a>>,
    /// Vectors carried per layer (1, or 2 for an LSTM).
    pub carried: usize,
    pub loop_state: LoopState,
    pub plateau_best: Option<f64>,
}

/// What [`TrainingState::read`] gives back.
pub struct RestoredState {
    /// The latest weights by model name.
    pub weights: HashMap<String, Tensor>,
    /// The optimizer's slots by (slot, parameter name).
    pub optimizer: HashMap<(String, String), Tensor>,
    /// The carried state, batch × hidden each, flat: every layer's h, then every layer's c.
    pub hidden: Vec<Vec<f32>>,
    pub loop_state: LoopState,
    pub plateau_best: Option<f64>,
}

const PARAM_PREFIX: &str = "param.";

/// The name of carried state `i` (every layer's h, then every layer's c): `hidden.l{k}`,
/// `cell.l{k}`.
fn carried_name(i: usize, layers: usize) -> String {
    if i < layers {
        format!("hidden.l{i}")
    } else {
        format!("cell.l{}", i - layers)
    }
}

/// Named tensors as a safetensors file lists them.
pub type Entries<'a> = Vec<(String, Entry<'a>)>;

impl<'a> TrainingState<'a> {
    /// The tensors and metadata of `state.safetensors`.
    fn entries(&self) -> Result<(Entries<'a>, HashMap<String, String>)> {
        let mut out: Vec<(String, Entry)> = self
            .weights
            .iter()
            .map(|(n, e)| (format!("{PARAM_PREFIX}{n}"), e.share()))
            .collect();
        for s in &self.optimizer {
            out.push((
                format!("optim.{}.{}", s.slot, s.param),
                Entry::F32(s.data, s.shape.clone()),
            ));
        }
        let layers = self.hidden.len() / self.carried.max(1);
        for (i, h) in self.hidden.iter().enumerate() {
            out.push((carried_name(i, layers), h.share()));
        }
        let mut meta = HashMap::new();
        meta.insert("loop".to_string(), serde_json::to_string(&self.loop_state)?);
        if let Some(p) = self.plateau_best {
            meta.insert("plateau_best".to_string(), format!("{p:?}"));
        }
        Ok((out, meta))
    }

    /// Reads `dir`'s `state.safetensors` for a run of `config`, checking every tensor a resume
    /// needs: the weights, `slots` of the optimizer for every parameter, each layer's carried
    /// state at the run's batch.
    pub fn read(dir: &Path, config: &Config, slots: &[&str]) -> Result<RestoredState> {
        let mc = &config.model;
        let path = dir.join(STATE_FILE);
        let (mut ts, meta) = read_weights(&path, mc, PARAM_PREFIX, &Device::Cpu)
            .context("reading the training state to resume")?;
        let mut take = |key: &str| {
            ts.remove(key)
                .ok_or_else(|| anyhow!("the training state has no {key}"))
        };
        let names: Vec<String> = mc.param_shapes().into_iter().map(|(n, _)| n).collect();
        let mut weights = HashMap::new();
        for n in &names {
            weights.insert(n.clone(), take(&format!("{PARAM_PREFIX}{n}"))?);
        }
        let mut optimizer = HashMap::new();
        for slot in slots {
            for n in &names {
                let key = format!("optim.{slot}.{n}");
                let t = take(&key)?;
                let want = weights[n].dims();
                if t.dims() != want {
                    bail!("{key} has shape {:?}, expected {want:?}", t.dims());
                }
                optimizer.insert((slot.to_string(), n.clone()), t);
            }
        }
        let (batch, h) = (config.training.batch, mc.hidden);
        let carried = mc.layers * mc.cell().carried();
        let mut hidden = Vec::with_capacity(carried);
        for i in 0..carried {
            let key = carried_name(i, mc.layers);
            let t = take(&key)?;
            if t.dims() != [batch, h] {
                bail!("{key} has shape {:?}", t.dims());
            }
            hidden.push(t.flatten_all()?.to_vec1::<f32>()?);
        }
        let loop_json = meta
            .get("loop")
            .ok_or_else(|| anyhow!("the training state has no loop position"))?;
        let loop_state =
            serde_json::from_str(loop_json).context("the training state's loop position")?;
        Ok(RestoredState {
            weights,
            optimizer,
            hidden,
            loop_state,
            plateau_best: meta.get("plateau_best").and_then(|s| s.parse().ok()),
        })
    }
}

/// Saves a training run: the config with its progress, the tokenizer, the metrics, the best
/// weights when `best` is given, and the state to resume from, as one atomic folder swap.
pub fn save_run(
    dir: &Path,
    config: &Config,
    tokenizer_json: &str,
    best: Option<Vec<(String, Entry)>>,
    training: &TrainingState,
    metrics: &[Metric],
) -> Result<()> {
    let (state, state_meta) = training.entries()?;
    commit(
        dir,
        &Snapshot {
            config,
            tokenizer_json,
            best,
            state,
            state_meta,
            metrics,
        },
    )
}

/// Writes a complete new version of the checkpoint folder and swaps it in atomically.
pub fn commit(dir: &Path, snap: &Snapshot) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| file_error(&parent, &e))?;
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a usable folder name", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let staging = parent.join(format!(".{name}.staging"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| file_error(&staging, &e))?;
    }
    fs::create_dir(&staging).map_err(|e| file_error(&staging, &e))?;
    // On failure (a full disk, say) remove the half-written staging folder; the live one is
    // untouched either way.
    let written = write_staging(dir, &staging, snap);
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written?;

    if dir.exists() {
        exchange(&staging, dir)?;
        // `staging` now holds the previous version.
        let _ = fs::remove_dir_all(&staging);
    } else {
        fs::rename(&staging, dir).map_err(|e| file_error(dir, &e))?;
    }
    sync_dir(&parent);
    Ok(())
}

fn write_staging(dir: &Path, staging: &Path, snap: &Snapshot) -> Result<()> {
    let model = staging.join(MODEL_FILE);
    match &snap.best {
        Some(best) => write_entries(&model, best, None)?,
        None => {
            let old = dir.join(MODEL_FILE);
            if old.exists() {
                // The previous version's best weights carry over (copied, not read into memory).
                let tmp = tmp_path(&model);
                fs::copy(&old, &tmp).map_err(|e| file_error(&old, &e))?;
                sync_and_rename(&tmp, &model)?;
            } else {
                // Gone from the folder: the latest weights stand in, under their model names.
                let latest: Vec<(String, Entry)> = snap
                    .state
                    .iter()
                    .filter_map(|(n, e)| {
                        let name = n.strip_prefix("param.")?.to_string();
                        Some((name, e.share()))
                    })
                    .collect();
                write_entries(&model, &latest, None)?;
            }
        }
    }
    write_entries(
        &staging.join(STATE_FILE),
        &snap.state,
        Some(snap.state_meta.clone()),
    )?;
    write_atomic(
        &staging.join(TOKENIZER_FILE),
        snap.tokenizer_json.as_bytes(),
    )?;
    let mut metrics = String::new();
    for m in snap.metrics {
        metrics.push_str(&serde_json::to_string(m)?);
        metrics.push('\n');
    }
    write_atomic(&staging.join(METRICS_FILE), metrics.as_bytes())?;
    // The training curves as a picture, refreshed with every save (none while all losses are
    // non-finite: a diverged run has nothing to draw).
    if !snap.metrics.is_empty() {
        let name = dir
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned());
        let chart = crate::plot::loss_chart(&[(name, snap.metrics.to_vec())]);
        if let Ok(svg) = crate::plot::svg(&chart) {
            write_atomic(&staging.join(LOSS_CHART_FILE), svg.as_bytes())?;
        }
    }
    // config.json last: a staging folder without it is never mistaken for a checkpoint.
    write_atomic(
        &staging.join(CONFIG_FILE),
        serde_json::to_string_pretty(snap.config)?.as_bytes(),
    )?;
    sync_dir(staging);
    Ok(())
}

/// Writes `bytes` to `path` via a temporary file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    // Errors name the file asked for (the temporary one beside it is elman's business), and a
    // missing folder as such.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "{}: cannot write it, the folder {} does not exist",
                path.display(),
                parent.display()
            );
        }
    }
    let mut f = fs::File::create(&tmp).map_err(|e| file_error(path, &e))?;
    let written = f.write_all(bytes).map_err(|e| file_error(path, &e));
    drop(f);
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_and_rename(&tmp, path)
}

/// Flushes the finished temporary file `tmp` to disk and renames it to `path`.
fn sync_and_rename(tmp: &Path, path: &Path) -> Result<()> {
    fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| file_error(tmp, &e))?;
    fs::rename(tmp, path).map_err(|e| file_error(path, &e))?;
    Ok(())
}

/// `path` with `.tmp` added to its extension: where `write_atomic` writes before the rename.
fn tmp_path(path: &Path) -> PathBuf {
    path.with_extension(format!(
        "{}.tmp",
        path.extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    ))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Atomically swaps two folders. Linux: `renameat2(RENAME_EXCHANGE)`. Elsewhere (or on a file
/// system without it) two renames, with the old version kept beside until the second one is done.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())?;
        let cb = CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: two valid NUL-terminated paths; renameat2 reads them and nothing else.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(file_error(b, &err));
        }
    }
    // Fallback: b → b.old, a → b, b.old → a (so the caller removes it as before).
    let old = b.with_file_name(format!(
        ".{}.old",
        b.file_name().unwrap_or_default().to_string_lossy()
    ));
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| file_error(&old, &e))?;
    }
    fs::rename(b, &old).map_err(|e| file_error(b, &e))?;
    fs::rename(a, b).map_err(|e| file_error(b, &e))?;
    fs::rename(&old, a).map_err(|e| file_error(a, &e))?;
    Ok(())
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
