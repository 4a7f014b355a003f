//! Training end to end through the library, on tiny corpora written by the tests.

use candle_core::{Device, Tensor};
use elman::checkpoint::{self, STATE_FILE};
use elman::runtime::Runtime;
use elman::train::{train, Hyper, TrainArgs};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write_corpus(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn one_thread() -> Runtime {
    Runtime::with_threads(1)
}

fn tiny_args(file: &Path, out: &Path, steps: u64) -> TrainArgs {
    TrainArgs {
        files: vec![file.to_path_buf()],
        out: Some(out.to_path_buf()),
        hyper: Hyper {
            hidden: Some(24),
            batch: Some(4),
            bptt: Some(16),
            lr: Some(0.01),
            eval_every: Some(25),
            ..Default::default()
        },
        steps: Some(steps),
        quiet: true,
        ..Default::default()
    }
}

/// All tensors of a safetensors file, as f32 vectors by name.
fn tensors_of(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let t =
                Tensor::from_raw_buffer(v.data(), candle_core::DType::F32, v.shape(), &Device::Cpu)
                    .unwrap();
            (n, t.flatten_all().unwrap().to_vec1().unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_repetitive_corpus_is_learned_to_near_zero_loss() {
    let tmp = tempfile::tempdir().unwrap();
    // A deterministic sequence: every character fixes the next one.
    let text = "天空飞过一只小鸟。the bird flies! ".repeat(150);
    let f = write_corpus(tmp.path(), "loop.txt", &text);
    let out = tmp.path().join("ckpt");
    let o = train(&tiny_args(&f, &out, 300), &one_thread()).unwrap();
    let best = o.best_val_loss.unwrap();
    assert!(best < 0.05, "validation loss {best} nats/token");
    // The numbers in config.json are the ones the run reported.
    let cfg = checkpoint::read_config(&out).unwrap();
    assert_eq!(cfg.progress.step, 300);
    assert_eq!(cfg.progress.best_val_loss, Some(best));
    let metrics = checkpoint::read_metrics(&out).unwrap();
    assert_eq!(metrics.len(), 12); // every 25 steps
    assert!(metrics.last().unwrap().train_loss < 0.1);
}

/// Trains `args` for its first `first` steps into `parts`, then resumes there with no setting but
/// the whole run's `--steps`: what an interrupted run does. Returns the resuming arguments.
fn split_and_resumed(args: &TrainArgs, parts: &Path, first: u64) -> TrainArgs {
    let mut head = args.clone();
    head.out = Some(parts.to_path_buf());
    head.steps = Some(first);
    train(&head, &one_thread()).unwrap();
    let resume = TrainArgs {
        resume: Some(parts.to_path_buf()),
        steps: args.steps,
        quiet: true,
        ..Default::default()
    };
    train(&resume, &one_thread()).unwrap();
    resume
}

fn noisy_text() -> String {
    // Pseudo-random but learnable text, so runs have a non-trivial loss curve.
    let words = [
        "小鸟", "蜻蜓", "flies", "over", "the", "sky", "一只", "天空", "🙂", "e\u{301}",
    ];
    let mut x: u64 = 42;
    let mut s = String::new();
    for _ in 0..1500 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(words[(x >> 33) as usize % words.len()]);
        s.push(if (x >> 20).is_multiple_of(7) {
            '\n'
        } else {
            ' '
        });
    }
    s
}

#[test]
fn same_seed_gives_identical_runs_and_a_different_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    train(&tiny_args(&f, &a, 60), &one_thread()).unwrap();
    train(&tiny_args(&f, &b, 60), &one_thread()).unwrap();
    let mut other = tiny_args(&f, &c, 60);
    other.hyper.seed = Some(99);
    train(&other, &one_thread()).unwrap();
    let ma = checkpoint::read_metrics(&a).unwrap();
    let mb = checkpoint::read_metrics(&b).unwrap();
    let mc = checkpoint::read_metrics(&c).unwrap();
    let curve = |m: &[checkpoint::Metric]| -> Vec<(u64, f64, f64)> {
        m.iter()
            .map(|x| (x.step, x.train_loss, x.val_loss))
            .collect()
    };
    assert_eq!(
        curve(&ma),
        curve(&mb),
        "same seed, same loss curve bit for bit"
    );
    assert_ne!(curve(&ma), curve(&mc), "another seed, another curve");
    assert_eq!(
        tensors_of(&a.join(STATE_FILE)),
        tensors_of(&b.join(STATE_FILE))
    );
}

#[test]
fn resuming_an_interrupted_run_ends_with_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("parts");
    let mut args = tiny_args(&f, &whole, 130);
    // Stopping at 37 by a budget of 37 steps: the plateau rule does not depend on the budget (the
    // linear schedule's resume is held exact by tests/hardening.rs, killed mid-run).
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    args.hyper.patience = Some(1);
    args.hyper.lr = Some(0.05); // high enough that the plateau schedule kicks in
    train(&args, &one_thread()).unwrap();
    // Stop at 37 (mid-window of evaluations, mid-epoch), resume to 80, then to 130.
    let mut first = args.clone();
    first.out = Some(parts.clone());
    first.steps = Some(37);
    train(&first, &one_thread()).unwrap();
    for steps in [80, 130] {
        let resume = TrainArgs {
            resume: Some(parts.clone()),
            steps: Some(steps),
            quiet: true,
            ..Default::default()
        };
        let o = train(&resume, &one_thread()).unwrap();
        assert_eq!(o.step, steps);
    }
    // Weights, optimizer moments and hidden state are identical.
    assert_eq!(
        tensors_of(&whole.join(STATE_FILE)),
        tensors_of(&parts.join(STATE_FILE))
    );
    let cw = checkpoint::read_config(&whole).unwrap();
    let cp = checkpoint::read_config(&parts).unwrap();
    assert_eq!(cw.progress.step, cp.progress.step);
    assert_eq!(cw.progress.lr, cp.progress.lr);
    assert_eq!(cw.progress.tokens_seen, cp.progress.tokens_seen);
    // The scheduled evaluations agree; the split run has extra ones where its sessions ended.
    let scheduled = |dir: &Path| -> Vec<(u64, f64)> {
        checkpoint::read_metrics(dir)
            .unwrap()
            .into_iter()
            .filter(|m| m.step.is_multiple_of(25))
            .map(|m| (m.step, m.val_loss))
            .collect()
    };
    assert_eq!(scheduled(&whole), scheduled(&parts));
}

