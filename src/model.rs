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

use crate::cell::{Cell, CellKind, GraphWeights};
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
    /// σ of an Elman cell (gated cells have their own: tanh here).
    pub activation: Activation,
    /// The kind of cell (checkpoints before there was a choice are Elman networks).
    #[serde(default)]
    pub cell: CellKind,
    /// The input as an embedding of this size (`encoder.weight`, PyTorch's nn.Embedding) that
    /// layer 0 reads, instead of the book's one-hot x(t) (`None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<usize>,
    /// The decoder's weights are the embedding's (word_language_model's `--tied`; the embedding
    /// is then as wide as the hidden layer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tied: bool,
}

/// Hard limits that keep a typo (or a hostile config.json) from asking for terabytes.
pub const MAX_HIDDEN: usize = 16_384;
pub const MAX_LAYERS: usize = 16;
pub const MAX_VOCAB: usize = 1 << 20;
pub const MAX_PARAMS: usize = 1 << 30;

/// One parameter of the network, by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// `encoder.weight`: the input embedding, vocab × E (with `--embed`).
    Embedding,
    /// `rnn.weight_ih_l{k}`: layer k's input weights, (gates·H) × input (Uᵀ for an Elman layer).
    WeightIh(usize),
    /// `rnn.weight_hh_l{k}`: layer k's recurrent weights, (gates·H) × H (Wᵀ).
    WeightHh(usize),
    /// `rnn.bias_ih_l{k}`, gates·H.
    BiasIh(usize),
    /// `rnn.bias_hh_l{k}`, gates·H.
    BiasHh(usize),
    /// `decoder.weight`: Vᵀ, vocab × H.
    DecoderWeight,
    /// `decoder.bias`: c, vocab.
    DecoderBias,
}

impl Param {
    /// Its PyTorch name (what `model.safetensors` calls it).
    pub fn name(self) -> String {
        match self {
            Param::Embedding => "encoder.weight".into(),
            Param::WeightIh(k) => format!("rnn.weight_ih_l{k}"),
            Param::WeightHh(k) => format!("rnn.weight_hh_l{k}"),
            Param::BiasIh(k) => format!("rnn.bias_ih_l{k}"),
            Param::BiasHh(k) => format!("rnn.bias_hh_l{k}"),
            Param::DecoderWeight => "decoder.weight".into(),
            Param::DecoderBias => "decoder.bias".into(),
        }
    }
}

/// Every parameter with its shape, in the one fixed order used everywhere (optimizer state,
/// gradient sums, checkpoints, the fused path's slices): the embedding (with `--embed`), layer by
/// layer `WeightIh`, `WeightHh`, `BiasIh`, `BiasHh`, then the decoder. Code finds a parameter by its
/// role ([`ParamLayout::index`]), never by arithmetic on positions, so adding one cannot silently
/// shift the others. A tied decoder weight is the embedding: one parameter, two names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLayout {
    entries: Vec<(Param, Vec<usize>)>,
    tied: bool,
}

impl ParamLayout {
    pub fn of(cfg: &ModelConfig) -> ParamLayout {
        let (v, h) = (cfg.vocab_size, cfg.hidden);
        let g = crate::cell::of(cfg).gates() * h;
        let mut entries = Vec::with_capacity(4 * cfg.layers + 3);
        if let Some(e) = cfg.embed {
            entries.push((Param::Embedding, vec![v, e]));
        }
        for k in 0..cfg.layers {
            let input = if k == 0 { cfg.input_size() } else { h };
            entries.push((Param::WeightIh(k), vec![g, input]));
            entries.push((Param::WeightHh(k), vec![g, h]));
            entries.push((Param::BiasIh(k), vec![g]));
            entries.push((Param::BiasHh(k), vec![g]));
        }
        if !cfg.tied {
            entries.push((Param::DecoderWeight, vec![v, h]));
        }
        entries.push((Param::DecoderBias, vec![v]));
        ParamLayout {
            entries,
            tied: cfg.tied,
        }
    }

