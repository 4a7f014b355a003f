//! `elman serve`: a local web playground and a JSON API for trained models.
//!
//! The numbers are the command line's: every endpoint calls the same library functions as its
//! subcommand (`generate::top_next`, `generate::stream`, `beam_search`, `rank`, `heatmap::analyse`)
//! on the same batch-1 model (`infer::StreamModel`), and the tests hold them equal. The models are loaded once and shared
//! read-only by every request; each request's work runs on tokio's blocking pool, so requests do not
//! wait on one another beyond the CPU. Safe by default: it listens on 127.0.0.1 unless told
//! otherwise, bounds every request (`Limits`), answers every mistake with a 4xx and a one-line JSON
//! error, and reads or writes no path a request names. Ctrl-C stops it: no new connection is
//! taken, generations stop, and it waits a moment for open responses to finish.
//!
//! `state.rs` holds the served models and the bounds, `api.rs` the endpoints, `page.html` the
//! playground (embedded in the binary: no request leaves the machine).

mod api;
mod openai;
mod state;

pub use state::{load, AppState, Limits, ServeArgs, Served, LIMITS};

use crate::runtime::Runtime;
use anyhow::{anyhow, Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Serves until Ctrl-C. Prints the address it listens on (with the port a `--port 0` got) on
/// standard error, then one line per model.
pub fn run(args: &ServeArgs, rt: &Runtime) -> Result<()> {
    let ip: IpAddr = args.host.parse().map_err(|_| {
        anyhow!(
            "--host {:?}: not an IP address (such as 127.0.0.1)",
            args.host
        )
    })?;
    if !ip.is_loopback() && args.api_key.is_none() && !args.insecure {
        return Err(anyhow!(
            "--host {ip} opens the server to the network: give --api-key KEY (or set ELMAN_API_KEY) so that only clients with the key can use it, or --insecure to serve without one"
        ));
    }
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
            crate::note!(
                "warning: listening on {ip}, not the loopback address: anyone who can reach this machine can use these models"
            );
        }
        crate::note!("elman serve: listening on http://{local}/");
        if args.api_key.is_some() {
            crate::note!("  every request needs the header Authorization: Bearer <your --api-key>");
        }
        for m in &state.models {
            crate::note!("  model {:?} from {}", m.name, m.loaded.dir.display());
        }
        let app = api::router(state.clone());
        let stopping = state.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let _ = tokio::signal::ctrl_c().await;
            crate::note!("\nelman serve: stopping");
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
