//! Looking inside a model: gradient flow against candle's autograd and the chapter's (1/4)^k bound,
//! training-curve charts, and the surprisal heatmap (its numbers against `elman eval`, its page in
//! a real headless Chromium).

mod common;
use common::*;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder, RNN};
use elman::cell::CellKind;
use elman::cell::{Activation, LayerState};
use elman::config::ModelConfig;
use elman::gradflow::{self, spectral_norm, Options};
use elman::infer::StreamModel;
use elman::model::{init_params, GraphModel};
use elman::vocab::{Level, Vocab, VocabOptions};
use std::path::{Path, PathBuf};

const TEXT: &str = "天空飞过一只小鸟。The bird flew over the hill, and a dragonfly followed it.\n";

/// HTML's special characters, a script end tag and a line break.
const SPECIAL: &str = "一只小鸟 <b>&</b> </script> \"bird\"\nThe dragonfly flew.";

fn fresh_cell(
    vocab: &Vocab,
    hidden: usize,
    cell: CellKind,
    act: Activation,
    seed: u64,
) -> GraphModel {
    let cfg = ModelConfig {
        activation: act,
        cell,
        ..ModelConfig::new(vocab.len(), hidden)
    };
    let vm = init_params(&cfg, seed, DType::F32, &Device::Cpu).unwrap();
    // Stronger weights than the default init, so the curves are far from trivial.
    for (_, v) in vm.data().lock().unwrap().iter() {
        v.set(&v.as_tensor().affine(2.5, 0.0).unwrap()).unwrap();
    }
    GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap()
}

/// ‖∂L(t)/∂s(t−k)‖ for k = 0..=max_k by candle's autograd, and for an LSTM ‖∂L(t)/∂c(t−k)‖ too.
/// candle keeps gradients only for leaf variables, so for each k the state at t−k (h, and an
/// LSTM's c, each its own leaf) is made a leaf and the graph from it to L(t) rebuilt.
fn autograd_norms(m: &GraphModel, ids: &[u32], t: usize, max_k: usize) -> (Vec<f64>, Vec<f64>) {
    let dev = Device::Cpu;
    let inputs: Vec<Tensor> = ids[..=t]
        .iter()
        .map(|&x| Tensor::new(&[x], &dev).unwrap())
        .collect();
    let detached = m.detached();
    let layer = &detached.layers[0];
    let run = |xs: &[Tensor], s0: &LayerState| -> Vec<LayerState> { layer.run(xs, s0).unwrap() };
    let states = run(&inputs, &layer.zero_state(1).unwrap());
    let target = Tensor::new(&[ids[t + 1]], &dev).unwrap();
    let norm = |g: Option<&Tensor>| -> f64 {
        g.map_or(0.0, |g| {
            let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
        })
    };
    (0..=max_k)
        .map(|k| {
            let at = &states[t - k];
            let h = candle_core::Var::from_tensor(&at.h).unwrap();
            let c =
                at.c.as_ref()
                    .map(|c| candle_core::Var::from_tensor(c).unwrap());
            let leaf = LayerState {
                h: h.as_tensor().clone(),
                c: c.as_ref().map(|c| c.as_tensor().clone()),
            };
            let loss_of = |top: &Tensor| {
                let logits = detached.decoder.forward(top).unwrap();
                let loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
                loss.backward().unwrap()
            };
            if k == 0 {
                // c(t) reaches L(t) only through h(t) = o(t) ⊙ tanh c(t): with the output gate
                // o = h / tanh c held fixed, what c(t) gets from there.
                let dh = norm(loss_of(&leaf.h).get(h.as_tensor()));
                let dc = c.as_ref().map_or(0.0, |c| {
                    let o = (&at.h / at.c.as_ref().unwrap().tanh().unwrap()).unwrap();
                    let top = (o * c.as_tensor().tanh().unwrap()).unwrap();
                    norm(loss_of(&top).get(c.as_tensor()))
                });
                return (dh, dc);
            }
            let top = run(&inputs[t - k + 1..=t], &leaf).pop().unwrap().h;
            let grads = loss_of(&top);
            let dc = c.as_ref().map_or(0.0, |c| norm(grads.get(c.as_tensor())));
            (norm(grads.get(h.as_tensor())), dc)
        })
        .unzip()
}

