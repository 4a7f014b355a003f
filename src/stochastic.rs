//! What training draws at random, each draw a pure function of the run's seed and the step (so a
//! resumed run draws what the uninterrupted one would have, on any number of threads): the masks
//! of dropout, DropConnect and embedding dropout ([`Masks`]) and the sampled softmax's negatives.
//! Training devices only: validation, `eval`, sampling and ranking never see any of them.

use candle_core::{Device, Tensor};

/// Dropout on the non-recurrent connections only (Zaremba et al., 2014): while training, each
/// layer's output s(t) is masked on its way up (into the layer above, or into the decoder), never
/// on its way to s(t+1), so the recurrence the chapter describes is left intact. A unit is dropped
/// with probability `p` and a kept one is scaled by 1/(1 − p), so nothing changes at evaluation,
/// where no mask applies (sampling, scoring and validation run the plain model).
///
/// Every mask is a pure function of (seed, step, layer, t, stream): the fused path on any number of
/// threads and the reference graph draw the same masks, and a resumed run draws what the
/// uninterrupted one would have. `locked` (variational dropout, Gal & Ghahramani; AWD-LSTM's
/// `LockedDropout`) draws one mask per (step, layer, stream) and keeps it at every time step of
/// the window: a unit is dropped for the whole sequence, not at random moments of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    /// The training step the masks are for.
    pub step: u64,
    /// The same mask at every time step of a window.
    pub locked: bool,
}

/// SplitMix64's output function: a bijective mix of all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one mask: the run's seed (salted by what the mask is for) mixed with the parts that
/// name it (step, layer, ...).
fn key_of(salted_seed: u64, parts: &[u64]) -> u64 {
    let mut key = mix64(salted_seed);
    for part in parts {
        key = mix64(key ^ part.wrapping_add(0x9E37_79B9_7F4A_7C15));
    }
    key
}

/// Whether a uniform 16-bit draw `u` drops: below p · 2¹⁶ (p to within 1/65536).
fn threshold(p: f32) -> u64 {
    (p as f64 * 65_536.0).round() as u64
}

/// Fills `out` with the mask of `key`: each entry 0 (dropped, with probability `p`) or 1/(1 − p).
fn fill_mask(key: u64, p: f32, out: &mut [f32]) {
    // Four 16-bit draws per SplitMix64 output keep the masks a few percent of a training step.
    let threshold = threshold(p);
    let keep = 1.0 / (1.0 - p);
    let mut state = key;
    for quad in out.chunks_mut(4) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = mix64(state);
        for (k, x) in quad.iter_mut().enumerate() {
            let u = (z >> (16 * k)) & 0xFFFF;
            *x = if u < threshold { 0.0 } else { keep };
        }
    }
}

impl Dropout {
    /// Fills `out` (one row of H units) with the mask of layer `layer`'s output at time `t` of
    /// stream `stream`: each entry 0 (dropped) or 1/(1 − p) (kept).
    pub fn mask_row(&self, layer: usize, t: usize, stream: usize, out: &mut [f32]) {
        let t = if self.locked { 0 } else { t };
        let key = key_of(
            self.seed ^ 0xD50F_0A7B_3C41_9E27,
            &[self.step, layer as u64, t as u64, stream as u64],
        );
        fill_mask(key, self.p, out);
    }

    /// The masks of a window as tensors, one (T, batch, H) per layer: what the reference graph
    /// multiplies each layer's outputs by (stream j of the batch is stream j of `mask_row`).
    pub fn mask_tensors(
        &self,
        layers: usize,
        t_len: usize,
        batch: usize,
        hidden: usize,
        dev: &Device,
    ) -> candle_core::Result<Vec<Tensor>> {
        (0..layers)
            .map(|l| {
                let mut m = vec![0f32; t_len * batch * hidden];
                for (r, row) in m.chunks_exact_mut(hidden).enumerate() {
                    self.mask_row(l, r / batch, r % batch, row);
                }
                Tensor::from_vec(m, (t_len, batch, hidden), dev)
            })
            .collect()
    }
}

/// DropConnect on the recurrent weights (Wan et al., 2013; AWD-LSTM's `WeightDrop`): each entry
/// of a layer's W_hh is dropped with probability `p` for a whole window — every stream and every
/// time step sees the same thinned matrix, so the recurrence itself is regularised without
/// breaking what the state carries from step to step — and a kept one is scaled by 1/(1 − p).
/// Like every mask here, a pure function of (seed, step, layer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightDrop {
    pub p: f32,
    pub seed: u64,
    pub step: u64,
}

impl WeightDrop {
    /// Fills `out` (layer `layer`'s W_hh, G × H row-major) with its mask: 0 or 1/(1 − p).
    pub fn mask(&self, layer: usize, out: &mut [f32]) {
        let key = key_of(
            self.seed ^ 0x3C6E_F372_FE94_F82B,
            &[self.step, layer as u64],
        );
        fill_mask(key, self.p, out);
    }

