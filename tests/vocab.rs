//! The vocabulary: exact round-trips at the char level, word-level splitting, and the saved
//! `tokenizer.json` read back by the Rust and the Python `tokenizers` packages with the same ids.

use elman::vocab::{Level, Segmenter, Vocab, VocabOptions, EOS, UNK};
use std::process::Command;

const SAMPLES: &[&str] = &[
    "天空飞过一只小鸟，也可能是一只蜻蜓。",
    "The quick brown fox jumps over the lazy dog.\nSecond line\r\nthird.",
    "emoji 🙂👍🏽 family 👨‍👩‍👧 flags 🇨🇳🇬🇧",
    "combining: e\u{301} vs é, Å vs A\u{30a}, 한국어, עברית, العربية",
    "mixed 中文 and English, tabs\tand  double  spaces, 零宽\u{200b}空格\u{feff}",
    "",
];

fn char_vocab(text: &str) -> Vocab {
    Vocab::build(text, &VocabOptions::default()).unwrap()
}

fn word_vocab(text: &str, segmenter: Segmenter) -> Vocab {
    let opts = VocabOptions {
        level: Level::Word,
        segmenter,
        ..Default::default()
    };
    Vocab::build(text, &opts).unwrap()
}

#[test]
fn char_level_round_trips_every_sample_exactly() {
    let all: String = SAMPLES.concat();
    let v = char_vocab(&all);
    for s in SAMPLES {
        let ids = v.encode(s).unwrap();
        assert_eq!(
            ids.len(),
            s.chars().count(),
            "one token per scalar value: {s:?}"
        );
        assert_eq!(v.decode(&ids), *s, "round trip of {s:?}");
    }
}

