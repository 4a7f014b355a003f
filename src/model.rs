//! Stage 2 — the model: the Elman network of the chapter (section 13.5).
//!
//! ```text
//! s(t) = σ(Uᵀ x(t) + Wᵀ s(t−1) + b)      s(−1) = 0
//! o(t) = Vᵀ s(t) + c
//! y(t) = softmax(o(t))
//! ```
//!
//! Stored the way PyTorch's `nn.RNN` + `nn.Linear` store it, so a checkpoint loads into PyTorch:
//! `rnn.weight_ih_l{k}` is Uᵀ (hidden × input), `rnn.weight_hh_l{k}` is Wᵀ (hidden × hidden),
//! `b = rnn.bias_ih_l{k} + rnn.bias_hh_l{k}` (two biases, as PyTorch keeps them), `decoder.weight`
//! is Vᵀ (vocab × hidden), `decoder.bias` is c.
//!
//! The input x(t) of the first layer is one-hot, so `Uᵀ x(t)` is a column of `weight_ih_l0`: a
//! lookup (`index_select`), never a dense one-hot matrix product. Layer k > 0 reads the hidden
//! state of the layer below as a dense vector.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap, RNN};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The nonlinearity σ of the hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// tanh: zero-centred, σ′ ≤ 1 (PyTorch's default).
    Tanh,
    /// The book's logistic sigmoid: σ′ ≤ 1/4, so gradients vanish fastest.
    Sigmoid,
    /// max(0, x): no saturation for positive inputs, may explode.
    Relu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => candle_nn::ops::sigmoid(x),
            Activation::Relu => x.relu(),
        }
    }

    /// σ′ written in terms of σ's output s = σ(a), which is what BPTT has at hand.
    pub fn derivative_from_output(self, s: f32) -> f32 {
        match self {
            Activation::Tanh => 1.0 - s * s,
            Activation::Sigmoid => s * (1.0 - s),
            Activation::Relu => {
                if s > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// sup σ′: 1 for tanh and relu, the book's 1/4 for sigmoid.
    pub fn max_slope(self) -> f64 {
        match self {
            Activation::Sigmoid => 0.25,
            Activation::Tanh | Activation::Relu => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu => "relu",
        }
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dropout on the non-recurrent connections only (Zaremba et al., 2014): while training, each
/// layer's output s(t) is masked on its way up (into the layer above, or into the decoder), never
/// on its way to s(t+1), so the recurrence the chapter describes is left intact. A unit is dropped
/// with probability `p` and a kept one is scaled by 1/(1 − p), so nothing changes at evaluation,
/// where no mask applies (sampling, scoring and validation run the plain model).
///
/// Every mask is a pure function of (seed, step, layer, t, stream): the fused path on any number of
/// threads and the reference graph draw the same masks, and a resumed run draws what the
/// uninterrupted one would have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    /// The training step the masks are for.
    pub step: u64,
}

/// SplitMix64's output function: a bijective mix of all 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dropout {
    /// Fills `out` (one row of H units) with the mask of layer `layer`'s output at time `t` of
    /// stream `stream`: each entry 0 (dropped) or 1/(1 − p) (kept).
    pub fn mask_row(&self, layer: usize, t: usize, stream: usize, out: &mut [f32]) {
        let mut key = mix64(self.seed ^ 0xD50F_0A7B_3C41_9E27);
        for part in [self.step, layer as u64, t as u64, stream as u64] {
            key = mix64(key ^ part.wrapping_add(0x9E37_79B9_7F4A_7C15));
        }
        // Dropped when a uniform 16-bit draw falls below p · 2¹⁶ (p to within 1/65536); four
        // draws per SplitMix64 output keep the masks a few percent of a training step.
        let threshold = (self.p as f64 * 65_536.0).round() as u64;
        let keep = 1.0 / (1.0 - self.p);
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

/// Everything that fixes the shapes of the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub activation: Activation,
}

/// Hard limits that keep a typo (or a hostile config.json) from asking for terabytes.
pub const MAX_HIDDEN: usize = 16_384;
pub const MAX_LAYERS: usize = 16;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_PARAMS: usize = 1 << 30;

impl ModelConfig {
    /// Parameter names and shapes, in the fixed order used everywhere (optimizer state, gradient
    /// norm, checkpoints): the order is part of what makes runs reproducible.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, h) = (self.vocab_size, self.hidden);
        let mut out = Vec::new();
        for k in 0..self.layers {
            let input = if k == 0 { v } else { h };
            out.push((format!("rnn.weight_ih_l{k}"), vec![h, input]));
            out.push((format!("rnn.weight_hh_l{k}"), vec![h, h]));
            out.push((format!("rnn.bias_ih_l{k}"), vec![h]));
            out.push((format!("rnn.bias_hh_l{k}"), vec![h]));
        }
        out.push(("decoder.weight".into(), vec![v, h]));
        out.push(("decoder.bias".into(), vec![v]));
        out
    }

    pub fn num_params(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Rejects absurd sizes before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.hidden > MAX_HIDDEN {
            bail!(
                "hidden size {} is out of range 1..={MAX_HIDDEN}",
                self.hidden
            );
        }
        if self.layers == 0 || self.layers > MAX_LAYERS {
            bail!(
                "layer count {} is out of range 1..={MAX_LAYERS}",
                self.layers
            );
        }
        if self.vocab_size < 2 || self.vocab_size > MAX_VOCAB {
            bail!(
                "vocabulary size {} is out of range 2..={MAX_VOCAB}",
                self.vocab_size
            );
        }
        let p = self.num_params();
        if p > MAX_PARAMS {
            bail!(
                "the model would have {p} parameters (more than {MAX_PARAMS}); use a smaller --hidden or --max-vocab"
            );
        }
        Ok(())
    }
}

/// Half-width of the uniform initialisation of layer 0's one-hot input columns.
pub const INPUT_INIT_BOUND: f64 = 0.9;

/// PyTorch's `nn.RNN`/`nn.Linear` initialisation: every parameter uniform in ±1/√hidden, drawn from
/// a seeded generator (candle's own CPU RNG cannot be seeded), in `param_shapes` order.
pub fn init_params(cfg: &ModelConfig, seed: u64, dtype: DType, dev: &Device) -> Result<VarMap> {
    cfg.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bound = 1.0 / (cfg.hidden as f64).sqrt();
    let map = VarMap::new();
    {
        let mut data = map.data().lock().expect("fresh VarMap lock");
        for (name, shape) in cfg.param_shapes() {
            let n: usize = shape.iter().product();
            // Layer 0's input is one-hot, so each column of Uᵀ is a token's whole input vector:
            // give it the scale of an embedding (std ≈ 0.5, as nn.Embedding · W_ih gives PyTorch
            // users) rather than ±1/√H, which starts the input signal ~20× weaker at H = 512.
            let b = if name == "rnn.weight_ih_l0" {
                INPUT_INIT_BOUND.max(bound)
            } else {
                bound
            };
            let vals: Vec<f64> = (0..n).map(|_| rng.random_range(-b..b)).collect();
            let t = Tensor::from_vec(vals, shape, dev)?.to_dtype(dtype)?;
            data.insert(name, Var::from_tensor(&t)?);
        }
    }
    Ok(map)
}

/// The recurrent state of one Elman layer: s(t), shape (batch, hidden).
#[derive(Debug, Clone)]
pub struct ElmanState {
    pub h: Tensor,
}

/// One Elman layer. Implements candle-nn's [`RNN`] trait: `step` takes either token ids of shape
/// (batch,) — the one-hot input, looked up — or a dense (batch, input) tensor.
#[derive(Debug, Clone)]
pub struct ElmanLayer {
    /// Uᵀ: (hidden, input)
    pub weight_ih: Tensor,
    /// Wᵀ: (hidden, hidden)
    pub weight_hh: Tensor,
    pub bias_ih: Tensor,
    pub bias_hh: Tensor,
    pub activation: Activation,
    pub hidden: usize,
}

impl ElmanLayer {
    /// Reads layer `k`'s parameters (`weight_ih_l{k}`, ...) from `vb` (already at the `rnn` prefix).
    pub fn new(
        input: usize,
        hidden: usize,
        k: usize,
        activation: Activation,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(ElmanLayer {
            weight_ih: vb.get((hidden, input), &format!("weight_ih_l{k}"))?,
            weight_hh: vb.get((hidden, hidden), &format!("weight_hh_l{k}"))?,
            bias_ih: vb.get(hidden, &format!("bias_ih_l{k}"))?,
            bias_hh: vb.get(hidden, &format!("bias_hh_l{k}"))?,
            activation,
            hidden,
        })
    }

    /// The same layer with every parameter cut from the autograd graph (for scoring and sampling).
    pub fn detached(&self) -> Self {
        ElmanLayer {
            weight_ih: self.weight_ih.detach(),
            weight_hh: self.weight_hh.detach(),
            bias_ih: self.bias_ih.detach(),
            bias_hh: self.bias_hh.detach(),
            ..self.clone()
        }
    }

    /// The per-sequence constants: transposes made contiguous once (a matmul against a transposed
    /// view is much slower in candle) and the two biases summed.
    fn prepared(&self) -> candle_core::Result<PreparedLayer> {
        Ok(PreparedLayer {
            w_ih_t: self.weight_ih.t()?.contiguous()?,
            w_hh_t: self.weight_hh.t()?.contiguous()?,
            bias: (&self.bias_ih + &self.bias_hh)?.unsqueeze(0)?,
            activation: self.activation,
        })
    }

    /// Runs the layer over a sequence of inputs (each (batch,) ids or (batch, input) dense),
    /// starting from `h0`; returns every s(t).
    pub fn run(&self, inputs: &[Tensor], h0: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let p = self.prepared()?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut h = h0.clone();
        for x in inputs {
            h = p.step(x, &h)?;
            out.push(h.clone());
        }
        Ok(out)
    }
}

struct PreparedLayer {
    w_ih_t: Tensor,
    w_hh_t: Tensor,
    bias: Tensor,
    activation: Activation,
}

impl PreparedLayer {
    fn step(&self, x: &Tensor, h: &Tensor) -> candle_core::Result<Tensor> {
        let x_proj = if x.dtype().is_int() {
            // One-hot input: Uᵀ x(t) is row x(t) of (Uᵀ)ᵀ = U. A lookup, no FLOPs.
            self.w_ih_t.index_select(x, 0)?
        } else {
            x.matmul(&self.w_ih_t)?
        };
        let pre = (x_proj + h.matmul(&self.w_hh_t)?)?.broadcast_add(&self.bias)?;
        self.activation.apply(&pre)
    }
}

impl RNN for ElmanLayer {
    type State = ElmanState;

    fn zero_state(&self, batch_dim: usize) -> candle_core::Result<ElmanState> {
        let h = Tensor::zeros(
            (batch_dim, self.hidden),
            self.weight_hh.dtype(),
            self.weight_hh.device(),
        )?;
        Ok(ElmanState { h })
    }

    fn step(&self, input: &Tensor, state: &ElmanState) -> candle_core::Result<ElmanState> {
        Ok(ElmanState {
            h: self.prepared()?.step(input, &state.h)?,
        })
    }

    /// `input` is (batch, seq_len) token ids or (batch, seq_len, features) dense.
    fn seq_init(&self, input: &Tensor, init: &ElmanState) -> candle_core::Result<Vec<ElmanState>> {
        let seq_len = input.dim(1)?;
        let xs: Vec<Tensor> = (0..seq_len)
            .map(|t| input.narrow(1, t, 1)?.squeeze(1)?.contiguous())
            .collect::<candle_core::Result<_>>()?;
        Ok(self
            .run(&xs, &init.h)?
            .into_iter()
            .map(|h| ElmanState { h })
            .collect())
    }

    fn states_to_tensor(&self, states: &[ElmanState]) -> candle_core::Result<Tensor> {
        let hs: Vec<&Tensor> = states.iter().map(|s| &s.h).collect();
        Tensor::stack(&hs, 1)
    }
}

/// The language model: L stacked Elman layers and the decoder (V, c).
#[derive(Debug, Clone)]
pub struct ElmanLM {
    pub config: ModelConfig,
    pub layers: Vec<ElmanLayer>,
    pub decoder: candle_nn::Linear,
}

impl ElmanLM {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let rnn = vb.pp("rnn");
        let layers = (0..config.layers)
            .map(|k| {
                let input = if k == 0 {
                    config.vocab_size
                } else {
                    config.hidden
                };
                ElmanLayer::new(input, config.hidden, k, config.activation, rnn.clone())
            })
            .collect::<candle_core::Result<_>>()?;
        let decoder = candle_nn::linear(config.hidden, config.vocab_size, vb.pp("decoder"))?;
        Ok(ElmanLM {
            config,
            layers,
            decoder,
        })
    }

    /// A copy whose parameters do not record gradients.
    pub fn detached(&self) -> Self {
        ElmanLM {
            config: self.config,
            layers: self.layers.iter().map(|l| l.detached()).collect(),
            decoder: candle_nn::Linear::new(
                self.decoder.weight().detach(),
                self.decoder.bias().map(|b| b.detach()),
            ),
        }
    }

    pub fn dtype(&self) -> DType {
        self.decoder.weight().dtype()
    }

    pub fn device(&self) -> &Device {
        self.decoder.weight().device()
    }

    /// s(−1) = 0 for every layer.
    pub fn zero_state(&self, batch: usize) -> candle_core::Result<Vec<Tensor>> {
        self.layers
            .iter()
            .map(|l| l.zero_state(batch).map(|s| s.h))
            .collect()
    }

    /// Forward over a window. `ids` is time-major (T, batch) u32; `state` holds each layer's
    /// s(t−1). Returns the logits o(t), shape (T·batch, vocab) in time-major order, and each layer's
    /// last state.
    pub fn forward(
        &self,
        ids: &Tensor,
        state: &[Tensor],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        self.forward_masked(ids, state, &[])
    }

    /// [`ElmanLM::forward`] with dropout: layer l's outputs are multiplied by `masks[l]`
    /// (T, batch, H; see [`Dropout::mask_tensors`]) on their way up; the carried states are not.
    /// No masks: the plain forward.
    pub fn forward_masked(
        &self,
        ids: &Tensor,
        state: &[Tensor],
        masks: &[Tensor],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let (hs, last) = self.forward_states_masked(ids, state, masks)?;
        let logits = hs
            .matmul(&self.decoder.weight().t()?.contiguous()?)?
            .broadcast_add(self.decoder.bias().expect("decoder has a bias"))?;
        Ok((logits, last))
    }

    /// The top layer's states s(t) over a window, (T·batch, hidden) time-major, and each layer's
    /// last state: [`ElmanLM::forward`] before the decoder.
    pub fn forward_states(
        &self,
        ids: &Tensor,
        state: &[Tensor],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        self.forward_states_masked(ids, state, &[])
    }

    /// [`ElmanLM::forward_states`] with dropout masks (as [`ElmanLM::forward_masked`]).
    pub fn forward_states_masked(
        &self,
        ids: &Tensor,
        state: &[Tensor],
        masks: &[Tensor],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let (t_len, batch) = ids.dims2()?;
        let mut xs: Vec<Tensor> = (0..t_len)
            .map(|t| ids.get(t))
            .collect::<candle_core::Result<_>>()?;
        let mut last = Vec::with_capacity(self.layers.len());
        for (l, (layer, h0)) in self.layers.iter().zip(state).enumerate() {
            xs = layer.run(&xs, h0)?;
            last.push(xs.last().cloned().unwrap_or_else(|| h0.clone()));
            if let Some(mask) = masks.get(l) {
                // Only the copy that goes up is masked; `last` (carried to the next window)
                // and the recurrence inside `run` saw the unmasked states.
                xs = xs
                    .iter()
                    .enumerate()
                    .map(|(t, x)| x.mul(&mask.get(t)?.to_dtype(x.dtype())?))
                    .collect::<candle_core::Result<_>>()?;
            }
        }
        let hs = Tensor::stack(&xs, 0)?.reshape((t_len * batch, self.config.hidden))?;
        Ok((hs, last))
    }

    /// Parameters by name, as `param_shapes` orders them.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            out.push((format!("rnn.weight_ih_l{k}"), l.weight_ih.clone()));
            out.push((format!("rnn.weight_hh_l{k}"), l.weight_hh.clone()));
            out.push((format!("rnn.bias_ih_l{k}"), l.bias_ih.clone()));
            out.push((format!("rnn.bias_hh_l{k}"), l.bias_hh.clone()));
        }
        out.push(("decoder.weight".into(), self.decoder.weight().clone()));
        out.push((
            "decoder.bias".into(),
            self.decoder.bias().expect("bias").clone(),
        ));
        out
    }
}

