//! Stage 1c — the word-level cut, written out: a line into the words its `tokenizer.json` makes.
//!
//! A word-level vocabulary is a standard HF `tokenizer.json` (see `vocab.rs`): normalise `\r\n` and
//! `\n` to ` <eos> `, take out the special tokens `<eos>` and `<unk>` wherever they stand, split at
//! whitespace, then (segmenters `words` and `jieba`) isolate every punctuation character and
//! (`words`) every Han character. Going through the `tokenizers` machinery for that costs an
//! allocation per piece and a binary search per character: reading a corpus ran at ~4 MB/s, slower
//! than a Python loop over `line.split()`. This module makes the same cut over `&str` slices with
//! table lookups (counting 7× and encoding 5× faster), and `tests/vocab.rs` holds it to the
//! tokenizer on random text of every script. NFC vocabularies keep the tokenizer's own path (its
//! NFC tables are its own).

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

pub const UNK: &str = "<unk>";
pub const EOS: &str = "<eos>";

/// Han characters are split one by one by the `words` segmenter (`jieba` cuts them into words).
pub const HAN_PATTERN: &str = r"\p{Han}";

/// How word-level text is cut into words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Segmenter {
    /// jieba when the text has Chinese characters, else `words` (resolved when the vocabulary is
    /// built; the checkpoint records the result).
    Auto,
    /// Split at spaces and punctuation; Chinese characters one by one.
    #[default]
    Words,
    /// Chinese cut into words by jieba (its dictionary and HMM); other text as `words`.
    Jieba,
    /// Split at whitespace only, punctuation attached (WikiText's convention).
    Spaces,
}

impl Segmenter {
    /// `Auto` made concrete for a text: jieba when it has Chinese characters, else words.
    pub fn resolve(self, has_han: bool) -> Segmenter {
        match self {
            Segmenter::Auto if has_han => Segmenter::Jieba,
            Segmenter::Auto => Segmenter::Words,
            s => s,
        }
    }
}

impl std::fmt::Display for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Segmenter::Auto => "auto",
            Segmenter::Words => "words",
            Segmenter::Jieba => "jieba",
            Segmenter::Spaces => "spaces",
        })
    }
}

/// A Han (Chinese) character: the script jieba segments.
pub fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2A6DF | 0x2A700..=0x2EBEF
        | 0x30000..=0x3134F)
}

fn jieba() -> &'static jieba_rs::Jieba {
    static JIEBA: std::sync::OnceLock<jieba_rs::Jieba> = std::sync::OnceLock::new();
    JIEBA.get_or_init(jieba_rs::Jieba::new)
}

/// Cuts every run of Han characters in `line` into words with jieba (dictionary + HMM for unknown
/// words) and puts a space between them, so that the whitespace pre-tokenizer splits them. Returns
/// the new line and, for each of its characters, the index of the original character (spaces that
/// were inserted map to the character after them).
pub fn segment_han(line: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(line.len() + line.len() / 2);
    let mut origin = Vec::with_capacity(line.len());
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        if !is_han(chars[i].1) {
            out.push(chars[i].1);
            origin.push(i);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_han(chars[i].1) {
            i += 1;
        }
        let (a, b) = (chars[start].0, chars.get(i).map_or(line.len(), |c| c.0));
        let mut k = start;
        out.push(' ');
        origin.push(start);
        for token in jieba().cut(&line[a..b], true) {
            for c in token.word.chars() {
                out.push(c);
                origin.push(k);
                k += 1;
            }
            out.push(' ');
            origin.push(k);
        }
    }
    (out, origin)
}

/// Which characters the tokenizer's pre-tokenizers isolate, looked up in bitsets over the Basic
/// Multilingual Plane (the rest of the code space asks the same predicates directly).
struct Classes {
    punct: Vec<u64>,
    han: Vec<u64>,
    /// `\p{Han}` as the regex engine of `tokenizers` parses it: sorted, disjoint ranges.
    han_ranges: Vec<(u32, u32)>,
}

fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let han_ranges = han_ranges();
        let (mut punct, mut han) = (vec![0u64; 1024], vec![0u64; 1024]);
        for cp in 0..0x10000u32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let bit = 1u64 << (cp % 64);
            if punct_slow(c) {
                punct[cp as usize / 64] |= bit;
            }
            if in_ranges(&han_ranges, cp) {
                han[cp as usize / 64] |= bit;
            }
        }
        Classes {
            punct,
            han,
            han_ranges,
        }
    })
}

/// The ranges of the pattern the `words` segmenter splits Han characters with (`\p{Han}`, parsed by
/// `regex-syntax`, as `tokenizers`' regex engine parses it).
fn han_ranges() -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let hir = regex_syntax::parse(HAN_PATTERN).expect("a valid pattern");
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        other => panic!("\\p{{Han}} parsed as {other:?}, not a class"),
    }
}

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    let i = ranges.partition_point(|&(_, end)| end < cp);
    ranges.get(i).is_some_and(|&(start, _)| start <= cp)
}

