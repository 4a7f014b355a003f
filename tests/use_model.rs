//! The commands that use a trained model, through the binary: sample, complete, rank, repl, demo.

mod common;
use common::*;

use predicates::prelude::*;
use std::path::{Path, PathBuf};

/// A small model on mixed text; `extra` adds training options.
fn tiny_model(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let text = "天空中飞过一只小鸟。路上走过一个人。A bird flew over the lake.\n".repeat(40);
    std::fs::write(dir.join("c.txt"), text).unwrap();
    elman(dir)
        .args([
            "train", "c.txt", "--out", name, "--hidden", "24", "--batch", "4",
        ])
        .args(["--bptt", "16", "--steps", "60", "--eval-every", "60", "-q"])
        .args(extra)
        .assert()
        .success();
    dir.join(name)
}

#[test]
fn sample_is_reproducible_and_streams_the_prompt_first() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_model(d, "m", &[]);
    let run = |seed: &str| {
        elman(d)
            .args([
                "sample",
                "-m",
                "m",
                "-p",
                "天空中",
                "-l",
                "40",
                "--seed",
                seed,
            ])
            .output()
            .unwrap()
    };
    let a = run("5");
    assert!(a.status.success());
    let text = String::from_utf8(a.stdout.clone()).unwrap();
    assert!(text.starts_with("天空中"), "{text}");
    assert_eq!(text.trim_end_matches('\n').chars().count(), 3 + 40);
    assert_eq!(a.stdout, run("5").stdout, "same seed, same text");
    assert_ne!(a.stdout, run("6").stdout);
    let v = json(elman(d).args([
        "sample", "-m", "m", "-p", "A bird", "-l", "25", "-n", "3", "--seed", "1", "--top-k", "3",
        "--json",
    ]));
    assert_eq!(v["seed"], 1);
    assert_eq!(v["samples"].as_array().unwrap().len(), 3);
    for s in v["samples"].as_array().unwrap() {
        assert_eq!(s.as_str().unwrap().chars().count(), 25);
    }
    // Greedy: the same text whatever the seed.
    let g = |seed: &str| {
        elman(d)
            .args([
                "sample", "-m", "m", "-p", "A", "-l", "30", "-t", "0", "--seed", seed,
            ])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(g("1"), g("2"));
}

#[test]
fn complete_shows_next_tokens_and_beams() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_model(d, "m", &[]);
    let v = json(elman(d).args([
        "complete",
        "-m",
        "m",
        "-p",
        "天空中飞过一只",
        "--top",
        "4",
        "--json",
    ]));
    let next = v["next"].as_array().unwrap();
    assert_eq!(next.len(), 4);
    let probs: Vec<f64> = next.iter().map(|n| n["prob"].as_f64().unwrap()).collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]));
    assert!(probs.iter().sum::<f64>() <= 1.0 + 1e-9);
    let v = json(elman(d).args([
        "complete",
        "-m",
        "m",
        "-p",
        "天空中飞过一只",
        "--beam",
        "3",
        "--max-tokens",
        "12",
        "--json",
    ]));
    let beams = v["continuations"].as_array().unwrap();
    assert_eq!(beams.len(), 3);
    let lps: Vec<f64> = beams
        .iter()
        .map(|b| b["logprob"].as_f64().unwrap())
        .collect();
    assert!(lps.windows(2).all(|w| w[0] >= w[1]));
    for b in beams {
        let ids = b["ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 12);
    }
    elman(d)
        .args(["complete", "-m", "m", "-p", "A bird"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "most likely next tokens after \"A bird\"",
        ));
}

