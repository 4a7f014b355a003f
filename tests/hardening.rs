//! Hostile input and faults: files that are not text, prompts of every kind, damaged checkpoints
//! (property-tested), a full disk and a read-only folder. Nothing may panic or lose a checkpoint.

mod common;
use common::*;

use proptest::prelude::*;
use std::path::{Path, PathBuf};

const TINY: &[&str] = &[
    "--hidden",
    "12",
    "--batch",
    "2",
    "--bptt",
    "8",
    "--eval-every",
    "5",
    "--steps",
    "10",
    "-q",
];

fn tiny_checkpoint(d: &Path, name: &str) -> PathBuf {
    std::fs::write(
        d.join("c.txt"),
        "天空中飞过一只小鸟。A bird flew by.\n".repeat(30),
    )
    .unwrap();
    elman(d)
        .args(["train", "c.txt", "--out", name])
        .args(TINY)
        .assert()
        .success();
    d.join(name)
}

#[cfg(unix)]
#[test]
fn devices_pipes_and_huge_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A FIFO with no writer would block a naive reader for ever; /dev/zero would fill memory.
    let fifo = d.join("pipe.txt");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    fails_with(
        elman(d).args(["train", "pipe.txt"]),
        &["pipe.txt", "not a regular file"],
    );
    fails_with(
        elman(d).args(["train", "/dev/zero"]),
        &["/dev/zero", "not a regular file"],
    );
    // One 600 KB line with no line break at all, at both levels.
    let line: String = "天空中飞过一只小鸟 and a bird flew over the lake, ".repeat(12_000);
    std::fs::write(d.join("line.txt"), &line).unwrap();
    for level in ["char", "word"] {
        elman(d)
            .args(["train", "line.txt", "--level", level, "--out", level])
            .args(TINY)
            .assert()
            .success();
    }
}

#[test]
fn prompts_long_empty_and_strange() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_checkpoint(d, "m");
    // 100,000 characters: too long for one command-line argument (the OS caps one at 128 KiB),
    // so it comes from a file.
    std::fs::write(d.join("long.txt"), "天空中飞过一只小鸟。".repeat(10_000)).unwrap();
    for args in [
        vec!["sample", "-m", "m", "-l", "5", "--seed", "1"],
        vec!["rank", "-m", "m", "-c", "小鸟,鸟"],
        vec!["complete", "-m", "m"],
    ] {
        let out = elman(d)
            .args(&args)
            .args(["--prompt-file", "long.txt"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args[0] != "sample" {
            // (sample echoes its prompt; the tables show only its end)
            assert!(
                out.stdout.len() < 10_000,
                "headings show the prompt's end only"
            );
        }
    }
    // Empty prompt: starts at a line start.
    elman(d)
        .args(["sample", "-m", "m", "-l", "10", "--seed", "1", "-p", ""])
        .assert()
        .success();
    elman(d)
        .args(["complete", "-m", "m", "-p", ""])
        .assert()
        .success();
    // Control characters are named by code point.
    fails_with(
        elman(d).args(["sample", "-m", "m", "-p", "天空\u{7}"]),
        &["U+0007", "character 3"],
    );
    fails_with(
        elman(d).args(["complete", "-m", "m", "-p", "\u{202e}abc"]),
        &["U+202E"],
    );
    // No candidates at all, or only separators.
    fails_with(
        elman(d).args(["rank", "-m", "m", "-p", "天空", "-c", ",，"]),
        &["no candidates"],
    );
    // Nonsense sampling settings.
    fails_with(
        elman(d).args(["sample", "-m", "m", "-t", "-1"]),
        &["--temperature"],
    );
    // --top-k 0 means off, as the repl's :topk 0 does: the same text as no --top-k.
    let sample = |extra: &[&str]| {
        elman(d)
            .args(["sample", "-m", "m", "-p", "天空", "-l", "30", "--seed", "5"])
            .args(extra)
            .output()
            .unwrap()
    };
    let (zero, none) = (sample(&["--top-k", "0"]), sample(&[]));
    assert!(zero.status.success(), "{zero:?}");
    assert_eq!(zero.stdout, none.stdout);
}

#[test]
fn wrong_dtype_and_mismatched_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ck = tiny_checkpoint(d, "m");
    // decoder.bias stored as I64: rejected by name.
    let bytes = std::fs::read(ck.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // A copy of the checkpoint as `name` with decoder.bias rewritten by `edit` (bytes, dtype).
    let with_bias = |name: &str, edit: &dyn Fn(&mut Vec<u8>, &mut safetensors::Dtype)| {
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.data().to_vec(), v.shape().to_vec(), v.dtype()))
            .collect();
        for t in tensors.iter_mut().filter(|t| t.0 == "decoder.bias") {
            edit(&mut t.1, &mut t.3);
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, b, s, dt)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let bad = safetensors::tensor::serialize(views, None).unwrap();
        let wrong = d.join(name);
        std::fs::create_dir(&wrong).unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "metrics.jsonl",
            "state.safetensors",
        ] {
            std::fs::copy(ck.join(f), wrong.join(f)).unwrap();
        }
        std::fs::write(wrong.join("model.safetensors"), bad).unwrap();
    };
    with_bias("dtype", &|b, dt| {
        *b = vec![0u8; b.len() * 2];
        *dt = safetensors::Dtype::I64;
    });
    fails_with(
        elman(d).args(["info", "-m", "dtype"]),
        &["decoder.bias", "I64"],
    );
    // A NaN among the weights (a bit flip in an exponent can make one): refused by name, not
    // turned into NaN scores with a zero exit.
    with_bias("nan", &|b, _| {
        b[8..12].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    fails_with(
        elman(d).args(["eval", "-m", "nan", "c.txt"]),
        &["decoder.bias", "non-finite", "element 2"],
    );
    fails_with(
        elman(d).args(["sample", "-m", "nan", "--length", "5"]),
        &["decoder.bias", "non-finite"],
    );

    // A tokenizer from another model (another vocabulary size).
    std::fs::write(
        d.join("other.txt"),
        "abcdefghijklmnopqrstuvwxyz\n".repeat(40),
    )
    .unwrap();
    elman(d)
        .args(["train", "other.txt", "--out", "other"])
        .args(TINY)
        .assert()
        .success();
    let mixed = d.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "metrics.jsonl",
        "state.safetensors",
    ] {
        std::fs::copy(ck.join(f), mixed.join(f)).unwrap();
    }
    std::fs::copy(d.join("other/tokenizer.json"), mixed.join("tokenizer.json")).unwrap();
    fails_with(
        elman(d).args(["info", "-m", "mixed"]),
        &["tokenizer.json", "config.json says"],
    );
    // A config.json of absurd length is refused before it is read.
    let huge = d.join("hugeconfig");
    std::fs::create_dir(&huge).unwrap();
    std::fs::write(huge.join("config.json"), vec![b' '; 2 << 20]).unwrap();
    fails_with(
        elman(d).args(["info", "-m", "hugeconfig"]),
        &["config.json", "bytes"],
    );
}

