//! Saving a checkpoint: tensors streamed into safetensors files, the resume state
//! (`TrainingState`, the one writer and reader of `state.safetensors`), and the atomic swap that
//! replaces a checkpoint folder whole.

use super::format::*;
use super::load::read_weights;
use crate::corpus::file_error;
use crate::optim::OptimizerSlot;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    // safetensors writes through a private temporary file (mode 600): give it the mode every
    // other file of the checkpoint gets.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = 0o666 & !umask();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(|e| file_error(&tmp, &e))?;
    }
    sync_and_rename(&tmp, path)
}

/// The process's file-creation mask (what `File::create` leaves out of 666), read from
/// /proc/self/status without changing it; 022, the usual one, where that is not available.
#[cfg(unix)]
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        })
        .unwrap_or(0o022)
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
    /// `loss.svg`: the training curves as a picture (`None`: none to draw).
    pub loss_chart: Option<&'a str>,
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
    /// The moving average of the weights, under their model names (empty without `--average`).
    pub average: Vec<(String, Entry<'a>)>,
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
    /// The moving average of the weights by model name (empty without `--average`).
    pub average: HashMap<String, Tensor>,
}

const PARAM_PREFIX: &str = "param.";
const AVERAGE_PREFIX: &str = "avg.";

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
        for (n, e) in &self.average {
            out.push((format!("{AVERAGE_PREFIX}{n}"), e.share()));
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
    pub fn read(
        dir: &Path,
        config: &Config,
        slots: &[&str],
        dev: &Device,
    ) -> Result<RestoredState> {
        let mc = &config.model;
        let path = dir.join(STATE_FILE);
        let (mut ts, meta) = read_weights(&path, mc, PARAM_PREFIX, dev)
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
        let mut average = HashMap::new();
        if config.training.average > 0.0 {
            for n in &names {
                let key = format!("{AVERAGE_PREFIX}{n}");
                let t = take(&key)?;
                if t.dims() != weights[n].dims() {
                    bail!(
                        "{key} has shape {:?}, expected {:?}",
                        t.dims(),
                        weights[n].dims()
                    );
                }
                average.insert(n.clone(), t);
            }
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
            average,
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
    loss_chart: Option<&str>,
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
            loss_chart,
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
    // The training curves as a picture, refreshed with every save.
    if let Some(svg) = snap.loss_chart {
        write_atomic(&staging.join(LOSS_CHART_FILE), svg.as_bytes())?;
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
