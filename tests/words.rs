//! Word-level models: Chinese cut by jieba and recorded in the checkpoint, ranking candidates that
//! are several words, `<unk>`, and training with a sampled softmax (learning, exact resume).

mod common;
use common::*;

use elman::checkpoint;
use elman::infer::StreamModel;
use std::path::Path;

/// Sentences made from a few Chinese templates (things that fly over places, things on the road).
fn chinese_corpus() -> String {
    let fliers = ["小鸟", "蜻蜓", "蝴蝶", "老鹰", "燕子"];
    let places = ["天空", "河边", "山上", "田野", "湖面"];
    let walkers = ["人", "孩子", "老人"];
    let road = ["坦克", "汽车"];
    let mut s = String::new();
    for i in 0..400 {
        let f = fliers[i % 5];
        let p = places[(i / 5) % 5];
        match i % 4 {
            0 => s.push_str(&format!("{p}飞过一只{f}。\n")),
            1 => s.push_str(&format!("一只{f}飞过{p}。\n")),
            2 => s.push_str(&format!("{}走在路上。\n", walkers[i % 3])),
            _ => s.push_str(&format!("一辆{}开过{p}。\n", road[i % 2])),
        }
    }
    s
}

fn train_words(dir: &Path, name: &str, text: &str, extra: &[&str]) {
    std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    elman(dir)
        .args([
            "train",
            &format!("{name}.txt"),
            "--out",
            name,
            "--level",
            "word",
        ])
        .args([
            "--hidden", "32", "--batch", "4", "--bptt", "12", "--steps", "150",
        ])
        // 150 steps with the rate falling to 0: a higher start, so that the tiny model learns
        // what the tests ask of it.
        .args(["--lr", "0.01"])
        .args(["--eval-every", "50", "-q"])
        .args(extra)
        .assert()
        .success();
}

