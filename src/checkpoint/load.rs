//! Loading a checkpoint folder back: its config, its tokenizer and its weights, each file's size
//! checked before it is read and every tensor's name, shape and values checked before use.

use super::format::*;
use crate::config::ModelConfig;
use crate::corpus::file_error;
use crate::model::GraphModel;
use crate::vocab::Vocab;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Size limits checked before a checkpoint file is read, so a damaged or hostile file cannot make
/// elman allocate without bound.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

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
    // A file that does not parse and is shorter than every parameter once in f32 was cut short:
    // said in those words rather than the format's.
    let least = cfg.num_params() as u64 * 4;
    let broken = |what: &str, e: safetensors::SafeTensorError| {
        if (bytes.len() as u64) < least {
            anyhow!(
                "{}: truncated: {} bytes, while the {} parameters config.json describes take at least {least}; the file was cut short (use another copy, or another checkpoint)",
                path.display(),
                bytes.len(),
                cfg.num_params()
            )
        } else {
            anyhow!("{}: {what} ({e})", path.display())
        }
    };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| broken("not a valid safetensors file", e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| broken("damaged safetensors file", e))?;
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