#[test]
fn a_saved_model_loads_with_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let out = tmp.path().join("m");
    let mut args = tiny_args(&f, &out, 50);
    args.hyper.layers = Some(2);
    args.hyper.eval_every = Some(50);
    train(&args, &one_thread()).unwrap();
    let loaded = checkpoint::load(&out, &Device::Cpu).unwrap();
    // The live weights of the last step are the best ones here (one evaluation at step 50), and the
    // state file keeps them under `param.`: build a model from those and compare logits.
    let (ts, _) = checkpoint::read_weights(
        &out.join(STATE_FILE),
        &loaded.config.model,
        "param.",
        &Device::Cpu,
    )
    .unwrap();
    let ts = ts
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("param.").map(|k| (k.to_string(), v)))
        .collect();
    let live = checkpoint::model_from_tensors(
        &loaded.config.model,
        ts,
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ids = loaded
        .vocab
        .encode("天空一只小鸟 flies over the sky 🙂")
        .unwrap();
    let n = ids.len();
    let ids = Tensor::from_vec(ids, (n, 1), &Device::Cpu).unwrap();
    let (a, _) = loaded
        .model
        .forward(&ids, &loaded.model.zero_state(1).unwrap())
        .unwrap();
    let (b, _) = live.forward(&ids, &live.zero_state(1).unwrap()).unwrap();
    assert_eq!(
        a.to_vec2::<f32>().unwrap(),
        b.to_vec2::<f32>().unwrap(),
        "identical logits after save/load"
    );
}

#[test]
fn the_default_schedule_lowers_the_rate_linearly_to_the_end_of_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(
        tmp.path(),
        "c.txt",
        &"the bird flies over the sky.\n".repeat(80),
    );
    // The default, --schedule linear and the older --anneal: the same run.
    let mut runs = Vec::new();
    for (name, schedule, anneal) in [
        ("default", None, false),
        ("linear", Some(elman::checkpoint::Schedule::Linear), false),
        ("anneal", None, true),
    ] {
        let out = tmp.path().join(name);
        let mut args = tiny_args(&f, &out, 100);
        args.hyper.schedule = schedule;
        args.hyper.anneal = anneal;
        train(&args, &one_thread()).unwrap();
        let metrics = checkpoint::read_metrics(&out).unwrap();
        // Evaluations after steps 25, 50, 75, 100: the last step before each (0-based index 24,
        // 49, 74, 99) ran at exactly 0.01 · (1 − index/100), whatever validation did (no plateau
        // rule on top).
        let at: Vec<(u64, f64)> = metrics.iter().map(|m| (m.step, m.lr)).collect();
        assert_eq!(
            at.iter().map(|a| a.0).collect::<Vec<_>>(),
            [25, 50, 75, 100]
        );
        for &(step, lr) in &at {
            let want = 0.01 * (1.0 - (step - 1) as f64 / 100.0);
            assert!(
                (lr - want).abs() < 1e-12,
                "{name}: step {step}: lr {lr}, want {want}"
            );
        }
        let cfg = checkpoint::read_config(&out).unwrap();
        assert!(cfg.training.anneal && !cfg.training.plateau, "{name}");
        runs.push(tensors_of(&out.join(STATE_FILE)));
    }
    assert!(runs[0] == runs[1] && runs[1] == runs[2]);
    // A checkpoint from before --schedule (no "plateau" field) keeps the plateau rule.
    let old: checkpoint::TrainConfig = serde_json::from_value(serde_json::json!({
        "batch": 32, "bptt": 64, "optimizer": "adam", "lr": 0.002, "clip": 5.0,
        "lr_decay": 0.5, "patience": 1, "val_fraction": 0.1, "eval_every": 200,
        "epochs": null, "steps": null, "time_limit_s": null, "seed": 1234, "threads": 2
    }))
    .unwrap();
    assert!(old.plateau && !old.anneal);
}

