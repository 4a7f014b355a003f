//! Stage 6b — using a model: sampling text, the next-token distribution, beam search for the most
//! probable continuations, and ranking candidate completions (the chapter's "天空飞过一只__").
//!
//! Everything runs on the graph-free [`StreamModel`] at batch 1. A prompt is read once; its state is
//! then cloned for every candidate or beam, so each is scored from exactly the same history.

use crate::infer::{State, StreamModel};
use crate::vocab::{describe_token, Level, Vocab, EOS};
use anyhow::{bail, Result};
use rand::Rng;
use serde::Serialize;

/// A prompt as token ids, with a warning for every character mapped to `<unk>`.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub ids: Vec<u32>,
    pub warnings: Vec<String>,
}

/// Encodes a prompt. Unknown characters become `<unk>` (with a warning) when the model has one;
/// otherwise the error names the character and its position.
pub fn encode_prompt(vocab: &Vocab, text: &str, what: &str) -> Result<Prompt> {
    let mut warnings = Vec::new();
    let ids = vocab.encode_reporting(text, |tok, pos| {
        warnings.push(format!(
            "{what}: {} at character {pos} is not in the vocabulary; using <unk>",
            describe_token(tok)
        ))
    });
    let ids = ids.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(Prompt { ids, warnings })
}

