//! Stage 6a — inference without tensors: the same network as `model.rs`, one token at a time, as
//! plain Rust loops over `Vec<f32>`.
//!
//! Sampling, completion, ranking and the REPL run at batch 1, where building a candle graph per
//! step costs more than the arithmetic. This engine copies the weights once, keeps them in the
//! layout each step reads contiguously, and never allocates in `step`. Tests check it against
//! `ElmanLM::forward`.

use crate::kernels::math::dot;
use crate::model::{Activation, ElmanLM, ModelConfig};
use anyhow::Result;

struct Layer {
    /// Layer 0: row `x` is Uᵀ x for token x (the one-hot lookup), shape (vocab, hidden).
    /// Layer k > 0: Uᵀ as stored, shape (hidden, hidden_below), applied as a matrix–vector product.
    w_ih: Vec<f32>,
    /// Wᵀ as stored, (hidden, hidden): pre[i] += Σ_j w_hh[i, j] s[j].
    w_hh: Vec<f32>,
    /// b_ih + b_hh.
    bias: Vec<f32>,
}

/// The network's weights, ready for batch-1 stepping.
pub struct Engine {
    pub config: ModelConfig,
    layers: Vec<Layer>,
    /// (vocab, hidden).
    dec_w: Vec<f32>,
    dec_b: Vec<f32>,
}

/// The hidden state s(t) of every layer.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub h: Vec<Vec<f32>>,
    /// Scratch for the next state (kept here so `step` does not allocate).
    scratch: Vec<f32>,
}

fn to_vec(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

impl Engine {
    pub fn new(model: &ElmanLM) -> Result<Engine> {
        let cfg = model.config;
        let mut layers = Vec::with_capacity(cfg.layers);
        for (k, l) in model.layers.iter().enumerate() {
            let w_ih = if k == 0 {
                to_vec(&l.weight_ih.t()?.contiguous()?)?
            } else {
                to_vec(&l.weight_ih)?
            };
            let bias = to_vec(&(&l.bias_ih + &l.bias_hh)?)?;
            layers.push(Layer {
                w_ih,
                w_hh: to_vec(&l.weight_hh)?,
                bias,
            });
        }
        Ok(Engine {
            config: cfg,
            layers,
            dec_w: to_vec(model.decoder.weight())?,
            dec_b: to_vec(model.decoder.bias().expect("decoder bias"))?,
        })
    }

    /// Layer `k`'s recurrent weight as stored, (hidden, hidden): pre[i] += Σ_j w[i, j] s[j].
    pub fn recurrent_weight(&self, k: usize) -> &[f32] {
        &self.layers[k].w_hh
    }

    /// Multiplies layer `k`'s recurrent weight by `factor` (for experiments on gradient flow).
    pub fn scale_recurrent_weight(&mut self, k: usize, factor: f32) {
        self.layers[k].w_hh.iter_mut().for_each(|w| *w *= factor);
    }

    /// The decoder weight V, (vocab, hidden).
    pub fn decoder_weight(&self) -> &[f32] {
        &self.dec_w
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// s(−1) = 0.
    pub fn zero_state(&self) -> State {
        State {
            h: vec![vec![0.0; self.config.hidden]; self.config.layers],
            scratch: vec![0.0; self.config.hidden],
        }
    }

    /// Reads token `x`: s(t) from s(t−1).
    pub fn step(&self, state: &mut State, x: u32) {
        let hdim = self.config.hidden;
        let act = self.config.activation;
        for k in 0..self.layers.len() {
            let layer = &self.layers[k];
            let (below, rest) = state.h.split_at_mut(k);
            let h = &mut rest[0];
            let pre = &mut state.scratch;
            if k == 0 {
                let row = &layer.w_ih[x as usize * hdim..(x as usize + 1) * hdim];
                pre.copy_from_slice(row);
            } else {
                let input = &below[k - 1];
                for (i, p) in pre.iter_mut().enumerate() {
                    *p = dot(&layer.w_ih[i * hdim..(i + 1) * hdim], input);
                }
            }
            for (i, p) in pre.iter_mut().enumerate() {
                *p += dot(&layer.w_hh[i * hdim..(i + 1) * hdim], h) + layer.bias[i];
            }
            for (hi, &p) in h.iter_mut().zip(pre.iter()) {
                *hi = match act {
                    Activation::Tanh => p.tanh(),
                    Activation::Sigmoid => 1.0 / (1.0 + (-p).exp()),
                    Activation::Relu => p.max(0.0),
                };
            }
        }
    }

    /// Reads every token of `xs` in turn.
    pub fn feed(&self, state: &mut State, xs: &[u32]) {
        for &x in xs {
            self.step(state, x);
        }
    }

    /// o(t) = V s(t) + c into `out` (length vocab).
    pub fn logits(&self, state: &State, out: &mut [f32]) {
        let hdim = self.config.hidden;
        let top = state.h.last().expect("at least one layer");
        for (v, o) in out.iter_mut().enumerate() {
            *o = dot(&self.dec_w[v * hdim..(v + 1) * hdim], top) + self.dec_b[v];
        }
    }

    /// log softmax(o(t)) as f64.
    pub fn log_probs(&self, state: &State) -> Vec<f64> {
        let mut o = vec![0f32; self.vocab_size()];
        self.logits(state, &mut o);
        log_softmax(&o)
    }
}

/// Numerically stable log-softmax in f64.
pub fn log_softmax(o: &[f32]) -> Vec<f64> {
    let m = o.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = o.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    o.iter().map(|&x| x as f64 - lse).collect()
}
