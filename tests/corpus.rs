//! The corpus reader: streamed loading equals reading into memory at every level, long lines are
//! cut at whitespace, a file that changes while read is refused, an unknown character is located.

mod common;
use common::*;
use std::path::PathBuf;

/// A corpus still being written (appended to while elman reads it) is refused, not half-read.
#[test]
fn a_corpus_that_changes_while_read_is_refused() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    let path = d.join("growing.txt");
    // Large enough that reading it takes a while.
    std::fs::write(
        &path,
        "天空中飞过一只小鸟。A bird flew by.\n".repeat(1_500_000),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                f.write_all(b"more text\n").unwrap();
                f.flush().unwrap();
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    fails_with(
        elman(&d).args(["train", "growing.txt", "--steps", "1", "--hidden", "8"]),
        &["growing.txt", "changed while it was being read"],
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
}

/// The streamed reader (two passes, 1 MiB reads) sees exactly the text the in-memory reader sees,
/// characters cut by read boundaries included, and reports bad bytes past the first MiB exactly.
#[test]
fn streamed_reading_equals_reading_into_memory() {
    use elman::vocab::{Vocab, VocabOptions};
    let tmp = tempfile::tempdir().unwrap();
    // 3- and 4-byte characters at every alignment across several 1 MiB boundaries.
    let unit = "天空飞过一只小鸟🙂ab\n";
    let text = format!("\u{feff}{}", unit.repeat(3 * (1 << 20) / unit.len() + 7));
    let f = tmp.path().join("big.txt");
    std::fs::write(&f, &text).unwrap();
    let files = vec![f.clone()];
    let scan = elman::corpus::scan(&files, false).unwrap();
    let in_memory = elman::corpus::Corpus::read(&files).unwrap();
    assert_eq!(scan.sha256, in_memory.sha256);
    assert_eq!(scan.chars, in_memory.text.chars().count());
    assert!(
        !in_memory.text.starts_with('\u{feff}'),
        "the byte-order mark is dropped"
    );
    let vocab = Vocab::from_char_counts(scan.counts.clone(), &VocabOptions::default()).unwrap();
    let (streamed, cut) =
        elman::corpus::encode_streamed(&files, &vocab, scan.chars, &scan.sha256, None).unwrap();
    assert_eq!(cut, (streamed.len(), scan.chars));
    assert_eq!(streamed, vocab.encode(&in_memory.text).unwrap());
    // A bad byte 2.5 MiB in, at the start of a character: its exact offset.
    let mut bytes = text.into_bytes();
    let mut at = (5 << 19) + 1;
    while bytes[at] & 0xC0 == 0x80 {
        at += 1;
    }
    bytes[at] = 0xFF;
    std::fs::write(&f, &bytes).unwrap();
    let err = elman::corpus::scan(&files, false).unwrap_err().to_string();
    assert!(err.contains(&format!("byte offset {at}")), "{err}");
}

/// What training's streamed loader must equal: the text read into memory, the vocabulary built on
/// it (on training + validation text joined by a newline with `--val`), split by characters and
/// encoded side by side. Returns (vocabulary tokens, ids, cut, val_chars, chars).
fn load_in_memory(
    files: &[PathBuf],
    val_files: &[PathBuf],
    opts: &elman::vocab::VocabOptions,
    val_fraction: f64,
) -> (Vec<String>, Vec<u32>, usize, usize, usize) {
    use elman::corpus::{split_text, Corpus};
    use elman::vocab::Vocab;
    let train = Corpus::read(files).unwrap();
    if val_files.is_empty() {
        let vocab = Vocab::build(&train.text, opts).unwrap();
        let (a, b) = split_text(&train.text, val_fraction, opts.nfc);
        let mut ids = vocab.encode(a).unwrap();
        let cut = ids.len();
        ids.extend(vocab.encode(b).unwrap());
        let chars = train.text.chars().count();
        return (vocab.tokens().to_vec(), ids, cut, b.chars().count(), chars);
    }
    let val = Corpus::read(val_files).unwrap();
    let mut both = train.text.clone();
    if !both.ends_with('\n') {
        both.push('\n');
    }
    both.push_str(&val.text);
    let vocab = Vocab::build(&both, opts).unwrap();
    let mut ids = vocab.encode(&train.text).unwrap();
    let cut = ids.len();
    ids.extend(vocab.encode(&val.text).unwrap());
    let val_chars = val.text.chars().count();
    let chars = train.text.chars().count() + val_chars;
    (vocab.tokens().to_vec(), ids, cut, val_chars, chars)
}

/// ~2.8 MB of words: lines of every length, then one of 2.4 MB (cut at whitespace), no final
/// newline.
fn big_word_text() -> String {
    let words = [
        "the",
        "sky",
        "bird",
        "flew",
        "over",
        "a",
        "dragonfly",
        "naïve",
        "café",
        "，",
        "🙂",
        "x",
    ];
    let mut big = String::new();
    let mut i = 0usize;
    while big.len() < 400_000 {
        for _ in 0..(i % 23) {
            big.push_str(words[(i * 7 + big.len()) % words.len()]);
            big.push(' ');
            i += 1;
        }
        big.push('\n');
        i += 1;
    }
    for k in 0..450_000 {
        big.push_str(words[k % words.len()]);
        big.push(' ');
    }
    big.push_str("\nend of the first file, no newline");
    big
}

/// `corpus::load` (streamed) gives the vocabulary, ids and split that reading the text into
/// memory gives, with and without a vocabulary to reuse, and through the token cache (written,
/// then read back, by a new run and by one given the vocabulary as `--resume` is).
fn streamed_equals_in_memory(
    what: &str,
    files: &[PathBuf],
    val_files: &[PathBuf],
    opts: &elman::vocab::VocabOptions,
    frac: f64,
) {
    use elman::corpus::{load, CacheDir};
    let ids_of = |l: &elman::corpus::Loaded| l.tokens.to_vec(0..l.tokens.len());
    let got = load(files, val_files, opts, None, frac, false, None, None).unwrap();
    let (tokens, ids, cut, val_chars, chars) = load_in_memory(files, val_files, opts, frac);
    assert_eq!(got.vocab.tokens(), &tokens[..], "{what}: vocabulary");
    assert!(ids_of(&got) == ids, "{what}: ids differ");
    assert!(!got.tokens.is_mapped() && got.cache.is_none());
    assert_eq!(
        (got.cut, got.val_chars, got.chars),
        (cut, val_chars, chars),
        "{what}: split"
    );
    // And with the vocabulary given (resuming), the same ids.
    let again = load(
        files,
        val_files,
        opts,
        Some(&got.vocab),
        frac,
        false,
        None,
        None,
    )
    .unwrap();
    assert!(
        ids_of(&again) == ids && again.cut == cut,
        "{what}: existing vocabulary"
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheDir {
        dir: dir.path().join("cache"),
        always: true,
    };
    for (existing, did) in [
        (None, "token cache: wrote"),
        (None, "token cache: reused"),
        (Some(&got.vocab), "token cache: reused"),
    ] {
        let c = load(
            files,
            val_files,
            opts,
            existing,
            frac,
            false,
            None,
            Some(&cache),
        )
        .unwrap();
        let note = c.cache.clone().unwrap();
        assert!(note.starts_with(did), "{what}: {note}");
        assert!(c.tokens.is_mapped());
        assert_eq!(c.vocab.tokens(), &tokens[..], "{what}: cached vocabulary");
        assert!(ids_of(&c) == ids, "{what}: cached ids differ");
        assert_eq!(
            (c.cut, c.val_chars, c.chars, c.sha256.clone()),
            (cut, val_chars, chars, got.sha256.clone()),
            "{what}: cached split"
        );
    }
}

/// Training never holds the text (word level and `--nfc` included) and still gets exactly the
/// vocabulary and ids that reading it into memory gives: lines cut by 1 MiB reads, a line longer
/// than a read, a file without a final newline running into the next, the validation cut inside a
/// line (and inside a combining sequence), separate validation files, Chinese cut by jieba.
#[test]
fn streamed_loading_equals_reading_into_memory_at_every_level() {
    use elman::vocab::{Level, Segmenter, VocabOptions};
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let big = write("big.txt", &big_word_text());
    let second = write("second.txt", " continues here\nthe bird flew\n");
    // Decomposed and composed accents, so NFC changes the text.
    let accents = "cafe\u{301} café e\u{301}\u{302} Å A\u{30a}\n".repeat(40);
    let accents = write("accents.txt", &accents);
    let zh = write(
        "zh.txt",
        &"天空飞过一只小鸟，它飞得很高。\n我们在河边看见一只蜻蜓。\n".repeat(30),
    );
    let val = write("val.txt", "the sky over a café\nunseen words here\n");

    let word = VocabOptions {
        level: Level::Word,
        segmenter: Segmenter::Auto,
        ..VocabOptions::default()
    };
    let capped = VocabOptions {
        max_vocab: Some(9),
        min_count: 2,
        ..word.clone()
    };
    let nfc = VocabOptions {
        nfc: true,
        ..VocabOptions::default()
    };
    let nfc_words = VocabOptions {
        nfc: true,
        ..word.clone()
    };
    let chars = VocabOptions::default();
    // 0.02 of accents.txt's characters ends inside "e\u{301}": checked below.
    type Case<'a> = (&'a str, Vec<PathBuf>, Vec<PathBuf>, &'a VocabOptions, f64);
    let cases: Vec<Case> = vec![
        (
            "words, two files",
            vec![big.clone(), second.clone()],
            vec![],
            &word,
            0.1,
        ),
        ("words, capped", vec![big.clone()], vec![], &capped, 0.37),
        (
            "words, --val",
            vec![big.clone()],
            vec![val.clone()],
            &word,
            0.1,
        ),
        ("jieba", vec![zh.clone()], vec![], &word, 0.1),
        (
            "jieba, --val",
            vec![zh.clone()],
            vec![val.clone()],
            &word,
            0.1,
        ),
        ("nfc chars", vec![accents.clone()], vec![], &nfc, 0.02),
        (
            "nfc chars, --val",
            vec![accents.clone()],
            vec![val.clone()],
            &nfc,
            0.1,
        ),
        (
            "nfc words",
            vec![accents.clone(), second.clone()],
            vec![],
            &nfc_words,
            0.3,
        ),
        ("plain chars", vec![big.clone()], vec![], &chars, 0.1),
    ];
    for (what, files, val_files, opts, frac) in cases {
        streamed_equals_in_memory(what, &files, &val_files, opts, frac);
    }
    // The NFC case really cuts inside a combining sequence, and jieba really ran.
    let text = std::fs::read_to_string(&accents).unwrap();
    let (a, _) = elman::corpus::split_text(&text, 0.02, false);
    assert!(a.ends_with('e'), "{a:?}");
    let (a, b) = elman::corpus::split_text(&text, 0.02, true);
    assert!(a.ends_with("e\u{301}") && b.starts_with(' '), "{a:?}");
    // Wherever the fraction puts the cut (accents, and Hangul in NFD: jamo that NFC composes are
    // all starters), the sides normalise apart to what the whole does.
    use unicode_normalization::UnicodeNormalization;
    let line = "cafe\u{301} e\u{301}\u{302} \u{1112}\u{1161}\u{11ab}\u{1100}\u{116e}\u{11a8}\u{110b}\u{1165}\n";
    let n = line.chars().count();
    let whole: String = line.nfc().collect();
    let mut moved = 0;
    for k in 0..=n {
        let (a, b) = elman::corpus::split_text(line, k as f64 / n as f64, true);
        let apart: String = a.nfc().chain(b.nfc()).collect();
        assert_eq!(apart, whole, "cut {k}: {a:?} | {b:?}");
        moved += usize::from(b.chars().count() != k);
    }
    assert!(moved >= 6, "only {moved} cuts moved");
    let zh_vocab = elman::corpus::load(
        std::slice::from_ref(&zh),
        &[],
        &word,
        None,
        0.1,
        false,
        None,
        None,
    )
    .unwrap()
    .vocab;
    assert_eq!(zh_vocab.segmenter, Segmenter::Jieba);
    assert!(zh_vocab.id("小鸟").is_some());
}

/// Streamed blocks stay small whatever the lines: whole lines, a long line cut after whitespace
/// (never inside a word, so word-level tokens and NFC are unchanged), a long line without any
/// whitespace held whole only where cuts must be at lines, cut anywhere at the plain char level.
#[test]
fn streamed_blocks_cut_long_lines_at_whitespace() {
    use elman::corpus::{stream_lines, Cuts, LONG_LINE};
    let tmp = tempfile::tempdir().unwrap();
    let spaced = "天空 飞过 一只 小鸟 and a dragonfly\u{3000}".repeat(200_000); // ~7 MB, one line
    let solid = "天空飞过一只小鸟".repeat(120_000); // ~2.9 MB, no whitespace
    let text = format!("short\n{spaced}\n{solid}\nend");
    let f = tmp.path().join("long.txt");
    std::fs::write(&f, &text).unwrap();
    let blocks = |cuts: Cuts| {
        let mut out: Vec<String> = Vec::new();
        stream_lines(std::slice::from_ref(&f), cuts, |b| {
            out.push(b.to_string());
            Ok(())
        })
        .unwrap();
        out
    };
    let lines = blocks(Cuts::Lines);
    assert_eq!(lines.concat(), text);
    let mut whole_solid = false;
    for b in &lines[..lines.len() - 1] {
        let last = b.chars().next_back().unwrap();
        assert!(
            last == '\n' || last.is_whitespace(),
            "{:?}",
            &b[b.len() - 12..]
        );
        if b.contains(&solid) {
            whole_solid = true;
        } else {
            assert!(b.len() <= 3 * LONG_LINE, "a block of {} bytes", b.len());
        }
    }
    assert!(
        whole_solid,
        "a line without whitespace is never cut at Cuts::Lines"
    );
    assert!(
        lines.len() >= 6,
        "the long line was cut: {} blocks",
        lines.len()
    );
    let any = blocks(Cuts::Anywhere);
    assert_eq!(any.concat(), text);
    assert!(any.iter().all(|b| b.len() <= LONG_LINE + 4));
}

/// A character the vocabulary cannot encode (char level, no `<unk>`) is reported with its file,
/// line and column, also when it sits deep in a large file read in blocks.
#[test]
fn an_unknown_character_is_located_by_file_line_and_column() {
    use elman::vocab::{Vocab, VocabOptions};
    let tmp = tempfile::tempdir().unwrap();
    let line = "天空飞过一只小鸟 and a dragonfly\n";
    let known = tmp.path().join("known.txt");
    std::fs::write(&known, line).unwrap();
    let vocab = Vocab::build(line, &VocabOptions::default()).unwrap();
    assert!(vocab.unk.is_none());
    let n = 3 * (1 << 20) / line.len();
    let big = tmp.path().join("big.txt");
    std::fs::write(&big, format!("{}天空飞过一只熊 x\n{line}", line.repeat(n))).unwrap();
    let scan = elman::corpus::scan(&[known.clone(), big.clone()], false).unwrap();
    let err = elman::corpus::encode_streamed(
        &[known.clone(), big.clone()],
        &vocab,
        scan.chars,
        &scan.sha256,
        None,
    )
    .unwrap_err()
    .to_string();
    let want = format!("{}: line {}, column 7: \"熊\"", big.display(), n + 1);
    assert!(err.contains(&want), "{err}\nwanted {want}");
    assert!(err.contains("not in the model's vocabulary"), "{err}");
}

/// The token cache is keyed by the text and the settings: another text, another split or another
/// vocabulary setting gets a file of its own; a damaged, cut-short or foreign file is found on
/// opening and built again, never trusted; nothing but whole files is ever left in the folder.
#[test]
fn the_token_cache_is_rebuilt_when_stale_or_damaged() {
    use elman::corpus::{load, CacheDir, Loaded};
    use elman::vocab::VocabOptions;
    let tmp = tempfile::tempdir().unwrap();
    let text = "天空飞过一只小鸟。the bird flies over the sky!\n".repeat(200);
    let f = tmp.path().join("a.txt");
    std::fs::write(&f, &text).unwrap();
    let cache = CacheDir {
        dir: tmp.path().join("cache"),
        always: true,
    };
    let opts = VocabOptions::default();
    let run = |opts: &VocabOptions, frac: f64| -> Loaded {
        load(
            std::slice::from_ref(&f),
            &[],
            opts,
            None,
            frac,
            false,
            None,
            Some(&cache),
        )
        .unwrap()
    };
    let note = |l: &Loaded| l.cache.clone().unwrap();
    let token_files = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&cache.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "tokens"))
            .collect();
        v.sort();
        v
    };
    let first = run(&opts, 0.1);
    assert!(
        note(&first).starts_with("token cache: wrote"),
        "{}",
        note(&first)
    );
    // One byte per token: this alphabet is under 256 characters.
    assert!(
        note(&first).contains("1 byte per token"),
        "{}",
        note(&first)
    );
    let ids = first.tokens.to_vec(0..first.tokens.len());
    drop(first);
    assert!(note(&run(&opts, 0.1)).starts_with("token cache: reused"));

    // Other settings: a file of their own.
    assert!(note(&run(&opts, 0.2)).starts_with("token cache: wrote"));
    let min2 = VocabOptions {
        min_count: 500,
        ..VocabOptions::default()
    };
    assert!(note(&run(&min2, 0.1)).starts_with("token cache: wrote"));
    assert_eq!(token_files().len(), 3);

    // Damage: one flipped byte among the ids, a file cut short, a foreign header.
    let path = {
        let l = run(&opts, 0.1);
        let n = note(&l);
        let p = n["token cache: reused ".len()..]
            .split(" (")
            .next()
            .unwrap()
            .to_string();
        PathBuf::from(p)
    };
    let whole = std::fs::read(&path).unwrap();
    let damages: [(&str, Vec<u8>); 3] = [
        ("damaged (its ids do not match their checksum)", {
            let mut b = whole.clone();
            let last = b.len() - 1;
            b[last] ^= 1;
            b
        }),
        (
            "of another length than its header says (cut short, or added to)",
            whole[..whole.len() - 7].to_vec(),
        ),
        ("not a token file", {
            let mut b = whole.clone();
            b[..8].copy_from_slice(b"NOTATOKN");
            b
        }),
    ];
    for (why, bytes) in damages {
        std::fs::write(&path, bytes).unwrap();
        let l = run(&opts, 0.1);
        assert!(note(&l).starts_with("token cache: wrote"), "{}", note(&l));
        assert!(note(&l).contains(why), "{why}: {}", note(&l));
        assert_eq!(l.tokens.to_vec(0..l.tokens.len()), ids);
        assert!(note(&run(&opts, 0.1)).starts_with("token cache: reused"));
    }

    // The text changes: its own file, with its own ids.
    std::fs::write(&f, text.replace("小鸟", "蜻蜓")).unwrap();
    let changed = run(&opts, 0.1);
    assert!(note(&changed).starts_with("token cache: wrote"));
    assert_ne!(changed.tokens.to_vec(0..changed.tokens.len()), ids);
    // Only whole files are left: no temporary one.
    let names: Vec<String> = std::fs::read_dir(&cache.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".tokens") || n.ends_with(".vocab")),
        "{names:?}"
    );
    assert_eq!(token_files().len(), 4);
}