#[test]
fn gradflow_equals_autograd_for_every_cell() {
    let vocab = Vocab::build(TEXT, &VocabOptions::default()).unwrap();
    let ids = vocab.encode(TEXT).unwrap();
    let kinds = [
        (CellKind::Elman, Activation::Sigmoid),
        (CellKind::Elman, Activation::Tanh),
        (CellKind::Elman, Activation::Relu),
        (CellKind::Lstm, Activation::Tanh),
        (CellKind::Gru, Activation::Tanh),
    ];
    for (cell, act) in kinds {
        let m = fresh_cell(&vocab, 12, cell, act, 3);
        let engine = StreamModel::new(&m).unwrap();
        // One position: measure picks the last one, t = len − 2.
        for len in [20, 41, ids.len()] {
            let max_k = 15;
            let curves = gradflow::measure(
                &engine,
                &ids[..len],
                Options {
                    max_k,
                    positions: 1,
                },
                "x",
            )
            .unwrap();
            let (want, want_c) = autograd_norms(&m, &ids[..len], len - 2, max_k);
            let c = &curves[0];
            for (k, (&g, &w)) in c.mean_norm.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs() + 1e-9,
                    "{cell} {act} len {len} k {k}: gradflow {g:e} vs autograd {w:e}"
                );
            }
            assert!(c.mean_norm[max_k] > 0.0 || act == Activation::Relu);
            // An LSTM's cell-state curve too; no other cell has one.
            assert_eq!(curves.len(), 1 + usize::from(cell == CellKind::Lstm));
            if let Some(cc) = curves.get(1) {
                for (k, (&g, &w)) in cc.mean_norm.iter().zip(&want_c).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs() + 1e-9,
                        "{cell} len {len} k {k}: cell state {g:e} vs autograd {w:e}"
                    );
                }
                assert!(cc.mean_norm[max_k] > 0.0);
                assert!(
                    cc.mean_norm[0] > 0.0,
                    "k = 0 reads what c(t) gets through h(t)"
                );
                assert_eq!(cc.relative()[0], 1.0);
            }
        }
    }
}

#[test]
fn spectral_norm_of_known_matrices() {
    // diag(3, −5, 1): ‖·‖₂ = 5.
    let d = [3.0f32, 0.0, 0.0, 0.0, -5.0, 0.0, 0.0, 0.0, 1.0];
    assert!((spectral_norm(&d, 3) - 5.0).abs() < 1e-9);
    // A rotation by 30° scaled by 2: every singular value is 2.
    let (c, s) = (
        2.0 * 30f32.to_radians().cos(),
        2.0 * 30f32.to_radians().sin(),
    );
    assert!((spectral_norm(&[c, -s, s, c], 2) - 2.0).abs() < 1e-6);
    // Rank one: u vᵀ has ‖u‖‖v‖.
    let (u, v) = ([1.0f32, 2.0, 2.0], [0.0f32, 3.0, 4.0]);
    let m: Vec<f32> = (0..9).map(|i| u[i / 3] * v[i % 3]).collect();
    assert!((spectral_norm(&m, 3) - 15.0).abs() < 1e-4);
}

fn write_corpus(dir: &Path) -> PathBuf {
    let p = dir.join("c.txt");
    std::fs::write(&p, TEXT.repeat(30) + SPECIAL).unwrap();
    p
}

fn request(text: PathBuf, fresh: Vec<Activation>, w_norm: Option<f64>) -> gradflow::Request {
    gradflow::Request {
        model: None,
        text: vec![text],
        fresh: fresh
            .into_iter()
            .map(|activation| gradflow::Kind {
                cell: CellKind::Elman,
                activation,
            })
            .collect(),
        hidden: Some(32),
        seed: 9,
        w_norm,
        options: Options {
            max_k: 20,
            positions: 200,
        },
        max_tokens: 100_000,
        quiet: true,
    }
}

