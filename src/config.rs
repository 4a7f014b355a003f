//! What a network is, before any weight exists: the shapes that fix it ([`ModelConfig`]), its
//! parameters by role and in their one order ([`Param`], [`ParamLayout`]), how each starts
//! ([`ModelConfig::init_bound`]), and the limits that keep a typo from asking for terabytes.
//! Every form of the network (the graph in `model.rs`, the fused window, the batch-1 stream,
//! checkpoints, the optimizer) reads its parameters through this one layout.

use crate::cell::{Activation, Cell, CellKind};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Half-width of the uniform initialisation of layer 0's one-hot input columns.
pub const INPUT_INIT_BOUND: f64 = 0.9;

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
        let g = cfg.cell.gates() * h;
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
        crate::cell::of(self.cell, self.activation)
    }

    /// Half-width of the uniform initialisation of `p`: PyTorch's `nn.RNN`/`nn.LSTM`/`nn.GRU` and
    /// `nn.Linear` draw every weight from ±1/√H, the same for every cell.
    pub fn init_bound(&self, p: Param) -> f64 {
        let bound = 1.0 / (self.hidden as f64).sqrt();
        match p {
            // nn.Embedding's N(0, 1) as a uniform of the same spread; tied to the decoder,
            // word_language_model's ±0.1.
            Param::Embedding if self.tied => 0.1,
            Param::Embedding => 3f64.sqrt(),
            // Layer 0's one-hot input: each column of Uᵀ is a token's whole input vector, so it
            // gets the scale of an embedding (std ≈ 0.5, as nn.Embedding · W_ih gives PyTorch
            // users) rather than ±1/√H, which starts the input signal ~20× weaker at H = 512.
            // Read through an embedding, layer 0's input weights are an ordinary layer's.
            Param::WeightIh(0) if self.embed.is_none() => INPUT_INIT_BOUND.max(bound),
            _ => bound,
        }
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
        if !self.cell.takes_activation() && self.activation != Activation::Tanh {
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
