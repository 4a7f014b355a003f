//! What the server holds: the models it serves (loaded once, shared read-only by every request)
//! and the bounds every request is held to.

use crate::checkpoint::{self, Loaded};
use crate::infer::StreamModel;
use crate::runtime::Runtime;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// What `elman serve` takes.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    /// Checkpoint folders (or names under checkpoints/), each served under its folder's name.
    pub models: Vec<PathBuf>,
    pub host: String,
    /// 0 picks a free port (printed).
    pub port: u16,
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
}

/// What every request handler reads.
pub struct AppState {
    pub models: Vec<Served>,
    pub limits: Limits,
    /// Set by Ctrl-C: generations stop at their next token.
    pub stopping: AtomicBool,
}

/// Loads the models: each under its folder's name, which must differ.
pub fn load(args: &ServeArgs, rt: &Runtime) -> Result<AppState> {
    if args.models.is_empty() {
        bail!("give at least one --model to serve");
    }
    let mut models: Vec<Served> = Vec::new();
    for m in &args.models {
        let info = crate::info::info(m, rt)?;
        let loaded = checkpoint::load(m, &rt.device)?;
        let net = StreamModel::new(&loaded.model)?;
        let name = loaded.dir.file_name().map_or_else(
            || loaded.dir.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        if models.iter().any(|s| s.name == name) {
            bail!(
                "{}: two models would be served as {name:?}; give folders with different names",
                loaded.dir.display()
            );
        }
        models.push(Served {
            name,
            info: serde_json::to_value(&info)?,
            loaded,
            net,
        });
    }
    Ok(AppState {
        models,
        limits: LIMITS,
        stopping: AtomicBool::new(false),
    })
}