#[test]
fn sigmoid_gradient_stays_under_the_books_quarter_power_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let text = write_corpus(tmp.path());
    // ‖W‖₂ = 0.95 ≤ 1, so for the sigmoid ‖δ(k)‖ ≤ ‖δ(0)‖ (0.95/4)^k ≤ ‖δ(0)‖ (1/4)^k.
    let rt = elman::runtime::Runtime::default();
    let r = gradflow::run(
        &request(
            text.clone(),
            vec![Activation::Sigmoid, Activation::Tanh],
            Some(0.95),
        ),
        &rt,
    )
    .unwrap();
    let (sig, tanh) = (&r.curves[0], &r.curves[1]);
    assert!((sig.w_spectral_norm - 0.95).abs() < 1e-4);
    assert_eq!(sig.positions, 200);
    for k in 0..=20 {
        let bound = sig.mean_norm[0] * 0.25f64.powi(k as i32);
        assert!(
            sig.mean_norm[k] <= bound * (1.0 + 1e-9),
            "k {k}: {:e} above (1/4)^k bound {bound:e}",
            sig.mean_norm[k]
        );
        assert!(sig.mean_norm[k] <= sig.bound[k] * (1.0 + 1e-9));
        assert!(sig.mean_norm[k] > 0.0, "k {k}: the gradient was measured");
    }
    // The same W with tanh (σ′ up to 1) keeps far more: the bound is the sigmoid's, not a given.
    assert!(tanh.mean_norm[10] > 1e3 * sig.mean_norm[10]);
    assert!(tanh.mean_norm[10] > tanh.mean_norm[0] * 0.25f64.powi(10));

    // With ‖W‖₂ = 8 the sigmoid's guarantee (8/4)^k no longer vanishes, and the measured curve
    // does rise above (1/4)^k: the check above is one that can fail.
    let big = gradflow::run(&request(text, vec![Activation::Sigmoid], Some(8.0)), &rt).unwrap();
    let c = &big.curves[0];
    assert!((1..=20).any(|k| c.mean_norm[k] > c.mean_norm[0] * 0.25f64.powi(k as i32)));
}

/// A small trained model (char level, or word level with `--level word`).
fn trained(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    write_corpus(dir);
    elman(dir)
        .args([
            "train", "c.txt", "--out", name, "--hidden", "24", "--batch", "4",
        ])
        .args(["--bptt", "16", "--steps", "60", "--eval-every", "20", "-q"])
        .args(extra)
        .assert()
        .success();
    dir.join(name)
}

