//! `elman serve`: a local web playground and a JSON API for trained models.
//!
//! The numbers are the command line's: every endpoint calls the same library functions as its
//! subcommand (`generate::top_next`, `generate::stream`, `beam_search`, `rank`, `heatmap::analyse`)
//! on the same batch-1 engine, and the tests hold them equal. The models are loaded once and shared
//! read-only by every request; each request's work runs on tokio's blocking pool, so requests do not
//! wait on one another beyond the CPU. Safe by default: it listens on 127.0.0.1 unless told
//! otherwise, bounds every request (`Limits`), answers every mistake with a 4xx and a one-line JSON
//! error, and reads or writes no path a request names. Ctrl-C stops it: no new connection is
//! taken, generations stop, and it waits a moment for open responses to finish.
//!
//! `api.rs` holds the endpoints, `page.html` the playground (embedded in the binary: no request
//! leaves the machine).

mod api;

use crate::checkpoint::{self, Loaded};
use crate::infer::StreamModel;
use crate::runtime::Runtime;
use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    pub engine: StreamModel,
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

impl AppState {
    /// The model a request names, or the only one when it names none.
    pub fn model(&self, name: Option<&str>) -> Result<&Served, api::ApiError> {
        match name {
            Some(n) => self.models.iter().find(|m| m.name == n).ok_or_else(|| {
                api::ApiError::not_found(format!(
                    "no model named {n:?}; this server has {}",
                    self.names()
                ))
            }),
            None if self.models.len() == 1 => Ok(&self.models[0]),
            None => Err(api::ApiError::bad(format!(
                "several models are served ({}): say which with \"model\"",
                self.names()
            ))),
        }
    }

    fn names(&self) -> String {
        self.models
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
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
        let engine = StreamModel::new(&loaded.model)?;
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
            engine,
        });
    }
    Ok(AppState {
        models,
        limits: LIMITS,
        stopping: AtomicBool::new(false),
    })
}

/// Serves until Ctrl-C. Prints the address it listens on (with the port a `--port 0` got) on
/// standard error, then one line per model.
pub fn run(args: &ServeArgs, rt: &Runtime) -> Result<()> {
    let ip: IpAddr = args.host.parse().map_err(|_| {
        anyhow!(
            "--host {:?}: not an IP address (such as 127.0.0.1)",
            args.host
        )
    })?;
    let state = Arc::new(load(args, rt)?);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(rt.threads.max(2))
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    tokio.block_on(async move {
        let addr = SocketAddr::new(ip, args.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow!("{addr}: cannot listen there ({e}); choose another --port"))?;
        let local = listener.local_addr()?;
        if !ip.is_loopback() {
            eprintln!(
                "warning: listening on {ip}, not the loopback address: anyone who can reach this machine can use these models"
            );
        }
        eprintln!("elman serve: listening on http://{local}/");
        for m in &state.models {
            eprintln!("  model {:?} from {}", m.name, m.loaded.dir.display());
        }
        let app = api::router(state.clone());
        let stopping = state.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("\nelman serve: stopping");
            stopping.stopping.store(true, Ordering::SeqCst);
            let _ = done_tx.send(());
        };
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
        let server = tokio::spawn(async move { server.await });
        // After Ctrl-C, open responses get a moment to finish; then the server is left behind.
        let _ = done_rx.await;
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
            Ok(Ok(Err(e))) => Err(anyhow!("serving: {e}")),
            Ok(Err(e)) => Err(anyhow!("serving: {e}")),
        }
    })
}
