//! The OpenAI-compatible endpoints, for the clients and libraries that speak that dialect (the
//! `openai` Python and JavaScript packages, LangChain, editor plugins), as llama.cpp's server,
//! vLLM and Ollama offer them: `GET /v1/models`, `POST /v1/completions` (the legacy completions
//! API, with `logprobs`, `echo`, `stop`, `n`, `seed` and streaming) and `POST /v1/chat/completions`
//! (the messages rendered into a plain prompt, see [`render_chat`]).
//!
//! The numbers are the command line's: a completion draws its tokens exactly as `elman sample`
//! does (the same seed gives the same text; choice j of n draws with seed + j), and its log-probs
//! are the model's own (untempered) next-token log-probabilities, those `elman complete` and
//! `elman rank` report. Errors come in OpenAI's shape, `{"error": {"message", "type", "param",
//! "code"}}`, with the status OpenAI would send.

use super::api::{blocking, check_len, ApiError};
use super::state::{AppState, Served};
use crate::generate::{self, SampleOptions};
use crate::infer::State as NetState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::SeedableRng;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;

/// A request OpenAI's way of saying no: status, message, and the parameter at fault.
#[derive(Debug)]
pub struct OaiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl OaiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> OaiError {
        OaiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
        }
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message.replace('\n', " "),
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}

impl From<ApiError> for OaiError {
    fn from(e: ApiError) -> OaiError {
        let (status, message) = e.parts();
        OaiError {
            status,
            code: (status == StatusCode::NOT_FOUND).then_some("model_not_found"),
            message,
            kind: "invalid_request_error",
            param: None,
        }
    }
}

impl From<anyhow::Error> for OaiError {
    fn from(e: anyhow::Error) -> OaiError {
        OaiError::invalid(format!("{e:#}"), None)
    }
}

type OaiResult = Result<Response, OaiError>;

/// Which weights answered: OpenAI's `system_fingerprint`, here the model and the training step of
/// the weights served (`--watch` swaps in new ones; a response never mixes two).
fn system_fingerprint(m: &Served) -> String {
    format!("elman-{}-step{}", m.name, m.step())
}

/// Seconds since 1970, for `created`.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An id for a response: the prefix and 24 random hex digits.
fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:024x}", rand::random::<u128>() >> 32)
}

/// The body as `T`, with OpenAI's messages: an unknown parameter is "Unrecognized request
/// argument supplied", naming it.
fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, OaiError> {
    let body = body.map_err(|e| OaiError {
        status: e.status(),
        message: if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the request's body is over this server's limit of {} KiB",
                super::state::LIMITS.body / 1024
            )
        } else {
            format!("the request's body: {}", e.body_text())
        },
        kind: "invalid_request_error",
        param: None,
        code: None,
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix("unknown field `") {
            Some(rest) => {
                let name = rest.split('`').next().unwrap_or("");
                OaiError::invalid(
                    format!("Unrecognized request argument supplied: {name}"),
                    Some(name),
                )
            }
            None if text.contains("untagged enum OneOrMany") => OaiError::invalid(
                "prompt and stop take a string or a list of strings (token arrays are not supported)",
                None,
            ),
            None if text.contains("untagged enum Content") => OaiError::invalid(
                "a message's content is a string, or a list of text parts",
                Some("messages"),
            ),
            None => OaiError::invalid(format!("the request's JSON: {text}"), None),
        }
    })
}

