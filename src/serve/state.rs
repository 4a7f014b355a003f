//! What the server holds: the models it serves (loaded once, shared read-only by every request)
//! and the bounds every request is held to.

use crate::checkpoint::{self, Loaded};
use crate::infer::StreamModel;
use crate::runtime::Runtime;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

/// What `elman serve` takes.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Checkpoint folders (or names under checkpoints/), each served under its folder's name.
    pub models: Vec<PathBuf>,
    pub host: String,
    /// 0 picks a free port (printed).
    pub port: u16,
    /// Every request but the page must carry `Authorization: Bearer` this.
    pub api_key: Option<String>,
    /// Listen beyond the loopback address without a key.
    pub insecure: bool,
    /// Serve a checkpoint's new version as soon as it is saved.
    pub watch: bool,
}

/// The bounds every request is held to (each breach is a 4xx naming the bound).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of a request body.
    pub body: usize,
    /// Characters of a prompt, or of a text to score.
    pub prompt: usize,
    pub text: usize,
    /// Tokens of one sample, one beam continuation.
    pub sample: usize,
    pub beam_tokens: usize,
    /// Beam width, candidates per ranking, characters per candidate, next tokens listed.
    pub beam: usize,
    pub candidates: usize,
    pub candidate: usize,
    pub top: usize,
}

pub const LIMITS: Limits = Limits {
    body: 256 * 1024,
    prompt: 10_000,
    text: 20_000,
    sample: 5_000,
    beam_tokens: 200,
    beam: 32,
    candidates: 200,
    candidate: 200,
    top: 1_000,
};

/// One model being served.
pub struct Served {
    pub name: String,
    pub loaded: Loaded,
    pub net: StreamModel,
    /// `elman info --json` of it.
    pub info: serde_json::Value,
    /// What the playground opens on for it: a prompt and candidates to rank ([`example`]).
    pub example: (String, Vec<String>),
    /// When its checkpoint was saved (seconds since 1970: OpenAI's `created`).
    pub created: u64,
}

impl Served {
    /// The training step of the weights served: `model.safetensors` holds the best validation's.
    pub fn step(&self) -> u64 {
        let p = &self.loaded.config.progress;
        p.best_step.unwrap_or(p.step)
    }
}

/// The chapter's showcase.
const SHOWCASE: (&str, [&str; 5]) = ("天空飞过一只", ["小鸟", "蜻蜓", "人", "坦克", "猪"]);

/// A prompt and candidates the model can read: the chapter's showcase when its vocabulary holds
/// every piece of it; otherwise the model's own most likely opening (greedy from the start of a
/// text, to its first line break or 24 tokens) and the three tokens it expects next.
pub fn example(net: &StreamModel, vocab: &crate::vocab::Vocab) -> (String, Vec<String>) {
    let known = |s: &str| {
        let mut unknown = false;
        vocab.encode_reporting(s, |_, _| unknown = true).is_ok() && !unknown
    };
    if known(SHOWCASE.0) && SHOWCASE.1.iter().all(|c| known(c)) {
        return (
            SHOWCASE.0.to_string(),
            SHOWCASE.1.iter().map(|c| c.to_string()).collect(),
        );
    }
    let Ok(mut state) = crate::generate::warm_up(net, vocab, &[]) else {
        return (String::new(), Vec::new());
    };
    let mut ids = Vec::new();
    while ids.len() < 24 {
        let next = crate::generate::argmax(&net.log_probs(&state));
        let line_break = matches!(vocab.token(next), "\n" | crate::vocab::EOS);
        if line_break && !ids.is_empty() {
            break;
        }
        net.step(&mut state, next);
        ids.push(next);
        if crate::generate::is_stop_token(vocab, next) && !line_break {
            break;
        }
    }
    let candidates = crate::generate::top_next(net, vocab, &state, 3)
        .into_iter()
        .map(|n| n.token)
        .filter(|t| !t.trim().is_empty())
        .collect();
    (vocab.decode(&ids), candidates)
}

/// One served model: the folder it comes from, and the version being served. A request takes the
/// version there when it starts (an `Arc`) and finishes on it, whatever `--watch` swaps in
/// meanwhile.
pub struct Slot {
    pub dir: PathBuf,
    pub name: String,
    current: RwLock<Arc<Served>>,
    /// The folder as it was when that version was read ([`fingerprint`]).
    seen: Mutex<Option<Fingerprint>>,
}

impl Slot {
    pub fn current(&self) -> Arc<Served> {
        self.current.read().expect("never poisoned").clone()
    }
}