/// --schedule plateau: a constant rate, halved after an evaluation without improvement.
#[test]
fn the_plateau_schedule_halves_the_rate_when_validation_stalls() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let out = tmp.path().join("m");
    let mut args = tiny_args(&f, &out, 200);
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    args.hyper.lr = Some(0.05);
    train(&args, &one_thread()).unwrap();
    let metrics = checkpoint::read_metrics(&out).unwrap();
    let mut best = f64::INFINITY;
    let mut lr = 0.05;
    for m in &metrics {
        assert_eq!(m.lr, lr, "step {}", m.step);
        if m.val_loss < best {
            best = m.val_loss;
        } else {
            lr *= 0.5;
        }
    }
    assert!(
        lr < 0.05,
        "validation never stalled: the test shows nothing"
    );
}

#[test]
fn evaluations_are_spaced_out_where_validation_is_expensive_and_close_on_a_small_text() {
    use elman::cell::Activation;
    use elman::config::ModelConfig;
    use elman::train::default_eval_every;
    let training = |samples: Option<usize>| -> checkpoint::TrainConfig {
        serde_json::from_value(serde_json::json!({
            "batch": 32, "bptt": 64, "optimizer": "adam", "lr": 0.002, "clip": 5.0,
            "lr_decay": 0.5, "patience": 1, "val_fraction": 0.1, "eval_every": 200,
            "epochs": null, "steps": null, "time_limit_s": null, "seed": 1234, "threads": 2,
            "softmax_samples": samples, "anneal": false
        }))
        .unwrap()
    };
    let model = |vocab_size, hidden| ModelConfig {
        vocab_size,
        hidden,
        layers: 1,
        activation: Activation::Tanh,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    // Char level, tiny Shakespeare's validation tenth: the fixed default.
    assert_eq!(
        default_eval_every(&model(65, 512), &training(None), 111_540, 1_003_854),
        200
    );
    // A small text (唐诗三百首's 26,610 training characters: 12 windows of 32 × 64) is
    // evaluated every epoch.
    assert_eq!(
        default_eval_every(&model(2_578, 256), &training(None), 2_957, 26_610),
        12
    );
    // WikiText-2 with the sampled softmax. By hand: a step is 6·(H² + H·4097)·2048 = 13.7 GFLOP,
    // validation 2·(H² + H·33278)·217646 = 3.74 TFLOP = 272.9 steps; five times that, rounded up
    // to a hundred.
    assert_eq!(
        default_eval_every(
            &model(33_278, 256),
            &training(Some(4096)),
            217_646,
            2_088_628
        ),
        1_400
    );
    // The same with the full softmax: each step already pays for the whole decoder.
    assert_eq!(
        default_eval_every(&model(33_278, 256), &training(None), 217_646, 2_088_628),
        200
    );
    // No validation text at all.
    assert_eq!(
        default_eval_every(&model(33_278, 256), &training(Some(4096)), 0, 2_088_628),
        200
    );
    // What validation scores by default: as many tokens as cost a fifth of 2,000 steps. At the
    // char level 400 steps of 3 × 2,048 tokens' forward work; every reference corpus's validation
    // text fits (WikiText-2 with the sampled softmax: 217,646 words worth ~273 steps).
    use elman::train::default_val_tokens;
    assert_eq!(
        default_val_tokens(&model(65, 512), &training(None), f64::INFINITY),
        2_457_600
    );
    // A budget of fewer steps: a fifth of the whole budget's training (350 steps: 70 steps' worth),
    // never under a fifth of 200 steps.
    assert_eq!(
        default_val_tokens(&model(65, 512), &training(None), 350.0),
        430_080
    );
    assert_eq!(
        default_val_tokens(&model(65, 512), &training(None), 3.0),
        245_760
    );
    let words = default_val_tokens(&model(33_278, 256), &training(Some(4096)), 1e9);
    assert!((217_646..330_000).contains(&words), "{words}");
    assert_eq!(
        default_eval_every(&model(33_278, 256), &training(Some(4096)), words, 2_088_628),
        2_000
    );
}

/// Dropout's masks are a function of the seed and the step: a run stopped and resumed draws the
/// same ones (same final weights and moments), and the setting is kept in the checkpoint.
#[test]
fn a_dropout_run_resumes_exactly_and_differs_from_one_without() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let (whole, parts, plain) = (
        tmp.path().join("whole"),
        tmp.path().join("parts"),
        tmp.path().join("plain"),
    );
    let mut args = tiny_args(&f, &whole, 60);
    args.hyper.layers = Some(2);
    args.hyper.dropout = Some(0.4);
    // Split by budgets (23, then 60), so a schedule that does not depend on the budget.
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    train(&args, &one_thread()).unwrap();
    let mut first = args.clone();
    first.out = Some(parts.clone());
    first.steps = Some(23);
    train(&first, &one_thread()).unwrap();
    let resume = TrainArgs {
        resume: Some(parts.clone()),
        steps: Some(60),
        quiet: true,
        ..Default::default()
    };
    train(&resume, &one_thread()).unwrap();
    assert_eq!(
        tensors_of(&whole.join(STATE_FILE)),
        tensors_of(&parts.join(STATE_FILE))
    );
    assert_eq!(
        checkpoint::read_config(&parts).unwrap().training.dropout,
        0.4
    );
    let mut no_drop = args.clone();
    no_drop.out = Some(plain.clone());
    no_drop.hyper.dropout = None;
    train(&no_drop, &one_thread()).unwrap();
    assert_ne!(
        tensors_of(&whole.join(STATE_FILE)),
        tensors_of(&plain.join(STATE_FILE))
    );
    // A resumed run keeps the checkpoint's setting: changing it is refused.
    let mut change = resume.clone();
    change.hyper.dropout = Some(0.1);
    change.steps = Some(70);
    let err = train(&change, &one_thread()).unwrap_err().to_string();
    assert!(err.contains("--dropout"), "{err}");
    // Nor is a config.json edited out of bounds taken as it is.
    let cfg_path = parts.join(checkpoint::CONFIG_FILE);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["training"]["dropout"] = serde_json::json!(1.0);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let mut edited = resume.clone();
    edited.steps = Some(70);
    let err = train(&edited, &one_thread()).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("--dropout 1 must be in [0, 1)"),
        "{err}"
    );
}