    /// Where `p` lies in the order (a tied decoder weight is the embedding). Panics if the model
    /// has no such parameter (a layer past the last, say): a bug, not a user's mistake.
    pub fn index(&self, p: Param) -> usize {
        let p = match p {
            Param::DecoderWeight if self.tied => Param::Embedding,
            other => other,
        };
        self.entries
            .iter()
            .position(|(q, _)| *q == p)
            .unwrap_or_else(|| panic!("the model has no parameter {p:?}"))
    }

    /// Whether the model has `p` (as a parameter of its own or, tied, as another's name).
    pub fn has(&self, p: Param) -> bool {
        self.entries.iter().any(|(q, _)| *q == p) || (p == Param::DecoderWeight && self.tied)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (role, shape) in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Param, Vec<usize>)> {
        self.entries.iter()
    }

    /// The number of values of each parameter, in order.
    pub fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|(_, s)| s.iter().product())
    }
}

impl ModelConfig {
    /// One tanh Elman layer of `hidden` units over a vocabulary of `vocab_size` (change the rest
    /// with struct update syntax: `ModelConfig { layers: 2, ..ModelConfig::new(v, h) }`).
    pub fn new(vocab_size: usize, hidden: usize) -> ModelConfig {
        ModelConfig {
            vocab_size,
            hidden,
            layers: 1,
            activation: Activation::Tanh,
            cell: CellKind::Elman,
            embed: None,
            tied: false,
        }
    }

    /// What layer 0 reads per token: the embedding's size, or the vocabulary's (one-hot).
    pub fn input_size(&self) -> usize {
        self.embed.unwrap_or(self.vocab_size)
    }

    /// The parameters in their fixed order ([`ParamLayout`]).
    pub fn layout(&self) -> ParamLayout {
        ParamLayout::of(self)
    }