/// A string or a list of strings (`prompt`, `stop`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `GET /v1/models`: each served model, with the training step of the weights served (the best
/// validation's) and the step its checkpoint was saved at.
pub async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|slot| model_json(&slot.current()))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /v1/models/{id}`: one served model, as `/v1/models` lists it.
pub async fn model(
    State(st): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> OaiResult {
    let m = st.model(Some(&id)).map_err(OaiError::from)?;
    Ok(Json(model_json(&m)).into_response())
}

fn model_json(m: &Served) -> Value {
    json!({
        "id": m.name,
        "object": "model",
        "created": m.created,
        "owned_by": "elman",
        "step": m.step(),
        "saved_at_step": m.loaded.config.progress.step,
    })
}

/// What a completion may be asked, checked once: the sampling options, the bounds, the stops.
struct Asked {
    opts: SampleOptions,
    max_tokens: usize,
    n: usize,
    stops: Vec<String>,
    /// Top alternatives to list per token (`None`: no log-probs).
    logprobs: Option<usize>,
    seed: Option<u64>,
    stream: bool,
    include_usage: bool,
}

/// Most choices one request may ask for (prompts × n).
const MAX_CHOICES: usize = 32;
/// Most alternatives listed per token.
const MAX_LOGPROBS: usize = 20;

#[allow(clippy::too_many_arguments)]
fn asked(
    st: &AppState,
    max_tokens: Option<usize>,
    default_max: usize,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<usize>,
    stop: Option<OneOrMany>,
    logprobs: Option<usize>,
    seed: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    unsupported: &Unsupported,
) -> Result<Asked, OaiError> {
    unsupported.check()?;
    let max_tokens = max_tokens.unwrap_or(default_max);
    if max_tokens > st.limits.sample {
        return Err(OaiError::invalid(
            format!(
                "max_tokens {max_tokens} is above this server's limit of {}",
                st.limits.sample
            ),
            Some("max_tokens"),
        ));
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(OaiError::invalid(
            format!("temperature {temperature} is not between 0 and 2"),
            Some("temperature"),
        ));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(OaiError::invalid(
            format!("top_p {top_p} is not in (0, 1]"),
            Some("top_p"),
        ));
    }
    let n = n.unwrap_or(1);
    if n == 0 || n > MAX_CHOICES {
        return Err(OaiError::invalid(
            format!("n {n} is not between 1 and {MAX_CHOICES}"),
            Some("n"),
        ));
    }
    let stops = stop.map_or_else(Vec::new, OneOrMany::into_vec);
    if stops.len() > 4 || stops.iter().any(|s| s.is_empty()) {
        return Err(OaiError::invalid(
            "stop takes up to 4 sequences, none of them empty",
            Some("stop"),
        ));
    }
    for s in &stops {
        check_len("a stop sequence", s, st.limits.candidate).map_err(OaiError::from)?;
    }
    if logprobs.is_some_and(|k| k > MAX_LOGPROBS) {
        return Err(OaiError::invalid(
            format!("logprobs asks for more than {MAX_LOGPROBS} alternatives per token"),
            Some("logprobs"),
        ));
    }
    let opts = SampleOptions {
        temperature,
        top_k: None,
        // A nucleus of the whole mass is no nucleus: sampled exactly as `elman sample` does.
        top_p: (top_p < 1.0).then_some(top_p),
    };
    Ok(Asked {
        opts,
        max_tokens,
        n,
        stops,
        logprobs,
        seed,
        stream: stream.unwrap_or(false),
        include_usage: stream_options.is_some_and(|o| o.include_usage.unwrap_or(false)),
    })
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Parameters of OpenAI's API that elman takes only at their neutral values (a penalty of 0, no
/// logit bias, no suffix, `best_of` equal to `n`), refusing any other: it has no such thing, and
/// quietly ignoring it would return something the client did not ask for. `user` is ignored.
#[derive(Default)]
struct Unsupported {
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<serde_json::Map<String, Value>>,
    suffix: Option<String>,
    best_of: Option<usize>,
    n: Option<usize>,
    response_format: Option<Value>,
    tools: Option<Vec<Value>>,
}

impl Unsupported {
    fn check(&self) -> Result<(), OaiError> {
        let refuse = |p: &str, why: &str| Err(OaiError::invalid(why.to_string(), Some(p)));
        if self.presence_penalty.is_some_and(|p| p != 0.0) {
            return refuse(
                "presence_penalty",
                "presence_penalty is not supported (only 0)",
            );
        }
        if self.frequency_penalty.is_some_and(|p| p != 0.0) {
            return refuse(
                "frequency_penalty",
                "frequency_penalty is not supported (only 0)",
            );
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return refuse("logit_bias", "logit_bias is not supported");
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return refuse(
                "suffix",
                "suffix is not supported (an RNN reads left to right)",
            );
        }
        if self.best_of.is_some_and(|b| b != 1 && Some(b) != self.n) {
            return refuse(
                "best_of",
                "best_of is not supported (only 1, or equal to n)",
            );
        }
        if let Some(f) = &self.response_format {
            if f.get("type").and_then(Value::as_str) != Some("text") {
                return refuse(
                    "response_format",
                    "response_format: only {\"type\": \"text\"}",
                );
            }
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse("tools", "tools are not supported");
        }
        Ok(())
    }
}

/// `POST /v1/completions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletionReq {
    model: Option<String>,
    prompt: Option<OneOrMany>,
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<usize>,
    stop: Option<OneOrMany>,
    seed: Option<u64>,
    echo: Option<bool>,
    logprobs: Option<usize>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[allow(dead_code)]
    user: Option<String>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<serde_json::Map<String, Value>>,
    suffix: Option<String>,
    best_of: Option<usize>,
}

