//! Stage 7 — presenting results to people: tables that stay aligned with Chinese text (CJK
//! characters are two columns wide), and visible forms of invisible tokens.

use crate::generate::{Continuation, NextToken, RankBy, Ranked};
use unicode_width::UnicodeWidthStr;

/// A token as a person should see it in a table: line breaks, tabs and spaces made visible.
pub fn show_token(t: &str) -> String {
    t.chars()
        .map(|c| match c {
            '\n' => "⏎".to_string(),
            '\r' => "\\r".to_string(),
            '\t' => "⇥".to_string(),
            ' ' => "␣".to_string(),
            c if c.is_control() => format!("U+{:04X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// Running text made safe for one table row: line breaks and control characters visible, spaces
/// kept.
pub fn show_text(t: &str) -> String {
    t.split(' ').map(show_token).collect::<Vec<_>>().join(" ")
}

/// A prompt for a table heading: its last 40 characters at most.
pub fn short(prompt: &str) -> String {
    let n = prompt.chars().count();
    if n <= 40 {
        prompt.to_string()
    } else {
        format!("…{}", prompt.chars().skip(n - 40).collect::<String>())
    }
}

/// Pads `s` on the right to `width` terminal columns.
pub fn pad(s: &str, width: usize) -> String {
    let w = UnicodeWidthStr::width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

/// Pads `s` on the left to `width` terminal columns.
pub fn pad_left(s: &str, width: usize) -> String {
    let w = UnicodeWidthStr::width(s);
    format!("{}{s}", " ".repeat(width.saturating_sub(w)))
}

/// The ranking table.
pub fn rank_table(prompt: &str, ranked: &[Ranked], by: RankBy) -> String {
    let cw = ranked
        .iter()
        .map(|r| UnicodeWidthStr::width(show_text(&r.candidate).as_str()))
        .max()
        .unwrap_or(0)
        .max("candidate".len());
    let mut s = format!(
        "candidates after {:?}, sorted by {} log-probability (natural log):\n",
        short(prompt),
        match by {
            RankBy::Total => "total",
            RankBy::Mean => "mean per-token",
        }
    );
    s += &format!(
        "  #  {}  tokens  total logp  mean logp  P(in set)\n",
        pad("candidate", cw)
    );
    for (i, r) in ranked.iter().enumerate() {
        s += &format!(
            "{:>3}  {}  {:>6}  {:>10.3}  {:>9.3}  {:>8.2}%\n",
            i + 1,
            pad(&show_text(&r.candidate), cw),
            r.tokens.len(),
            r.total_logprob,
            r.mean_logprob,
            100.0 * r.prob_in_set
        );
    }
    s
}

/// The next-token table.
pub fn next_table(prompt: &str, next: &[NextToken]) -> String {
    let mut s = format!("most likely next tokens after {:?}:\n", short(prompt));
    for (i, n) in next.iter().enumerate() {
        s += &format!(
            "{:>3}  {}  {:>7.3}%\n",
            i + 1,
            pad(&show_token(&n.token), 6),
            100.0 * n.prob
        );
    }
    s
}

/// One line: `小 41.2% · 蜻 30.1% · …`.
pub fn next_line(next: &[NextToken]) -> String {
    next.iter()
        .map(|n| format!("{} {:.1}%", show_token(&n.token), 100.0 * n.prob))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The beam-search results.
pub fn beam_table(prompt: &str, beams: &[Continuation]) -> String {
    let mut s = format!(
        "most probable continuations of {:?} (beam search):\n",
        short(prompt)
    );
    for (i, b) in beams.iter().enumerate() {
        s += &format!(
            "{:>3}  logp {:>8.3}  p {:>7.3}%  {}{}\n",
            i + 1,
            b.logprob,
            100.0 * b.logprob.exp(),
            show_text(&b.text),
            if b.complete { "" } else { " …" }
        );
    }
    s
}

/// `elman eval`'s table.
pub fn eval_table(r: &crate::eval::EvalReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("model          {}\n", r.model));
    out.push_str(&format!(
        "text           {} ({} chars)\n",
        r.files.join(", "),
        r.chars
    ));
    out.push_str(&format!(
        "tokens         {} ({} predicted)\n",
        r.tokens, r.predicted
    ));
    if r.unknown > 0 {
        out.push_str(&format!("unknown        {} mapped to <unk>\n", r.unknown));
    }
    out.push_str(&format!("nats/token     {:.4}\n", r.nats_per_token));
    out.push_str(&format!("bits/char      {:.4}\n", r.bits_per_char));
    out.push_str(&format!("perplexity     {:.3}\n", r.perplexity));
    out
}
