//! Stage 5 — scoring text with a model: total negative log-likelihood, nats per token, bits per
//! character, perplexity. Used for validation during training and by `elman eval`.

use crate::fused::score::ScoreWeights;
use crate::fused::{FusedWindow, Params};
use crate::model::{nll_sum, GraphModel};
use crate::tokens::TokenSource;
use anyhow::Result;
use candle_core::Tensor;
use serde::Serialize;

/// The result of scoring a token sequence.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Score {
    /// Positions predicted (every token but the first of each stream).
    pub predicted: usize,
    /// Sum of −ln p over the predicted positions.
    pub nats: f64,
}

impl Score {
    pub fn nats_per_token(&self) -> f64 {
        if self.predicted == 0 {
            f64::NAN
        } else {
            self.nats / self.predicted as f64
        }
    }

    /// Bits per character of text, given how many tokens and characters the text has (for the char
    /// level these are equal, for the word level the ratio converts per-token to per-character).
    pub fn bits_per_char(&self, tokens: usize, chars: usize) -> f64 {
        self.nats_per_token() * (tokens as f64 / chars.max(1) as f64) / std::f64::consts::LN_2
    }

    pub fn perplexity(&self) -> f64 {
        self.nats_per_token().exp()
    }
}

/// Scores `ids` cut into `streams` parallel streams of equal length (the remainder at the end is
/// dropped, as training does), `chunk` steps at a time with the hidden state carried across
/// chunks, on the fused forward path split over `threads`. `streams = 1` scores every token but
/// the first: the exact likelihood of the text.
pub fn score(
    model: &GraphModel,
    ids: &[u32],
    streams: usize,
    chunk: usize,
    threads: usize,
) -> Result<Score> {
    score_reporting(model, ids, streams, chunk, threads, &|_| {})
}