#[test]
fn gradflow_command_writes_a_chart_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    trained(d, "m", &["--activation", "sigmoid"]);
    let v = json(elman(d).args([
        "gradflow",
        "--model",
        "m",
        "--compare",
        "tanh,relu",
        "--max-k",
        "12",
        "--positions",
        "50",
        "--out",
        "g.svg",
        "--json",
    ]));
    let curves = v["curves"].as_array().unwrap();
    let labels: Vec<&str> = curves
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "m (sigmoid, trained)",
            "tanh (fresh, H=24)",
            "relu (fresh, H=24)"
        ]
    );
    for c in curves {
        assert_eq!(c["mean_norm"].as_array().unwrap().len(), 13);
    }
    let svg = std::fs::read_to_string(d.join("g.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for l in labels {
        assert!(svg.contains(l), "legend lacks {l}");
    }
    assert!(svg.contains("(1/4)^k"), "the sigmoid's bound is drawn");
    // The table names the bound too.
    let out = elman(d)
        .args(["gradflow", "-m", "m", "--max-k", "5", "--out", "h.svg"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sup σ′ = 1/4"), "{text}");
    // Only the first --max-tokens tokens count: the whole corpus and a file of its first lines
    // (enough for them) measure the same curve.
    let lines: String = TEXT.repeat(6);
    std::fs::write(d.join("head.txt"), &lines).unwrap();
    let first = |file: &str| {
        let v = json(elman(d).args([
            "gradflow",
            "-m",
            "m",
            "--text",
            file,
            "--max-tokens",
            "300",
            "--max-k",
            "8",
            "--positions",
            "40",
            "--out",
            "f.svg",
            "--json",
        ]));
        assert_eq!(v["tokens"], 300);
        v["curves"][0]["mean_norm"].clone()
    };
    assert!(lines.chars().count() > 300);
    assert_eq!(first("c.txt"), first("head.txt"));
    fails_with(
        elman(d).args(["gradflow", "--text", "missing.txt", "--out", "x.svg"]),
        &["missing.txt"],
    );
    fails_with(
        elman(d).args(["gradflow", "-m", "m", "--max-k", "100000"]),
        &["needs at least"],
    );
}

#[test]
fn training_keeps_loss_svg_fresh_and_plot_overlays_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let a = trained(d, "a", &[]);
    let svg_a = std::fs::read_to_string(a.join("loss.svg")).unwrap();
    assert!(svg_a.starts_with("<svg") && svg_a.contains("validation"));
    // Three evaluations → three points per curve; resuming adds to the same chart.
    elman(d)
        .args(["train", "--resume", "a", "--steps", "100", "-q"])
        .assert()
        .success();
    let svg_a2 = std::fs::read_to_string(a.join("loss.svg")).unwrap();
    assert_ne!(svg_a, svg_a2, "refreshed at each evaluation");
    let metrics = elman::checkpoint::read_metrics(&a).unwrap();
    assert!(metrics.len() >= 5);

    trained(d, "b", &["--lr", "0.01"]);
    elman(d)
        .args(["plot", "a", "b", "--out", "both.svg"])
        .assert()
        .success();
    let both = std::fs::read_to_string(d.join("both.svg")).unwrap();
    for l in ["a train", "a validation", "b train", "b validation"] {
        assert!(both.contains(l), "legend lacks {l}");
    }
    fails_with(elman(d).args(["plot", "nope"]), &["nope"]);
}

fn heatmap_json(d: &Path, model: &str, file: &str, extra: &[&str]) -> serde_json::Value {
    json(
        elman(d)
            .args(["heatmap", "-m", model, file, "--out", "page.html", "--json"])
            .args(extra),
    )
}

fn eval_nats(d: &Path, model: &str, file: &str) -> f64 {
    let v = json(elman(d).args(["eval", "-m", model, file, "--json"]));
    v["nats_per_token"].as_f64().unwrap()
}

/// The JSON data block of a heatmap page.
fn page_data(html: &str) -> serde_json::Value {
    let start = html
        .find("<script type=\"application/json\" id=\"data\">")
        .unwrap();
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</script>").unwrap();
    serde_json::from_str(&rest[open..close]).unwrap()
}

#[test]
fn heatmap_numbers_are_evals_and_the_text_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    trained(d, "m", &[]);
    // A text with HTML specials, a script end tag and a line break in it.
    let text = SPECIAL;
    std::fs::write(d.join("t.txt"), text).unwrap();
    let v = heatmap_json(d, "m", "t.txt", &["--unit", "5"]);
    let want = eval_nats(d, "m", "t.txt");
    let got = v["nats_per_token"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1e-4 * want,
        "heatmap {got} vs eval {want}"
    );
    let html = std::fs::read_to_string(d.join("page.html")).unwrap();
    assert_eq!(
        html.matches("</script>").count(),
        2,
        "the text cannot close a script"
    );
    let data = page_data(&html);
    let toks = data["tokens"].as_array().unwrap();
    assert_eq!(toks.len(), text.chars().count());
    let joined: String = toks.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(joined, text, "every character round-trips through the page");
    let bits: Vec<f64> = toks.iter().filter_map(|t| t["bits"].as_f64()).collect();
    assert_eq!(bits.len(), toks.len() - 1);
    let mean = bits.iter().sum::<f64>() * std::f64::consts::LN_2 / bits.len() as f64;
    assert!((mean - want).abs() < 1e-4 * want);
    for t in &toks[1..] {
        let top = t["top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let ps: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(ps.windows(2).all(|w| w[0] >= w[1]), "sorted: {ps:?}");
        assert!(
            t["unit"].as_f64().unwrap().abs() <= 1.0,
            "tanh unit in [-1, 1]"
        );
    }
    fails_with(
        elman(d).args(["heatmap", "-m", "m", "t.txt", "--unit", "24"]),
        &["--unit 24", "24 hidden units"],
    );
    // A character the model never saw (and no <unk>): the file and the character are named.
    std::fs::write(d.join("new.txt"), "一只熊猫").unwrap();
    fails_with(
        elman(d).args(["heatmap", "-m", "m", "new.txt"]),
        &[
            "new.txt: line 1, column 3",
            "\"熊\"",
            "not in the model's vocabulary",
        ],
    );
}

#[test]
fn word_level_heatmap_keeps_the_spaces_between_words() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    trained(d, "w", &["--level", "word"]);
    let text = "The bird flew over  the hill, and a dragonfly followed it.\nThe bird";
    std::fs::write(d.join("t.txt"), text).unwrap();
    let v = heatmap_json(d, "w", "t.txt", &[]);
    let want = eval_nats(d, "w", "t.txt");
    assert!((v["nats_per_token"].as_f64().unwrap() - want).abs() < 1e-4 * want);
    let html = std::fs::read_to_string(d.join("page.html")).unwrap();
    let toks = page_data(&html)["tokens"].as_array().unwrap().clone();
    let words: Vec<&str> = toks.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(&words[..5], ["The", "bird", "flew", "over", "the"]);
    assert!(html.contains("</span>  <span"), "the double space survives");
    let vocab = Vocab::from_tokenizer_json(
        &d.join("w/tokenizer.json"),
        Level::Word,
        false,
        Default::default(),
    );
    assert!(vocab.is_ok());
}

/// Headless Chromium, as the machine's probe starts it (no network, no sandbox as root).
fn chromium() -> Option<std::process::Command> {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    match bin {
        Some(b) => {
            let mut c = std::process::Command::new(b);
            c.args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ]);
            Some(c)
        }
        None => None,
    }
}

