//! The endpoints of `elman serve`: each parses a bounded JSON request (unknown fields refused), runs
//! the library function its subcommand runs on the blocking pool, and answers JSON — or, for a
//! mistake, a 4xx with `{"error": "…"}`.

use super::state::{AppState, Served};
use crate::generate::{self, RankBy, SampleOptions, Until};
use crate::heatmap;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;

impl AppState {
    /// The model a request names, or the only one when it names none: the version being served
    /// now, which the request keeps to its end.
    pub fn model(&self, name: Option<&str>) -> Result<Arc<Served>, ApiError> {
        match name {
            Some(n) => self
                .models
                .iter()
                .find(|m| m.name == n)
                .map(|m| m.current())
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no model named {n:?}; this server has {}",
                        self.names()
                    ))
                }),
            None if self.models.len() == 1 => Ok(self.models[0].current()),
            None => Err(ApiError::bad(format!(
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

/// The playground, embedded: the page needs nothing from the network.
pub(super) const PAGE: &str = include_str!("page.html");

/// A request that cannot be answered: its status and one line saying why.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn with_status(status: StatusCode, message: String) -> ApiError {
        ApiError { status, message }
    }

    /// Its status and message (the OpenAI endpoints answer them in their own shape).
    pub fn parts(self) -> (StatusCode, String) {
        (self.status, self.message)
    }

    pub fn bad(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    pub fn not_found(message: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message,
        }
    }

    fn too_large(message: String) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let line = self.message.replace('\n', " ");
        (self.status, Json(json!({ "error": line }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    /// What the library refuses (an unknown character in a prompt, say) is the request's mistake.
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::bad(format!("{e:#}"))
    }
}

pub(super) type ApiResult = Result<Response, ApiError>;

/// The body as `T`: JSON, no unknown fields, the right types (each failure a 400 naming it).
/// A body over the size limit is a 413 in the same JSON shape.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        message: format!("the request's body: {}", e.body_text()),
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("the request's JSON: {e}")))
}

/// Runs `f` on the blocking pool (the maths never holds up the server's own threads).
pub(super) async fn blocking<F, E>(f: F) -> Result<Response, E>
where
    F: FnOnce() -> Result<Response, E> + Send + 'static,
    E: From<ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ApiError::bad(format!("the request failed: {e}")).into()))
}

pub(super) fn check_len(what: &str, text: &str, max: usize) -> Result<(), ApiError> {
    let n = text.chars().count();
    if n > max {
        return Err(ApiError::too_large(format!(
            "{what} has {n} characters; at most {max}"
        )));
    }
    Ok(())
}

fn check_max(what: &str, n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::bad(format!(
            "{what} {n} is above the limit of {max}"
        )));
    }
    Ok(())
}

pub(super) async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