/// Runs `f` with a small tmpfs mounted at a fresh folder (the test that uses it is ignored unless
/// asked for: mounting needs root with CAP_SYS_ADMIN). The mount is always removed.
#[cfg(target_os = "linux")]
fn with_tmpfs(size: &str, f: impl FnOnce(&Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    f(&mnt);
}

#[cfg(target_os = "linux")]
#[test]
#[ignore = "needs root with CAP_SYS_ADMIN to mount a tmpfs (cargo test -- --ignored)"]
fn a_full_disk_or_read_only_folder_keeps_the_previous_checkpoint() {
    // Full disk: the first run fits, then a filler leaves too little room for the next save.
    with_tmpfs("2m", |mnt| {
        let ck = tiny_checkpoint(mnt, "k");
        let before = std::fs::read(ck.join("state.safetensors")).unwrap();
        let free = {
            let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
            s.f_bavail as usize * s.f_frsize as usize
        };
        std::fs::write(mnt.join("filler"), vec![0u8; free.saturating_sub(8 * 1024)]).unwrap_or(());
        fails_with(
            elman(mnt).args(["train", "--resume", "k", "--steps", "20", "-q"]),
            &["No space left"],
        );
        assert_eq!(std::fs::read(ck.join("state.safetensors")).unwrap(), before);
        elman(mnt).args(["info", "-m", "k"]).assert().success();
        let names: Vec<String> = std::fs::read_dir(mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains("staging")), "{names:?}");
    });
    // Read-only: remount and resume.
    with_tmpfs("4m", |mnt| {
        let ck = tiny_checkpoint(mnt, "k");
        let before = std::fs::read(ck.join("model.safetensors")).unwrap();
        assert!(std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(mnt)
            .status()
            .unwrap()
            .success());
        fails_with(
            elman(mnt).args(["train", "--resume", "k", "--steps", "20", "-q"]),
            &["Read-only file system"],
        );
        assert_eq!(std::fs::read(ck.join("model.safetensors")).unwrap(), before);
        elman(mnt).args(["info", "-m", "k"]).assert().success();
    });
}