/// LSTM and GRU runs stop and resume exactly like Elman ones: an LSTM's carried cell state is part
/// of the saved state (`cell.l{k}`), and the checkpoint says which cell it holds (format 2).
#[test]
fn gated_cells_resume_bit_exact_and_say_what_they_are() {
    use elman::cell::CellKind;
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    for (cell, tie) in [(CellKind::Lstm, false), (CellKind::Gru, true)] {
        let whole = tmp.path().join(format!("{cell}-whole"));
        let parts = tmp.path().join(format!("{cell}-parts"));
        let mut args = tiny_args(&f, &whole, 70);
        args.hyper.cell = Some(cell);
        args.hyper.layers = Some(2);
        // Split by budgets (23, then 70), so a schedule that does not depend on the budget.
        args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
        // The GRU reads an embedding tied to its decoder (--embed 24 --tie): resumed exactly too.
        if tie {
            args.hyper.embed = Some(24);
            args.hyper.tie = true;
        }
        train(&args, &one_thread()).unwrap();
        let mut first = args.clone();
        first.out = Some(parts.clone());
        first.steps = Some(23);
        train(&first, &one_thread()).unwrap();
        let resume = TrainArgs {
            resume: Some(parts.clone()),
            steps: Some(70),
            quiet: true,
            ..Default::default()
        };
        train(&resume, &one_thread()).unwrap();
        let (a, b) = (
            tensors_of(&whole.join(STATE_FILE)),
            tensors_of(&parts.join(STATE_FILE)),
        );
        assert_eq!(a, b, "{cell}");
        let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.contains(&"cell.l1"),
            cell == CellKind::Lstm,
            "{cell}: {names:?}"
        );
        let config = checkpoint::read_config(&whole).unwrap();
        assert_eq!((config.model.cell, config.format_version), (cell, 2));
        let loaded = checkpoint::load(&whole, &Device::Cpu).unwrap();
        assert_eq!(
            loaded.model.layers[0].weight_ih.dims()[0],
            cell_gates(cell) * 24
        );
    }
}

fn cell_gates(cell: elman::cell::CellKind) -> usize {
    match cell {
        elman::cell::CellKind::Elman => 1,
        elman::cell::CellKind::Lstm => 4,
        elman::cell::CellKind::Gru => 3,
    }
}