#[test]
fn rank_sorts_and_reports_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_model(d, "m", &[]);
    let v = json(elman(d).args([
        "rank",
        "-m",
        "m",
        "-p",
        "天空中飞过一只",
        "-c",
        "小鸟, 人，一个人",
        "--json",
    ]));
    assert_eq!(v["sorted_by"], "total");
    let c = v["candidates"].as_array().unwrap();
    let names: Vec<&str> = c.iter().map(|x| x["candidate"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.contains(&"一个人") && names.contains(&"小鸟"));
    let totals: Vec<f64> = c
        .iter()
        .map(|x| x["total_logprob"].as_f64().unwrap())
        .collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]));
    let sum: f64 = c.iter().map(|x| x["prob_in_set"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    std::fs::write(d.join("cands.txt"), "小鸟\n\n人\n").unwrap();
    elman(d)
        .args([
            "rank",
            "-m",
            "m",
            "-p",
            "天空中飞过一只",
            "--candidates-file",
            "cands.txt",
        ])
        .args(["--by", "mean"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "sorted by mean per-token log-probability",
        ))
        .stdout(predicate::str::contains("小鸟"));
}

#[test]
fn unknown_characters_in_prompts_are_named_or_mapped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_model(d, "m", &[]);
    for args in [
        vec!["sample", "-m", "m", "-p", "天空🙂"],
        vec!["complete", "-m", "m", "-p", "天空🙂"],
        vec!["rank", "-m", "m", "-p", "天空🙂", "-c", "小鸟"],
    ] {
        elman(d)
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("\"🙂\" (U+1F642) at character 3"));
    }
    // A candidate it cannot score is ranked last, marked, and the ranking goes on.
    elman(d)
        .args(["rank", "-m", "m", "-p", "天空", "-c", "小鸟,🐉"])
        .assert()
        .success()
        .stderr(predicate::str::contains("candidate \"🐉\""))
        .stderr(predicate::str::contains("ranked last"))
        .stdout(predicate::str::contains("2  🐉*"));
    // A model with <unk> maps the character and warns.
    tiny_model(d, "capped", &["--max-vocab", "20"]);
    elman(d)
        .args([
            "sample",
            "-m",
            "capped",
            "-p",
            "天空🙂",
            "-l",
            "5",
            "--seed",
            "1",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("warning: --prompt: \"🙂\""));
}

#[test]
fn a_scripted_repl_session_through_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_model(d, "m", &[]);
    let script = "天空中\n:temp 0\n:len 10\nA bird\n:rank 小鸟,人\n:beam 2\n:reset\n:show\n:nope\n:topk x\n天空🙂\n:quit\nnever read\n";
    let out = elman(d)
        .args(["repl", "-m", "m", "--seed", "3", "-l", "20"])
        .write_stdin(script)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // The pieces in order (a sampled completion may itself hold line breaks).
    let mut at = 0;
    for piece in [
        "next: ",
        "\n天空中",
        "\ntemperature = 0\n",
        "length = 10\n",
        "next: ",
        "\nA bird",
        "\ncandidates after \"…",
    ] {
        let found = text[at..]
            .find(piece)
            .unwrap_or_else(|| panic!("{piece:?} missing after byte {at}: {text}"));
        at += found + piece.len();
    }
    assert!(text.contains("most probable continuations of"));
    assert!(text.contains("context cleared"));
    assert!(text.contains("temperature = 0, top-k = off, top-p = off, length = 10, seed = 3"));
    assert!(text.contains("context = 0 chars"));
    assert!(text.contains("error: unknown command :nope (try :help)"));
    assert!(text.contains("error: :topk needs a whole number"));
    assert!(text.contains("error: prompt: \"🙂\" (U+1F642) at character 3"));
    assert!(!text.contains("never read"));
}

/// The showcase: the bundled corpus never says 天空飞过一只, and the demo model still ranks 小鸟 and
/// 蜻蜓 above 人, 坦克 and 猪.
#[test]
fn demo_trains_and_ranks_the_chapter_example_honestly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join(elman::demo::DEMO_CORPUS);
    let text = std::fs::read_to_string(&corpus).unwrap();
    assert!(
        !text.contains("天空飞过一只"),
        "the corpus must not contain the showcase phrase"
    );
    assert!(text.len() < 400_000, "the bundled corpus stays small");
    assert!(text.contains("一只小鸟") && text.contains("一头猪") && text.contains("一辆坦克"));

    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = elman(d)
        .args(["demo", "--quiet", "--out", "demo", "--corpus"])
        .arg(&corpus)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("天空飞过一只__"), "{stdout}");
    assert!(
        stdout.contains("The bird") && stdout.contains("小明在"),
        "{stdout}"
    );
    let v = json(elman(d).args([
        "rank",
        "-m",
        "demo",
        "-p",
        "天空飞过一只",
        "-c",
        "小鸟,蜻蜓,人,坦克,猪",
        "--json",
    ]));
    let score = |c: &str| {
        v["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["candidate"] == c)
            .unwrap()["total_logprob"]
            .as_f64()
            .unwrap()
    };
    for good in ["小鸟", "蜻蜓"] {
        for bad in ["人", "坦克", "猪"] {
            assert!(score(good) > score(bad), "{good} should beat {bad}: {v}");
        }
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_sampling_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    tiny_model(d, "m", &[]);
    let bin = assert_cmd::cargo::cargo_bin("elman");
    let mut child = std::process::Command::new(bin)
        .current_dir(d)
        .args(["sample", "-m", "m", "-l", "100000000", "--seed", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until text is flowing, then interrupt.
    use std::io::Read;
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 64];
    stdout.read_exact(&mut buf).unwrap();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted sampling exits 130");
    assert!(buf.len() + rest.len() < 100_000_000, "it stopped early");
}