/// A save with no new best weights carries `model.safetensors` over byte for byte; if the file is
/// gone from the folder, the latest weights (`param.*` in the state) take its place under their
/// model names. Both are written tensor by tensor, never serialised whole in memory.
#[test]
fn a_save_without_new_best_weights_keeps_or_restores_the_model_file() {
    use elman::checkpoint::{self, Entry, Snapshot};
    let tmp = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(tmp.path(), "k");
    let config = checkpoint::read_config(&ck).unwrap();
    let tokenizer = std::fs::read_to_string(ck.join("tokenizer.json")).unwrap();
    let metrics = checkpoint::read_metrics(&ck).unwrap();
    let dev = candle_core::Device::Cpu;
    let (state, meta) =
        checkpoint::read_weights(&ck.join("state.safetensors"), &config.model, "param.", &dev)
            .unwrap();
    let mut names: Vec<&String> = state.keys().collect();
    names.sort();
    let moment = vec![0.25f32; 6];
    let mut entries: Vec<(String, Entry)> = names
        .iter()
        .map(|n| ((*n).clone(), Entry::tensor(&state[*n]).unwrap()))
        .collect();
    entries.push(("extra.slice".into(), Entry::F32(&moment, vec![2, 3])));
    let save = || {
        checkpoint::commit(
            &ck,
            &Snapshot {
                config: &config,
                tokenizer_json: &tokenizer,
                best: None,
                state: entries
                    .iter()
                    .map(|(n, e)| (n.clone(), e.share()))
                    .collect(),
                state_meta: meta.clone(),
                metrics: &metrics,
                loss_chart: None,
            },
        )
        .unwrap()
    };
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let model_before = std::fs::read(ck.join("model.safetensors")).unwrap();
    save();
    assert_eq!(
        std::fs::read(ck.join("model.safetensors")).unwrap(),
        model_before
    );
    // The state file reads back as written: every tensor, the borrowed slice and the metadata.
    let (again, meta_again) =
        checkpoint::read_weights(&ck.join("state.safetensors"), &config.model, "param.", &dev)
            .unwrap();
    assert_eq!(meta_again, meta);
    for n in &names {
        let (a, b) = (&state[*n], &again[*n]);
        assert_eq!(a.dims(), b.dims(), "{n}");
        assert_eq!(flat(a), flat(b), "{n}");
    }
    let slice = again["extra.slice"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(
        (again["extra.slice"].dims(), slice),
        (&[2usize, 3][..], moment.clone())
    );
    // Without a model file, the latest weights become it.
    std::fs::remove_file(ck.join("model.safetensors")).unwrap();
    save();
    let (model, _) =
        checkpoint::read_weights(&ck.join("model.safetensors"), &config.model, "", &dev).unwrap();
    assert_eq!(model.len(), config.model.param_shapes().len());
    for (name, _) in config.model.param_shapes() {
        assert_eq!(
            flat(&model[&name]),
            flat(&state[&format!("param.{name}")]),
            "{name}"
        );
    }
    elman(tmp.path())
        .args(["info", "-m", "k"])
        .assert()
        .success();
}

fn load_never_panics(dir: &Path) {
    let r = std::panic::catch_unwind(|| {
        let _ = elman::checkpoint::load(dir, &candle_core::Device::Cpu);
    });
    assert!(r.is_ok(), "loading {} panicked", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any string over its own characters round-trips exactly at the char level.
    #[test]
    fn char_vocab_round_trips_any_string(s in any::<String>()) {
        use elman::vocab::{Vocab, VocabOptions};
        match Vocab::build(&s, &VocabOptions::default()) {
            Ok(v) => prop_assert_eq!(v.decode(&v.encode(&s).unwrap()), s),
            // Fewer than 2 distinct characters: refused with a message, not a panic.
            Err(e) => prop_assert!(s.chars().collect::<std::collections::HashSet<_>>().len() < 2, "{}", e),
        }
    }

    /// Word-level encoding of any text never panics, and unknown words become <unk>.
    #[test]
    fn word_vocab_encodes_any_string(s in any::<String>()) {
        use elman::vocab::{Level, Vocab, VocabOptions};
        let v = Vocab::build("the bird flies over the sky.\n小鸟会飞。\n", &VocabOptions { level: Level::Word, ..Default::default() }).unwrap();
        let ids = v.encode(&s).unwrap();
        prop_assert!(ids.iter().all(|&i| (i as usize) < v.len()));
    }
}

/// Regression (found by the property test below): tokenizers 0.23 panics on a `decoder` section
/// with no valid type. elman reports it as a damaged file instead.
#[test]
fn a_malformed_tokenizer_decoder_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ck = tiny_checkpoint(d, "m");
    let p = ck.join("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["decoder"] = serde_json::json!({"typo": "Fuse"});
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    fails_with(
        elman(d).args(["info", "-m", "m"]),
        &["tokenizer.json", "damaged"],
    );
}

/// Mutated checkpoint files (bytes flipped, cut short, garbage appended) never make the loader panic.
#[test]
fn mutated_checkpoints_never_panic_the_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let ck = tiny_checkpoint(d, "m");
    let files = ["model.safetensors", "config.json", "tokenizer.json"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(ck.join(f)).unwrap())
        .collect();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let strategy = (
        0..files.len(),
        0usize..3,
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 1..16),
    );
    runner
        .run(&strategy, |(fi, how, at, junk)| {
            let work = d.join("mut");
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir(&work).unwrap();
            for (f, bytes) in files.iter().zip(&originals) {
                std::fs::write(work.join(f), bytes).unwrap();
            }
            let mut bytes = originals[fi].clone();
            let pos = (at as usize) % bytes.len().max(1);
            match how {
                0 => {
                    for (k, b) in junk.iter().enumerate() {
                        if let Some(x) = bytes.get_mut(pos + k) {
                            *x ^= b | 1;
                        }
                    }
                }
                1 => bytes.truncate(pos),
                _ => bytes.splice(pos..pos, junk.iter().cloned()).for_each(drop),
            }
            std::fs::write(work.join(files[fi]), &bytes).unwrap();
            load_never_panics(&work);
            Ok(())
        })
        .unwrap();
}

