//! Using a model: the graph-free engine against candle's forward pass, sampling rules, beam search
//! against exhaustive enumeration, and ranking against an independent computation.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use elman::cell::Activation;
use elman::cell::CellKind;
use elman::config::ModelConfig;
use elman::generate::{
    beam_search, encode_prompt, generate, rank, sample_next, sampling_distribution, warm_up,
    RankBy, SampleOptions,
};
use elman::infer::StreamModel;
use elman::model::{init_params, GraphModel};
use elman::vocab::{Vocab, VocabOptions};
use rand::SeedableRng;

/// A random model over the characters of `text`, weights scaled up so distributions are peaky and
/// far from uniform.
fn model_for(
    text: &str,
    hidden: usize,
    layers: usize,
    act: Activation,
    seed: u64,
) -> (Vocab, GraphModel) {
    model_of_cell(text, hidden, layers, CellKind::Elman, act, seed)
}

fn model_of_cell(
    text: &str,
    hidden: usize,
    layers: usize,
    cell: CellKind,
    act: Activation,
    seed: u64,
) -> (Vocab, GraphModel) {
    let vocab = Vocab::build(text, &VocabOptions::default()).unwrap();
    let cfg = ModelConfig {
        layers,
        activation: act,
        cell,
        ..ModelConfig::new(vocab.len(), hidden)
    };
    let vm = init_params(&cfg, seed, DType::F32, &Device::Cpu).unwrap();
    for (_, v) in vm.data().lock().unwrap().iter() {
        v.set(&v.as_tensor().affine(4.0, 0.0).unwrap()).unwrap();
    }
    let m = GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    (vocab, m.detached())
}