pub(super) async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = st
        .models
        .iter()
        .map(|slot| {
            let m = slot.current();
            let c = &m.loaded.config;
            json!({
                "name": m.name,
                "cell": c.model.cell,
                "level": c.vocab.level,
                "vocab_size": c.model.vocab_size,
                "hidden": c.model.hidden,
                "layers": c.model.layers,
                "step": m.step(),
                "saved_at_step": c.progress.step,
                "example": {"prompt": m.example.0, "candidates": m.example.1},
            })
        })
        .collect();
    Json(json!({ "models": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelQuery {
    model: Option<String>,
}

pub(super) async fn info(
    State(st): State<Arc<AppState>>,
    q: Result<Query<ModelQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("the query string: {}", e.body_text())))?;
    let name = q.model;
    let m = st.model(name.as_deref())?;
    let mut info = m.info.clone();
    // Which weights are served now (`--watch` swaps in new ones).
    info["served_step"] = json!(m.step());
    Ok(Json(info).into_response())
}

/// The prompt's state, with the warnings for characters mapped to `<unk>`.
fn warmed(m: &Served, prompt: &str) -> Result<(crate::infer::State, Vec<String>), ApiError> {
    let p = generate::encode_prompt(&m.loaded.vocab, prompt, "prompt")?;
    let st = generate::warm_up(&m.net, &m.loaded.vocab, &p.ids)?;
    Ok((st, p.warnings))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextReq {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    10
}

pub(super) async fn next(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: NextReq = parse(body)?;
    check_len("prompt", &r.prompt, st.limits.prompt)?;
    check_max("top", r.top, st.limits.top)?;
    blocking(move || {
        let m = st.model(r.model.as_deref())?;
        let (state, warnings) = warmed(&m, &r.prompt)?;
        let next = generate::top_next(&m.net, &m.loaded.vocab, &state, r.top.max(1));
        Ok(Json(json!({"prompt": r.prompt, "next": next, "warnings": warnings})).into_response())
    })
    .await
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct SampleReq {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    #[serde(default = "default_length")]
    length: usize,
    #[serde(default = "default_temperature")]
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: Option<u64>,
}

fn default_length() -> usize {
    200
}

fn default_temperature() -> f64 {
    0.8
}

impl SampleReq {
    fn checked(&self, st: &AppState) -> Result<(SampleOptions, u64), ApiError> {
        check_len("prompt", &self.prompt, st.limits.prompt)?;
        check_max("length", self.length, st.limits.sample)?;
        let opts = SampleOptions {
            temperature: self.temperature,
            // 0 means off, as everywhere.
            top_k: self.top_k.filter(|&k| k > 0),
            top_p: self.top_p,
        };
        opts.validate_as(["temperature", "top_k", "top_p"])?;
        Ok((opts, self.seed.unwrap_or_else(rand::random)))
    }
}

/// The text `elman sample` would print for these settings (and its seed).
pub(super) async fn sample(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: SampleReq = parse(body)?;
    let (opts, seed) = r.checked(&st)?;
    blocking(move || {
        let m = st.model(r.model.as_deref())?;
        let (mut state, warnings) = warmed(&m, &r.prompt)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let text = generate::stream(
            &m.net,
            &m.loaded.vocab,
            &mut state,
            &r.prompt,
            r.length,
            &opts,
            &mut rng,
            Until::Length,
            &st.stopping,
            &mut std::io::sink(),
        )
        .map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(Json(json!({
            "prompt": r.prompt, "seed": seed, "length": r.length, "temperature": opts.temperature,
            "top_k": opts.top_k, "top_p": opts.top_p, "text": text, "warnings": warnings,
        }))
        .into_response())
    })
    .await
}

/// Writes each piece of generated text into a channel as it is drawn.
struct ChannelWriter(tokio::sync::mpsc::UnboundedSender<Event>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let piece = String::from_utf8_lossy(buf).into_owned();
        if !piece.is_empty() {
            // The client went away: stop generating.
            self.0
                .send(
                    Event::default()
                        .event("token")
                        .data(json!(piece).to_string()),
                )
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The same text as `/api/sample`, streamed as server-sent events: a `token` event per piece
/// (its data a JSON string), then `done` with the seed (or `error`).
pub(super) async fn sample_stream(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: SampleReq = parse(body)?;
    let (opts, seed) = r.checked(&st)?;
    // Problems with the model or the prompt are a 4xx before the stream starts.
    let m = st.model(r.model.as_deref())?;
    generate::encode_prompt(&m.loaded.vocab, &r.prompt, "prompt")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    tokio::task::spawn_blocking(move || {
        let Ok(m) = st.model(r.model.as_deref()) else {
            return;
        };
        let Ok((mut state, _)) = warmed(&m, &r.prompt) else {
            return;
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = ChannelWriter(tx.clone());
        let done = generate::stream(
            &m.net,
            &m.loaded.vocab,
            &mut state,
            &r.prompt,
            r.length,
            &opts,
            &mut rng,
            Until::Length,
            &st.stopping,
            &mut out,
        );
        let last = match done {
            Ok(_) => Event::default()
                .event("done")
                .data(json!({ "seed": seed }).to_string()),
            Err(e) => Event::default()
                .event("error")
                .data(json!({ "error": e.to_string() }).to_string()),
        };
        let _ = tx.send(last);
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteReq {
    model: Option<String>,
    prompt: String,
    #[serde(default = "default_beam")]
    beam: usize,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
}

fn default_beam() -> usize {
    5
}

fn default_max_tokens() -> usize {
    20
}

/// `elman complete --beam`: the most probable continuations.
pub(super) async fn complete(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: CompleteReq = parse(body)?;
    check_len("prompt", &r.prompt, st.limits.prompt)?;
    check_max("beam", r.beam, st.limits.beam)?;
    check_max("max_tokens", r.max_tokens, st.limits.beam_tokens)?;
    if r.beam == 0 || r.max_tokens == 0 {
        return Err(ApiError::bad(
            "beam and max_tokens must be at least 1".into(),
        ));
    }
    blocking(move || {
        let m = st.model(r.model.as_deref())?;
        let (state, warnings) = warmed(&m, &r.prompt)?;
        let beams = generate::beam_search(&m.net, &m.loaded.vocab, &state, r.beam, r.max_tokens);
        Ok(Json(json!({
            "prompt": r.prompt, "beam": r.beam, "continuations": beams, "warnings": warnings,
        }))
        .into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RankReq {
    model: Option<String>,
    prompt: String,
    candidates: Vec<String>,
    #[serde(default = "default_by")]
    by: RankBy,
}

fn default_by() -> RankBy {
    RankBy::Total
}

/// `elman rank`: the candidates scored from the prompt's state (the same rule for unknown ones).
pub(super) async fn rank(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: RankReq = parse(body)?;
    check_len("prompt", &r.prompt, st.limits.prompt)?;
    check_max(
        "the number of candidates",
        r.candidates.len(),
        st.limits.candidates,
    )?;
    for c in &r.candidates {
        check_len("a candidate", c, st.limits.candidate)?;
    }
    blocking(move || {
        let m = st.model(r.model.as_deref())?;
        let (state, warnings) = warmed(&m, &r.prompt)?;
        // Each scored exactly as sent: " light" after "Let there be" is not "light".
        let cands: Vec<String> = r.candidates.clone();
        let ranked = generate::rank(&m.net, &m.loaded.vocab, &state, &cands, r.by)?;
        Ok(Json(json!({
            "prompt": r.prompt, "sorted_by": r.by, "candidates": ranked, "warnings": warnings,
            "unknown_rule": generate::unknown_rule(&m.loaded.vocab),
        }))
        .into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreReq {
    model: Option<String>,
    text: String,
    #[serde(default = "default_score_top")]
    top: usize,
}

fn default_score_top() -> usize {
    5
}

/// `elman heatmap`'s numbers for a text: nats per token, bits per character, each token's
/// surprisal and the model's top predictions there, and the shaded text as HTML.
pub(super) async fn score(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let r: ScoreReq = parse(body)?;
    check_len("text", &r.text, st.limits.text)?;
    check_max("top", r.top, 50)?;
    blocking(move || {
        let m = st.model(r.model.as_deref())?;
        let opts = heatmap::Options {
            unit: None,
            layer: None,
            top: r.top,
            max_tokens: st.limits.text,
            cell_state: false,
            quiet: true,
        };
        let h = heatmap::analyse(&m.net, &m.loaded.vocab, &r.text, opts, &m.name, "request")?;
        let mut v = serde_json::to_value(&h).map_err(|e| ApiError::bad(e.to_string()))?;
        v["html"] = json!(heatmap::text_html(&h));
        Ok(Json(v).into_response())
    })
    .await
}