/// The state after reading `prompt` from s = 0. An empty prompt starts after a line break
/// (`"\n"`, or `<eos>` at word level), the natural start of a text.
pub fn warm_up(net: &StreamModel, vocab: &Vocab, prompt: &[u32]) -> Result<State> {
    let mut state = net.zero_state();
    if prompt.is_empty() {
        let start = match vocab.level {
            Level::Char => vocab.id("\n"),
            Level::Word => vocab.id(EOS),
        };
        match start {
            Some(s) => net.step(&mut state, s),
            None => bail!(
                "the prompt is empty and the model has no line break to start from: give a prompt"
            ),
        }
    } else {
        net.feed(&mut state, prompt);
    }
    Ok(state)
}

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleOptions {
    /// Softmax temperature; ≤ 0 (or below 1e-6) means argmax.
    pub temperature: f64,
    /// Keep only the k most probable tokens (`None`: all; 0 from any caller means off too, as in
    /// the repl's `:topk 0`, `--top-k 0` and the API's `"top_k": 0`).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most probable tokens whose probability reaches p.
    pub top_p: Option<f64>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl SampleOptions {
    /// The bounds of every setting, for the command line's options.
    pub fn validate(&self) -> Result<()> {
        self.validate_as(["--temperature", "--top-k", "--top-p"])
    }

    /// The bounds of every setting (the one place they are checked), each named as the caller
    /// calls it: the command line's `--top-p`, the repl's `:topp`.
    pub fn validate_as(&self, [temperature, _top_k, top_p]: [&str; 3]) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!("{temperature} {} must be a number ≥ 0", self.temperature);
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("{top_p} {p} must be in (0, 1]");
            }
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-6
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(xs: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// The distribution sampling draws from: temperature, then top-k, then top-p, renormalised.
/// Returns (token, probability) sorted by decreasing probability.
pub fn sampling_distribution(log_probs: &[f64], opts: &SampleOptions) -> Vec<(u32, f64)> {
    if opts.is_greedy() {
        return vec![(argmax(log_probs), 1.0)];
    }
    let t = opts.temperature;
    let m = log_probs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut p: Vec<(u32, f64)> = log_probs
        .iter()
        .enumerate()
        .map(|(i, &lp)| (i as u32, ((lp - m) / t).exp()))
        .collect();
    p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = opts.top_k.filter(|&k| k > 0) {
        p.truncate(k);
    }
    let z: f64 = p.iter().map(|x| x.1).sum();
    p.iter_mut().for_each(|x| x.1 /= z);
    if let Some(top_p) = opts.top_p {
        let mut cum = 0.0;
        let mut keep = 0;
        for x in &p {
            keep += 1;
            cum += x.1;
            if cum >= top_p - 1e-12 {
                break;
            }
        }
        p.truncate(keep.max(1));
        let z: f64 = p.iter().map(|x| x.1).sum();
        p.iter_mut().for_each(|x| x.1 /= z);
    }
    p
}

/// Draws the next token.
pub fn sample_next(log_probs: &[f64], opts: &SampleOptions, rng: &mut impl Rng) -> u32 {
    let dist = sampling_distribution(log_probs, opts);
    let mut u: f64 = rng.random::<f64>();
    for &(tok, p) in &dist {
        if u < p {
            return tok;
        }
        u -= p;
    }
    dist.last().map(|x| x.0).unwrap_or(0)
}

/// Generates up to `length` tokens from `state`, calling `emit` with each; `emit` returning false
/// stops early (Ctrl-C). Returns the tokens.
pub fn generate(
    net: &StreamModel,
    state: &mut State,
    length: usize,
    opts: &SampleOptions,
    rng: &mut impl Rng,
    mut emit: impl FnMut(u32) -> bool,
) -> Vec<u32> {
    let mut out = Vec::with_capacity(length);
    for _ in 0..length {
        let lp = net.log_probs(state);
        let x = sample_next(&lp, opts, rng);
        out.push(x);
        net.step(state, x);
        if !emit(x) {
            break;
        }
    }
    out
}

/// Where a streamed generation stops besides its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `length` tokens (or a cancel).
    Length,
    /// The first line break too, which is not written (the demo's one-line samples).
    LineEnd,
}

/// The one streamed-generation loop (`sample`, the repl, the demo): draws up to `length` tokens
/// after `state` and writes each piece of text to `out` as it comes, flushed, glued the way text
/// is written after `after` (the prompt or context). Stops early at `until` or when `cancel` is
/// set (Ctrl-C), and at the first write error, which it returns (a closed pipe, say). Returns the
/// text generated.
#[allow(clippy::too_many_arguments)]
pub fn stream(
    net: &StreamModel,
    vocab: &Vocab,
    state: &mut State,
    after: &str,
    length: usize,
    opts: &SampleOptions,
    rng: &mut impl Rng,
    until: Until,
    cancel: &std::sync::atomic::AtomicBool,
    out: &mut dyn std::io::Write,
) -> std::io::Result<String> {
    use std::sync::atomic::Ordering;
    let mut detok = crate::vocab::detok::Detokenizer::new(after);
    let mut text = String::new();
    let mut failed: Option<std::io::Error> = None;
    let mut line_ended = false;
    generate(net, state, length, opts, rng, |x| {
        let piece = detok.piece(vocab, x);
        let piece = match (until, piece.split_once('\n')) {
            (Until::LineEnd, Some((head, _))) => {
                line_ended = true;
                head
            }
            _ => piece.as_str(),
        };
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            failed = Some(e);
        }
        text.push_str(piece);
        !line_ended && failed.is_none() && !cancel.load(Ordering::SeqCst)
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if !line_ended {
        let tail = detok.finish(vocab);
        out.write_all(tail.as_bytes())?;
        text.push_str(&tail);
    }
    Ok(text)
}

/// One entry of the next-token distribution.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NextToken {
    pub token: String,
    pub id: u32,
    pub prob: f64,
}

/// The `k` most probable next tokens after `state`.
pub fn top_next(net: &StreamModel, vocab: &Vocab, state: &State, k: usize) -> Vec<NextToken> {
    let lp = net.log_probs(state);
    top_k_indices(&lp, k)
        .into_iter()
        .map(|i| NextToken {
            token: vocab.token(i).to_string(),
            id: i,
            prob: lp[i as usize].exp(),
        })
        .collect()
}

/// The ids of the `k` largest values, largest first (lower id first on ties). Selects before it
/// sorts, so a 30k-word vocabulary costs one pass, not a full sort.
pub fn top_k_indices(xs: &[f64], k: usize) -> Vec<u32> {
    let k = k.min(xs.len());
    if k == 0 {
        return Vec::new();
    }
    let order = |&a: &u32, &b: &u32| xs[b as usize].total_cmp(&xs[a as usize]).then(a.cmp(&b));
    let mut idx: Vec<u32> = (0..xs.len() as u32).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx
}

/// Tokens that end a beam-search continuation: line breaks and sentence-final punctuation.
pub fn is_stop_token(vocab: &Vocab, id: u32) -> bool {
    matches!(
        vocab.token(id),
        "\n" | "<eos>" | "。" | "！" | "？" | "." | "!" | "?" | "…"
    )
}

/// A continuation found by beam search.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Continuation {
    pub ids: Vec<u32>,
    pub text: String,
    /// Σ log p of its tokens (natural log).
    pub logprob: f64,
    /// Ended on a stop token (rather than at the length limit).
    pub complete: bool,
}