/// The defaults a new run gets follow the text and the budget, and every option given wins.
#[test]
fn the_defaults_follow_the_text_and_the_budget() {
    use elman::train::defaults::{average, dropout, planned_epochs, shape};
    use elman::vocab::Level;
    let none = Hyper::default();
    // The budget reads the text a dozen times, or hundreds of times.
    let few = |_: &elman::train::defaults::Shape| 12.0;
    let many = |_: &elman::train::defaults::Shape| 300.0;
    // An alphabet: a wide recurrence reading a 64-wide embedding.
    let s = shape(&none, Level::Char, 65, few);
    assert_eq!((s.hidden, s.embed, s.tied), (512, Some(64), false));
    assert_eq!(s.chosen.len(), 2);
    // Thousands of Chinese characters: the decoder dominates, so 256, tied to a 256-wide input.
    let s = shape(&none, Level::Char, 4_488, few);
    assert_eq!((s.hidden, s.embed, s.tied), (256, Some(256), true));
    // … but read hundreds of times (a book of poems), a separate embedding of H/2.
    let s = shape(&none, Level::Char, 4_488, many);
    assert_eq!((s.hidden, s.embed, s.tied), (256, Some(128), false));
    // Words stay tied however often they are read.
    let s = shape(&none, Level::Word, 4_488, many);
    assert_eq!((s.hidden, s.embed, s.tied), (256, Some(256), true));
    // A gated cell on an alphabet: 256, a step as costly as the Elman cell's at 512.
    for cell in [elman::cell::CellKind::Lstm, elman::cell::CellKind::Gru] {
        let gated = Hyper {
            cell: Some(cell),
            ..Default::default()
        };
        let s = shape(&gated, Level::Char, 65, few);
        assert_eq!((s.hidden, s.embed, s.tied), (256, Some(64), false));
        let s = shape(&gated, Level::Char, 4_488, few);
        assert_eq!((s.hidden, s.embed, s.tied), (256, Some(256), true));
    }
    let elman_cell = Hyper {
        cell: Some(elman::cell::CellKind::Elman),
        ..Default::default()
    };
    assert_eq!(shape(&elman_cell, Level::Char, 65, few).hidden, 512);
    // A budget that reads an alphabet many times buys width: the widest that still reads it 20
    // times (readings here fall with the recurrence's cost, as planned_epochs' do).
    let by_width = |reads_at_512: f64| {
        move |s: &elman::train::defaults::Shape| {
            reads_at_512 * (512.0 * 512.0) / (s.hidden * s.hidden) as f64
        }
    };
    assert_eq!(shape(&none, Level::Char, 65, by_width(14.0)).hidden, 512);
    assert_eq!(shape(&none, Level::Char, 65, by_width(46.0)).hidden, 768);
    let s = shape(&none, Level::Char, 65, by_width(137.0));
    assert_eq!(s.hidden, 768);
    assert!(s.chosen[0].contains("the budget still reads the text 20 times or more at this width"));
    // Not a gated cell (its width is unmeasured), nor a large vocabulary.
    let lstm = Hyper {
        cell: Some(elman::cell::CellKind::Lstm),
        ..Default::default()
    };
    assert_eq!(shape(&lstm, Level::Char, 65, by_width(137.0)).hidden, 256);
    assert_eq!(
        shape(&none, Level::Char, 4_488, by_width(137.0)).hidden,
        256
    );
    // Under --epochs or --steps a wider model reads the text as often, only slower: no widening.
    assert_eq!(shape(&none, Level::Char, 65, |_| 137.0).hidden, 512);
    // Words: word_language_model's tied embedding.
    let s = shape(&none, Level::Word, 33_278, few);
    assert_eq!((s.hidden, s.embed, s.tied), (256, Some(256), true));
    // What the user says wins, and is not reported as chosen.
    let given = Hyper {
        hidden: Some(100),
        embed: Some(10),
        ..Default::default()
    };
    let s = shape(&given, Level::Word, 33_278, few);
    assert_eq!(
        (s.hidden, s.embed, s.tied, s.chosen.len()),
        (100, Some(10), false, 0)
    );
    let one_hot = Hyper {
        one_hot: true,
        ..Default::default()
    };
    let s = shape(&one_hot, Level::Char, 65, few);
    assert_eq!((s.hidden, s.embed, s.tied), (512, None, false));
    let tie = Hyper {
        tie: true,
        hidden: Some(64),
        ..Default::default()
    };
    let s = shape(&tie, Level::Char, 65, few);
    assert_eq!((s.hidden, s.embed, s.tied), (64, Some(64), true));

    // How often a budget reads the text: the nearest rule, time at the nominal rate.
    let mc = elman::config::ModelConfig {
        embed: Some(64),
        ..elman::config::ModelConfig::new(65, 512)
    };
    let tc: checkpoint::TrainConfig = serde_json::from_value(serde_json::json!({
        "batch": 32, "bptt": 64, "optimizer": "adam", "lr": 0.003, "clip": 5.0,
        "lr_decay": 0.5, "patience": 1, "val_fraction": 0.1, "eval_every": 200,
        "epochs": null, "steps": null, "time_limit_s": null, "seed": 1234, "threads": 2
    }))
    .unwrap();
    let n = 1_003_854; // tiny Shakespeare's training characters
    assert_eq!(planned_epochs(&mc, &tc, n, Some(10), None, None), 10.0);
    let steps = planned_epochs(&mc, &tc, n, Some(10), Some(1000), None);
    assert!((steps - 1000.0 * 2048.0 / n as f64).abs() < 1e-9);
    // 6·(512·(512 + 64) + 512·65) = 1.97 MFLOP a token: 180 s at 150 GFLOP/s read it ~13.7 times.
    let three_minutes = planned_epochs(&mc, &tc, n, None, None, Some(Duration::from_secs(180)));
    assert!((three_minutes - 13.7).abs() < 0.1, "{three_minutes}");
    assert_eq!(dropout(3.0, 65, elman::cell::CellKind::Elman), 0.0);
    assert_eq!(
        dropout(three_minutes, 65, elman::cell::CellKind::Elman),
        0.0
    );
    let ten_minutes = planned_epochs(&mc, &tc, n, None, None, Some(Duration::from_secs(600)));
    assert_eq!(dropout(ten_minutes, 65, elman::cell::CellKind::Elman), 0.2);
    assert_eq!(dropout(60.0, 65, elman::cell::CellKind::Elman), 0.2);
    assert_eq!(dropout(1000.0, 65, elman::cell::CellKind::Elman), 0.3);
    // The weight average from 15 readings: 10 minutes, not 3.
    assert_eq!(average(three_minutes), 0.0);
    assert_eq!(average(ten_minutes), 0.999);
    // A large vocabulary memorises sooner.
    assert_eq!(dropout(6.0, 4_488, elman::cell::CellKind::Elman), 0.0);
    assert_eq!(dropout(21.0, 4_488, elman::cell::CellKind::Elman), 0.5);
    // A gated cell on an alphabet memorises sooner than the Elman cell.
    for cell in [elman::cell::CellKind::Lstm, elman::cell::CellKind::Gru] {
        assert_eq!(dropout(13.0, 65, cell), 0.0);
        assert_eq!(dropout(43.0, 65, cell), 0.5);
        assert_eq!(dropout(19.0, 65, elman::cell::CellKind::Elman), 0.0);
        assert_eq!(dropout(6.0, 4_488, cell), 0.0);
        assert_eq!(dropout(21.0, 4_488, cell), 0.5);
    }
}

