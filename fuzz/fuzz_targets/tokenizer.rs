//! The vocabulary on arbitrary text: building, encoding and decoding never panic, and the char
//! level round-trips exactly. Arbitrary bytes are also read as a tokenizer.json.
#![no_main]
use elman::vocab::{Level, Vocab, VocabOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(v) = Vocab::build(text, &VocabOptions::default()) {
            assert_eq!(v.decode(&v.encode(text).unwrap()), text);
        }
        let word = VocabOptions {
            level: Level::Word,
            ..Default::default()
        };
        if let Ok(v) = Vocab::build(text, &word) {
            let ids = v.encode(text).unwrap();
            assert!(ids.iter().all(|&i| (i as usize) < v.len()));
            let _ = v.decode(&ids);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tokenizer.json");
    std::fs::write(&p, data).unwrap();
    for level in [Level::Char, Level::Word] {
        if let Ok(v) = Vocab::from_tokenizer_json(&p, level, false, Default::default()) {
            let _ = v.encode("天空飞过一只小鸟 the bird");
        }
    }
});