/// One generated token: its text as written (the word level spaces words as `elman sample`
/// does), its log-probability, and the top alternatives.
struct Token {
    piece: String,
    logprob: Option<f64>,
    top: Vec<(String, f64)>,
}

/// One choice being generated, and how it ended.
struct Choice {
    text: String,
    tokens: Vec<Token>,
    generated: usize,
    finish: &'static str,
}

/// The earliest place in `text` where a stop sequence starts (searching from byte `from`).
fn find_stop(text: &str, stops: &[String], from: usize) -> Option<usize> {
    let from = (0..=from.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    stops
        .iter()
        .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
        .min()
}

/// How much of `text` can be sent while the stops may still match: all but its longest end that
/// is the start of a stop sequence.
fn safe_len(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for (i, _) in s.char_indices().skip(1) {
            if text.ends_with(&s[..i]) {
                keep = keep.max(i);
            }
        }
    }
    text.len() - keep
}

/// The top `k` alternatives at `lp`, as (token, log-prob).
fn top_of(vocab: &crate::vocab::Vocab, lp: &[f64], k: usize) -> Vec<(String, f64)> {
    generate::top_k_indices(lp, k)
        .into_iter()
        .map(|i| (vocab.token(i).to_string(), lp[i as usize]))
        .collect()
}

/// The prompt's tokens with their log-probabilities (the first has none), for `echo`.
fn echoed(m: &Served, ids: &[u32], top: usize) -> Vec<Token> {
    let (net, vocab) = (&m.net, &m.loaded.vocab);
    let mut state = net.zero_state();
    let mut detok = crate::vocab::detok::Detokenizer::new("");
    let mut out = Vec::with_capacity(ids.len());
    for (i, &x) in ids.iter().enumerate() {
        let (logprob, alts) = if i == 0 {
            (None, Vec::new())
        } else {
            let lp = net.log_probs(&state);
            (Some(lp[x as usize]), top_of(vocab, &lp, top))
        };
        out.push(Token {
            piece: detok.piece(vocab, x),
            logprob,
            top: alts,
        });
        net.step(&mut state, x);
    }
    out
}

