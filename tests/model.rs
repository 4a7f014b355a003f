//! The network itself: a hand-worked forward pass, autograd against finite differences, the
//! candle-nn `RNN` trait, and save/load.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, RNN};
use elman::cell::Activation;
use elman::cell::CellKind;
use elman::config::ModelConfig;
use elman::model::WindowMasks;
use elman::model::{cross_entropy, init_params, GraphModel};
use elman::stochastic::{Dropout, EmbedDrop, Masks, WeightDrop};
use std::collections::HashMap;

fn tensors(pairs: &[(&str, Vec<f64>, Vec<usize>)]) -> HashMap<String, Tensor> {
    pairs
        .iter()
        .map(|(n, v, s)| {
            (
                n.to_string(),
                Tensor::from_vec(v.clone(), s.clone(), &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

/// Vocabulary {0, 1}, one hidden unit, fixed weights, worked out by hand:
///   s(0) = tanh(U[:,0] + b)        = tanh(0.5 + 0.1)               = 0.5370495669980353
///   o(0) = V s(0) + c              = (0.53705, −0.53705 + 0.2)
///   s(1) = tanh(U[:,1] + W s(0) + b) = tanh(−0.5 + 0.8·0.53705 + 0.1) = 0.02963097707924829
///   o(1) = (0.02963, −0.02963 + 0.2)
///   loss = −(log y(0)[1] + log y(1)[0]) / 2                           = 0.9943994550237557
#[test]
fn hand_worked_forward_pass_on_two_tokens() {
    let cfg = ModelConfig {
        vocab_size: 2,
        hidden: 1,
        layers: 1,
        activation: Activation::Tanh,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    let ts = tensors(&[
        ("rnn.weight_ih_l0", vec![0.5, -0.5], vec![1, 2]),
        ("rnn.weight_hh_l0", vec![0.8], vec![1, 1]),
        ("rnn.bias_ih_l0", vec![0.1], vec![1]),
        ("rnn.bias_hh_l0", vec![0.0], vec![1]),
        ("decoder.weight", vec![1.0, -1.0], vec![2, 1]),
        ("decoder.bias", vec![0.0, 0.2], vec![2]),
    ]);
    let m = GraphModel::new(cfg, VarBuilder::from_tensors(ts, DType::F64, &Device::Cpu)).unwrap();
    let ids = Tensor::new(&[[0u32], [1u32]], &Device::Cpu).unwrap(); // (T=2, B=1)
    let (logits, last) = m.forward(&ids, &m.zero_state(1).unwrap()).unwrap();
    let got: Vec<Vec<f64>> = logits.to_vec2().unwrap();
    let s0 = 0.5370495669980353;
    let s1 = 0.02963097707924829;
    let want = [[s0, -s0 + 0.2], [s1, -s1 + 0.2]];
    for (g, w) in got.iter().zip(want.iter()) {
        for (a, b) in g.iter().zip(w.iter()) {
            assert!((a - b).abs() < 1e-12, "logit {a} != {b}");
        }
    }
    let h: Vec<Vec<f64>> = last[0].to_vec2().unwrap();
    assert!((h[0][0] - s1).abs() < 1e-12);
    let targets = Tensor::new(&[1u32, 0u32], &Device::Cpu).unwrap();
    let loss: f64 = cross_entropy(&logits, &targets)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((loss - 0.9943994550237557).abs() < 1e-12, "loss {loss}");
}

/// The book's sigmoid: s = 1/(1+e^−x). Same weights, one step: s(0) = σ(0.6) = 0.6456563062257954.
#[test]
fn sigmoid_is_the_logistic_function() {
    let cfg = ModelConfig {
        vocab_size: 2,
        hidden: 1,
        layers: 1,
        activation: Activation::Sigmoid,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    let ts = tensors(&[
        ("rnn.weight_ih_l0", vec![0.5, -0.5], vec![1, 2]),
        ("rnn.weight_hh_l0", vec![0.8], vec![1, 1]),
        ("rnn.bias_ih_l0", vec![0.1], vec![1]),
        ("rnn.bias_hh_l0", vec![0.0], vec![1]),
        ("decoder.weight", vec![1.0, -1.0], vec![2, 1]),
        ("decoder.bias", vec![0.0, 0.2], vec![2]),
    ]);
    let m = GraphModel::new(cfg, VarBuilder::from_tensors(ts, DType::F64, &Device::Cpu)).unwrap();
    let ids = Tensor::new(&[[0u32]], &Device::Cpu).unwrap();
    let (_, last) = m.forward(&ids, &m.zero_state(1).unwrap()).unwrap();
    let h: Vec<Vec<f64>> = last[0].to_vec2().unwrap();
    assert!((h[0][0] - 0.6456563062257954).abs() < 1e-12, "{}", h[0][0]);
}

/// Loss of a fixed window as a function of the parameters (f64 throughout).
fn loss_of(
    m: &GraphModel,
    ids: &Tensor,
    tgt: &Tensor,
    h0: &[Tensor],
    masks: &WindowMasks,
) -> Tensor {
    let (logits, _) = m.forward_masked(ids, h0, masks).unwrap();
    cross_entropy(&logits, tgt).unwrap()
}

fn gradcheck(activation: Activation, layers: usize) {
    gradcheck_with(activation, layers, None);
}

fn gradcheck_with(activation: Activation, layers: usize, dropout: Option<f32>) {
    let cfg = ModelConfig {
        vocab_size: 5,
        hidden: 4,
        layers,
        activation,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    gradcheck_cfg(cfg, dropout);
}

/// The masks of a gradient check: dropout on the outputs at rate `p`, if any.
fn output_dropout(p: Option<f32>) -> Masks {
    Masks {
        dropout: p.map(|p| Dropout {
            p,
            seed: 3,
            step: 0,
            locked: false,
        }),
        ..Masks::default()
    }
}

/// Autograd against central differences; with `dropout = Some(p)`, through fixed dropout masks.
fn gradcheck_cfg(cfg: ModelConfig, dropout: Option<f32>) {
    gradcheck_masked(cfg, output_dropout(dropout));
}

/// Autograd against central differences through a window's fixed `masks`.
fn gradcheck_masked(cfg: ModelConfig, masks: Masks) {
    let dev = Device::Cpu;
    let (layers, activation) = (cfg.layers, cfg.activation);
    let varmap = init_params(&cfg, 7, DType::F64, &dev).unwrap();
    // Larger weights than the default init, so every term matters in the check.
    for (_, v) in varmap.data().lock().unwrap().iter() {
        v.set(&v.as_tensor().affine(2.5, 0.0).unwrap()).unwrap();
    }
    let m = GraphModel::new(cfg, VarBuilder::from_varmap(&varmap, DType::F64, &dev)).unwrap();
    let (t, b) = (6usize, 3usize);
    let ids: Vec<u32> = (0..t * b).map(|i| ((i * 7 + 3) % 5) as u32).collect();
    let tgt: Vec<u32> = (0..t * b).map(|i| ((i * 3 + 1) % 5) as u32).collect();
    let masks = WindowMasks::of(&masks.active(), &cfg, &ids, b, &dev).unwrap();
    let ids = Tensor::from_vec(ids, (t, b), &dev).unwrap();
    let tgt = Tensor::from_vec(tgt, t * b, &dev).unwrap();
    // A non-zero carried-in state: its path is part of BPTT too (an LSTM's c as well).
    let h0: Vec<Tensor> = (0..layers * cfg.cell().carried())
        .map(|k| {
            Tensor::from_vec(
                (0..b * 4)
                    .map(|i| 0.3 * ((i + k) as f64).sin())
                    .collect::<Vec<f64>>(),
                (b, 4),
                &dev,
            )
            .unwrap()
        })
        .collect();
    let grads = loss_of(&m, &ids, &tgt, &h0, &masks).backward().unwrap();
    let vars: Vec<(String, Var)> = {
        let d = varmap.data().lock().unwrap();
        cfg.param_shapes()
            .into_iter()
            .map(|(n, _)| (n.clone(), d[&n].clone()))
            .collect()
    };
    let eps = 1e-6;
    let mut checked = 0;
    for (name, var) in &vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let orig = var.as_tensor().copy().unwrap();
        let flat: Vec<f64> = orig.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..flat.len() {
            let eval_at = |delta: f64| -> f64 {
                let mut p = flat.clone();
                p[i] += delta;
                var.set(&Tensor::from_vec(p, orig.shape(), &dev).unwrap())
                    .unwrap();
                loss_of(&m, &ids, &tgt, &h0, &masks)
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (eval_at(eps) - eval_at(-eps)) / (2.0 * eps);
            var.set(&orig).unwrap();
            let err = (fd - g[i]).abs() / (fd.abs() + g[i].abs()).max(1e-7);
            assert!(
                err < 1e-5 || (fd - g[i]).abs() < 1e-9,
                "{} {activation} L={layers} {name}[{i}]: autograd {} vs finite difference {fd}",
                cfg.cell,
                g[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, cfg.num_params());
}

#[test]
fn gradients_match_finite_differences_tanh() {
    gradcheck(Activation::Tanh, 1);
}

#[test]
fn gradients_match_finite_differences_sigmoid() {
    gradcheck(Activation::Sigmoid, 1);
}

#[test]
fn gradients_match_finite_differences_relu() {
    gradcheck(Activation::Relu, 1);
}

#[test]
fn gradients_match_finite_differences_through_dropout_masks() {
    for a in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        gradcheck_with(a, 2, Some(0.5));
    }
}

/// Dropout masks: entries are 0 or 1/(1 − p), about a fraction p of them 0, the same for the same
/// (seed, step, layer, t, stream) and different when any of them changes.
#[test]
fn dropout_masks_drop_at_their_rate_and_depend_on_every_key() {
    let h = 1000;
    let row = |d: Dropout, l, t, s| {
        let mut m = vec![f32::NAN; h];
        d.mask_row(l, t, s, &mut m);
        m
    };
    for p in [0.1f32, 0.5, 0.8] {
        let d = Dropout {
            p,
            seed: 1,
            step: 7,
            locked: false,
        };
        let mut zeros = 0;
        for s in 0..50 {
            for v in row(d, 0, 3, s) {
                assert!(v == 0.0 || v == 1.0 / (1.0 - p), "p = {p}: entry {v}");
                zeros += (v == 0.0) as usize;
            }
        }
        let rate = zeros as f64 / (50 * h) as f64;
        // 50,000 draws: the standard error is at most 0.0023.
        assert!((rate - p as f64).abs() < 0.012, "p = {p}: dropped {rate}");
    }
    let d = Dropout {
        p: 0.5,
        seed: 1,
        step: 7,
        locked: false,
    };
    let base = row(d, 1, 2, 3);
    assert_eq!(base, row(d, 1, 2, 3));
    for other in [
        row(Dropout { seed: 2, ..d }, 1, 2, 3),
        row(Dropout { step: 8, ..d }, 1, 2, 3),
        row(d, 0, 2, 3),
        row(d, 1, 3, 3),
        row(d, 1, 2, 4),
    ] {
        assert_ne!(base, other);
    }
    assert!(row(Dropout { p: 0.0, ..d }, 0, 0, 0)
        .iter()
        .all(|&v| v == 1.0));
    // Locked: one mask per (step, layer, stream), the same at every time step.
    let l = Dropout { locked: true, ..d };
    assert_eq!(row(l, 1, 0, 3), row(l, 1, 9, 3));
    assert_ne!(row(l, 1, 0, 3), row(l, 1, 0, 4));
    assert_ne!(row(l, 1, 0, 3), row(l, 0, 0, 3));
    assert_ne!(row(l, 1, 0, 3), row(Dropout { step: 8, ..l }, 1, 0, 3));
}

#[test]
fn gradients_match_finite_differences_two_layers() {
    for a in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        gradcheck(a, 2);
    }
}

/// The layer works through candle-nn's generic `RNN` API, and its `step` equals `forward`.
#[test]
fn elman_layer_fits_candle_rnn_trait() {
    let dev = Device::Cpu;
    let cfg = ModelConfig {
        vocab_size: 6,
        hidden: 3,
        layers: 2,
        activation: Activation::Tanh,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    let varmap = init_params(&cfg, 3, DType::F64, &dev).unwrap();
    let m = GraphModel::new(cfg, VarBuilder::from_varmap(&varmap, DType::F64, &dev)).unwrap();
    fn generic_seq<R: RNN>(r: &R, input: &Tensor) -> Tensor {
        let states = r.seq(input).unwrap();
        r.states_to_tensor(&states).unwrap()
    }
    let ids_bt = Tensor::new(&[[1u32, 4, 2, 0], [3, 3, 5, 1]], &dev).unwrap(); // (B=2, T=4)
    let l0 = generic_seq(&m.layers[0], &ids_bt); // (B, T, H)
    let l1 = generic_seq(&m.layers[1], &l0); // dense input
    let (_, last) = m
        .forward(
            &ids_bt.t().unwrap().contiguous().unwrap(),
            &m.zero_state(2).unwrap(),
        )
        .unwrap();
    let a: Vec<Vec<f64>> = l1
        .narrow(1, 3, 1)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .to_vec2()
        .unwrap();
    let b: Vec<Vec<f64>> = last[1].to_vec2().unwrap();
    assert_eq!(a, b);
    // A single `step` from the zero state is the first element of `seq`.
    let s = m.layers[0]
        .step(
            &Tensor::new(&[1u32, 3], &dev).unwrap(),
            &m.layers[0].zero_state(2).unwrap(),
        )
        .unwrap();
    let first: Vec<Vec<f64>> = l0
        .narrow(1, 0, 1)
        .unwrap()
        .squeeze(1)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(s.h.to_vec2::<f64>().unwrap(), first);
}

#[test]
fn absurd_sizes_are_rejected_before_allocating() {
    let cfg = ModelConfig {
        vocab_size: 100,
        hidden: 1_000_000_000,
        layers: 1,
        activation: Activation::Tanh,
        cell: elman::cell::CellKind::Elman,
        embed: None,
        tied: false,
    };
    let err = match init_params(&cfg, 1, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("a 10^9-wide model was accepted"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("hidden size"), "{err}");
}

/// Through an input embedding, and one tied to the decoder: the graph against central differences.
#[test]
fn embedding_gradients_match_finite_differences() {
    for (embed, tied, cell) in [
        (3, false, CellKind::Elman),
        (4, true, CellKind::Elman),
        (4, true, CellKind::Lstm),
    ] {
        gradcheck_cfg(
            ModelConfig {
                layers: 2,
                cell,
                embed: Some(embed),
                tied,
                ..ModelConfig::new(5, 4)
            },
            None,
        );
    }
}

/// The gated cells' graphs against central differences: one and two layers, an LSTM's carried c
/// included, and through dropout masks.
#[test]
fn gated_cells_gradients_match_finite_differences() {
    for cell in [CellKind::Lstm, CellKind::Gru] {
        for (layers, dropout) in [(1, None), (2, None), (2, Some(0.4))] {
            gradcheck_cfg(
                ModelConfig {
                    layers,
                    cell,
                    ..ModelConfig::new(5, 4)
                },
                dropout,
            );
        }
    }
}

/// Our LSTM and GRU layers are PyTorch's: candle-nn's own `LSTM` and `GRU` (written to
/// `nn.LSTM`'s and `nn.GRU`'s equations), reading the very same variables and fed the one-hot
/// input as a dense tensor, give the same states step by step.
#[test]
fn gated_layers_equal_candle_nns_lstm_and_gru() {
    let dev = Device::Cpu;
    let (v, h, b, t) = (7usize, 5usize, 2usize, 6usize);
    let ids: Vec<u32> = (0..b * t).map(|i| ((i * 5 + 2) % v) as u32).collect();
    let ids_bt = Tensor::from_vec(ids.clone(), (b, t), &dev).unwrap();
    let onehot: Vec<f32> = ids
        .iter()
        .flat_map(|&x| (0..v).map(move |j| if j == x as usize { 1.0 } else { 0.0 }))
        .collect();
    let onehot = Tensor::from_vec(onehot, (b, t, v), &dev).unwrap();
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let cfg = ModelConfig {
            cell,
            ..ModelConfig::new(v, h)
        };
        let vm = init_params(&cfg, 11, DType::F32, &dev).unwrap();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let m = GraphModel::new(cfg, vb.clone()).unwrap();
        let ours = m.layers[0].seq(&ids_bt).unwrap();
        let ours: Vec<Vec<f32>> = ours
            .iter()
            .map(|s| s.h.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        let theirs: Vec<Vec<f32>> = match cell {
            CellKind::Lstm => {
                let l = candle_nn::lstm(v, h, Default::default(), vb.pp("rnn")).unwrap();
                l.seq(&onehot)
                    .unwrap()
                    .iter()
                    .map(|s| s.h.flatten_all().unwrap().to_vec1().unwrap())
                    .collect()
            }
            _ => {
                let g = candle_nn::gru(v, h, Default::default(), vb.pp("rnn")).unwrap();
                g.seq(&onehot)
                    .unwrap()
                    .iter()
                    .map(|s| s.h.flatten_all().unwrap().to_vec1().unwrap())
                    .collect()
            }
        };
        assert_eq!(ours.len(), t);
        for (step, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{cell} step {step}: {x} vs {y}");
            }
        }
    }
}

/// Fine-tuning on a text with new characters grows the model's vocabulary: the old tokens'
/// weights stay, so on old input the old tokens' logits are unchanged; a new token reads as
/// `<unk>` read, and scores `<unk>`'s logit less ln N (N the tokens `<unk>` stood for). Without
/// `<unk>`, a new token's logit is the lowest old bias.
#[test]
fn a_grown_vocabulary_keeps_the_old_model_and_starts_new_tokens_as_unk() {
    use elman::model::grow_vocab;
    let dev = Device::Cpu;
    for (embed, tied) in [(None, false), (Some(4), false), (Some(6), true)] {
        let small = ModelConfig {
            embed,
            tied,
            ..ModelConfig::new(5, 6)
        };
        let big = ModelConfig {
            vocab_size: 7,
            ..small
        };
        let varmap = init_params(&small, 11, DType::F32, &dev).unwrap();
        let weights: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let logits = |cfg: ModelConfig, w: &HashMap<String, Tensor>, ids: &[u32]| {
            let m = GraphModel::new(cfg, VarBuilder::from_tensors(w.clone(), DType::F32, &dev))
                .unwrap();
            let inp = Tensor::from_vec(ids.to_vec(), (ids.len(), 1), &dev).unwrap();
            let (o, _) = m.forward(&inp, &m.zero_state(1).unwrap()).unwrap();
            o.to_vec2::<f32>().unwrap()
        };
        let old = logits(small, &weights, &[0, 2, 4, 1]);
        let (unk, n) = (2u32, 4u64);
        let grown = grow_vocab(&weights, &small, &big, Some(unk), Some(n), 3).unwrap();
        let new = logits(big, &grown, &[0, 2, 4, 1]);
        // New token 5 read where <unk> was: the same states, so the same logits.
        let via_new = logits(big, &grown, &[0, 5, 4, 1]);
        for (t, (o, g)) in old.iter().zip(&new).enumerate() {
            assert_eq!(&g[..5], &o[..], "{embed:?} {tied}: old logits at step {t}");
            for j in [5, 6] {
                let want = o[unk as usize] - (n as f32).ln();
                assert!((g[j] - want).abs() < 1e-5, "{embed:?} {tied}: token {j}");
            }
            assert_eq!(
                via_new[t], *g,
                "{embed:?} {tied}: a new token reads as <unk>"
            );
        }
        // Without <unk>: the old logits again, and the new tokens at the lowest old bias.
        let grown = grow_vocab(&weights, &small, &big, None, None, 3).unwrap();
        let lowest = weights["decoder.bias"]
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .fold(f32::INFINITY, f32::min);
        let new = logits(big, &grown, &[0, 2, 4, 1]);
        for (o, g) in old.iter().zip(&new) {
            assert_eq!(&g[..5], &o[..]);
            if !tied {
                assert_eq!([g[5], g[6]], [lowest, lowest], "{embed:?}");
            }
        }
    }
}

/// DropConnect on W_hh and embedding dropout, with and without dropout on the outputs, one-hot and
/// through an embedding, every cell: the graph against central differences (so the fused path,
/// held to the graph in tests/fused.rs, is right too).
#[test]
fn gradients_match_finite_differences_through_weight_and_embedding_drop() {
    for (cell, embed, layers, dropout) in [
        (CellKind::Elman, None, 2, Some(0.3)),
        (CellKind::Elman, Some(3), 1, None),
        (CellKind::Lstm, Some(4), 2, None),
        (CellKind::Gru, None, 1, Some(0.3)),
    ] {
        let masks = Masks {
            weight_drop: Some(WeightDrop {
                p: 0.4,
                seed: 9,
                step: 2,
            }),
            embed_drop: Some(EmbedDrop {
                p: 0.4,
                seed: 9,
                step: 2,
            }),
            ..output_dropout(dropout)
        };
        gradcheck_masked(
            ModelConfig {
                layers,
                cell,
                embed,
                ..ModelConfig::new(5, 4)
            },
            masks,
        );
    }
}

/// DropConnect's masks drop at their rate, the same for the same (seed, step, layer) and not
/// otherwise; embedding dropout drops whole tokens at its rate, the same token the same way
/// throughout a window.
#[test]
fn weight_and_embedding_masks_drop_at_their_rate_and_depend_on_every_key() {
    let n = 40_000;
    for p in [0.1f32, 0.5] {
        let w = WeightDrop {
            p,
            seed: 1,
            step: 3,
        };
        let mut m = vec![f32::NAN; n];
        w.mask(1, &mut m);
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)));
        let rate = m.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        // The standard error is at most 0.0025.
        assert!((rate - p as f64).abs() < 0.012, "p = {p}: dropped {rate}");
        let mask = |w: WeightDrop, l| {
            let mut m = vec![0.0; 64];
            w.mask(l, &mut m);
            m
        };
        assert_eq!(mask(w, 1), mask(w, 1));
        assert_ne!(mask(w, 1), mask(w, 0));
        assert_ne!(mask(w, 1), mask(WeightDrop { step: 4, ..w }, 1));
        assert_ne!(mask(w, 1), mask(WeightDrop { seed: 2, ..w }, 1));

        let e = EmbedDrop {
            p,
            seed: 1,
            step: 3,
        };
        let keep: Vec<f32> = (0..n as u32).map(|x| e.keep(x)).collect();
        assert!(keep.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)));
        let rate = keep.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        assert!((rate - p as f64).abs() < 0.012, "p = {p}: dropped {rate}");
        let other = EmbedDrop { step: 4, ..e };
        assert!((0..200).any(|x| e.keep(x) != other.keep(x)));
        // A window reading token 5 at every place: one factor everywhere.
        let dev = Device::Cpu;
        let ids = vec![5u32; 12];
        let t = e.scale_tensors(&ids, 3, &dev).unwrap();
        assert_eq!(t.len(), 4);
        for step in &t {
            let v: Vec<Vec<f32>> = step.to_vec2().unwrap();
            assert!(v.iter().all(|r| r[0] == e.keep(5)));
        }
    }
    assert!((0..1000).all(|x| EmbedDrop {
        p: 0.0,
        seed: 1,
        step: 0
    }
    .keep(x)
        == 1.0));
}
