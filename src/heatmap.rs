//! Looking inside — a text as the model sees it: each token shaded by its surprisal −log₂ p, the
//! model's top predictions on hover, and optionally one hidden unit's activation (as in Karpathy's
//! char-rnn visualisations).
//!
//! The page is one self-contained HTML file: the shading is written into the markup (so it shows
//! even without scripts), and the numbers behind it travel along as JSON for the hover panel, the
//! unit view and anyone who wants to check them. Scoring is the exact one-stream likelihood `elman
//! eval` computes: the first token is not predicted; token i is predicted from the state after
//! tokens 0..i−1.

use crate::cell::Activation;
use crate::generate;
use crate::infer::StreamModel;
use crate::vocab::Vocab;
use anyhow::{bail, Result};
use serde::Serialize;

/// One token of the page.
#[derive(Debug, Clone, Serialize)]
pub struct Token {
    /// The characters of the text it was read from.
    pub text: String,
    /// The vocabulary token (differs from `text` for `<unk>` and `<eos>`).
    pub token: String,
    /// −log₂ p(token | everything before it); none for the first token.
    pub bits: Option<f64>,
    /// The model's most likely tokens at this position, with probabilities.
    pub top: Vec<(String, f64)>,
    /// The chosen hidden unit's activation after reading this token.
    pub unit: Option<f32>,
}

/// What the page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub model: String,
    pub text_name: String,
    pub activation: Activation,
    pub cell: crate::cell::CellKind,
    /// What `unit` shows: "hidden" (the unit's output h) or "cell" (an LSTM's cell state c).
    pub state: &'static str,
    pub unit: Option<usize>,
    pub layer: usize,
    pub tokens: Vec<Token>,
    /// Text between tokens that no token covers (word level: the spaces), before token i.
    #[serde(skip)]
    pub gaps: Vec<String>,
    #[serde(skip)]
    pub tail: String,
    pub predicted: usize,
    pub nats_per_token: f64,
    pub bits_per_char: f64,
    pub truncated: bool,
}

/// Options for [`analyse`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub unit: Option<usize>,
    /// Layer of the unit (0-based); the top layer when `None`.
    pub layer: Option<usize>,
    /// Predictions listed per position.
    pub top: usize,
    /// Only the first this many tokens are shown.
    pub max_tokens: usize,
    /// Show the unit's cell state c (an LSTM) instead of its output h.
    pub cell_state: bool,
    /// No progress bar.
    pub quiet: bool,
}

impl Options {
    /// Checks the options against the model; returns the layer the unit is in.
    pub fn check(&self, net: &StreamModel) -> Result<usize> {
        let cfg = net.config;
        let layer = self.layer.unwrap_or(cfg.layers - 1);
        if layer >= cfg.layers {
            bail!(
                "--layer {layer}: the model has {} layer(s), numbered 0 to {}",
                cfg.layers,
                cfg.layers - 1
            );
        }
        if self.cell_state && net.cell().carried() < 2 {
            bail!(
                "--cell-state: this model's cell ({}) has no cell state (only an LSTM does); drop --cell-state to show the unit's output",
                cfg.cell
            );
        }
        if let Some(u) = self.unit {
            if u >= cfg.hidden {
                bail!(
                    "--unit {u}: the model has {} hidden units per layer, numbered 0 to {}",
                    cfg.hidden,
                    cfg.hidden - 1
                );
            }
        }
        Ok(layer)
    }
}

/// Scores `text` token by token.
pub fn analyse(
    net: &StreamModel,
    vocab: &Vocab,
    text: &str,
    opts: Options,
    model: &str,
    text_name: &str,
) -> Result<Heatmap> {
    let cfg = net.config;
    let layer = opts.check(net)?;
    let (shown, mut spans) = vocab.encode_spans(text)?;
    if spans.len() < 2 {
        bail!("the text has fewer than 2 tokens: nothing to score");
    }
    let truncated = spans.len() > opts.max_tokens;
    spans.truncate(opts.max_tokens.max(2));
    let chars: Vec<char> = shown.chars().collect();
    let piece = |a: usize, b: usize| -> String { chars[a..b].iter().collect() };

    let mut state = net.zero_state();
    let mut tokens = Vec::with_capacity(spans.len());
    let mut gaps = Vec::with_capacity(spans.len());
    let mut pos = 0usize;
    let mut nats = 0f64;
    let bar = crate::progress::Bar::new(spans.len() as u64, "reading", opts.quiet);
    for (i, sp) in spans.iter().enumerate() {
        bar.inc(1);
        gaps.push(piece(pos.min(sp.start), sp.start.max(pos)));
        pos = pos.max(sp.end);
        let (bits, top) = if i == 0 {
            (None, Vec::new())
        } else {
            let lp = net.log_probs(&state);
            nats -= lp[sp.id as usize];
            let top = generate::top_k_indices(&lp, opts.top)
                .into_iter()
                .map(|j| (vocab.token(j).to_string(), lp[j as usize].exp()))
                .collect();
            (Some(-lp[sp.id as usize] / std::f64::consts::LN_2), top)
        };
        net.step(&mut state, sp.id);
        tokens.push(Token {
            text: piece(sp.start, sp.end),
            token: vocab.token(sp.id).to_string(),
            bits,
            top,
            unit: opts.unit.map(|u| {
                if opts.cell_state {
                    state.c[layer][u]
                } else {
                    state.h[layer][u]
                }
            }),
        });
    }
    let tail = if truncated {
        String::new()
    } else {
        piece(pos.min(chars.len()), chars.len())
    };
    let predicted = tokens.len() - 1;
    let tokens_len = tokens.len();
    let shown_chars = spans.last().map_or(0, |s| s.end);
    Ok(Heatmap {
        model: model.to_string(),
        text_name: text_name.to_string(),
        activation: cfg.activation,
        cell: cfg.cell,
        state: if opts.cell_state { "cell" } else { "hidden" },
        unit: opts.unit,
        layer,
        tokens,
        gaps,
        tail,
        predicted,
        nats_per_token: nats / predicted as f64,
        // As `elman eval` counts it: the per-token rate times tokens per character.
        bits_per_char: nats / predicted as f64 * tokens_len as f64
            / shown_chars.max(1) as f64
            / std::f64::consts::LN_2,
        truncated,
    })
}

