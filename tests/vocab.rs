//! The vocabulary: exact round-trips at the char level, word-level splitting, and the saved
//! `tokenizer.json` read back by the Rust and the Python `tokenizers` packages with the same ids.

use elman::vocab::{Level, Vocab, VocabOptions, EOS, UNK};
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
    let v = Vocab::build(
        text,
        &VocabOptions {
            level: Level::Word,
            ..Default::default()
        },
    )
    .unwrap();
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
        "The bird flies .\n"
    );
}

#[test]
fn tokenizer_json_reloads_with_the_same_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let all: String = SAMPLES.concat();
    for level in [Level::Char, Level::Word] {
        let v = Vocab::build(
            &all,
            &VocabOptions {
                level,
                ..Default::default()
            },
        )
        .unwrap();
        let path = tmp.path().join(format!("{level}.json"));
        std::fs::write(&path, v.to_tokenizer_json().unwrap()).unwrap();
        let back = Vocab::from_tokenizer_json(&path, level, false).unwrap();
        assert_eq!(back.tokens(), v.tokens());
        // The HF tokenizer itself (not our fast path) gives the same ids.
        let hf = tokenizers::Tokenizer::from_file(&path).unwrap();
        for s in SAMPLES.iter().filter(|s| !s.is_empty()) {
            let ours = v.encode(s).unwrap();
            let theirs: Vec<u32> = if level == Level::Char {
                hf.encode(*s, false).unwrap().get_ids().to_vec()
            } else {
                s.split_inclusive('\n')
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

/// The Python `tokenizers` package loads our tokenizer.json and gives the same ids. CI installs it
/// (and sets ELMAN_REQUIRE_PYTHON=1 so a missing package fails); elsewhere the test says it skipped.
#[test]
fn python_tokenizers_gives_the_same_ids() {
    let have = Command::new("python3")
        .args(["-c", "import tokenizers"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have {
        assert!(
            std::env::var_os("ELMAN_REQUIRE_PYTHON").is_none(),
            "python3 with the tokenizers package is required (pip install tokenizers)"
        );
        eprintln!("skipped: python3 -m pip install tokenizers to run this test");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let all: String = SAMPLES.concat();
    for level in [Level::Char, Level::Word] {
        let v = Vocab::build(
            &all,
            &VocabOptions {
                level,
                ..Default::default()
            },
        )
        .unwrap();
        let tok = tmp.path().join("tokenizer.json");
        std::fs::write(&tok, v.to_tokenizer_json().unwrap()).unwrap();
        for (i, s) in SAMPLES.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            let txt = tmp.path().join(format!("s{i}.txt"));
            std::fs::write(&txt, s).unwrap();
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