/// Weight decay (decoupled, AdamW's) changes training and nothing else: a run with it resumes bit
/// for bit, differs from one without, a zero rate is the run without, and the setting is kept in
/// the checkpoint (changing it on resume is refused).
#[test]
fn weight_decay_resumes_exactly_and_zero_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let dir = |n: &str| tmp.path().join(n);
    let mut args = tiny_args(&f, &dir("whole"), 60);
    args.hyper.weight_decay = Some(0.5);
    // Split by budgets (23, then 60), so a schedule that does not depend on the budget.
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    train(&args, &one_thread()).unwrap();
    let resume = split_and_resumed(&args, &dir("parts"), 23);
    assert_eq!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("parts").join(STATE_FILE))
    );
    let c = checkpoint::read_config(&dir("parts")).unwrap();
    assert_eq!(c.training.weight_decay, 0.5);
    let mut none = args.clone();
    none.out = Some(dir("none"));
    none.hyper.weight_decay = None;
    train(&none, &one_thread()).unwrap();
    let mut zero = args.clone();
    zero.out = Some(dir("zero"));
    zero.hyper.weight_decay = Some(0.0);
    train(&zero, &one_thread()).unwrap();
    assert_eq!(
        tensors_of(&dir("none").join(STATE_FILE)),
        tensors_of(&dir("zero").join(STATE_FILE)),
        "a zero rate is no decay, bit for bit"
    );
    assert_ne!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("none").join(STATE_FILE))
    );
    let mut change = resume.clone();
    change.hyper.weight_decay = Some(0.1);
    change.steps = Some(70);
    let err = train(&change, &one_thread()).unwrap_err().to_string();
    assert!(err.contains("--weight-decay"), "{err}");
}