/// log-softmax after each token of `ids` (from s = 0), via candle: row t is log p(· | ids[..=t]).
fn candle_log_probs(m: &GraphModel, ids: &[u32]) -> Vec<Vec<f64>> {
    let x = Tensor::from_vec(ids.to_vec(), (ids.len(), 1), &Device::Cpu).unwrap();
    let (logits, _) = m.forward(&x, &m.zero_state(1).unwrap()).unwrap();
    candle_nn::ops::log_softmax(&logits.to_dtype(DType::F64).unwrap(), D::Minus1)
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn engine_matches_candle_forward() {
    let kinds = [
        (CellKind::Elman, Activation::Tanh),
        (CellKind::Elman, Activation::Sigmoid),
        (CellKind::Elman, Activation::Relu),
        (CellKind::Lstm, Activation::Tanh),
        (CellKind::Gru, Activation::Tanh),
    ];
    for (cell, act) in kinds {
        for layers in [1, 2] {
            let (vocab, m) = model_of_cell("天空飞过一只小鸟 bird!", 19, layers, cell, act, 5);
            let ids = vocab.encode("一只小鸟飞过天空 bird bird!").unwrap();
            let want = candle_log_probs(&m, &ids);
            let e = StreamModel::new(&m).unwrap();
            let mut st = e.zero_state();
            for (t, &x) in ids.iter().enumerate() {
                e.step(&mut st, x);
                let got = e.log_probs(&st);
                for (a, b) in got.iter().zip(&want[t]) {
                    // f32 sums in another order: relative agreement (relu activations grow large).
                    assert!(
                        (a - b).abs() < 1e-4 * b.abs().max(1.0),
                        "{cell} {act} L={layers} t={t}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// The engine with an input embedding (and one tied to the decoder) against candle's forward.
#[test]
fn engine_matches_candle_forward_through_an_embedding() {
    let text = "天空飞过一只小鸟 bird!";
    let vocab = Vocab::build(text, &VocabOptions::default()).unwrap();
    for (embed, tied, cell) in [
        (7, false, CellKind::Elman),
        (19, true, CellKind::Elman),
        (19, true, CellKind::Lstm),
        (5, false, CellKind::Gru),
    ] {
        let cfg = ModelConfig {
            layers: 2,
            cell,
            embed: Some(embed),
            tied,
            ..ModelConfig::new(vocab.len(), 19)
        };
        let vm = init_params(&cfg, 3, DType::F32, &Device::Cpu).unwrap();
        let m =
            GraphModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let ids = vocab.encode("一只小鸟飞过天空 bird bird!").unwrap();
        let want = candle_log_probs(&m, &ids);
        let e = StreamModel::new(&m).unwrap();
        let mut st = e.zero_state();
        for (t, &x) in ids.iter().enumerate() {
            e.step(&mut st, x);
            for (a, b) in e.log_probs(&st).iter().zip(&want[t]) {
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1.0),
                    "{cell} embed {embed} tied {tied} t={t}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn sampling_is_deterministic_for_a_seed() {
    let (vocab, m) = model_for("abcdefgh 天空小鸟", 16, 1, Activation::Tanh, 1);
    let e = StreamModel::new(&m).unwrap();
    let run = |seed: u64| {
        let mut st = warm_up(&e, &vocab, &vocab.encode("ab").unwrap()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        generate(
            &e,
            &mut st,
            200,
            &SampleOptions::default(),
            &mut rng,
            |_| true,
        )
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn temperature_zero_is_argmax() {
    let (vocab, m) = model_for("abcdefgh 天空小鸟", 16, 2, Activation::Tanh, 2);
    let e = StreamModel::new(&m).unwrap();
    let prompt = vocab.encode("天空").unwrap();
    let mut st = warm_up(&e, &vocab, &prompt).unwrap();
    let opts = SampleOptions {
        temperature: 0.0,
        ..Default::default()
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let got = generate(&e, &mut st, 30, &opts, &mut rng, |_| true);
    // Independently: greedy decoding with candle, re-reading the whole sequence each step.
    let mut seq = prompt.clone();
    for _ in 0..30 {
        let lp = candle_log_probs(&m, &seq);
        let last = lp.last().unwrap();
        let best = (0..last.len())
            .max_by(|&a, &b| last[a].total_cmp(&last[b]).then(b.cmp(&a)))
            .unwrap();
        seq.push(best as u32);
    }
    assert_eq!(got, seq[prompt.len()..]);
    // A tiny positive temperature also picks the argmax.
    let tiny = SampleOptions {
        temperature: 1e-9,
        ..Default::default()
    };
    let mut st = warm_up(&e, &vocab, &prompt).unwrap();
    assert_eq!(generate(&e, &mut st, 30, &tiny, &mut rng, |_| true), got);
}

#[test]
fn top_k_and_top_p_never_leave_their_set() {
    let (vocab, m) = model_for("abcdefghijklmnop", 12, 1, Activation::Tanh, 3);
    let e = StreamModel::new(&m).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut st = warm_up(&e, &vocab, &vocab.encode("a").unwrap()).unwrap();
    let mut seen_outside_top1 = false;
    for step in 0..3000 {
        let lp = e.log_probs(&st);
        let mut order: Vec<usize> = (0..lp.len()).collect();
        order.sort_by(|&a, &b| lp[b].total_cmp(&lp[a]));
        let (opts, allowed): (SampleOptions, Vec<usize>) = if step % 2 == 0 {
            let k = 1 + step % 4;
            (
                SampleOptions {
                    top_k: Some(k),
                    ..Default::default()
                },
                order[..k].to_vec(),
            )
        } else {
            // The nucleus, computed here: most probable first until the mass reaches p.
            let p = 0.5;
            let mut mass = 0.0;
            let mut set = Vec::new();
            for &i in &order {
                set.push(i);
                mass += lp[i].exp();
                if mass >= p {
                    break;
                }
            }
            (
                SampleOptions {
                    top_p: Some(p),
                    ..Default::default()
                },
                set,
            )
        };
        let x = sample_next(&lp, &opts, &mut rng) as usize;
        assert!(allowed.contains(&x), "step {step}: {x} not in {allowed:?}");
        seen_outside_top1 |= x != order[0];
        e.step(&mut st, x as u32);
    }
    assert!(seen_outside_top1, "the sets were actually sampled from");
    // The filtered distributions are normalised.
    let lp = e.log_probs(&st);
    for opts in [
        SampleOptions {
            top_k: Some(3),
            ..Default::default()
        },
        SampleOptions {
            top_p: Some(0.9),
            temperature: 0.7,
            ..Default::default()
        },
    ] {
        let d = sampling_distribution(&lp, &opts);
        assert!((d.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
    }
}

#[test]
fn beam_search_finds_what_exhaustive_enumeration_finds() {
    // Three tokens, "." ends a continuation; every continuation of up to 4 tokens can be listed.
    // (Symbols, not letters: a continuation the limit cuts inside a word would be finished.)
    let (vocab, m) = model_for("+-.", 8, 1, Activation::Tanh, 11);
    let e = StreamModel::new(&m).unwrap();
    let prompt = vocab.encode("+-").unwrap();
    let dot = vocab.id(".").unwrap();
    let max = 4;
    let mut all: Vec<(Vec<u32>, f64)> = Vec::new();
    fn walk(
        seq: Vec<u32>,
        prompt: &[u32],
        m: &GraphModel,
        dot: u32,
        max: usize,
        out: &mut Vec<(Vec<u32>, f64)>,
    ) {
        for x in 0..3u32 {
            let mut s = seq.clone();
            s.push(x);
            if x == dot || s.len() == max {
                let full: Vec<u32> = prompt.iter().chain(&s).cloned().collect();
                let lp = candle_log_probs(m, &full);
                let score: f64 = (0..s.len())
                    .map(|i| lp[prompt.len() - 1 + i][s[i] as usize])
                    .sum();
                out.push((s, score));
            } else {
                walk(s, prompt, m, dot, max, out);
            }
        }
    }
    walk(Vec::new(), &prompt, &m, dot, max, &mut all);
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert_eq!(all.len(), 31); // 1 + 2 + 4 + 8 end at ".", 2·2·2·2 reach the limit
    let st = warm_up(&e, &vocab, &prompt).unwrap();
    let beams = beam_search(&e, &vocab, &st, 1000, max);
    assert_eq!(beams.len(), all.len());
    for (b, (ids, score)) in beams.iter().zip(&all) {
        assert_eq!(&b.ids, ids);
        assert!((b.logprob - score).abs() < 1e-4, "{} vs {score}", b.logprob);
        assert_eq!(b.complete, *ids.last().unwrap() == dot);
    }
    // Width 1 is greedy search.
    let greedy = beam_search(&e, &vocab, &st, 1, max);
    let mut s = st.clone();
    let mut ids = Vec::new();
    for _ in 0..max {
        let lp = e.log_probs(&s);
        let x = elman::generate::argmax(&lp);
        ids.push(x);
        if x == dot {
            break;
        }
        e.step(&mut s, x);
    }
    assert_eq!(greedy[0].ids, ids);
}

#[test]
fn rank_scores_equal_an_independent_sum_of_log_softmax() {
    let (vocab, m) = model_for(
        "天空飞过一只小鸟蜻蜓人坦克猪",
        16,
        2,
        Activation::Sigmoid,
        4,
    );
    let e = StreamModel::new(&m).unwrap();
    let prompt = "天空飞过一只";
    let p = encode_prompt(&vocab, prompt, "prompt").unwrap();
    let st = warm_up(&e, &vocab, &p.ids).unwrap();
    let cands: Vec<String> = ["小鸟", "蜻蜓", "人", "坦克", "猪", "小鸟小鸟"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ranked = rank(&e, &vocab, &st, &cands, RankBy::Total).unwrap();
    assert_eq!(ranked.len(), cands.len());
    for r in &ranked {
        // Independently: read prompt + candidate with candle; the candidate's token t is scored
        // by the distribution after the token before it.
        let c = vocab.encode(&r.candidate).unwrap();
        let full: Vec<u32> = p.ids.iter().chain(&c).cloned().collect();
        let lp = candle_log_probs(&m, &full);
        let want: f64 = c
            .iter()
            .enumerate()
            .map(|(i, &x)| lp[p.ids.len() - 1 + i][x as usize])
            .sum();
        assert!(
            (r.total_logprob - want).abs() < 1e-4,
            "{}: {} vs {want}",
            r.candidate,
            r.total_logprob
        );
        assert!((r.mean_logprob - want / c.len() as f64).abs() < 1e-4);
        assert_eq!(r.tokens.len(), c.len());
    }
    // Sorted by total; probabilities over the set sum to one and follow the totals.
    assert!(ranked
        .windows(2)
        .all(|w| w[0].total_logprob >= w[1].total_logprob));
    let z: f64 = ranked.iter().map(|r| r.prob_in_set.unwrap()).sum();
    assert!((z - 1.0).abs() < 1e-9);
    let by_mean = rank(&e, &vocab, &st, &cands, RankBy::Mean).unwrap();
    assert!(by_mean
        .windows(2)
        .all(|w| w[0].mean_logprob >= w[1].mean_logprob));
    // A longer candidate that extends another can never be more probable than it.
    let get = |c: &str| {
        ranked
            .iter()
            .find(|r| r.candidate == c)
            .unwrap()
            .total_logprob
    };
    assert!(get("小鸟小鸟") < get("小鸟"));
}