#[test]
#[ignore = "needs Chromium (apt-get install chromium; cargo test -- --ignored)"]
fn heatmap_page_in_a_real_browser() {
    assert!(
        chromium().is_some(),
        "Chromium is not installed (apt-get install chromium)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    trained(d, "m", &[]);
    let text = TEXT.repeat(3);
    std::fs::write(d.join("t.txt"), &text).unwrap();
    heatmap_json(d, "m", "t.txt", &["--unit", "1"]);
    let page = d.join("page.html");
    let url = format!("file://{}", page.display());
    let profile = d.join("profile");

    // The DOM after the page's script ran: its summary is computed from the embedded data.
    let out = chromium()
        .unwrap()
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    let summary_at = dom.find("id=\"js-summary\"").expect("summary element");
    let summary = &dom[summary_at..dom[summary_at..].find("</p>").unwrap() + summary_at];
    assert!(summary.contains("Page data:"), "the script ran: {summary}");
    let attr = "data-nats-per-token=\"";
    let a = summary.find(attr).unwrap() + attr.len();
    let shown: f64 = summary[a..a + summary[a..].find('"').unwrap()]
        .parse()
        .unwrap();
    let want = eval_nats(d, "m", "t.txt");
    assert!(
        (shown - want).abs() < 1e-4 * want,
        "browser computed {shown}, eval says {want}"
    );
    assert_eq!(
        dom.matches("<span class=\"t\"").count(),
        text.chars().count(),
        "one span per character"
    );

    // A screenshot: white page, text, and red-shaded surprising tokens.
    let shot = d.join("shot.png");
    let out = chromium()
        .unwrap()
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=900,600", "--virtual-time-budget=5000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (900, 600));
    let channels = info.color_type.samples();
    assert!(channels >= 3);
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let white = px
        .iter()
        .filter(|p| p[0] > 245 && p[1] > 245 && p[2] > 245)
        .count();
    let dark = px
        .iter()
        .filter(|p| p[0] < 90 && p[1] < 90 && p[2] < 90)
        .count();
    let red = px
        .iter()
        .filter(|p| {
            p[0] > 180 && (p[1] as i32) < p[0] as i32 - 60 && (p[2] as i32) < p[0] as i32 - 60
        })
        .count();
    let n = px.len();
    assert!(white > n / 2, "mostly white background: {white}/{n}");
    assert!(dark > n / 500, "text drawn: {dark}/{n}");
    assert!(red > n / 2000, "surprising tokens shaded red: {red}/{n}");
}

/// `gradflow --w-norm` scales a fresh model's W_hh in the batch-1 model: its forward step (which
/// reads the packed copy) and its backward step (which reads the stored one) must both run the
/// scaled network. The engine scaled in place against an engine built from parameters whose
/// W_hh was scaled before loading.
#[test]
fn a_scaled_recurrent_weight_is_what_the_forward_step_runs() {
    let vocab = Vocab::build(TEXT, &VocabOptions::default()).unwrap();
    let ids = vocab.encode(TEXT).unwrap();
    for cell in [CellKind::Elman, CellKind::Lstm, CellKind::Gru] {
        let cfg = ModelConfig {
            cell,
            ..ModelConfig::new(vocab.len(), 12)
        };
        let vm = init_params(&cfg, 4, DType::F32, &Device::Cpu).unwrap();
        let m =
            GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let mut scaled_in_place = StreamModel::new(&m).unwrap();
        scaled_in_place.scale_recurrent_weight(0, 3.0);
        for (name, v) in vm.data().lock().unwrap().iter() {
            if name == "rnn.weight_hh_l0" {
                v.set(&v.as_tensor().affine(3.0, 0.0).unwrap()).unwrap();
            }
        }
        let m =
            GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let built_scaled = StreamModel::new(&m).unwrap();
        assert_eq!(
            scaled_in_place.recurrent_weight(0),
            built_scaled.recurrent_weight(0)
        );
        let (mut a, mut b) = (scaled_in_place.zero_state(), built_scaled.zero_state());
        for (t, &x) in ids.iter().enumerate() {
            scaled_in_place.step(&mut a, x);
            built_scaled.step(&mut b, x);
            for (p, q) in scaled_in_place
                .log_probs(&a)
                .iter()
                .zip(built_scaled.log_probs(&b))
            {
                assert!(
                    (p - q).abs() <= 1e-5 * q.abs().max(1.0),
                    "{cell} t={t}: log p {p} after scaling in place, {q} built scaled"
                );
            }
        }
    }
}