/// Ctrl-C in the repl cancels the generation in progress; the session goes on.
#[cfg(unix)]
#[test]
fn ctrl_c_in_the_repl_cancels_the_generation_only() {
    use std::io::Read;
    use std::io::{BufRead, Write};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Wide enough that 100,000 tokens take a while to generate.
    std::fs::write(
        d.join("c.txt"),
        "天空中飞过一只小鸟。A bird flew by.\n".repeat(30),
    )
    .unwrap();
    elman(d)
        .args([
            "train", "c.txt", "--out", "m", "--hidden", "512", "--batch", "2", "--bptt", "8",
        ])
        .args(["--steps", "2", "--eval-every", "2", "-q"])
        .assert()
        .success();
    let bin = assert_cmd::cargo::cargo_bin("elman");
    let mut child = std::process::Command::new(bin)
        .current_dir(d)
        .args(["repl", "-m", "m", "--seed", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, ":len 100000").unwrap();
    writeln!(stdin, "天空").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "length = 100000");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("next: "), "{line}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    writeln!(stdin, ":show").unwrap();
    writeln!(stdin, ":quit").unwrap();
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "the session goes on and ends normally"
    );
    let cut = rest
        .find(" [cancelled]")
        .expect("the generation was cancelled");
    assert!(rest[..cut].chars().count() < 100_000, "it stopped early");
    assert!(
        rest[cut..].contains("temperature = "),
        "commands still work after the cancel"
    );
}

/// A run killed with SIGKILL at random moments and resumed each time ends bit for bit where an
/// uninterrupted run ends.
#[cfg(unix)]
#[test]
fn resume_after_kill_9_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("c.txt"),
        "天空中飞过一只蜻蜓，路上走过一个人。the bird flies.\n".repeat(200),
    )
    .unwrap();
    let flags = [
        "--hidden",
        "24",
        "--batch",
        "4",
        "--bptt",
        "16",
        "--eval-every",
        "5",
        "-q",
    ];
    elman(d)
        .args(["train", "c.txt", "--out", "whole", "--steps", "150"])
        .args(flags)
        .assert()
        .success();
    // The same run, killed again and again: first once it has saved a checkpoint (the learning
    // rate falls over the 150 steps, so the run must know its budget from the start).
    let bin = assert_cmd::cargo::cargo_bin("elman");
    let mut first = std::process::Command::new(&bin)
        .current_dir(d)
        .args([
            "--threads",
            "1",
            "train",
            "c.txt",
            "--out",
            "crashy",
            "--steps",
            "150",
        ])
        .args(flags)
        .spawn()
        .unwrap();
    while !d.join("crashy/config.json").exists() {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the run ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = first.kill();
    first.wait().unwrap();
    // Resumed with the run's own budget repeated, or with none given (the run finishes its own).
    for i in 0..6u64 {
        let budget: &[&str] = if i % 2 == 0 { &["--steps", "150"] } else { &[] };
        let mut child = std::process::Command::new(&bin)
            .current_dir(d)
            .args(["--threads", "1", "train", "--resume", "crashy", "-q"])
            .args(budget)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(40 + 37 * i));
        let _ = child.kill();
        child.wait().unwrap();
    }
    elman(d)
        .args(["train", "--resume", "crashy", "-q"])
        .assert()
        .success();
    let tensors = |dir: &str| -> Vec<(String, Vec<u8>)> {
        let bytes = std::fs::read(d.join(dir).join("state.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert!(
        tensors("whole") == tensors("crashy"),
        "weights, moments and state differ"
    );
}
