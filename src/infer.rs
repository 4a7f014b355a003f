//! Stage 6a — inference without tensors: the same network as `model.rs`, one token at a time, as
//! plain Rust loops over `Vec<f32>`.
//!
//! Sampling, completion, ranking and the REPL run at batch 1, where building a candle graph per
//! step costs more than the arithmetic. This model copies the weights once, keeps them in the
//! layout each step reads contiguously, and never allocates in `step`. Tests check it against
//! `GraphModel::forward`.

use crate::cell::{Cell, StreamWeights};
use crate::config::{ModelConfig, Param};
use crate::kernels::packed::{self, PackedB};
use crate::model::GraphModel;
use anyhow::Result;

/// The network's weights, ready for batch-1 stepping.
pub struct StreamModel {
    pub config: ModelConfig,
    cell: &'static dyn Cell,
    layers: Vec<StreamWeights>,
    /// (vocab, hidden).
    dec_w: Vec<f32>,
    dec_b: Vec<f32>,
    /// Vᵀ packed (hidden × vocab): the logits as a one-row GEMM.
    dec_packed: PackedB,
}

/// The hidden state s(t) of every layer (and an LSTM's cell states).
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub h: Vec<Vec<f32>>,
    /// Each layer's cell state c(t) (LSTM; empty vectors for other cells).
    pub c: Vec<Vec<f32>>,
    /// Scratch for the cell's step and a layer's input term (kept here so `step` does not
    /// allocate).
    scratch: Vec<f32>,
    x_proj: Vec<f32>,
    rec: Vec<f32>,
}

impl State {
    /// What the last step left in the top layer's scratch: its gate values (`gradflow` reads them).
    pub fn gates(&self) -> &[f32] {
        &self.scratch
    }
}

fn to_vec(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

impl StreamModel {
    pub fn new(model: &GraphModel) -> Result<StreamModel> {
        let cfg = model.config;
        let cell = cfg.cell();
        let mut layers = Vec::with_capacity(cfg.layers);
        for k in 0..cfg.layers {
            let w_ih = model.tensor(Param::WeightIh(k));
            // Layer 0 reads a token: row x of the table is token x's input term, a column of
            // W_ih (one-hot input) or its embedding times W_ihᵀ.
            let w_ih = match (k, &model.encoder) {
                (0, None) => to_vec(&w_ih.t()?.contiguous()?)?,
                (0, Some(enc)) => to_vec(&enc.matmul(&w_ih.t()?)?)?,
                _ => to_vec(w_ih)?,
            };
            let (b_ih, b_hh) = (
                to_vec(model.tensor(Param::BiasIh(k)))?,
                to_vec(model.tensor(Param::BiasHh(k)))?,
            );
            let mut bias = vec![0.0; b_ih.len()];
            cell.input_bias(&b_ih, &b_hh, &mut bias);
            let w_hh = to_vec(model.tensor(Param::WeightHh(k)))?;
            let g = bias.len();
            let h = cfg.hidden;
            let mut w_hh_packed = PackedB::default();
            w_hh_packed.pack(&w_hh, h, g, (1, h));
            let mut w_ih_packed = PackedB::default();
            if k > 0 {
                w_ih_packed.pack(&w_ih, h, g, (1, h));
            }
            layers.push(StreamWeights {
                w_ih,
                w_hh,
                bias,
                b_hh,
                w_hh_packed,
                w_ih_packed,
            });
        }
        let dec_w = to_vec(model.tensor(Param::DecoderWeight))?;
        let mut dec_packed = PackedB::default();
        dec_packed.pack(&dec_w, cfg.hidden, cfg.vocab_size, (1, cfg.hidden));
        Ok(StreamModel {
            config: cfg,
            cell,
            layers,
            dec_w,
            dec_b: to_vec(model.tensor(Param::DecoderBias))?,
            dec_packed,
        })
    }

    /// The cell the layers are made of.
    pub fn cell(&self) -> &'static dyn Cell {
        self.cell
    }

    /// Layer `k`'s weights.
    pub fn layer(&self, k: usize) -> &StreamWeights {
        &self.layers[k]
    }

    /// Layer `k`'s recurrent weight as stored, (hidden, hidden): pre[i] += Σ_j w[i, j] s[j].
    pub fn recurrent_weight(&self, k: usize) -> &[f32] {
        &self.layers[k].w_hh
    }

    /// Multiplies layer `k`'s recurrent weight by `factor` (for experiments on gradient flow):
    /// the stored copy the backward step reads and the packed copy the forward step reads, so
    /// both passes run the one scaled network.
    pub fn scale_recurrent_weight(&mut self, k: usize, factor: f32) {
        let h = self.config.hidden;
        let layer = &mut self.layers[k];
        layer.w_hh.iter_mut().for_each(|w| *w *= factor);
        let g = layer.bias.len();
        layer.w_hh_packed.pack(&layer.w_hh, h, g, (1, h));
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
        let h = self.config.hidden;
        let c = if self.cell.carried() > 1 { h } else { 0 };
        State {
            h: vec![vec![0.0; h]; self.config.layers],
            c: vec![vec![0.0; c]; self.config.layers],
            scratch: vec![0.0; self.cell.stream().scratch_len(h)],
            x_proj: vec![0.0; self.cell.gates() * h],
            rec: vec![0.0; self.cell.gates() * h],
        }
    }

    /// Reads token `x`: s(t) from s(t−1). Each product is a one-row GEMM on the packed kernel
    /// (a row of W read against many accumulators at once), the rest the cell's.
    pub fn step(&self, state: &mut State, x: u32) {
        let (h, g) = (self.config.hidden, self.cell.gates() * self.config.hidden);
        for k in 0..self.layers.len() {
            let layer = &self.layers[k];
            let (below, rest) = state.h.split_at_mut(k);
            let x_proj: &[f32] = if k == 0 {
                &layer.w_ih[x as usize * g..(x as usize + 1) * g]
            } else {
                packed::matmul(
                    1,
                    &mut state.x_proj,
                    g,
                    false,
                    &below[k - 1],
                    h,
                    &layer.w_ih_packed,
                );
                &state.x_proj
            };
            let hk = &mut rest[0];
            packed::matmul(1, &mut state.rec, g, false, hk, h, &layer.w_hh_packed);
            self.cell.stream().step(
                layer,
                x_proj,
                &state.rec,
                hk,
                &mut state.c[k],
                &mut state.scratch,
            );
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
        packed::matmul(1, out, out.len(), false, top, hdim, &self.dec_packed);
        out.iter_mut().zip(&self.dec_b).for_each(|(o, b)| *o += b);
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