    /// Every layer's mask as a (G, H) tensor: what the reference graph multiplies W_hh by.
    pub fn mask_tensors(
        &self,
        layers: usize,
        rows: usize,
        hidden: usize,
        dev: &Device,
    ) -> candle_core::Result<Vec<Tensor>> {
        (0..layers)
            .map(|l| {
                let mut m = vec![0f32; rows * hidden];
                self.mask(l, &mut m);
                Tensor::from_vec(m, (rows, hidden), dev)
            })
            .collect()
    }
}

/// Embedding dropout (Gal & Ghahramani, 2016; AWD-LSTM's `embedded_dropout`): whole tokens are
/// dropped from a window's input with probability `p` — every place the window reads a dropped
/// token gets no input term but the bias — and kept ones are scaled by 1/(1 − p). A token is
/// dropped everywhere in the window or nowhere, so the model cannot lean on one character's
/// embedding (or, one-hot, its column of U). The decoder, tied or not, is untouched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbedDrop {
    pub p: f32,
    pub seed: u64,
    pub step: u64,
}

impl EmbedDrop {
    /// What token `token`'s input term is multiplied by in this window: 0 or 1/(1 − p).
    pub fn keep(&self, token: u32) -> f32 {
        let z = key_of(
            self.seed ^ 0x1F83_D9AB_5BE0_CD19,
            &[self.step, token as u64],
        );
        if z & 0xFFFF < threshold(self.p) {
            0.0
        } else {
            1.0 / (1.0 - self.p)
        }
    }

    /// The factor of every position of a time-major (T × batch) window, as T tensors of
    /// (batch, 1): what the reference graph multiplies layer 0's input term by.
    pub fn scale_tensors(
        &self,
        ids: &[u32],
        batch: usize,
        dev: &Device,
    ) -> candle_core::Result<Vec<Tensor>> {
        ids.chunks(batch)
            .map(|row| {
                let m: Vec<f32> = row.iter().map(|&x| self.keep(x)).collect();
                Tensor::from_vec(m, (row.len(), 1), dev)
            })
            .collect()
    }
}

/// Every mask a training window draws (none by default): dropout on the layers' outputs,
/// DropConnect on W_hh and embedding dropout.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Masks {
    pub dropout: Option<Dropout>,
    pub weight_drop: Option<WeightDrop>,
    pub embed_drop: Option<EmbedDrop>,
}

impl Masks {
    /// The same masks for training step `step`.
    pub fn at_step(self, step: u64) -> Masks {
        Masks {
            dropout: self.dropout.map(|d| Dropout { step, ..d }),
            weight_drop: self.weight_drop.map(|d| WeightDrop { step, ..d }),
            embed_drop: self.embed_drop.map(|d| EmbedDrop { step, ..d }),
        }
    }

    /// The same masks with every zero rate left out: p = 0 runs exactly the unregularised window.
    pub fn active(self) -> Masks {
        Masks {
            dropout: self.dropout.filter(|d| d.p > 0.0),
            weight_drop: self.weight_drop.filter(|d| d.p > 0.0),
            embed_drop: self.embed_drop.filter(|d| d.p > 0.0),
        }
    }
}

/// The shared negatives of one sampled-softmax step (TensorFlow's `sampled_softmax_loss` with its
/// log-uniform sampler): K distinct ids drawn from Q(id) = ln((id+2)/(id+1)) / ln(V+1), which fits
/// ids sorted by frequency (the vocabulary's order). Each logit in the loss is corrected by the log
/// of how often its id is expected among the draws, so the sampled loss estimates the full one.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ids: Vec<u32>,
    /// Draws it took to find `ids.len()` distinct ids.
    pub tries: u64,
    pub vocab: usize,
}

impl Sample {
    /// Draws `k` distinct ids (k < vocab).
    pub fn draw(vocab: usize, k: usize, rng: &mut impl rand::Rng) -> Sample {
        assert!(k < vocab, "sampled softmax needs fewer samples than tokens");
        let mut seen = vec![false; vocab];
        let mut ids = Vec::with_capacity(k);
        let mut tries = 0u64;
        let log_range = ((vocab + 1) as f64).ln();
        while ids.len() < k {
            tries += 1;
            let u: f64 = rng.random();
            let id = (((u * log_range).exp() - 1.0) as usize).min(vocab - 1);
            if !seen[id] {
                seen[id] = true;
                ids.push(id as u32);
            }
        }
        Sample { ids, tries, vocab }
    }

    /// Q(id) of the log-uniform sampler.
    pub fn q(&self, id: u32) -> f64 {
        let id = id as f64;
        ((id + 2.0) / (id + 1.0)).ln() / ((self.vocab + 1) as f64).ln()
    }

    /// ln E[times `id` is drawn in `tries` draws] as the sampler with rejection sees it:
    /// ln(1 − (1 − Q)^tries).
    pub fn log_expected(&self, id: u32) -> f32 {
        let q = self.q(id);
        (-(self.tries as f64 * (-q).ln_1p()).exp_m1()).ln() as f32
    }
}
