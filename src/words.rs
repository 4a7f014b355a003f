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

use crate::vocab::{Segmenter, EOS, UNK};
use std::sync::OnceLock;

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
    let hir = regex_syntax::parse(crate::vocab::HAN_PATTERN).expect("a valid pattern");
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
fn is_han(cl: &Classes, c: char) -> bool {
    in_set(&cl.han, c, || in_ranges(&cl.han_ranges, c as u32))
}

/// Calls `f` with each word of `line` in order, as a `segmenter` vocabulary (without NFC) cuts
/// it: jieba's cut first for `jieba` (`vocab::segment_han`), then its tokenizer's; the special
/// tokens as `"<eos>"`/`"<unk>"`, a final newline as `"<eos>"`. `line` holds at most one newline,
/// at its end.
pub fn for_each_word(line: &str, segmenter: Segmenter, f: &mut impl FnMut(&str)) {
    if segmenter == Segmenter::Jieba {
        cut_line(&crate::vocab::segment_han(line).0, segmenter, f);
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
            if is_punct(cl, c) || (han && is_han(cl, c)) {
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
            assert_eq!(is_han(cl, c), in_ranges(&cl.han_ranges, c as u32), "{c:?}");
        }
        assert!(is_han(cl, '中') && is_han(cl, '𠀀') && !is_han(cl, 'a') && !is_han(cl, '。'));
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