/// `--average B`: the state keeps a moving average of the weights that is exactly
/// a ← d·a + (1 − d)·w after every step, d = min(B, (1 + t)/(10 + t)), from the initial weights
/// (checked against the weights each step leaves, read back one step at a time); the model file
/// holds the average while training goes on from the latest weights; a run split anywhere ends
/// bit for bit as one that never stopped; 0 is no average.
#[test]
fn the_weight_average_is_exact_and_resumes() {
    use elman::model::init_params;
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let dir = |n: &str| tmp.path().join(n);
    let mut args = tiny_args(&f, &dir("whole"), 12);
    args.hyper.average = Some(0.5);
    args.hyper.eval_every = Some(6);
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    train(&args, &one_thread()).unwrap();
    let config = checkpoint::read_config(&dir("whole")).unwrap();
    assert_eq!(config.training.average, 0.5);
    // The initial weights, as a new run draws them.
    let vm = init_params(
        &config.model,
        config.training.seed,
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut avg: std::collections::HashMap<String, Vec<f32>> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    let by_name = |path: &Path, prefix: &str| -> std::collections::HashMap<String, Vec<f32>> {
        tensors_of(path)
            .into_iter()
            .filter_map(|(n, v)| n.strip_prefix(prefix).map(|n| (n.to_string(), v)))
            .collect()
    };
    for t in 1..=12u64 {
        let step = if t == 1 {
            let mut a = args.clone();
            a.out = Some(dir("steps"));
            a.steps = Some(1);
            a
        } else {
            TrainArgs {
                resume: Some(dir("steps")),
                steps: Some(t),
                quiet: true,
                ..Default::default()
            }
        };
        train(&step, &one_thread()).unwrap();
        let state = dir("steps").join(STATE_FILE);
        let d = 0.5f64.min((1.0 + t as f64) / (10.0 + t as f64)) as f32;
        for (n, w) in by_name(&state, "param.") {
            let a = avg.get_mut(&n).unwrap();
            for (a, x) in a.iter_mut().zip(&w) {
                *a = d * *a + (1.0 - d) * x;
            }
        }
        let saved = by_name(&state, "avg.");
        assert_eq!(saved.len(), avg.len());
        for (n, a) in &saved {
            assert_eq!(a, &avg[n], "step {t}: the average of {n}");
        }
    }
    // Split twelve times or not at all: the same state, and the model file is the average.
    assert_eq!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("steps").join(STATE_FILE))
    );
    let model = by_name(&dir("whole").join(checkpoint::MODEL_FILE), "");
    for (n, a) in &avg {
        assert_eq!(&model[n], a, "model.safetensors holds the average of {n}");
    }
    let latest = by_name(&dir("whole").join(STATE_FILE), "param.");
    assert_ne!(latest, avg, "training goes on from the latest weights");
    // 0 is no average: bit for bit the run without.
    let mut none = args.clone();
    none.out = Some(dir("none"));
    none.hyper.average = None;
    train(&none, &one_thread()).unwrap();
    let mut zero = args.clone();
    zero.out = Some(dir("zero"));
    zero.hyper.average = Some(0.0);
    train(&zero, &one_thread()).unwrap();
    assert_eq!(
        tensors_of(&dir("none").join(STATE_FILE)),
        tensors_of(&dir("zero").join(STATE_FILE))
    );
    assert_eq!(
        tensors_of(&dir("none").join(STATE_FILE)),
        tensors_of(&dir("whole").join(STATE_FILE))
            .into_iter()
            .filter(|(n, _)| !n.starts_with("avg."))
            .collect::<Vec<_>>(),
        "the average does not change training"
    );
}

/// `--locked-dropout`: kept in the checkpoint, resumed bit for bit (its masks are a pure function
/// of the seed and the step, like plain dropout's), a different run from plain dropout, and
/// refused without --dropout.
#[test]
fn locked_dropout_resumes_exactly_and_needs_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let dir = |n: &str| tmp.path().join(n);
    let mut args = tiny_args(&f, &dir("whole"), 40);
    args.hyper.layers = Some(2);
    args.hyper.dropout = Some(0.3);
    args.hyper.locked_dropout = true;
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    train(&args, &one_thread()).unwrap();
    split_and_resumed(&args, &dir("parts"), 17);
    assert_eq!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("parts").join(STATE_FILE))
    );
    assert!(
        checkpoint::read_config(&dir("parts"))
            .unwrap()
            .training
            .locked_dropout
    );
    let mut plain = args.clone();
    plain.out = Some(dir("plain"));
    plain.hyper.locked_dropout = false;
    train(&plain, &one_thread()).unwrap();
    assert_ne!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("plain").join(STATE_FILE))
    );
    let mut without = args.clone();
    without.out = Some(dir("without"));
    without.hyper.dropout = Some(0.0);
    let err = train(&without, &one_thread()).unwrap_err().to_string();
    assert!(
        err.contains("--locked-dropout") && err.contains("--dropout"),
        "{err}"
    );
}

/// `--weight-drop` and `--embed-dropout`: kept in the checkpoint and resumed bit for bit (their
/// masks are pure functions of the seed and the step), a run through the fused window ends where
/// one through candle's graph (`--reference`) does, rates of 0 are the run without them, and
/// a rate outside [0, 1) is refused naming the flag.
#[test]
fn weight_and_embedding_drop_resume_exactly_and_match_the_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let dir = |n: &str| tmp.path().join(n);
    let mut args = tiny_args(&f, &dir("whole"), 40);
    args.hyper.layers = Some(2);
    args.hyper.weight_drop = Some(0.4);
    args.hyper.embed_dropout = Some(0.2);
    args.hyper.dropout = Some(0.2);
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    train(&args, &one_thread()).unwrap();
    split_and_resumed(&args, &dir("parts"), 17);
    assert_eq!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("parts").join(STATE_FILE))
    );
    let c = checkpoint::read_config(&dir("parts")).unwrap().training;
    assert_eq!((c.weight_drop, c.embed_dropout), (0.4, 0.2));

    // The graph: the same run, to within float rounding over 40 steps.
    let mut graph = args.clone();
    graph.out = Some(dir("graph"));
    graph.reference = true;
    train(&graph, &one_thread()).unwrap();
    for ((name, a), (_, b)) in tensors_of(&dir("whole").join(STATE_FILE))
        .iter()
        .zip(&tensors_of(&dir("graph").join(STATE_FILE)))
    {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{name}: the fused run and the graph's differ by {worst}"
        );
    }

    // Rates of 0 are no regulariser, bit for bit; any other rate changes the run.
    let mut none = args.clone();
    none.out = Some(dir("none"));
    none.hyper.weight_drop = None;
    none.hyper.embed_dropout = None;
    train(&none, &one_thread()).unwrap();
    let mut zero = none.clone();
    zero.out = Some(dir("zero"));
    zero.hyper.weight_drop = Some(0.0);
    zero.hyper.embed_dropout = Some(0.0);
    train(&zero, &one_thread()).unwrap();
    assert_eq!(
        tensors_of(&dir("none").join(STATE_FILE)),
        tensors_of(&dir("zero").join(STATE_FILE))
    );
    assert_ne!(
        tensors_of(&dir("whole").join(STATE_FILE)),
        tensors_of(&dir("none").join(STATE_FILE))
    );
    for (flag, p) in [("--weight-drop", 1.0), ("--embed-dropout", -0.1)] {
        let mut bad = none.clone();
        bad.out = Some(dir("bad"));
        if flag == "--weight-drop" {
            bad.hyper.weight_drop = Some(p);
        } else {
            bad.hyper.embed_dropout = Some(p);
        }
        let err = train(&bad, &one_thread()).unwrap_err().to_string();
        assert!(err.contains(flag) && err.contains("[0, 1)"), "{err}");
    }
}