    /// Parameter names and shapes, in the fixed order used everywhere (optimizer state, gradient
    /// norm, checkpoints): the order is part of what makes runs reproducible.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.layout()
            .iter()
            .map(|(p, s)| (p.name(), s.clone()))
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.layout().sizes().sum()
    }

    /// The cell its layers are made of.
    pub fn cell(&self) -> &'static dyn Cell {
        crate::cell::of(self)
    }

    /// The hidden size and layer count within elman's limits, each named as its source calls it
    /// (`--hidden`, or `hidden size` in a config.json).
    pub fn validate_sizes(&self, (hidden, layers): (&str, &str)) -> Result<()> {
        if self.hidden == 0 || self.hidden > MAX_HIDDEN {
            bail!("{hidden} {} is out of range 1..={MAX_HIDDEN}", self.hidden);
        }
        if self.layers == 0 || self.layers > MAX_LAYERS {
            bail!("{layers} {} is out of range 1..={MAX_LAYERS}", self.layers);
        }
        Ok(())
    }

    /// Rejects absurd sizes (before anything is allocated) and settings the cell has no use for.
    pub fn validate(&self) -> Result<()> {
        self.validate_sizes(("hidden size", "layer count"))?;
        if let Some(e) = self.embed {
            if e == 0 || e > MAX_HIDDEN {
                bail!("embedding size {e} is out of range 1..={MAX_HIDDEN}");
            }
        }
        if self.tied && self.embed != Some(self.hidden) {
            bail!(
                "--tie shares the decoder's weights with the input embedding, so the embedding must be as wide as the hidden layer: --embed {} (or leave --embed out)",
                self.hidden
            );
        }
        if self.cell != CellKind::Elman && self.activation != Activation::Tanh {
            bail!(
                "--activation {} applies to Elman cells only (an {} has its own gates)",
                self.activation,
                self.cell.name().to_uppercase()
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

pub use crate::cell::elman::INPUT_INIT_BOUND;

/// PyTorch's `nn.RNN`/`nn.Linear` initialisation: every parameter uniform in ±1/√hidden (or what
/// the cell says for it), drawn from a seeded generator (candle's own CPU RNG cannot be seeded),
/// in layout order.
pub fn init_params(cfg: &ModelConfig, seed: u64, dtype: DType, dev: &Device) -> Result<VarMap> {
    cfg.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cell = cfg.cell();
    let map = VarMap::new();
    {
        let mut data = map.data().lock().expect("fresh VarMap lock");
        for (p, shape) in cfg.layout().iter() {
            let n: usize = shape.iter().product();
            let b = match p {
                Param::DecoderWeight | Param::DecoderBias => 1.0 / (cfg.hidden as f64).sqrt(),
                // nn.Embedding's N(0, 1) as a uniform of the same spread; tied to the decoder,
                // word_language_model's ±0.1.
                Param::Embedding if cfg.tied => 0.1,
                Param::Embedding => 3f64.sqrt(),
                // Read through an embedding, layer 0's input weights are an ordinary layer's.
                Param::WeightIh(0) if cfg.embed.is_some() => 1.0 / (cfg.hidden as f64).sqrt(),
                _ => cell.init_bound(*p, cfg),
            };
            let vals: Vec<f64> = (0..n).map(|_| rng.random_range(-b..b)).collect();
            let t = Tensor::from_vec(vals, shape.clone(), dev)?.to_dtype(dtype)?;
            data.insert(p.name(), Var::from_tensor(&t)?);
        }
    }
    Ok(map)
}

/// The recurrent state of one layer: h(t), shape (batch, hidden), and an LSTM's cell state c(t).
#[derive(Debug, Clone)]
pub struct LayerState {
    pub h: Tensor,
    pub c: Option<Tensor>,
}

/// One recurrent layer on candle's graph (the reference). Implements candle-nn's [`RNN`] trait:
/// `step` takes either token ids of shape (batch,) — the one-hot input, looked up — or a dense
/// (batch, input) tensor. What happens after the two products is its cell's ([`Cell::graph_step`]).
#[derive(Debug, Clone)]
pub struct RecurrentLayer {
    /// (gates·H, input): Uᵀ for an Elman layer.
    pub weight_ih: Tensor,
    /// (gates·H, H): Wᵀ.
    pub weight_hh: Tensor,
    pub bias_ih: Tensor,
    pub bias_hh: Tensor,
    pub cell: &'static dyn Cell,
    pub hidden: usize,
}

/// The Elman layer of the chapter is a [`RecurrentLayer`] with the Elman cell.
pub type ElmanLayer = RecurrentLayer;

impl RecurrentLayer {
    /// Reads layer `k`'s parameters (`weight_ih_l{k}`, ...) from `vb` (already at the `rnn` prefix).
    pub fn new(
        input: usize,
        hidden: usize,
        k: usize,
        cell: &'static dyn Cell,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let g = cell.gates() * hidden;
        let name = |p: Param| p.name().trim_start_matches("rnn.").to_string();
        Ok(RecurrentLayer {
            weight_ih: vb.get((g, input), &name(Param::WeightIh(k)))?,
            weight_hh: vb.get((g, hidden), &name(Param::WeightHh(k)))?,
            bias_ih: vb.get(g, &name(Param::BiasIh(k)))?,
            bias_hh: vb.get(g, &name(Param::BiasHh(k)))?,
            cell,
            hidden,
        })
    }

    /// The same layer with every parameter cut from the autograd graph (for scoring and sampling).
    pub fn detached(&self) -> Self {
        RecurrentLayer {
            weight_ih: self.weight_ih.detach(),
            weight_hh: self.weight_hh.detach(),
            bias_ih: self.bias_ih.detach(),
            bias_hh: self.bias_hh.detach(),
            ..self.clone()
        }
    }

    /// The per-sequence constants: transposes made contiguous once (a matmul against a transposed
    /// view is much slower in candle) and the input bias.
    fn prepared(&self) -> candle_core::Result<PreparedLayer> {
        let bias = self.cell.graph_input_bias(&self.bias_ih, &self.bias_hh)?;
        Ok(PreparedLayer {
            w_ih_t: self.weight_ih.t()?.contiguous()?,
            w: GraphWeights {
                w_hh_t: self.weight_hh.t()?.contiguous()?,
                b_ih: self.bias_ih.clone(),
                b_hh: self.bias_hh.clone(),
                bias: bias.unsqueeze(0)?,
            },
            cell: self.cell,
        })
    }

    /// Runs the layer over a sequence of inputs (each (batch,) ids or (batch, input) dense),
    /// starting from `s0`; returns every state.
    pub fn run(&self, inputs: &[Tensor], s0: &LayerState) -> candle_core::Result<Vec<LayerState>> {
        let p = self.prepared()?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut s = s0.clone();
        for x in inputs {
            s = p.step(x, &s)?;
            out.push(s.clone());
        }
        Ok(out)
    }
}

struct PreparedLayer {
    w_ih_t: Tensor,
    w: GraphWeights,
    cell: &'static dyn Cell,
}

impl PreparedLayer {
    fn step(&self, x: &Tensor, s: &LayerState) -> candle_core::Result<LayerState> {
        let x_proj = if x.dtype().is_int() {
            // One-hot input: Uᵀ x(t) is row x(t) of (Uᵀ)ᵀ = U. A lookup, no FLOPs.
            self.w_ih_t.index_select(x, 0)?
        } else {
            x.matmul(&self.w_ih_t)?
        };
        self.cell.graph_step(&self.w, &x_proj, s)
    }
}

impl RNN for RecurrentLayer {
    type State = LayerState;

    fn zero_state(&self, batch_dim: usize) -> candle_core::Result<LayerState> {
        let h = Tensor::zeros(
            (batch_dim, self.hidden),
            self.weight_hh.dtype(),
            self.weight_hh.device(),
        )?;
        let c = (self.cell.carried() > 1).then(|| h.clone());
        Ok(LayerState { h, c })
    }

    fn step(&self, input: &Tensor, state: &LayerState) -> candle_core::Result<LayerState> {
        self.prepared()?.step(input, state)
    }

    /// `input` is (batch, seq_len) token ids or (batch, seq_len, features) dense.
    fn seq_init(&self, input: &Tensor, init: &LayerState) -> candle_core::Result<Vec<LayerState>> {
        let seq_len = input.dim(1)?;
        let xs: Vec<Tensor> = (0..seq_len)
            .map(|t| input.narrow(1, t, 1)?.squeeze(1)?.contiguous())
            .collect::<candle_core::Result<_>>()?;
        self.run(&xs, init)
    }

    fn states_to_tensor(&self, states: &[LayerState]) -> candle_core::Result<Tensor> {
        let hs: Vec<&Tensor> = states.iter().map(|s| &s.h).collect();
        Tensor::stack(&hs, 1)
    }
}

/// The language model: the input embedding (with `--embed`), L stacked recurrent layers and the
/// decoder (V, c).
#[derive(Debug, Clone)]
pub struct ElmanLM {
    pub config: ModelConfig,
    /// `encoder.weight`, vocab × E (`None`: the book's one-hot input).
    pub encoder: Option<Tensor>,
    pub layers: Vec<RecurrentLayer>,
    pub decoder: candle_nn::Linear,
}

impl ElmanLM {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let rnn = vb.pp("rnn");
        let cell = config.cell();
        let (v, h) = (config.vocab_size, config.hidden);
        let encoder = config
            .embed
            .map(|e| vb.pp("encoder").get((v, e), "weight"))
            .transpose()?;
        let layers = (0..config.layers)
            .map(|k| {
                let input = if k == 0 { config.input_size() } else { h };
                RecurrentLayer::new(input, h, k, cell, rnn.clone())
            })
            .collect::<candle_core::Result<_>>()?;
        let decoder = match (&encoder, config.tied) {
            // One tensor for both: the graph adds the two uses' gradients.
            (Some(enc), true) => {
                candle_nn::Linear::new(enc.clone(), Some(vb.pp("decoder").get(v, "bias")?))
            }
            _ => candle_nn::linear(h, v, vb.pp("decoder"))?,
        };
        Ok(ElmanLM {
            config,
            encoder,
            layers,
            decoder,
        })
    }

    /// A copy whose parameters do not record gradients.
    pub fn detached(&self) -> Self {
        ElmanLM {
            config: self.config,
            encoder: self.encoder.as_ref().map(|e| e.detach()),
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

    /// s(−1) = 0 for every layer: each layer's h, then (LSTM) each layer's c; the layout
    /// `forward` takes and returns.
    pub fn zero_state(&self, batch: usize) -> candle_core::Result<Vec<Tensor>> {
        let mut hs = Vec::new();
        let mut cs = Vec::new();
        for l in &self.layers {
            let s = l.zero_state(batch)?;
            hs.push(s.h);
            cs.extend(s.c);
        }
        hs.extend(cs);
        Ok(hs)
    }

    /// Forward over a window. `ids` is time-major (T, batch) u32; `state` holds each layer's
    /// s(t−1) (then, for an LSTM, each layer's c(t−1): [`ElmanLM::zero_state`]'s layout). Returns
    /// the logits o(t), shape (T·batch, vocab) in time-major order, and the last state.
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
        // Token ids (layer 0 looks its input term up), or their embeddings (layer 0 reads them
        // as a dense input).
        let mut xs: Vec<Tensor> = (0..t_len)
            .map(|t| match &self.encoder {
                Some(enc) => enc.index_select(&ids.get(t)?, 0),
                None => ids.get(t),
            })
            .collect::<candle_core::Result<_>>()?;
        let layers = self.layers.len();
        let mut last = Vec::with_capacity(state.len());
        let mut last_c = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let s0 = LayerState {
                h: state[l].clone(),
                c: state.get(layers + l).cloned(),
            };
            let states = layer.run(&xs, &s0)?;
            let end = states.last().cloned().unwrap_or(s0);
            last.push(end.h);
            last_c.extend(end.c);
            xs = states.into_iter().map(|s| s.h).collect();
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
        last.extend(last_c);
        let hs = Tensor::stack(&xs, 0)?.reshape((t_len * batch, self.config.hidden))?;
        Ok((hs, last))
    }

    /// Parameters by name, in layout order (a tied decoder weight once, as the embedding).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.config
            .layout()
            .iter()
            .map(|(p, _)| (p.name(), self.tensor(*p).clone()))
            .collect()
    }

    /// What `model.safetensors` holds: the parameters under every name PyTorch's modules give
    /// them (a tied decoder weight also as `decoder.weight`, as its `state_dict` lists it).
    pub fn export_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = self.named_tensors();
        if self.config.tied {
            out.push((
                Param::DecoderWeight.name(),
                self.tensor(Param::DecoderWeight).clone(),
            ));
        }
        out
    }

    /// The tensor of one parameter.
    pub fn tensor(&self, p: Param) -> &Tensor {
        match p {
            Param::Embedding => self.encoder.as_ref().expect("the model has an embedding"),
            Param::WeightIh(k) => &self.layers[k].weight_ih,
            Param::WeightHh(k) => &self.layers[k].weight_hh,
            Param::BiasIh(k) => &self.layers[k].bias_ih,
            Param::BiasHh(k) => &self.layers[k].bias_hh,
            Param::DecoderWeight => self.decoder.weight(),
            Param::DecoderBias => self.decoder.bias().expect("decoder has a bias"),
        }
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