/// Mean cross-entropy of `logits` (N, V) against `targets` (N,) — the training loss.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(logits, targets)
}

/// Sum of −log p(target) over all rows, computed without building a graph.
pub fn nll_sum(logits: &Tensor, targets: &Tensor) -> candle_core::Result<f64> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = lsm.gather(&targets.unsqueeze(1)?, 1)?;
    let s = picked.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    Ok(-s)
}

/// The sampled-softmax training loss on candle's graph (the reference for `fast.rs`): for each
/// row of `hs` (N × H), the logits of its target and of `sample`'s K ids, each minus ln E[count];
/// a sample equal to the row's target is masked out; mean cross-entropy with the target first.
pub fn sampled_softmax_loss(
    hs: &Tensor,
    dec_w: &Tensor,
    dec_b: &Tensor,
    targets: &[u32],
    sample: &crate::fast::Sample,
) -> candle_core::Result<Tensor> {
    let dev = hs.device();
    let n = targets.len();
    let k = sample.ids.len();
    let tgt = Tensor::from_slice(targets, n, dev)?;
    let log_e_t: Vec<f32> = targets.iter().map(|&y| sample.log_expected(y)).collect();
    let z_true = (hs * dec_w.index_select(&tgt, 0)?)?
        .sum(1)?
        .add(&dec_b.index_select(&tgt, 0)?)?
        .sub(&Tensor::from_vec(log_e_t, n, dev)?)?;
    let ids = Tensor::from_slice(&sample.ids, k, dev)?;
    let log_e_s: Vec<f32> = sample.ids.iter().map(|&y| sample.log_expected(y)).collect();
    let b_s = dec_b
        .index_select(&ids, 0)?
        .sub(&Tensor::from_vec(log_e_s, k, dev)?)?;
    let mask: Vec<f32> = targets
        .iter()
        .flat_map(|&y| {
            sample
                .ids
                .iter()
                .map(move |&s| if s == y { -1e30 } else { 0.0 })
        })
        .collect();
    let z_neg = hs
        .matmul(&dec_w.index_select(&ids, 0)?.t()?)?
        .broadcast_add(&b_s)?
        .add(&Tensor::from_vec(mask, (n, k), dev)?)?;
    let z = Tensor::cat(&[z_true.unsqueeze(1)?, z_neg], 1)?;
    candle_nn::loss::cross_entropy(&z, &Tensor::zeros(n, DType::U32, dev)?)
}