/// Surprisal scale of the shading: 0 bits is white, this many bits (or more) full colour.
pub const MAX_BITS: f64 = 10.0;

fn mix(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let f = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", f(a.0, b.0), f(a.1, b.1), f(a.2, b.2))
}

const WHITE: (u8, u8, u8) = (255, 255, 255);
const RED: (u8, u8, u8) = (215, 48, 39);

/// The background of a token with `bits` of surprisal.
pub fn surprisal_color(bits: Option<f64>) -> String {
    match bits {
        None => "#ffffff".into(),
        Some(b) => mix(WHITE, RED, (b / MAX_BITS).powf(0.8)),
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    s.chars().for_each(|c| push_escaped(&mut o, c));
    o
}

fn push_escaped(o: &mut String, c: char) {
    match c {
        '&' => o.push_str("&amp;"),
        '<' => o.push_str("&lt;"),
        '>' => o.push_str("&gt;"),
        '"' => o.push_str("&quot;"),
        '\'' => o.push_str("&#39;"),
        _ => o.push(c),
    }
}

/// Text inside a token span: line breaks stay line breaks (after a visible ↵), other control
/// characters are shown by code point so that every token has something to hover over.
fn visible(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '\n' => o.push_str("↵\n"),
            '\t' => o.push('\t'),
            c if c.is_control() => o.push_str(&format!("[U+{:04X}]", c as u32)),
            c => push_escaped(&mut o, c),
        }
    }
    if o.is_empty() {
        o.push('∅');
    }
    o
}