/// The `Punctuation` pre-tokenizer's test.
fn punct_slow(c: char) -> bool {
    use unicode_categories::UnicodeCategories;
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// `c` in a BMP bitset, or (beyond the BMP) whatever `slow` says.
#[inline]
fn in_set(set: &[u64], c: char, slow: impl FnOnce() -> bool) -> bool {
    let cp = c as usize;
    if cp < 0x10000 {
        set[cp / 64] >> (cp % 64) & 1 == 1
    } else {
        slow()
    }
}

#[inline]
fn is_punct(cl: &Classes, c: char) -> bool {
    in_set(&cl.punct, c, || punct_slow(c))
}

#[inline]
fn is_han_in(cl: &Classes, c: char) -> bool {
    in_set(&cl.han, c, || in_ranges(&cl.han_ranges, c as u32))
}

/// Calls `f` with each word of `line` in order, as a `segmenter` vocabulary (without NFC) cuts
/// it: jieba's cut first for `jieba` (`segment_han`), then its tokenizer's; the special
/// tokens as `"<eos>"`/`"<unk>"`, a final newline as `"<eos>"`. `line` holds at most one newline,
/// at its end.
pub fn for_each_word(line: &str, segmenter: Segmenter, f: &mut impl FnMut(&str)) {
    if segmenter == Segmenter::Jieba {
        cut_line(&segment_han(line).0, segmenter, f);
    } else {
        cut_line(line, segmenter, f);
    }
}

/// The tokenizer's cut of one line (already cut by jieba for a `jieba` vocabulary).
fn cut_line<'a>(line: &'a str, segmenter: Segmenter, f: &mut impl FnMut(&'a str)) {
    // `\r\n` → `\n` → ` <eos> `; a `\r` left before the newline is whitespace, cut away anyway.
    let (body, eos) = match line.strip_suffix('\n') {
        Some(b) => (b, true),
        None => (line, false),
    };
    let cl = classes();
    let mut rest = body;
    // The special tokens are taken out before any splitting (both are 5 bytes and start with `<`).
    while let Some((i, special)) = find_special(rest) {
        cut(&rest[..i], segmenter, cl, f);
        f(special);
        rest = &rest[i + special.len()..];
    }
    cut(rest, segmenter, cl, f);
    if eos {
        f(EOS);
    }
}

fn find_special(s: &str) -> Option<(usize, &'static str)> {
    s.match_indices('<').find_map(|(i, _)| {
        let tail = &s.as_bytes()[i..];
        [EOS, UNK]
            .into_iter()
            .find(|t| tail.starts_with(t.as_bytes()))
            .map(|t| (i, t))
    })
}

/// The pre-tokenizers on a stretch without special tokens.
fn cut<'a>(s: &'a str, segmenter: Segmenter, cl: &Classes, f: &mut impl FnMut(&'a str)) {
    // `jieba` lines have their Han words cut already: only `words` isolates Han characters.
    let han = segmenter != Segmenter::Jieba;
    for chunk in s.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if segmenter == Segmenter::Spaces {
            f(chunk);
            continue;
        }
        let mut start = 0;
        for (i, c) in chunk.char_indices() {
            if is_punct(cl, c) || (han && is_han_in(cl, c)) {
                if start < i {
                    f(&chunk[start..i]);
                }
                let end = i + c.len_utf8();
                f(&chunk[i..end]);
                start = end;
            }
        }
        if start < chunk.len() {
            f(&chunk[start..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_agree_with_the_predicates() {
        let cl = classes();
        for c in [
            'a', ',', '<', '，', '。', '“', '〇', '々', '中', '𠀀', '😀', '\u{3000}',
        ] {
            assert_eq!(is_punct(cl, c), punct_slow(c), "{c:?}");
            assert_eq!(
                is_han_in(cl, c),
                in_ranges(&cl.han_ranges, c as u32),
                "{c:?}"
            );
        }
        assert!(
            is_han_in(cl, '中')
                && is_han_in(cl, '𠀀')
                && !is_han_in(cl, 'a')
                && !is_han_in(cl, '。')
        );
    }

    #[test]
    fn a_line_is_cut_like_the_tokenizer_cuts_it() {
        let words = |line: &str, seg| {
            let mut v = Vec::new();
            for_each_word(line, seg, &mut |w| v.push(w.to_string()));
            v
        };
        assert_eq!(
            words("Hi, <unk>x<eos> 天空.\r\n", Segmenter::Words),
            ["Hi", ",", "<unk>", "x", "<eos>", "天", "空", ".", "<eos>"]
        );
        assert_eq!(
            words("Hi, <unk>x 天空.", Segmenter::Spaces),
            ["Hi,", "<unk>", "x", "天空."]
        );
        assert_eq!(
            words(" 天空 飞过 。\n", Segmenter::Jieba),
            ["天空", "飞过", "。", "<eos>"]
        );
    }
}