/// Beam search for the `width` most probable continuations of at most `max_tokens` tokens, each
/// ending at a stop token or at the limit. Exact when `width` ≥ the number of possible
/// continuations (every candidate survives every round). At the char level a continuation the
/// limit cuts inside a word is finished greedily (at most [`WORD_FINISH`] more characters), so it
/// never ends in half a word.
pub fn beam_search(
    net: &StreamModel,
    vocab: &Vocab,
    state: &State,
    width: usize,
    max_tokens: usize,
) -> Vec<Continuation> {
    let mut done = beam_search_cut(net, vocab, state, width, max_tokens);
    if vocab.level == Level::Char {
        for c in done.iter_mut().filter(|c| !c.complete) {
            finish_word(net, vocab, state, c);
        }
        done.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        // Two beams may have become one.
        let mut seen = std::collections::HashSet::new();
        done.retain(|c| seen.insert(c.ids.clone()));
    }
    done
}

/// The most characters a word cut by `--max-tokens` is finished with.
pub const WORD_FINISH: usize = 20;

/// Whether `token` is (a piece of) a word whose end a reader waits for: letters and digits of
/// scripts written with spaces (a Chinese character is a whole word or part of one, either way
/// readable where it stops).
fn mid_word(token: &str) -> bool {
    token
        .chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() && !crate::words::is_han(c))
}

/// Extends `c` greedily while its last token is inside a word, adding each token's log p.
fn finish_word(net: &StreamModel, vocab: &Vocab, start: &State, c: &mut Continuation) {
    if !c.ids.last().is_some_and(|&id| mid_word(vocab.token(id))) {
        return;
    }
    let mut st = start.clone();
    net.feed(&mut st, &c.ids);
    for _ in 0..WORD_FINISH {
        let lp = net.log_probs(&st);
        let next = argmax(&lp);
        if !mid_word(vocab.token(next)) {
            break;
        }
        c.ids.push(next);
        c.logprob += lp[next as usize];
        net.step(&mut st, next);
    }
    c.text = vocab.decode(&c.ids);
}

/// [`beam_search`] with every continuation ending at a stop token or at the limit.
fn beam_search_cut(
    net: &StreamModel,
    vocab: &Vocab,
    state: &State,
    width: usize,
    max_tokens: usize,
) -> Vec<Continuation> {
    let width = width.max(1);
    let mut live: Vec<(State, Vec<u32>, f64)> = vec![(state.clone(), Vec::new(), 0.0)];
    let mut done: Vec<Continuation> = Vec::new();
    for depth in 0..max_tokens {
        let mut cands: Vec<(usize, u32, f64)> = Vec::with_capacity(live.len() * vocab.len());
        for (b, (st, _, score)) in live.iter().enumerate() {
            let lp = net.log_probs(st);
            cands.extend(lp.iter().enumerate().map(|(v, l)| (b, v as u32, score + l)));
        }
        cands.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        cands.truncate(width);
        let mut next = Vec::with_capacity(width);
        for (b, v, score) in cands {
            let mut ids = live[b].1.clone();
            ids.push(v);
            let stop = is_stop_token(vocab, v);
            if stop || depth + 1 == max_tokens {
                done.push(Continuation {
                    text: vocab.decode(&ids),
                    ids,
                    logprob: score,
                    complete: stop,
                });
            } else {
                let mut st = live[b].0.clone();
                net.step(&mut st, v);
                next.push((st, ids, score));
            }
        }
        live = next;
        done.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
        // Scores only fall as a sequence grows: once `width` finished ones beat every live beam,
        // no live beam can enter the top `width`.
        let best_live = live.iter().map(|x| x.2).fold(f64::NEG_INFINITY, f64::max);
        if live.is_empty() || (done.len() >= width && done[width - 1].logprob >= best_live) {
            break;
        }
    }
    done.truncate(width);
    done
}