/// The page's style sheet.
const STYLE: &str = r##"body { font-family: system-ui, "Noto Sans", "Noto Sans CJK SC", sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .3em 0; }
.meta { color: #555; font-size: .9em; margin: .2em 0; }
#text { font-family: ui-monospace, "DejaVu Sans Mono", "Noto Sans Mono CJK SC", monospace; white-space: pre-wrap;
        line-height: 1.6; font-size: 15px; border: 1px solid #ddd; padding: .8em; }
span.t { border-radius: 2px; cursor: default; }
span.t:hover { outline: 1px solid #000; }
.sw { display: inline-block; width: 1.1em; height: .9em; vertical-align: middle; border: 1px solid #ccc; }
#tip { position: fixed; display: none; background: #fffff4; border: 1px solid #999; padding: .4em .6em;
       font-size: 13px; box-shadow: 2px 2px 6px rgba(0,0,0,.2); pointer-events: none; white-space: pre; }
#tip td { padding: 0 .5em 0 0; }
"##;

/// The page's script: the hover panel with the top predictions, and switching the shading
/// between surprisal and a hidden unit's activation. It reads the JSON data block.
const SCRIPT: &str = r##""use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const spans = document.querySelectorAll("#text span.t");
let sum = 0, n = 0;
for (const t of data.tokens) if (t.bits !== null) { sum += t.bits; n++; }
const summary = document.getElementById("js-summary");
summary.dataset.predicted = n;
summary.dataset.natsPerToken = (sum * Math.LN2 / n).toString();
summary.textContent = "Page data: " + n + " predicted tokens, mean " + (sum * Math.LN2 / n).toFixed(6) +
  " nats/token. Hover over a token for the model's predictions there.";
function mix(a, b, t) {
  t = Math.min(1, Math.max(0, t));
  return "rgb(" + a.map((x, i) => Math.round(x + (b[i] - x) * t)).join(",") + ")";
}
function unitColor(v) {
  let x = v;
  if (data.activation === "sigmoid") x = 2 * v - 1;
  if (data.activation === "relu" || data.state === "cell") x = v / (data.unitMax || 1);
  return x < 0 ? mix([255, 255, 255], [49, 130, 189], -x) : mix([255, 255, 255], [26, 152, 80], x);
}
data.unitMax = Math.max(1e-9, ...data.tokens.map(t => Math.abs(t.unit || 0)));
const surprisalBg = Array.from(spans, s => s.style.background);
for (const r of document.querySelectorAll("input[name=shade]")) {
  r.addEventListener("change", () => {
    spans.forEach((s, i) => {
      s.style.background = r.value === "unit" ? unitColor(data.tokens[i].unit) : surprisalBg[i];
    });
  });
}
const tip = document.getElementById("tip");
const show = t => t.replace(/\n/g, "↵").replace(/ /g, "␣").replace(/\t/g, "⇥");
function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
document.getElementById("text").addEventListener("mousemove", e => {
  const s = e.target.closest("span.t");
  if (!s) { tip.style.display = "none"; return; }
  const t = data.tokens[+s.dataset.i];
  let h = "<b>" + esc(show(t.token)) + "</b>";
  if (t.bits === null) h += "  first token: not predicted";
  else h += "  " + t.bits.toFixed(2) + " bits (p = " + Math.pow(2, -t.bits).toPrecision(3) + ")";
  if (t.unit !== null) h += "\nunit " + data.unit + ": " + t.unit.toFixed(3);
  if (t.top.length) {
    h += "\n<table>";
    for (const [w, p] of t.top) h += "<tr><td>" + esc(show(w)) + "</td><td>" + (100 * p).toFixed(1) + "%</td></tr>";
    h += "</table>";
  }
  tip.innerHTML = h;
  tip.style.display = "block";
  tip.style.left = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
  tip.style.top = Math.min(e.clientY + 14, window.innerHeight - tip.offsetHeight - 8) + "px";
});
document.getElementById("text").addEventListener("mouseleave", () => { tip.style.display = "none"; });
"##;

/// The self-contained HTML page.
/// The text as shaded spans (one per token, `data-i` its index in `h.tokens`) with the gaps
/// between them: the body of the page, and what `elman serve`'s playground shows.
pub fn text_html(h: &Heatmap) -> String {
    let mut body = String::new();
    for (i, t) in h.tokens.iter().enumerate() {
        body.push_str(&escape(&h.gaps[i]));
        body.push_str(&format!(
            "<span class=\"t\" data-i=\"{i}\" style=\"background:{}\">{}</span>",
            surprisal_color(t.bits),
            visible(&t.text)
        ));
    }
    body.push_str(&escape(&h.tail));
    body
}

pub fn page(h: &Heatmap) -> Result<String> {
    let body = text_html(h);
    // `<` never appears in JSON outside strings, and inside them \u003c means the same: this keeps
    // a `</script>` in the text from ending the data block.
    let data = serde_json::to_string(h)?.replace('<', "\\u003c");
    let unit_control =
        match h.unit {
            Some(u) => format!(
            "<label><input type=\"radio\" name=\"shade\" value=\"unit\"> {}unit {u} of layer {} \
             ({}: <span class=\"sw\" style=\"background:#3182bd\"></span> low, \
             <span class=\"sw\" style=\"background:#1a9850\"></span> high)</label>",
            if h.state == "cell" { "the cell state of " } else { "" },
            h.layer,
            if h.state == "cell" {
                "scaled to its largest |c|".to_string()
            } else if h.cell.takes_activation() {
                h.activation.to_string()
            } else {
                format!("{} output", h.cell)
            }
        ),
            None => String::new(),
        };
    let legend: String = (0..=10)
        .map(|b| {
            format!(
                "<span class=\"sw\" title=\"{b} bits\" style=\"background:{}\"></span>",
                surprisal_color(Some(b as f64))
            )
        })
        .collect();
    Ok(format!(
        r##"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>elman heatmap: {title}</title>
<style>
{STYLE}</style>
</head>
<body>
<h1>What <code>{model}</code> expects in <code>{title}</code></h1>
<p class="meta">{n} tokens{trunc} · {nats:.4} nats/token · {bpc:.4} bits/char · {act}</p>
<p class="meta">Shade by:
<label><input type="radio" name="shade" value="surprisal" checked> surprisal −log₂ p: 0 bits {legend} {max_bits} bits or more</label>
{unit_control}</p>
<p class="meta" id="js-summary">(this page's script did not run: hover details need JavaScript)</p>
<div id="text">{body}</div>
<div id="tip"></div>
<script type="application/json" id="data">{data}</script>
<script>
{SCRIPT}</script>
</body>
</html>
"##,
        title = escape(&h.text_name),
        model = escape(&h.model),
        n = h.tokens.len(),
        trunc = if h.truncated {
            " (the first ones of the text)"
        } else {
            ""
        },
        nats = h.nats_per_token,
        bpc = h.bits_per_char,
        act = h.cell.output_label(h.activation),
        max_bits = MAX_BITS,
    ))
}