/// Where `--average` is silent, a run whose budget reads its text 15 times or more validates and
/// saves the weights' moving average (0.999) and says so before it starts; a shorter one, or one
/// given `--average 0`, keeps the latest weights.
#[test]
fn a_long_budget_averages_the_weights_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let text: String = noisy_text().chars().take(1200).collect();
    let f = write_corpus(tmp.path(), "short.txt", &text);
    let dir = |n: &str| tmp.path().join(n);
    let run = |name: &str, epochs: u64, average: Option<f64>| {
        let mut args = tiny_args(&f, &dir(name), 0);
        args.steps = None;
        args.epochs = Some(epochs);
        args.hyper.average = average;
        train(&args, &one_thread()).unwrap();
        checkpoint::read_config(&dir(name))
            .unwrap()
            .training
            .average
    };
    assert_eq!(run("long", 16, None), 0.999);
    assert_eq!(run("short", 14, None), 0.0);
    assert_eq!(run("told", 16, Some(0.0)), 0.0);
    assert_eq!(run("given", 3, Some(0.9)), 0.9);
}

/// `--locked-dropout` on a budget whose default is no dropout says so, instead of blaming a
/// `--dropout 0` the user never gave.
#[test]
fn locked_dropout_without_a_default_dropout_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let mut args = tiny_args(&f, &tmp.path().join("x"), 10);
    args.hyper.locked_dropout = true;
    let err = train(&args, &one_thread()).unwrap_err().to_string();
    assert!(
        err.contains("this budget's default is no dropout") && err.contains("give --dropout P"),
        "{err}"
    );
}

/// The token cache changes no number: a run whose ids are written to the cache, one that reads
/// them back, and a run split and resumed through it all train bit for bit what a run on ids held
/// in memory trains; the resumed run finds the file the new run wrote (one file in all).
#[test]
fn a_run_through_the_token_cache_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write_corpus(tmp.path(), "noisy.txt", &noisy_text());
    let cache = tmp.path().join("cache");
    let plain = tmp.path().join("plain");
    let mut args = tiny_args(&f, &plain, 60);
    // Split by budgets (25, then 60), so a schedule that does not depend on the budget.
    args.hyper.schedule = Some(elman::checkpoint::Schedule::Plateau);
    train(&args, &one_thread()).unwrap();
    let mut cached = args.clone();
    cached.out = Some(tmp.path().join("written"));
    cached.cache_dir = Some(cache.clone());
    train(&cached, &one_thread()).unwrap();
    cached.out = Some(tmp.path().join("read"));
    train(&cached, &one_thread()).unwrap();
    let parts = tmp.path().join("parts");
    let mut head = cached.clone();
    head.out = Some(parts.clone());
    head.steps = Some(25);
    train(&head, &one_thread()).unwrap();
    let resume = TrainArgs {
        resume: Some(parts.clone()),
        steps: Some(60),
        quiet: true,
        cache_dir: Some(cache.clone()),
        ..Default::default()
    };
    train(&resume, &one_thread()).unwrap();
    let want = tensors_of(&plain.join("model.safetensors"));
    let curve = |d: &Path| -> Vec<(u64, f64, f64)> {
        checkpoint::read_metrics(d)
            .unwrap()
            .iter()
            .map(|m| (m.step, m.train_loss, m.val_loss))
            .collect()
    };
    for d in ["written", "read"] {
        let d = tmp.path().join(d);
        assert_eq!(
            tensors_of(&d.join("model.safetensors")),
            want,
            "{}",
            d.display()
        );
        assert_eq!(curve(&d), curve(&plain), "{}", d.display());
    }
    // The split run ends in the unbroken run's state (its best model may differ: it was
    // evaluated where it stopped).
    assert_eq!(
        tensors_of(&parts.join(STATE_FILE)),
        tensors_of(&plain.join(STATE_FILE))
    );
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "tokens"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}