/// What changes when a checkpoint folder is replaced: the folder is swapped whole
/// (`checkpoint::commit`), so its inode, and its `config.json`'s modification time and size.
type Fingerprint = (u64, Option<std::time::SystemTime>, u64);

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(dir).ok()?;
    let c = std::fs::metadata(dir.join(checkpoint::CONFIG_FILE)).ok()?;
    Some((d.ino(), c.modified().ok(), c.len()))
}

/// What every request handler reads.
pub struct AppState {
    pub models: Vec<Slot>,
    pub limits: Limits,
    /// Set by Ctrl-C: generations stop at their next token.
    pub stopping: AtomicBool,
    pub api_key: Option<String>,
}

/// `elman info --json` as a client may see it: the server's file system stays private, so the
/// model is named by its name, and the texts and checkpoints it came from by their file names.
fn without_paths(info: &mut serde_json::Value, name: &str) {
    use serde_json::Value;
    let file_name = |v: &mut Value| {
        if let Some(p) = v.as_str() {
            let base = std::path::Path::new(p)
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            *v = Value::String(base);
        }
    };
    info["dir"] = Value::String(name.to_string());
    for key in ["files", "val_files"] {
        if let Some(files) = info["config"]["corpus"][key].as_array_mut() {
            files.iter_mut().for_each(file_name);
        }
    }
    if let Some(from) = info["config"].get_mut("init_from") {
        file_name(from);
    }
}

/// Reads the checkpoint in `dir` to be served.
fn read_served(dir: &Path, rt: &Runtime) -> Result<Served> {
    let info = crate::info::info(dir, rt)?;
    let loaded = checkpoint::load(dir, &rt.device)?;
    let net = StreamModel::new(&loaded.model)?;
    let name = loaded.dir.file_name().map_or_else(
        || loaded.dir.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    let mut info = serde_json::to_value(&info)?;
    without_paths(&mut info, &name);
    let example = example(&net, &loaded.vocab);
    let created = std::fs::metadata(loaded.dir.join(checkpoint::CONFIG_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(Served {
        name,
        info,
        loaded,
        net,
        example,
        created,
    })
}

/// Reads the checkpoint in `dir` when it is not changing underneath: the folder's fingerprint is
/// the same before and after (a save between the two reads is read again on the next look).
fn read_settled(dir: &Path, rt: &Runtime) -> Result<Option<(Served, Option<Fingerprint>)>> {
    let before = fingerprint(dir);
    let served = read_served(dir, rt)?;
    let after = fingerprint(dir);
    Ok((before == after).then_some((served, after)))
}

/// `--watch`: looks at every served folder twice a second and, when one was replaced (a running
/// `elman train` saved a new best), reads it and serves it from the next request on. A folder
/// caught mid-save or unreadable keeps the version being served (said once per failure).
pub fn watch(state: &AppState, rt: &Runtime) {
    for slot in &state.models {
        let now = fingerprint(&slot.dir);
        if now.is_none() || *slot.seen.lock().expect("never poisoned") == now {
            continue;
        }
        match read_settled(&slot.dir, rt) {
            Ok(Some((served, seen))) if served.name == slot.name => {
                let (step, saved) = (served.step(), served.loaded.config.progress.step);
                *slot.current.write().expect("never poisoned") = Arc::new(served);
                *slot.seen.lock().expect("never poisoned") = seen;
                crate::note!(
                    "  model {:?} reloaded: now the weights of step {step} (saved at step {saved})",
                    slot.name
                );
            }
            Ok(_) => {}
            Err(e) => {
                *slot.seen.lock().expect("never poisoned") = now;
                crate::note!(
                    "  model {:?}: the new checkpoint cannot be read ({e:#}); still serving the previous one",
                    slot.name
                );
            }
        }
    }
}

/// Loads the models: each under its folder's name, which must differ.
pub fn load(args: &ServeArgs, rt: &Runtime) -> Result<AppState> {
    if args.models.is_empty() {
        bail!("give at least one --model to serve");
    }
    let mut models: Vec<Slot> = Vec::new();
    for m in &args.models {
        let seen = fingerprint(&checkpoint::resolve_dir(m));
        let served = read_served(m, rt)?;
        if models.iter().any(|s| s.name == served.name) {
            bail!(
                "{}: two models would be served as {:?}; give folders with different names",
                served.loaded.dir.display(),
                served.name
            );
        }
        models.push(Slot {
            dir: served.loaded.dir.clone(),
            name: served.name.clone(),
            current: RwLock::new(Arc::new(served)),
            seen: Mutex::new(seen),
        });
    }
    Ok(AppState {
        models,
        limits: LIMITS,
        stopping: AtomicBool::new(false),
        api_key: args.api_key.clone(),
    })
}
