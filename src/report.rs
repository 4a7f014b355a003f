//! Stage 7 — presenting results to people: tables that stay aligned with Chinese text (CJK
//! characters are two columns wide), and visible forms of invisible tokens.

use crate::generate::{Continuation, NextToken, RankBy, Ranked};
use crate::vocab::Vocab;
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
pub fn rank_table(prompt: &str, ranked: &[Ranked], by: RankBy, vocab: &Vocab) -> String {
    let name = |r: &Ranked| {
        let c = show_text(&r.candidate);
        if r.known() {
            c
        } else {
            format!("{c}*")
        }
    };
    let cw = ranked
        .iter()
        .map(|r| UnicodeWidthStr::width(name(r).as_str()))
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
        let num = |x: f64, w: usize| {
            if r.scored {
                format!("{x:>w$.3}")
            } else {
                format!("{:>w$}", "—")
            }
        };
        s += &format!(
            "{:>3}  {}  {:>6}  {}  {}  {:>9}\n",
            i + 1,
            pad(&name(r), cw),
            r.tokens.len(),
            num(r.total_logprob, 10),
            num(r.mean_logprob, 9),
            r.prob_in_set
                .map_or("—".to_string(), |p| format!("{:.2}%", 100.0 * p))
        );
    }
    if ranked.iter().any(|r| !r.known()) {
        s += &format!("  * {}\n", crate::generate::unknown_rule(vocab));
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
        "most probable continuations of {:?} (beam search; logp natural log, p per token its geometric mean):\n",
        short(prompt)
    );
    s += "  #   total logp  p (whole)   p per token  continuation\n";
    for (i, b) in beams.iter().enumerate() {
        let n = b.ids.len().max(1) as f64;
        s += &format!(
            "{:>3}  {:>10.3}  {:>10}  {:>10.1}%  {}{}\n",
            i + 1,
            b.logprob,
            probability(b.logprob.exp()),
            100.0 * (b.logprob / n).exp(),
            show_text(&b.text),
            if b.complete { "" } else { " …" }
        );
    }
    s
}

/// A probability that stays readable however small: a percentage down to 0.01%, then
/// scientific notation (6.3e-9).
pub fn probability(p: f64) -> String {
    if p >= 1e-4 {
        format!("{:.2}%", 100.0 * p)
    } else {
        format!("{p:.1e}")
    }
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
        // The first few unknown tokens, most frequent first.
        let shown: Vec<String> = r
            .unknown_tokens
            .iter()
            .take(12)
            .map(|t| show_token(t))
            .collect();
        let more = r.unknown_tokens.len().saturating_sub(shown.len());
        out.push_str(&format!(
            "unknown        {} places, {} distinct not in the vocabulary: {}{}\n",
            r.unknown,
            r.unknown_tokens.len(),
            shown.join(" "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
        out.push_str(&match r.unknown_share {
            _ if r.unknown_scored_as == Some("left out") => "               left out (the model has no <unk>): the rest of the text is scored as if they were not there\n".to_string(),
            Some(n) => format!("               read as <unk>, each scored p(<unk>)/{n} (<unk> stood for {n} rare tokens in training)\n"),
            None => "               read and scored as <unk>\n".to_string(),
        });
    }
    out.push_str(&format!("nats/token     {:.4}\n", r.nats_per_token));
    out.push_str(&format!(
        "bits/char      {:.4}{}\n",
        r.bits_per_char,
        if r.unknown_scored_as == Some("left out") {
            format!(" (over the {} characters scored)", r.chars - r.unknown)
        } else {
            String::new()
        }
    ));
    out.push_str(&format!("perplexity     {:.3}\n", r.perplexity));
    out
}