/// Which score orders the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RankBy {
    /// Total log-probability of the candidate's tokens: the probability of the whole candidate.
    Total,
    /// Mean log-probability per token: does not favour short candidates.
    Mean,
}

impl std::fmt::Display for RankBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RankBy::Total => "total",
            RankBy::Mean => "mean",
        })
    }
}

/// A scored candidate.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ranked {
    pub candidate: String,
    pub tokens: Vec<String>,
    /// Σ log p (natural log) of the candidate's tokens after the prompt.
    pub total_logprob: f64,
    /// total_logprob / number of tokens.
    pub mean_logprob: f64,
    /// exp(total) normalised over the candidate set (`None` for an unknown candidate when the
    /// model cannot say how many types share `<unk>`).
    pub prob_in_set: Option<f64>,
    /// log p of each token.
    pub token_logprobs: Vec<f64>,
    /// The pieces of the candidate the vocabulary does not hold (each scored as `<unk>`, see
    /// [`rank`]); empty for a known candidate.
    pub unknown: Vec<String>,
    /// False for a candidate a model without `<unk>` cannot score (it holds a piece the vocabulary
    /// lacks): ranked last, its log-probabilities `null` in JSON.
    pub scored: bool,
    pub warnings: Vec<String>,
}

impl Ranked {
    pub fn known(&self) -> bool {
        self.unknown.is_empty()
    }
}

/// How an unknown token is scored, in words (for `--help`, the table's footnote and the README).
pub fn unknown_rule(vocab: &Vocab) -> String {
    let types = vocab.level.plural();
    match (vocab.unk, unknown_share(vocab)) {
        (None, _) => "not in the vocabulary: this model has no <unk> token, so a candidate with one cannot be scored".to_string(),
        (Some(_), Some(n)) => format!(
            "not in the vocabulary: each unknown piece scores p(<unk>) shared evenly over the {n} {types} the vocabulary left out"
        ),
        (Some(_), None) if vocab.unknown_types == Some(0) => format!(
            "not in the vocabulary: ranked after every known candidate (the training text left no {types} out, so <unk> stands for nothing the model saw)"
        ),
        (Some(_), None) => "not in the vocabulary: ranked after every known candidate (this checkpoint does not say how many types share <unk>)".to_string(),
    }
}

/// How many distinct types `<unk>` stood for in training, when that is known and not zero: an
/// unknown piece's score is p(<unk>) shared among them. With none (nothing was left out, as a word
/// vocabulary at `--min-count 1` without `--max-vocab`), p(<unk>) was never a target and means
/// nothing, so such a candidate cannot be compared.
fn unknown_share(vocab: &Vocab) -> Option<u64> {
    vocab.unknown_types.filter(|&n| n > 0)
}

