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

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

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
        if !ip.is_loopback() && args.api_key.is_none() {
            crate::note!(
                "warning: listening on {ip}, not the loopback address: anyone who can reach this machine can use these models"
            );
        }
        crate::note!("elman serve: listening on http://{local}/");
        if args.api_key.is_some() {
            crate::note!("  every request needs the header Authorization: Bearer <your --api-key>");
        }
        for m in &state.models {
            crate::note!("  model {:?} from {}", m.name, m.dir.display());
        }
        if args.watch {
            crate::note!("  watching the checkpoint folders: a new save is served from the next request");
            let (watched, rt) = (state.clone(), rt.clone());
            tokio::task::spawn_blocking(move || {
                while !watched.stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(500));
                    state::watch(&watched, &rt);
                }
            });
        }
        let app = router(state.clone());
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

/// Every endpoint: the playground, the JSON API (`api.rs`) and the OpenAI-compatible one
/// (`openai.rs`), behind the key check.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/api/models", get(api::models))
        .route("/api/info", get(api::info))
        .route("/api/next", post(api::next))
        .route("/api/sample", post(api::sample))
        .route("/api/sample/stream", post(api::sample_stream))
        .route("/api/complete", post(api::complete))
        .route("/api/rank", post(api::rank))
        .route("/api/score", post(api::score))
        .route("/v1/models", get(openai::models))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models/{id}", get(openai::model))
        .method_not_allowed_fallback(|uri: axum::http::Uri| async move {
            route_error(
                &uri,
                StatusCode::METHOD_NOT_ALLOWED,
                "wrong method: /api/next, /api/sample, /api/sample/stream, /api/complete, /api/rank, /api/score, /v1/completions and /v1/chat/completions take POST with a JSON body; /, /api/info, /api/models, /v1/models and /v1/models/ID take GET",
            )
        })
        .fallback(|uri: axum::http::Uri| async move {
            let hint = if uri.path().starts_with("/v1/") {
                "no such endpoint; this server has /v1/models, /v1/completions and /v1/chat/completions"
            } else {
                "no such endpoint; GET /api/models lists the models, / is the playground"
            };
            route_error(&uri, StatusCode::NOT_FOUND, hint)
        })
        .layer(DefaultBodyLimit::max(state.limits.body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorized))
        .with_state(state)
}

/// A request for no endpoint, or with the wrong method: in OpenAI's error shape under `/v1/`, in
/// the JSON API's elsewhere.
fn route_error(uri: &axum::http::Uri, status: StatusCode, message: &str) -> Response {
    if uri.path().starts_with("/v1/") {
        let mut e = openai::OaiError::invalid(message, None);
        e.status = status;
        e.into_response()
    } else {
        api::ApiError::with_status(status, message.to_string()).into_response()
    }
}

/// With `--api-key`, every request but the page itself (which holds no model's data, and asks
/// for the key) must carry `Authorization: Bearer KEY`; a 401 in OpenAI's error shape otherwise.
/// The key given is never echoed, and compared in constant time.
async fn authorized(
    State(st): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(key) = &st.api_key else {
        return next.run(req).await;
    };
    if req.uri().path() == "/" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 7235).
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        });
    let same = |a: &[u8], b: &[u8]| {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    };
    match given {
        Some(g) if same(g.trim().as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => openai::OaiError {
            status: StatusCode::UNAUTHORIZED,
            message: match given {
                None => "missing the API key: send the header Authorization: Bearer <key>".into(),
                Some(_) => "incorrect API key provided".into(),
            },
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_api_key"),
        }
        .into_response(),
    }
}