/// Draws one choice after `state` as `elman sample` draws (the same seed, the same tokens),
/// stopping at `max_tokens`, a stop sequence (left out of the text) or `cancel`. `send` gets the
/// text as it becomes final, with the tokens that finished in it; returning false stops.
#[allow(clippy::too_many_arguments)]
fn draw(
    m: &Served,
    mut state: NetState,
    prompt: &str,
    a: &Asked,
    seed: u64,
    cancel: &std::sync::atomic::AtomicBool,
    send: &mut dyn FnMut(&str, &[Token]) -> bool,
) -> Choice {
    use std::sync::atomic::Ordering;
    let (net, vocab) = (&m.net, &m.loaded.vocab);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut detok = crate::vocab::detok::Detokenizer::new(prompt);
    let (mut text, mut sent, mut pending) = (String::new(), 0usize, Vec::<Token>::new());
    let (mut tokens, mut generated, mut finish) = (Vec::new(), 0usize, "length");
    let mut stopped_at = None;
    let mut go_on = true;
    // A stop can only end inside the text this long before a new token's start.
    let longest = a.stops.iter().map(String::len).max().unwrap_or(0);
    for _ in 0..a.max_tokens {
        let lp = net.log_probs(&state);
        let x = generate::sample_next(&lp, &a.opts, &mut rng);
        net.step(&mut state, x);
        generated += 1;
        let piece = detok.piece(vocab, x);
        let start = text.len();
        text.push_str(&piece);
        pending.push(Token {
            piece,
            logprob: a.logprobs.map(|_| lp[x as usize]),
            top: a.logprobs.map_or_else(Vec::new, |k| top_of(vocab, &lp, k)),
        });
        if let Some(at) = find_stop(&text, &a.stops, start.saturating_sub(longest)) {
            stopped_at = Some(at);
            finish = "stop";
            break;
        }
        let safe = safe_len(&text, &a.stops);
        if safe > sent {
            go_on = send(&text[sent..safe], &pending);
            tokens.append(&mut pending);
            sent = safe;
        }
        if !go_on || cancel.load(Ordering::SeqCst) {
            break;
        }
    }
    if stopped_at.is_none() {
        text.push_str(&detok.finish(vocab));
        if let Some(at) = find_stop(&text, &a.stops, sent) {
            stopped_at = Some(at);
            finish = "stop";
        }
    }
    let end = stopped_at.unwrap_or(text.len());
    let rest = if end > sent { &text[sent..end] } else { "" };
    if go_on && (!rest.is_empty() || a.logprobs.is_some() && !pending.is_empty()) {
        send(rest, &pending);
    }
    tokens.extend(pending);
    text.truncate(end);
    Choice {
        text,
        tokens,
        generated,
        finish,
    }
}