/// Scores every candidate token by token from the same prompt state, sorted by `by` (best first).
///
/// A token the vocabulary lacks is read as `<unk>`, whose probability is that of *any* rare
/// token: a candidate must not win for being unknown. So each unknown piece scores
/// log p(<unk>) − ln N, N the number of distinct tokens the vocabulary left out (the way SRILM and
/// KenLM score an out-of-vocabulary word); where N is not known or is 0, unknown candidates rank after
/// every known one. Either way they are marked (`unknown`). A model without `<unk>` cannot score
/// such a candidate at all: it is ranked last, marked, with `scored` false.
pub fn rank(
    net: &StreamModel,
    vocab: &Vocab,
    prompt_state: &State,
    candidates: &[String],
    by: RankBy,
) -> Result<Vec<Ranked>> {
    if candidates.is_empty() {
        bail!("no candidates to rank");
    }
    let unk_share = unknown_share(vocab).map(|n| (n as f64).ln());
    // A candidate given twice is one candidate (two copies would split its share of the set).
    let mut given: Vec<(&String, usize)> = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.iter().enumerate() {
        if c.is_empty() {
            bail!("candidate {} is empty", i + 1);
        }
        match given.iter_mut().find(|(g, _)| *g == c) {
            Some((_, n)) => *n += 1,
            None => given.push((c, 1)),
        }
    }
    let mut out: Vec<Ranked> = Vec::with_capacity(given.len());
    for &(c, times) in &given {
        let repeated =
            (times > 1).then(|| format!("candidate {c:?} was given {times} times: ranked once"));
        let mut unknown = Vec::new();
        if vocab.unk.is_none() {
            vocab.encode_scoring(c, |tok| unknown.push(tok.to_string()))?;
            if !unknown.is_empty() {
                // Every piece, the unknown ones included: at the char level its characters (as
                // the vocabulary reads them), at the word level the candidate whole.
                let pieces: Vec<String> = match vocab.level {
                    Level::Char if vocab.nfc => {
                        use unicode_normalization::UnicodeNormalization;
                        c.nfc().map(String::from).collect()
                    }
                    Level::Char => c.chars().map(String::from).collect(),
                    Level::Word => vec![c.clone()],
                };
                let mut seen = std::collections::HashSet::new();
                unknown.retain(|u| seen.insert(u.clone()));
                let warnings: Vec<String> = unknown
                    .iter()
                    .map(|u| {
                        format!(
                            "candidate {c:?}: {} is {}; ranked last",
                            describe_token(u),
                            unknown_rule(vocab)
                        )
                    })
                    .collect();
                out.push(Ranked {
                    candidate: c.clone(),
                    tokens: pieces,
                    total_logprob: f64::NAN,
                    mean_logprob: f64::NAN,
                    prob_in_set: None,
                    token_logprobs: Vec::new(),
                    unknown,
                    scored: false,
                    warnings: repeated.into_iter().chain(warnings).collect(),
                });
                continue;
            }
        }
        let ids = vocab
            .encode_reporting(c, |tok, _| unknown.push(tok.to_string()))
            .map_err(|e| anyhow::anyhow!("candidate {c:?}: {e}"))?;
        if ids.is_empty() {
            bail!("candidate {c:?} has no tokens");
        }
        let mut st = prompt_state.clone();
        let mut lps = Vec::with_capacity(ids.len());
        for (j, &x) in ids.iter().enumerate() {
            let mut lp = net.log_probs(&st)[x as usize];
            if Some(x) == vocab.unk && !unknown.is_empty() {
                lp -= unk_share.unwrap_or(0.0);
            }
            lps.push(lp);
            if j + 1 < ids.len() {
                net.step(&mut st, x);
            }
        }
        let total: f64 = lps.iter().sum();
        let warnings = repeated
            .into_iter()
            .chain(unknown.iter().map(|u| {
                format!(
                    "candidate {c:?}: {} is {}",
                    describe_token(u),
                    unknown_rule(vocab)
                )
            }))
            .collect();
        out.push(Ranked {
            candidate: c.clone(),
            tokens: ids.iter().map(|&x| vocab.token(x).to_string()).collect(),
            total_logprob: total,
            mean_logprob: total / lps.len() as f64,
            prob_in_set: None,
            token_logprobs: lps,
            unknown,
            scored: true,
            warnings,
        });
    }
    // Normalised over the candidates that can be compared: all of them, or with an unknown share,
    // only the known ones.
    let comparable = |r: &Ranked| r.scored && (r.known() || unk_share.is_some());
    let m = out
        .iter()
        .filter(|r| comparable(r))
        .map(|r| r.total_logprob)
        .fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = out
        .iter()
        .filter(|r| comparable(r))
        .map(|r| (r.total_logprob - m).exp())
        .sum();
    for r in out.iter_mut().filter(|r| comparable(r)) {
        r.prob_in_set = Some((r.total_logprob - m).exp() / z);
    }
    let key = |r: &Ranked| match by {
        RankBy::Total => r.total_logprob,
        RankBy::Mean => r.mean_logprob,
    };
    // Stable: unscored candidates keep their order, after every scored one.
    out.sort_by(|a, b| {
        comparable(b)
            .cmp(&comparable(a))
            .then(b.scored.cmp(&a.scored))
            .then(if a.scored && b.scored {
                key(b).total_cmp(&key(a))
            } else {
                std::cmp::Ordering::Equal
            })
    });
    Ok(out)
}

/// Splits `--candidates a,b,c` (also accepting the Chinese comma and 、), trimming spaces.
pub fn split_candidates(s: &str) -> Vec<String> {
    s.split([',', '，', '、'])
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}