#[test]
fn nfc_is_applied_only_when_asked() {
    let decomposed = "e\u{301}x"; // e + combining acute, x
    let raw = char_vocab(decomposed);
    assert_eq!(raw.len(), 3);
    assert_eq!(raw.decode(&raw.encode(decomposed).unwrap()), decomposed);
    let nfc = Vocab::build(
        decomposed,
        &VocabOptions {
            nfc: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(nfc.tokens(), &["x", "é"]);
    assert_eq!(nfc.encode(decomposed).unwrap().len(), 2);
    assert_eq!(nfc.decode(&nfc.encode(decomposed).unwrap()), "\u{e9}x");
}

#[test]
fn unknown_characters_are_named_or_mapped_to_unk() {
    let v = char_vocab("天空飞过");
    let err = v.encode("天空飞过一只").unwrap_err().to_string();
    assert!(
        err.contains("\"一\"") && err.contains("U+4E00") && err.contains("character 5"),
        "{err}"
    );
    let capped = Vocab::build(
        "aaabbcd",
        &VocabOptions {
            max_vocab: Some(3),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(capped.tokens(), &[UNK, "a", "b"]);
    assert_eq!(capped.encode("abcz").unwrap(), vec![1, 2, 0, 0]);
    let min = Vocab::build(
        "aaabbc",
        &VocabOptions {
            min_count: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(min.tokens(), &[UNK, "a", "b"]);
}

#[test]
fn word_level_splits_words_punctuation_and_han_and_marks_newlines() {
    let text = "The bird flies, the dragonfly flies.\n小鸟会飞。\nThe <unk> word\n";
    let v = word_vocab(text, Segmenter::Words);
    assert_eq!(v.token(0), UNK);
    assert_eq!(v.token(1), EOS);
    let ids = v.encode("the bird flies.\n小鸟会飞。").unwrap();
    let toks: Vec<&str> = ids.iter().map(|&i| v.token(i)).collect();
    assert_eq!(
        toks,
        ["the", "bird", "flies", ".", EOS, "小", "鸟", "会", "飞", "。"]
    );
    // A literal <unk> in the text (as WikiText has) is the unknown token, and so is a new word.
    let ids = v.encode("The <unk> zebra\n").unwrap();
    assert_eq!(ids[1], 0);
    assert_eq!(ids[2], 0);
    assert_eq!(*ids.last().unwrap(), 1);
    assert_eq!(
        v.decode(&v.encode("The bird flies.\n").unwrap()),
        "The bird flies.\n"
    );
    // Chinese is written without spaces between words.
    assert_eq!(v.decode(&v.encode("小鸟会飞。").unwrap()), "小鸟会飞。");
}

const LEVELS: [(Level, Segmenter); 4] = [
    (Level::Char, Segmenter::Words),
    (Level::Word, Segmenter::Words),
    (Level::Word, Segmenter::Jieba),
    (Level::Word, Segmenter::Spaces),
];

/// What a user of tokenizer.json does first for a jieba vocabulary: cut Chinese with jieba,
/// words separated by spaces (Python: `" ".join(jieba.cut(run))`).
fn presegment(segmenter: Segmenter, line: &str) -> String {
    if segmenter == Segmenter::Jieba {
        elman::vocab::segment_han(line).0
    } else {
        line.to_string()
    }
}

#[test]
fn jieba_cuts_chinese_into_words_and_round_trips() {
    let text =
        "天空飞过一只小鸟，也可能是一只蜻蜓。\n小鸟在树上，孩子在河边。The bird flew over 天空.\n";
    let v = Vocab::build(
        text,
        &VocabOptions {
            level: Level::Word,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        v.segmenter,
        Segmenter::Jieba,
        "auto picks jieba for Chinese"
    );
    let (_, spans) = v.encode_spans(text).unwrap();
    let chars: Vec<char> = text.chars().collect();
    let words: Vec<String> = spans
        .iter()
        .map(|s| chars[s.start..s.end].iter().collect())
        .collect();
    let first: Vec<&str> = words.iter().take(11).map(String::as_str).collect();
    assert_eq!(
        first,
        [
            "天空", "飞过", "一只", "小鸟", "，", "也", "可能", "是", "一只", "蜻蜓", "。"
        ]
    );
    for sp in &spans {
        assert_eq!(v.token(sp.id), {
            let w: String = chars[sp.start..sp.end].iter().collect();
            if w == "\n" {
                EOS.to_string()
            } else {
                w
            }
        });
    }
    // Every word is in the vocabulary, so decoding gives the text back (Chinese unspaced,
    // English spaced, the full stop glued to the Chinese word before it).
    let ids = v.encode(text).unwrap();
    assert!(!ids.contains(&0), "no <unk>");
    assert_eq!(
        v.decode(&ids),
        "天空飞过一只小鸟，也可能是一只蜻蜓。\n小鸟在树上，孩子在河边。The bird flew over 天空.\n"
    );
    // Prompts go through the same cut; a word never seen is <unk>, not an error.
    let ids = v.encode("一只蜻蜓飞过河边").unwrap();
    let toks: Vec<&str> = ids.iter().map(|&i| v.token(i)).collect();
    assert_eq!(toks, ["一只", "蜻蜓", "飞过", "河边"]);
    let ids = v.encode("一只熊猫").unwrap();
    assert_eq!(v.token(ids[0]), "一只");
    assert_eq!(ids[1..], [0], "熊猫 is unknown: <unk>");
    // Segmented and plain text of the same words agree: spaces are not words.
    assert_eq!(
        v.encode("天空 飞过").unwrap(),
        v.encode("天空飞过").unwrap()
    );
}

/// Text written the usual way: punctuation against the word before it, quotes and brackets
/// against what they enclose, contractions and compounds in one piece, Chinese unspaced.
const WRITTEN: &[&str] = &[
    "\"Hello, world!\" she said (quietly), and left.",
    "I'll go; don't wait—it's well-known: 5% of it... and/or more?",
    "'Tis the king's own [they say], o'er the hills.",
    "The boys' toys, 'no' he said; I'd go at ten o'clock, and we're off.",
    "Away, and 'tis done; 'twas he that took 'em, the players' own.",
    "'Come,' quoth he, 'the night is old.' 'Tis late; 'twas ever so.",
    "He said “yes” and ‘no’; she said \"maybe\" twice.",
    "他说：“你好。”然后走了（很快）。Then he said \"bye\".",
];

#[test]
fn word_level_decoding_writes_punctuation_the_way_text_does() {
    for segmenter in [Segmenter::Words, Segmenter::Jieba] {
        let text: String = WRITTEN.iter().map(|l| format!("{l}\n")).collect();
        let v = Vocab::build(
            &text,
            &VocabOptions {
                level: Level::Word,
                segmenter,
                ..Default::default()
            },
        )
        .unwrap();
        for line in WRITTEN {
            let ids = v.encode(&format!("{line}\n")).unwrap();
            assert!(!ids.contains(&0), "{line:?}: no <unk>");
            assert_eq!(v.decode(&ids), format!("{line}\n"), "{segmenter}");
            // Streaming after a prompt (sample, repl) writes the same text, wherever the prompt
            // ends: the detokenizer reads the prompt's last word and its open quotes.
            // (Except right after an apostrophe: a prompt is text already shown, and one ending
            // in `and'` has the apostrophe glued, where the whole line waits and writes `and 'tis`.)
            for k in (1..ids.len()).filter(|&k| !matches!(v.token(ids[k - 1]), "'" | "’")) {
                let prompt = v.decode(&ids[..k]);
                let mut d = elman::vocab::detok::Detokenizer::new(&prompt);
                let mut rest: String = ids[k..].iter().map(|&i| d.piece(&v, i)).collect();
                rest.push_str(&d.finish(&v));
                assert_eq!(
                    format!("{prompt}{rest}"),
                    format!("{line}\n"),
                    "prompt {prompt:?}"
                );
            }
        }
        // An apostrophe after the last word is held back until the end, then glued to it.
        let ids = v.encode("the boys'").unwrap();
        assert_eq!(v.decode(&ids), "the boys'");
    }
}

#[test]
fn spaces_segmenter_follows_wikitext() {
    let text = " = Valkyria Chronicles = \n Senjō no Valkyria 3 : <unk> Chronicles @-@ 1\n";
    let v = Vocab::build(
        text,
        &VocabOptions {
            level: Level::Word,
            segmenter: Segmenter::Spaces,
            ..Default::default()
        },
    )
    .unwrap();
    let ids = v.encode(text).unwrap();
    let toks: Vec<&str> = ids.iter().map(|&i| v.token(i)).collect();
    assert_eq!(
        toks,
        [
            "=",
            "Valkyria",
            "Chronicles",
            "=",
            EOS,
            "Senjō",
            "no",
            "Valkyria",
            "3",
            ":",
            UNK,
            "Chronicles",
            "@-@",
            "1",
            EOS
        ]
    );
    // As word_language_model counts: line.split() + ['<eos>'].
    let split: usize = text.lines().map(|l| l.split_whitespace().count() + 1).sum();
    assert_eq!(ids.len(), split);
}

#[test]
fn tokenizer_json_reloads_with_the_same_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let all: String = SAMPLES.concat();
    for (level, segmenter) in LEVELS {
        let v = Vocab::build(
            &all,
            &VocabOptions {
                level,
                segmenter,
                ..Default::default()
            },
        )
        .unwrap();
        let path = tmp.path().join(format!("{level}-{segmenter}.json"));
        std::fs::write(&path, v.to_tokenizer_json().unwrap()).unwrap();
        let back = Vocab::from_tokenizer_json(&path, level, false, v.segmenter).unwrap();
        assert_eq!(back.tokens(), v.tokens());
        // The HF tokenizer itself (not our fast path) gives the same ids.
        let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
        for s in SAMPLES.iter().filter(|s| !s.is_empty()) {
            let ours = v.encode(s).unwrap();
            let theirs: Vec<u32> = if level == Level::Char {
                hf.encode(*s, false).unwrap().get_ids().to_vec()
            } else {
                // jieba's words go in separated by spaces: the documented contract.
                s.split_inclusive('\n')
                    .map(|l| presegment(segmenter, l))
                    .flat_map(|l| hf.encode(l, false).unwrap().get_ids().to_vec())
                    .collect()
            };
            assert_eq!(ours, theirs, "{level} ids of {s:?}");
            if level == Level::Char {
                assert_eq!(hf.decode(&ours, false).unwrap(), *s, "HF decode of {s:?}");
            }
        }
    }
}

/// The Python `tokenizers` package loads our tokenizer.json and gives the same ids. Ignored unless
/// asked for (`cargo test -- --ignored`; CI installs the package and runs it), and then it fails
/// if the package is missing.
#[test]
#[ignore = "needs python3 with the tokenizers package (cargo test -- --ignored)"]
fn python_tokenizers_gives_the_same_ids() {
    let have = Command::new("python3")
        .args(["-c", "import tokenizers"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        have,
        "python3 with the tokenizers package is required (pip install tokenizers)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let all: String = SAMPLES.concat();
    for (level, segmenter) in LEVELS {
        let v = Vocab::build(
            &all,
            &VocabOptions {
                level,
                segmenter,
                ..Default::default()
            },
        )
        .unwrap();
        let tok = tmp.path().join("tokenizer.json");
        std::fs::write(&tok, v.to_tokenizer_json().unwrap()).unwrap();
        for (i, s) in SAMPLES.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let txt = tmp.path().join(format!("s{i}.txt"));
            let given: String = s
                .split_inclusive('\n')
                .map(|l| presegment(segmenter, l))
                .collect();
            std::fs::write(&txt, given).unwrap();
            let script = r#"
import sys
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8", newline="").read()
parts = text.split("\n")
lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
ids = []
for line in lines if sys.argv[3] == "word" else [text]:
    ids += t.encode(line, add_special_tokens=False).ids
print(" ".join(map(str, ids)))
"#;
            let out = Command::new("python3")
                .args(["-c", script])
                .arg(&tok)
                .arg(&txt)
                .arg(level.to_string())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let theirs: Vec<u32> = String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(
                v.encode(s).unwrap(),
                theirs,
                "{level} ids of {s:?} in Python"
            );
        }
    }
}

/// Pieces of text for the word-level property test: every kind of character the cut treats apart
/// (whitespace of several kinds, ASCII and CJK punctuation, Han inside and outside the BMP, the
/// special tokens whole and broken, marks, invisible characters, other scripts).
const PIECES: &[&str] = &[
    "a", "bc", "Z", "7", "é", "e\u{301}", "한", "ا", "😀", " ", "  ", "\t", "\r", "\n", "\r\n",
    "\u{a0}", "\u{3000}", "\u{85}", "\u{2028}", "\u{200b}", "\u{feff}", ",", ".", "'", "\"", "<",
    ">", "-", "_", "$", "+", "~", "<eos>", "<unk>", "<eo", "s>", "<unk", "中", "国", "天空",
    "飞过", "〇", "々", "𠀀", "𪜀", "。", "，", "“", "”", "（", "…", "—", "·",
];

fn text_of(picks: &[usize]) -> String {
    picks.iter().map(|&i| PIECES[i % PIECES.len()]).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 96, ..Default::default() })]

    /// The written-out word cut (`src/words.rs`) against the tokenizer itself: the same
    /// vocabulary from the same counts, and the same ids for a text with words it never saw.
    #[test]
    fn the_written_out_word_cut_equals_the_tokenizers(
        train in proptest::collection::vec(0usize..1000, 1..80),
        other in proptest::collection::vec(0usize..1000, 0..80),
        min_count in 1u64..3,
        cap in proptest::option::of(3usize..12),
    ) {
        let (train, other) = (text_of(&train), text_of(&other));
        for segmenter in [Segmenter::Words, Segmenter::Jieba, Segmenter::Spaces] {
            let opts = VocabOptions {
                level: Level::Word,
                segmenter,
                min_count,
                max_vocab: cap,
                ..Default::default()
            };
            let lines = || train.split_inclusive('\n');
            let reference = Vocab::build_word_lines_reference(lines(), &opts, segmenter);
            let fast = Vocab::build_word_lines(lines(), &opts, segmenter);
            let (reference, fast) = match (reference, fast) {
                (Ok(r), Ok(f)) => (r, f),
                (Err(_), Err(_)) => continue,
                (r, f) => panic!("{segmenter}: {:?} vs {:?}", r.map(|v| v.len()), f.map(|v| v.len())),
            };
            proptest::prop_assert_eq!(fast.tokens(), reference.tokens(), "{} on {:?}", segmenter, train);
            for text in [&train, &other] {
                let want = fast.encode(text).unwrap();
                proptest::prop_assert_eq!(&fast.encode_bulk_reference(text).unwrap(), &want);
                proptest::prop_assert_eq!(&fast.encode_bulk(text).unwrap(), &want, "{} on {:?}", segmenter, text);
            }
        }
    }
}

#[test]
fn only_tokenizers_that_cut_like_elmans_are_cut_the_fast_way() {
    // A vocabulary saved and read back keeps the written-out cut; one whose tokenizer.json cuts
    // otherwise (here: its punctuation split removed by hand) goes through that tokenizer, so
    // corpora and prompts are still cut alike.
    let tmp = tempfile::tempdir().unwrap();
    let text = "Hello, world. 天空飞过一只小鸟。\n";
    for (segmenter, nfc) in [
        (Segmenter::Words, false),
        (Segmenter::Jieba, false),
        (Segmenter::Spaces, false),
        (Segmenter::Words, true),
    ] {
        let opts = VocabOptions {
            level: Level::Word,
            segmenter,
            nfc,
            ..Default::default()
        };
        let v = Vocab::build(text, &opts).unwrap();
        assert_eq!(v.cuts_natively(), !nfc);
        let path = tmp.path().join("tokenizer.json");
        std::fs::write(&path, v.to_tokenizer_json().unwrap()).unwrap();
        let back = Vocab::from_tokenizer_json(&path, Level::Word, nfc, segmenter).unwrap();
        assert_eq!(back.cuts_natively(), !nfc, "{segmenter} nfc={nfc}");
    }
    let v = word_vocab(text, Segmenter::Words);
    let mut json: serde_json::Value =
        serde_json::from_str(&v.to_tokenizer_json().unwrap()).unwrap();
    json["pre_tokenizer"] = serde_json::json!({"type": "WhitespaceSplit"});
    let path = tmp.path().join("edited.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let edited = Vocab::from_tokenizer_json(&path, Level::Word, false, Segmenter::Words).unwrap();
    assert!(!edited.cuts_natively());
    let ids = edited.encode_bulk("Hello, world.\n").unwrap();
    assert_eq!(ids, edited.encode("Hello, world.\n").unwrap());
    assert_eq!(ids.len(), 3, "Hello, / world. / <eos>: {ids:?}");
}