/// The legacy completions `logprobs` object for `tokens`, whose text starts at character `at`.
fn legacy_logprobs(tokens: &[Token], mut at: usize) -> Value {
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(at);
        at += t.piece.chars().count();
    }
    json!({
        "tokens": tokens.iter().map(|t| t.piece.as_str()).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            if t.logprob.is_none() {
                return Value::Null;
            }
            let m: serde_json::Map<String, Value> =
                t.top.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// The prompt's ids and its state, with the model's mistakes as OpenAI errors.
fn prepared(m: &Served, prompt: &str) -> Result<(Vec<u32>, NetState), OaiError> {
    let p = generate::encode_prompt(&m.loaded.vocab, prompt, "prompt")
        .map_err(|e| OaiError::invalid(format!("{e:#}"), Some("prompt")))?;
    let state = generate::warm_up(&m.net, &m.loaded.vocab, &p.ids)
        .map_err(|e| OaiError::invalid(format!("{e:#}"), Some("prompt")))?;
    Ok((p.ids, state))
}

/// The seed of choice `j`: the request's seed + j, or a fresh one.
fn seed_of(a: &Asked, j: usize) -> u64 {
    a.seed
        .map_or_else(rand::random, |s| s.wrapping_add(j as u64))
}

pub async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> OaiResult {
    let r: CompletionReq = parse(body)?;
    let unsupported = Unsupported {
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        logit_bias: r.logit_bias.clone(),
        suffix: r.suffix.clone(),
        best_of: r.best_of,
        n: r.n,
        ..Default::default()
    };
    let a = asked(
        &st,
        r.max_tokens,
        16,
        r.temperature,
        r.top_p,
        r.n,
        r.stop.clone(),
        r.logprobs,
        r.seed,
        r.stream,
        r.stream_options,
        &unsupported,
    )?;
    let prompts = r
        .prompt
        .clone()
        .map_or_else(|| vec![String::new()], OneOrMany::into_vec);
    if prompts.is_empty() || prompts.len() * a.n > MAX_CHOICES {
        return Err(OaiError::invalid(
            format!("between 1 and {MAX_CHOICES} choices (prompts × n) per request"),
            Some("prompt"),
        ));
    }
    for p in &prompts {
        check_len("prompt", p, st.limits.prompt).map_err(|e| OaiError {
            param: Some("prompt".into()),
            ..OaiError::from(e)
        })?;
    }
    let name = st
        .model(r.model.as_deref())
        .map_err(OaiError::from)?
        .name
        .clone();
    // The prompts' mistakes (a character the model cannot read) before anything is sent.
    {
        let m = st.model(Some(&name)).map_err(OaiError::from)?;
        let m = &*m;
        for p in &prompts {
            generate::encode_prompt(&m.loaded.vocab, p, "prompt")
                .map_err(|e| OaiError::invalid(format!("{e:#}"), Some("prompt")))?;
        }
    }
    let echo = r.echo.unwrap_or(false);
    let (id, created) = (new_id("cmpl"), now());
    if a.stream {
        return Ok(stream_response(st, move |st, tx| {
            let m = st.model(Some(&name)).map_err(OaiError::from)?;
            let m = &*m;
            let fp = system_fingerprint(m);
            let chunk = |i: usize, text: &str, lp: Value, finish: Option<&str>| {
                envelope(
                    &id,
                    "text_completion",
                    created,
                    &name,
                    &fp,
                    json!([{"text": text, "index": i, "logprobs": lp, "finish_reason": finish}]),
                    None,
                )
            };
            let mut usage = (0usize, 0usize);
            for (p, prompt) in prompts.iter().enumerate() {
                let (ids, state) = prepared(m, prompt)?;
                usage.0 += ids.len();
                for j in 0..a.n {
                    let i = p * a.n + j;
                    let mut at = 0usize;
                    if echo {
                        let toks = if a.logprobs.is_some() {
                            echoed(m, &ids, a.logprobs.unwrap_or(0))
                        } else {
                            Vec::new()
                        };
                        let lp = a
                            .logprobs
                            .map_or(Value::Null, |_| legacy_logprobs(&toks, 0));
                        at = prompt.chars().count();
                        if !send_json(tx, &chunk(i, prompt, lp, None)) {
                            return Ok(());
                        }
                    }
                    let mut send = |piece: &str, toks: &[Token]| {
                        let lp = a
                            .logprobs
                            .map_or(Value::Null, |_| legacy_logprobs(toks, at));
                        at += piece.chars().count();
                        send_json(tx, &chunk(i, piece, lp, None))
                    };
                    let c = draw(
                        m,
                        state.clone(),
                        prompt,
                        &a,
                        seed_of(&a, j),
                        &st.stopping,
                        &mut send,
                    );
                    usage.1 += c.generated;
                    if !send_json(tx, &chunk(i, "", Value::Null, Some(c.finish))) {
                        return Ok(());
                    }
                }
            }
            if a.include_usage {
                send_json(
                    tx,
                    &envelope(
                        &id,
                        "text_completion",
                        created,
                        &name,
                        &fp,
                        json!([]),
                        Some(usage),
                    ),
                );
            }
            Ok(())
        }));
    }
    let st2 = st.clone();
    blocking(move || -> OaiResult {
        let m = st2.model(Some(&name))?;
        let m = &*m;
        let fp = system_fingerprint(m);
        let mut choices = Vec::new();
        let mut usage = (0usize, 0usize);
        for (p, prompt) in prompts.iter().enumerate() {
            let (ids, state) = prepared(m, prompt)?;
            usage.0 += ids.len();
            for j in 0..a.n {
                let c = draw(
                    m,
                    state.clone(),
                    prompt,
                    &a,
                    seed_of(&a, j),
                    &st2.stopping,
                    &mut |_, _| true,
                );
                usage.1 += c.generated;
                let (text, logprobs) = if echo {
                    let mut toks = if a.logprobs.is_some() {
                        echoed(m, &ids, a.logprobs.unwrap_or(0))
                    } else {
                        Vec::new()
                    };
                    toks.extend(c.tokens);
                    (format!("{prompt}{}", c.text), toks)
                } else {
                    (c.text, c.tokens)
                };
                choices.push(json!({
                    "text": text,
                    "index": p * a.n + j,
                    "logprobs": a.logprobs.map_or(Value::Null, |_| legacy_logprobs(&logprobs, 0)),
                    "finish_reason": c.finish,
                }));
            }
        }
        let body = envelope(
            &id,
            "text_completion",
            created,
            &name,
            &fp,
            json!(choices),
            Some(usage),
        );
        Ok(Json(body).into_response())
    })
    .await
}

fn usage_json((prompt, completion): (usize, usize)) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Every answer's and chunk's envelope: id, object, time, model, the weights that answered, the
/// choices, and `usage` (prompt and completion tokens) where given.
fn envelope(
    id: &str,
    object: &str,
    created: u64,
    model: &str,
    fingerprint: &str,
    choices: Value,
    usage: Option<(usize, usize)>,
) -> Value {
    let mut v = json!({
        "id": id, "object": object, "created": created, "model": model,
        "system_fingerprint": fingerprint, "choices": choices,
    });
    if let Some(u) = usage {
        v["usage"] = usage_json(u);
    }
    v
}

/// One server-sent event with `v` as its data; false when the client went away.
fn send_json(tx: &tokio::sync::mpsc::UnboundedSender<Event>, v: &Value) -> bool {
    tx.send(Event::default().data(v.to_string())).is_ok()
}

/// A streamed response: `run` sends its chunks on the blocking pool, then `data: [DONE]` ends the
/// stream (or an error event in OpenAI's shape, should one come after the first chunk).
fn stream_response<F>(st: Arc<AppState>, run: F) -> Response
where
    F: FnOnce(&AppState, &tokio::sync::mpsc::UnboundedSender<Event>) -> Result<(), OaiError>
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = run(&st, &tx) {
            let body = json!({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}});
            let _ = tx.send(Event::default().data(body.to_string()));
        }
        let _ = tx.send(Event::default().data("[DONE]"));
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `POST /v1/chat/completions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatReq {
    model: Option<String>,
    messages: Vec<Message>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    n: Option<usize>,
    stop: Option<OneOrMany>,
    seed: Option<u64>,
    logprobs: Option<bool>,
    top_logprobs: Option<usize>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[allow(dead_code)]
    user: Option<String>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logit_bias: Option<serde_json::Map<String, Value>>,
    response_format: Option<Value>,
    tools: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    /// `null` where an assistant message carried only tool calls: no text.
    content: Option<Content>,
}

/// A message's content: a string, or a list of parts of which the text ones are read.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// The chat template: a language model of plain text knows no roles, so the messages are written
/// as the text they are, each ended by a line break, and the answer is the model's continuation
/// of that text. (A system message is text like the others.)
pub fn render_chat(contents: &[String]) -> String {
    contents.iter().map(|c| format!("{c}\n")).collect()
}

pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> OaiResult {
    let r: ChatReq = parse(body)?;
    let unsupported = Unsupported {
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        logit_bias: r.logit_bias.clone(),
        response_format: r.response_format.clone(),
        tools: r.tools.clone(),
        ..Default::default()
    };
    if r.messages.is_empty() {
        return Err(OaiError::invalid("messages is empty", Some("messages")));
    }
    let mut contents = Vec::new();
    for m in &r.messages {
        if !["system", "developer", "user", "assistant", "tool"].contains(&m.role.as_str()) {
            return Err(OaiError::invalid(
                format!(
                    "role {:?}: expected system, developer, user, assistant or tool",
                    m.role
                ),
                Some("messages"),
            ));
        }
        contents.push(match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                    return Err(OaiError::invalid(
                        format!(
                            "content parts of type {:?} are not supported (text only)",
                            p.kind
                        ),
                        Some("messages"),
                    ));
                }
                parts.iter().filter_map(|p| p.text.clone()).collect()
            }
        });
    }
    let prompt = render_chat(&contents);
    check_len("the rendered messages", &prompt, st.limits.prompt).map_err(OaiError::from)?;
    let top = match (r.logprobs, r.top_logprobs) {
        (Some(true), k) => Some(k.unwrap_or(0)),
        (_, Some(_)) => {
            return Err(OaiError::invalid(
                "top_logprobs needs logprobs: true",
                Some("top_logprobs"),
            ))
        }
        _ => None,
    };
    let a = asked(
        &st,
        r.max_completion_tokens.or(r.max_tokens),
        200,
        r.temperature,
        r.top_p,
        r.n,
        r.stop.clone(),
        top,
        r.seed,
        r.stream,
        r.stream_options,
        &unsupported,
    )?;
    let name = st
        .model(r.model.as_deref())
        .map_err(OaiError::from)?
        .name
        .clone();
    {
        let m = st.model(Some(&name)).map_err(OaiError::from)?;
        let m = &*m;
        generate::encode_prompt(&m.loaded.vocab, &prompt, "messages")
            .map_err(|e| OaiError::invalid(format!("{e:#}"), Some("messages")))?;
    }
    let (id, created) = (new_id("chatcmpl"), now());
    let chat_logprobs = |toks: &[Token]| -> Value {
        json!({"content": toks.iter().map(|t| json!({
            "token": t.piece,
            "logprob": t.logprob,
            "bytes": t.piece.as_bytes(),
            "top_logprobs": t.top.iter().map(|(k, v)| json!({"token": k, "logprob": v, "bytes": k.as_bytes()})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()})
    };
    if a.stream {
        return Ok(stream_response(st, move |st, tx| {
            let m = st.model(Some(&name)).map_err(OaiError::from)?;
            let m = &*m;
            let fp = system_fingerprint(m);
            let chunk = |i: usize, delta: Value, lp: Value, finish: Option<&str>| {
                envelope(
                    &id,
                    "chat.completion.chunk",
                    created,
                    &name,
                    &fp,
                    json!([{"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}]),
                    None,
                )
            };
            let (ids, state) = prepared(m, &prompt)?;
            let mut usage = (ids.len(), 0usize);
            for j in 0..a.n {
                if !send_json(
                    tx,
                    &chunk(
                        j,
                        json!({"role": "assistant", "content": ""}),
                        Value::Null,
                        None,
                    ),
                ) {
                    return Ok(());
                }
                let mut send = |piece: &str, toks: &[Token]| {
                    let lp = a.logprobs.map_or(Value::Null, |_| chat_logprobs(toks));
                    send_json(tx, &chunk(j, json!({"content": piece}), lp, None))
                };
                let c = draw(
                    m,
                    state.clone(),
                    &prompt,
                    &a,
                    seed_of(&a, j),
                    &st.stopping,
                    &mut send,
                );
                usage.1 += c.generated;
                if !send_json(tx, &chunk(j, json!({}), Value::Null, Some(c.finish))) {
                    return Ok(());
                }
            }
            if a.include_usage {
                send_json(
                    tx,
                    &envelope(
                        &id,
                        "chat.completion.chunk",
                        created,
                        &name,
                        &fp,
                        json!([]),
                        Some(usage),
                    ),
                );
            }
            Ok(())
        }));
    }
    let st2 = st.clone();
    blocking(move || -> OaiResult {
        let m = st2.model(Some(&name))?;
        let m = &*m;
        let (ids, state) = prepared(m, &prompt)?;
        let mut usage = (ids.len(), 0usize);
        let fp = system_fingerprint(m);
        let mut choices = Vec::new();
        for j in 0..a.n {
            let c = draw(
                m,
                state.clone(),
                &prompt,
                &a,
                seed_of(&a, j),
                &st2.stopping,
                &mut |_, _| true,
            );
            usage.1 += c.generated;
            choices.push(json!({
                "index": j,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": a.logprobs.map_or(Value::Null, |_| chat_logprobs(&c.tokens)),
                "finish_reason": c.finish,
            }));
        }
        let body = envelope(
            &id,
            "chat.completion",
            created,
            &name,
            &fp,
            json!(choices),
            Some(usage),
        );
        Ok(Json(body).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_are_found_and_held_back() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop("ab\n\ncd", &stops, 0), Some(2));
        assert_eq!(find_stop("abEN", &stops, 0), None);
        assert_eq!(safe_len("abEN", &stops), 2);
        assert_eq!(safe_len("ab\n", &stops), 2);
        assert_eq!(safe_len("abc", &stops), 3);
        assert_eq!(find_stop("天空END", &stops, 1), Some(6));
    }
}