#[test]
fn chinese_word_model_ranks_multi_word_candidates() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train_words(d, "zh", &chinese_corpus(), &[]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("zh/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["vocab"]["segmenter"], "jieba", "auto picked jieba");

    let v = json(elman(d).args([
        "rank",
        "-m",
        "zh",
        "--prompt",
        "天空飞过一只",
        "--candidates",
        "小鸟,蜻蜓,人,坦克,猪,一只小鸟",
        "--json",
    ]));
    let cands = v["candidates"].as_array().unwrap();
    let by_name = |n: &str| cands.iter().find(|c| c["candidate"] == n).unwrap().clone();
    let toks = |n: &str| -> Vec<String> {
        by_name(n)["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(toks("小鸟"), ["小鸟"], "one word, one token");
    assert_eq!(toks("一只小鸟"), ["一只", "小鸟"], "scored over both words");
    assert_eq!(toks("猪"), ["<unk>"], "never seen: <unk>");

    // The scores are the model's: recompute them independently from the checkpoint.
    let loaded = checkpoint::load(&d.join("zh"), &candle_core::Device::Cpu).unwrap();
    let engine = StreamModel::new(&loaded.model).unwrap();
    let vocab = &loaded.vocab;
    let prompt = vocab.encode("天空飞过一只").unwrap();
    let words: Vec<&str> = prompt.iter().map(|&i| vocab.token(i)).collect();
    assert_eq!(words, ["天空", "飞过", "一只"]);
    for c in cands {
        let name = c["candidate"].as_str().unwrap();
        let mut st = engine.zero_state();
        engine.feed(&mut st, &prompt);
        let mut total = 0.0;
        for t in toks(name) {
            let id = vocab.id(&t).unwrap();
            total += engine.log_probs(&st)[id as usize];
            engine.step(&mut st, id);
        }
        let got = c["total_logprob"].as_f64().unwrap();
        assert!((got - total).abs() < 1e-9, "{name}: {got} vs {total}");
    }
    // The model learned what flies: a flier beats the tank and the person after 一只.
    let lp = |n: &str| by_name(n)["total_logprob"].as_f64().unwrap();
    for flier in ["小鸟", "蜻蜓"] {
        for other in ["人", "坦克"] {
            assert!(lp(flier) > lp(other) + 1.0, "{flier} vs {other}");
        }
    }
    // Prompts and samples read as Chinese: no spaces between the words.
    let out = elman(d)
        .args([
            "sample",
            "-m",
            "zh",
            "-p",
            "一只小鸟",
            "-l",
            "8",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("一只小鸟"));
    assert!(!text.trim_end().contains(' '), "{text:?}");
}

#[test]
fn unknown_words_become_unk_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = "the bird flies over the sky .\nthe dragonfly flies over the river .\n".repeat(30)
        + "a zebra walks .\n";
    // 8 tokens kept: <unk>, <eos> and the 6 most frequent words.
    train_words(d, "en", &text, &["--max-vocab", "8"]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("en/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["vocab"]["size"], 8);
    assert_eq!(cfg["vocab"]["segmenter"], "words");
    std::fs::write(d.join("t.txt"), "the zebra flies over the moon .\n").unwrap();
    let v = json(elman(d).args(["eval", "-m", "en", "t.txt", "--json"]));
    assert_eq!(v["unknown"], 2, "zebra and moon");
    let out = elman(d)
        .args([
            "rank",
            "-m",
            "en",
            "-p",
            "the bird flies over the",
            "--candidates",
            "sky,moon",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"moon\"") && err.contains("<unk>"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["candidates"][0]["candidate"], "sky");
}

/// A word corpus with a few hundred words of Zipf-like frequencies.
fn many_words() -> String {
    let mut s = String::new();
    let mut x = 7u64;
    for line in 0..600 {
        for _ in 0..9 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (x >> 33) as f64 / (1u64 << 31) as f64;
            let rank = (300f64.powf(u)) as usize; // log-uniform over 1..300
            s.push_str(&format!("w{rank} "));
        }
        s.push_str(if line % 2 == 0 { "end .\n" } else { "stop .\n" });
    }
    s
}

#[test]
fn sampled_softmax_learns_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let text = many_words();
    std::fs::write(d.join("w.txt"), &text).unwrap();
    let train = |out: &str, steps: &str, resume: bool| {
        let mut c = elman(d);
        if resume {
            c.args(["train", "--resume", out, "--steps", steps, "-q"]);
        } else {
            c.args(["train", "w.txt", "--out", out, "--level", "word"])
                .args(["--hidden", "24", "--batch", "4", "--bptt", "10"])
                .args(["--sampled-softmax", "40", "--eval-every", "30"])
                // Split by budgets (60, then 120): a schedule that does not depend on them.
                .args(["--schedule", "plateau", "--steps", steps, "-q"]);
        }
        c.assert().success();
    };
    train("a", "120", false);
    train("b", "60", false);
    train("b", "120", true);
    // Every tensor of the saved state (weights, Adam moments, hidden state) is bit-identical; the
    // metadata differs only in wall-clock seconds.
    let (a, b) = (
        std::fs::read(d.join("a/state.safetensors")).unwrap(),
        std::fs::read(d.join("b/state.safetensors")).unwrap(),
    );
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    assert!(names.len() > 10);
    for n in names {
        let same = a.tensor(n).unwrap().data() == b.tensor(n).unwrap().data();
        assert!(
            same,
            "{n} differs after resume: the negatives were not drawn the same"
        );
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("a/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["training"]["softmax_samples"], 40);
    let vsize = cfg["vocab"]["size"].as_f64().unwrap();
    let metrics = checkpoint::read_metrics(&d.join("a")).unwrap();
    assert!(metrics.iter().all(|m| m.train_loss_sampled));
    // Validation is the exact loss, and it went well below the uniform guess ln V.
    let last = metrics.last().unwrap().val_loss;
    assert!(last < vsize.ln() - 0.5, "val {last} vs ln V {}", vsize.ln());
    fails_with(
        elman(d).args([
            "train",
            "w.txt",
            "--out",
            "c",
            "--level",
            "word",
            "--sampled-softmax",
            "1000",
        ]),
        &["--sampled-softmax 1000", "fewer than half"],
    );
    fails_with(
        elman(d).args(["train", "w.txt", "--out", "c", "--segmenter", "jieba"]),
        &["--segmenter", "--level word"],
    );
}