/// [`score`], telling `progress` how many more positions each window scored (from any of the
/// scoring threads).
pub fn score_reporting(
    model: &GraphModel,
    ids: &[u32],
    streams: usize,
    chunk: usize,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Score> {
    // Every stream needs two tokens (one to read, one to predict): more streams than half the
    // text would score nothing.
    let streams = streams.max(1).min((ids.len() / 2).max(1));
    let len = ids.len() / streams;
    if len < 2 {
        return Ok(Score {
            predicted: 0,
            nats: 0.0,
        });
    }
    let cfg = model.config;
    let chunk = chunk.clamp(1, len - 1);
    let threads = threads.max(1);
    let tensors = model.named_tensors();
    let refs: Vec<&Tensor> = tensors.iter().map(|(_, t)| t).collect();
    Ok(crate::fused::with_params(&cfg, &refs, |params| {
        score_groups(params, cfg, ids, (streams, len, chunk), threads, progress)
    })?)
}

/// Streams are independent when nothing is trained, so they are scored in groups, each with its
/// own state, and the threads take the next window of whichever idle group is furthest behind.
/// A thread that the shared machine slows down for a while then scores fewer windows instead of
/// holding the others up at a meeting point, and all finish within about one window of each
/// other. Each group's windows are summed in order, then the groups in order: the result does
/// not depend on which thread scored what.
///
/// One thread keeps all streams in one group (every row of W read serves them all). Fewer streams
/// than threads (a single exact stream) make one group too, whose `FusedWindow` lends the spare
/// threads to each step's product and to the decoder.
fn score_groups(
    params: &Params,
    cfg: crate::config::ModelConfig,
    ids: &[u32],
    (streams, len, chunk): (usize, usize, usize),
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Score {
    let (groups, workers, helpers) = if threads == 1 || streams < threads {
        (1, 1, threads)
    } else {
        ((GROUPS_PER_THREAD * threads).min(streams), threads, 1)
    };
    let weights = ScoreWeights::new(params, cfg, &ids[..streams * len]);
    struct Group {
        /// The group's streams, its next window's position, and what it has summed so far.
        streams: std::ops::Range<usize>,
        pos: usize,
        fast: FusedWindow,
        state: Vec<Vec<f32>>,
        nats: f64,
        /// The window's inputs and targets, reused from window to window.
        inp: Vec<u32>,
        tgt: Vec<u32>,
    }
    // A group a thread is scoring is out of the board (`None`) until it is put back.
    let board: std::sync::Mutex<Vec<Option<Group>>> = std::sync::Mutex::new(
        (0..groups)
            .map(|g| {
                let streams = streams * g / groups..streams * (g + 1) / groups;
                Some(Group {
                    fast: FusedWindow::for_scoring(cfg, streams.len(), chunk, helpers),
                    // Each layer's h, then (LSTM) each layer's c.
                    state: vec![
                        vec![0.0f32; streams.len() * cfg.hidden];
                        cfg.layers * cfg.cell().carried()
                    ],
                    streams,
                    pos: 0,
                    nats: 0.0,
                    inp: Vec::new(),
                    tgt: Vec::new(),
                })
            })
            .collect(),
    );
    let worker = || {
        // The decoder's logits, lent to each group this thread scores: one set per thread, not
        // one per group.
        let mut scratch = Vec::new();
        loop {
            let (g, mut group) = {
                let mut b = board.lock().expect("scoring board");
                let next = (0..groups)
                    .filter_map(|g| Some((g, b[g].as_ref()?.pos)))
                    .filter(|&(_, pos)| pos + 1 < len)
                    .min_by_key(|&(_, pos)| pos);
                let Some((g, _)) = next else { break };
                (g, b[g].take().expect("an idle group"))
            };
            let (s, pos) = (group.streams.clone(), group.pos);
            let t = chunk.min(len - 1 - pos);
            let ids = &ids[s.start * len..s.end * len];
            window_into(ids, s.len(), len, pos, t, &mut group.inp, &mut group.tgt);
            weights.to_rows(&mut group.inp);
            let (inp, tgt) = (&group.inp, &group.tgt);
            group.nats += group.fast.score_with(
                &weights,
                params,
                inp,
                tgt,
                &mut group.state,
                t,
                &mut scratch,
            );
            group.pos += t;
            progress((t * s.len()) as u64);
            board.lock().expect("scoring board")[g] = Some(group);
        }
    };
    std::thread::scope(|sc| {
        for _ in 1..workers {
            sc.spawn(worker);
        }
        worker();
    });
    let nats = board
        .into_inner()
        .expect("scoring board")
        .into_iter()
        .map(|g| g.expect("every group put back").nats)
        .sum();
    Score {
        predicted: (len - 1) * streams,
        nats,
    }
}

/// The `<unk>` targets among the positions [`score`] predicts in `ids` cut into `streams`
/// streams, and what they add to its sum: ln N each, N the distinct tokens `<unk>` stood for in
/// training (`unknown_types`). p(<unk>)/N is then the probability of one specific unknown token,
/// so the score is a likelihood over every character (or word) of the text, comparable with a
/// model that kept them all, and ranking's rule for an unknown candidate scores the same. Nothing
/// is added where N is unknown or 0 (no specific token was ever trained as `<unk>`).
pub fn unknown_charge(
    ids: &[u32],
    streams: usize,
    unk: Option<u32>,
    unknown_types: Option<u64>,
) -> (usize, f64) {
    let Some((unk, ln_n)) = unknown_cost(unk, unknown_types) else {
        return (0, 0.0);
    };
    let streams = streams.max(1).min((ids.len() / 2).max(1));
    let len = ids.len() / streams;
    if len < 2 {
        return (0, 0.0);
    }
    let count = (0..streams)
        .map(|b| {
            ids[b * len + 1..(b + 1) * len]
                .iter()
                .filter(|&&i| i == unk)
                .count()
        })
        .sum::<usize>();
    (count, count as f64 * ln_n)
}

/// `<unk>`'s id and what each `<unk>` target costs beyond −ln p(`<unk>`): ln N (see
/// [`unknown_charge`]); `None` when nothing is charged.
pub fn unknown_cost(unk: Option<u32>, unknown_types: Option<u64>) -> Option<(u32, f64)> {
    Some((unk?, (unknown_types.filter(|&n| n > 1)? as f64).ln()))
}

/// Stream groups per scoring thread: more groups even out the threads' finishing times, fewer
/// keep more streams in each product (a row of W read from memory serves every stream of a group).
const GROUPS_PER_THREAD: usize = 3;

/// The same score through candle's graph (the reference the fused path is tested against).
pub fn score_reference(
    model: &GraphModel,
    ids: &[u32],
    streams: usize,
    chunk: usize,
) -> Result<Score> {
    let model = model.detached();
    let streams = streams.max(1).min((ids.len() / 2).max(1));
    let len = ids.len() / streams;
    let mut total = Score {
        predicted: 0,
        nats: 0.0,
    };
    if len < 2 {
        return Ok(total);
    }
    let dev = model.device().clone();
    let mut state = model.zero_state(streams)?;
    let mut pos = 0;
    while pos + 1 < len {
        let t = chunk.min(len - 1 - pos);
        let (inp, tgt) = window(ids, streams, len, pos, t);
        let inp = Tensor::from_vec(inp, (t, streams), &dev)?;
        let tgt = Tensor::from_vec(tgt, t * streams, &dev)?;
        let (logits, last) = model.forward(&inp, &state)?;
        total.nats += nll_sum(&logits, &tgt)?;
        total.predicted += t * streams;
        state = last;
        pos += t;
    }
    Ok(total)
}

/// Inputs and targets of a window of `t` steps at `pos` in each of `streams` streams of length
/// `len` laid end to end in `ids`; time-major (row = step, column = stream).
pub fn window<S: TokenSource + ?Sized>(
    ids: &S,
    streams: usize,
    len: usize,
    pos: usize,
    t: usize,
) -> (Vec<u32>, Vec<u32>) {
    let (mut inp, mut tgt) = (Vec::new(), Vec::new());
    window_into(ids, streams, len, pos, t, &mut inp, &mut tgt);
    (inp, tgt)
}

/// `window` into buffers the caller keeps (cleared first).
pub fn window_into<S: TokenSource + ?Sized>(
    ids: &S,
    streams: usize,
    len: usize,
    pos: usize,
    t: usize,
    inp: &mut Vec<u32>,
    tgt: &mut Vec<u32>,
) {
    inp.clear();
    tgt.clear();
    for step in 0..t {
        for b in 0..streams {
            let at = b * len + pos + step;
            inp.push(ids.at(at));
            tgt.push(ids.at(at + 1));
        }
    }
}

/// What `elman eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub files: Vec<String>,
    pub chars: usize,
    pub tokens: usize,
    pub predicted: usize,
    pub nats_per_token: f64,
    pub bits_per_char: f64,
    pub perplexity: f64,
    /// Places where the text has a token the vocabulary lacks: read and scored as `<unk>`, or
    /// left out (neither read nor scored) by a model without one.
    pub unknown: usize,
    /// The distinct tokens the vocabulary lacks, most frequent first.
    pub unknown_tokens: Vec<String>,
    /// How the unknown places were scored: "unk" (as `<unk>`, each charged ln N more, N =
    /// `unknown_share`), or "left out" (a model without `<unk>`: the rest of the text is scored as
    /// if they were not there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_scored_as: Option<&'static str>,
    /// N, the distinct tokens `<unk>` stood for in training (see [`unknown_charge`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_share: Option<u64>,
}

/// Scores text files with a checkpoint. `streams = 1` gives the exact likelihood.
pub fn eval_files(
    loaded: &crate::checkpoint::Loaded,
    files: &[std::path::PathBuf],
    streams: usize,
    threads: usize,
    quiet: bool,
) -> Result<EvalReport> {
    // Streamed: only the ids are held (see `corpus::stream_lines` for why blocks end where they do).
    let (_, files, _) = crate::corpus::resolve_in_memory(files)?;
    let vocab = &loaded.vocab;
    let cuts = crate::corpus::Cuts::for_vocab(vocab);
    let (mut ids, mut chars, mut blank) = (Vec::new(), 0usize, true);
    // The tokens the vocabulary lacks, with how often each occurs.
    let mut unknown: std::collections::HashMap<String, usize> = Default::default();
    crate::corpus::stream_lines(&files, cuts, |block| {
        chars += block.chars().count();
        blank &= block.trim().is_empty();
        ids.extend(
            vocab.encode_scoring(block, |tok| match unknown.get_mut(tok) {
                Some(n) => *n += 1,
                None => {
                    unknown.insert(tok.to_string(), 1);
                }
            })?,
        );
        Ok(())
    })?;
    if blank {
        anyhow::bail!(
            "{}: the text is empty (nothing to score)",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let places = unknown.values().sum::<usize>();
    let mut unknown_tokens: Vec<(String, usize)> = unknown.into_iter().collect();
    unknown_tokens.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if ids.len() < 2 {
        anyhow::bail!(
            "the text has fewer than 2 tokens{}: nothing to score",
            if places > 0 { " the model knows" } else { "" }
        );
    }
    let chunk = loaded.config.training.bptt.max(1);
    // Scoring 200k tokens at a 33k-word vocabulary takes most of a minute: a bar on a terminal.
    let predicted = (ids.len() / streams.max(1)).saturating_sub(1) * streams.max(1);
    let bar = crate::progress::Bar::new(predicted as u64, "scoring", quiet);
    let mut s = score_reporting(&loaded.model, &ids, streams, chunk, threads, &|n| {
        bar.inc(n)
    })?;
    bar.finish();
    let types = vocab.unknown_types;
    s.nats += unknown_charge(&ids, streams, vocab.unk, types).1;
    Ok(EvalReport {
        model: loaded.dir.display().to_string(),
        files: files.iter().map(|f| f.display().to_string()).collect(),
        chars,
        tokens: ids.len(),
        predicted: s.predicted,
        nats_per_token: s.nats_per_token(),
        // Left-out characters were not scored: bits per character of the rest.
        bits_per_char: s.bits_per_char(
            ids.len(),
            if vocab.unk.is_none() {
                chars - places
            } else {
                chars
            },
        ),
        perplexity: s.perplexity(),
        unknown: places,
        unknown_scored_as: (places > 0).then_some(if vocab.unk.is_some() {
            "unk"
        } else {
            "left out"
        }),
        unknown_share: types.filter(|&n| n > 1 && vocab.unk.is_some()),
        unknown_tokens: unknown_tokens.into_iter().map(|(t, _)| t).collect(),
    })
}
