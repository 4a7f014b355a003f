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

use crate::cell::{Cell, GraphWeights, LayerState};
use crate::config::{ModelConfig, Param};
use crate::stochastic::{Masks, Sample};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap, RNN};
use rand::{Rng, SeedableRng};

/// PyTorch's `nn.RNN`/`nn.Linear` initialisation: every parameter uniform in ±1/√hidden (or what
/// the cell says for it), drawn from a seeded generator (candle's own CPU RNG cannot be seeded),
/// in layout order.
pub fn init_params(cfg: &ModelConfig, seed: u64, dtype: DType, dev: &Device) -> Result<VarMap> {
    cfg.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let map = VarMap::new();
    {
        let mut data = map.data().lock().expect("fresh VarMap lock");
        for (p, shape) in cfg.layout().iter() {
            let n: usize = shape.iter().product();
            let b = cfg.init_bound(*p);
            let vals: Vec<f64> = (0..n).map(|_| rng.random_range(-b..b)).collect();
            let t = Tensor::from_vec(vals, shape.clone(), dev)?.to_dtype(dtype)?;
            data.insert(p.name(), Var::from_tensor(&t)?);
        }
    }
    Ok(map)
}

/// The weights of a model on `from`'s vocabulary grown to `to`'s (the same model with more tokens
/// after the old ones, as fine-tuning on a text with new characters makes it). Every old number
/// is kept. A new token starts as the old model saw it: as `<unk>` (`unk`), whose input row or
/// column and decoder row it copies, with `<unk>`'s output bias less ln N (N = `unknown_types`, the
/// tokens `<unk>` stood for), so that the old predictions hardly move. Without `<unk>` its input
/// weights are drawn as a new model's are (from `seed`), its decoder row is 0 (a tied model's is
/// the drawn embedding row) and its bias the lowest old one: about as unlikely as the least likely
/// old token until training says otherwise.
pub fn grow_vocab(
    weights: &std::collections::HashMap<String, Tensor>,
    from: &ModelConfig,
    to: &ModelConfig,
    unk: Option<u32>,
    unknown_types: Option<u64>,
    seed: u64,
) -> Result<std::collections::HashMap<String, Tensor>> {
    let (v0, v1) = (from.vocab_size, to.vocab_size);
    anyhow::ensure!(v1 >= v0, "a vocabulary only grows");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x6772_6f77);
    let mut out = std::collections::HashMap::new();
    for (p, shape) in to.layout().iter() {
        let name = p.name();
        let old = weights
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("the checkpoint has no {name}"))?
            .to_dtype(DType::F32)?;
        let b = to.init_bound(*p) as f32;
        let t = match p {
            // Token rows: (V, width).
            Param::Embedding | Param::DecoderWeight => {
                let rows = old.to_vec2::<f32>()?;
                let width = shape[1];
                let mut flat: Vec<f32> = rows.concat();
                for _ in v0..v1 {
                    match unk {
                        Some(u) => flat.extend_from_slice(&rows[u as usize]),
                        None if *p == Param::DecoderWeight => flat.extend(vec![0.0; width]),
                        None => flat.extend((0..width).map(|_| rng.random_range(-b..b))),
                    }
                }
                Tensor::from_vec(flat, (v1, width), old.device())?
            }
            // The one-hot input's token columns: (gates·H, V).
            Param::WeightIh(0) if to.embed.is_none() => {
                let rows = old.to_vec2::<f32>()?;
                let mut flat = Vec::with_capacity(rows.len() * v1);
                // Without <unk>, each new token's column drawn whole, as a new model's.
                let fresh: Vec<Vec<f32>> = match unk {
                    Some(_) => Vec::new(),
                    None => (v0..v1)
                        .map(|_| (0..rows.len()).map(|_| rng.random_range(-b..b)).collect())
                        .collect(),
                };
                for (r, row) in rows.iter().enumerate() {
                    flat.extend_from_slice(row);
                    match unk {
                        Some(u) => flat.extend(std::iter::repeat_n(row[u as usize], v1 - v0)),
                        None => flat.extend(fresh.iter().map(|new| new[r])),
                    }
                }
                Tensor::from_vec(flat, (rows.len(), v1), old.device())?
            }
            Param::DecoderBias => {
                let mut bias = old.to_vec1::<f32>()?;
                let new = match unk {
                    Some(u) => bias[u as usize] - (unknown_types.unwrap_or(1).max(1) as f32).ln(),
                    None => bias.iter().copied().fold(f32::INFINITY, f32::min),
                };
                bias.resize(v1, new);
                Tensor::from_vec(bias, v1, old.device())?
            }
            _ => old,
        };
        anyhow::ensure!(
            t.dims() == shape.as_slice(),
            "{name}: grown to the wrong shape"
        );
        out.insert(name, t);
    }
    Ok(out)
}

/// One recurrent layer on candle's graph (the reference). Implements candle-nn's [`RNN`] trait:
/// `step` takes either token ids of shape (batch,) — the one-hot input, looked up — or a dense
/// (batch, input) tensor. What happens after the two products is its cell's ([`crate::cell::GraphCell::step`]).
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
    /// view is much slower in candle) and the input bias. With `w_mask` (DropConnect), the
    /// sequence runs on W_hh ⊙ mask.
    fn prepared(&self, w_mask: Option<&Tensor>) -> candle_core::Result<PreparedLayer> {
        let bias = self.cell.graph().input_bias(&self.bias_ih, &self.bias_hh)?;
        let w_hh = match w_mask {
            Some(m) => self.weight_hh.mul(&m.to_dtype(self.weight_hh.dtype())?)?,
            None => self.weight_hh.clone(),
        };
        Ok(PreparedLayer {
            w_ih_t: self.weight_ih.t()?.contiguous()?,
            w: GraphWeights {
                w_hh_t: w_hh.t()?.contiguous()?,
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
        self.run_masked(inputs, s0, None, &[])
    }

    /// [`RecurrentLayer::run`] while training with DropConnect (`w_mask`: W_hh's (G, H) mask)
    /// and embedding dropout (`in_scale[t]`: (batch, 1) factors of step t's input term).
    pub fn run_masked(
        &self,
        inputs: &[Tensor],
        s0: &LayerState,
        w_mask: Option<&Tensor>,
        in_scale: &[Tensor],
    ) -> candle_core::Result<Vec<LayerState>> {
        let p = self.prepared(w_mask)?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut s = s0.clone();
        for (t, x) in inputs.iter().enumerate() {
            s = p.step(x, &s, in_scale.get(t))?;
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
    fn step(
        &self,
        x: &Tensor,
        s: &LayerState,
        scale: Option<&Tensor>,
    ) -> candle_core::Result<LayerState> {
        let x_proj = if x.dtype().is_int() {
            // One-hot input: Uᵀ x(t) is row x(t) of (Uᵀ)ᵀ = U. A lookup, no FLOPs.
            self.w_ih_t.index_select(x, 0)?
        } else {
            x.matmul(&self.w_ih_t)?
        };
        let x_proj = match scale {
            Some(k) => x_proj.broadcast_mul(&k.to_dtype(x_proj.dtype())?)?,
            None => x_proj,
        };
        self.cell.graph().step(&self.w, &x_proj, s)
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
        self.prepared(None)?.step(input, state, None)
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

/// A training window's masks as the reference graph applies them (all empty: the plain forward).
#[derive(Debug, Clone, Default)]
pub struct WindowMasks {
    /// Per layer, (T, batch, H): dropout on the outputs that go up.
    pub outputs: Vec<Tensor>,
    /// Per layer, (gates·H, H): DropConnect on W_hh.
    pub weight_hh: Vec<Tensor>,
    /// Per step, (batch, 1): embedding dropout's factor on layer 0's input term.
    pub input: Vec<Tensor>,
}

impl WindowMasks {
    /// The tensors of `masks` for a window of `ids` (time-major, T × batch) through a model of
    /// `cfg`: the very values the fused window draws.
    pub fn of(
        masks: &Masks,
        cfg: &ModelConfig,
        ids: &[u32],
        batch: usize,
        dev: &Device,
    ) -> candle_core::Result<WindowMasks> {
        let (layers, hidden) = (cfg.layers, cfg.hidden);
        let t_len = ids.len() / batch.max(1);
        Ok(WindowMasks {
            outputs: match masks.dropout {
                Some(d) => d.mask_tensors(layers, t_len, batch, hidden, dev)?,
                None => Vec::new(),
            },
            weight_hh: match masks.weight_drop {
                Some(d) => d.mask_tensors(layers, cfg.cell().gates() * hidden, hidden, dev)?,
                None => Vec::new(),
            },
            input: match masks.embed_drop {
                Some(d) => d.scale_tensors(ids, batch, dev)?,
                None => Vec::new(),
            },
        })
    }
}

/// The language model: the input embedding (with `--embed`), L stacked recurrent layers and the
/// decoder (V, c).
#[derive(Debug, Clone)]
pub struct GraphModel {
    pub config: ModelConfig,
    /// `encoder.weight`, vocab × E (`None`: the book's one-hot input).
    pub encoder: Option<Tensor>,
    pub layers: Vec<RecurrentLayer>,
    pub decoder: candle_nn::Linear,
}

impl GraphModel {
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
        Ok(GraphModel {
            config,
            encoder,
            layers,
            decoder,
        })
    }

    /// A copy whose parameters do not record gradients.
    pub fn detached(&self) -> Self {
        GraphModel {
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
    /// s(t−1) (then, for an LSTM, each layer's c(t−1): [`GraphModel::zero_state`]'s layout). Returns
    /// the logits o(t), shape (T·batch, vocab) in time-major order, and the last state.
    pub fn forward(
        &self,
        ids: &Tensor,
        state: &[Tensor],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        self.forward_masked(ids, state, &WindowMasks::default())
    }

    /// [`GraphModel::forward`] while training with `masks` ([`WindowMasks::of`]): dropout on the
    /// layers' outputs on their way up (the carried states are not masked), DropConnect on W_hh
    /// and embedding dropout on layer 0's input term. Empty masks: the plain forward.
    pub fn forward_masked(
        &self,
        ids: &Tensor,
        state: &[Tensor],
        masks: &WindowMasks,
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let (hs, last) = self.forward_states_masked(ids, state, masks)?;
        let logits = hs
            .matmul(&self.decoder.weight().t()?.contiguous()?)?
            .broadcast_add(self.decoder.bias().expect("decoder has a bias"))?;
        Ok((logits, last))
    }

    /// The top layer's states s(t) over a window, (T·batch, hidden) time-major, and each layer's
    /// last state: [`GraphModel::forward`] before the decoder.
    pub fn forward_states(
        &self,
        ids: &Tensor,
        state: &[Tensor],
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        self.forward_states_masked(ids, state, &WindowMasks::default())
    }

    /// [`GraphModel::forward_states`] with a training window's masks (as [`GraphModel::forward_masked`]).
    pub fn forward_states_masked(
        &self,
        ids: &Tensor,
        state: &[Tensor],
        masks: &WindowMasks,
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
            let in_scale: &[Tensor] = if l == 0 { &masks.input } else { &[] };
            let states = layer.run_masked(&xs, &s0, masks.weight_hh.get(l), in_scale)?;
            let end = states.last().cloned().unwrap_or(s0);
            last.push(end.h);
            last_c.extend(end.c);
            xs = states.into_iter().map(|s| s.h).collect();
            if let Some(mask) = masks.outputs.get(l) {
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

    /// [`GraphModel::forward_states_masked`] in the whole-window form a GPU runs: each layer's
    /// input term for all T·B positions in one product (one lookup for the one-hot input), the
    /// recurrence as one operation ([`crate::runtime::scan::run`], the cell's [`Cell::scan`]),
    /// the masks as whole-window tensors. The same numbers as the per-step graph (the tests hold
    /// them equal); a cell without a scan kernel runs the per-step graph.
    pub fn forward_window_states(
        &self,
        ids: &Tensor,
        state: &[Tensor],
        masks: &WindowMasks,
    ) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
        let Some(rec) = self.config.cell().scan() else {
            return self.forward_states_masked(ids, state, masks);
        };
        let (t_len, batch) = ids.dims2()?;
        let (hidden, layers) = (self.config.hidden, self.layers.len());
        let flat_ids = ids.flatten_all()?;
        // (T·B, input) dense input, or None: layer 0 looks its input term up.
        let mut x: Option<Tensor> = match &self.encoder {
            Some(enc) => Some(enc.index_select(&flat_ids, 0)?),
            None => None,
        };
        let (mut last, mut last_c) = (Vec::with_capacity(layers), Vec::new());
        for (l, layer) in self.layers.iter().enumerate() {
            let p = layer.prepared(masks.weight_hh.get(l))?;
            let input = match &x {
                Some(x) => x.matmul(&p.w_ih_t)?,
                None => p.w_ih_t.index_select(&flat_ids, 0)?,
            };
            let input = match (l, masks.input.is_empty()) {
                (0, false) => {
                    let scale = Tensor::cat(&masks.input, 0)?.to_dtype(input.dtype())?;
                    input.broadcast_mul(&scale)?
                }
                _ => input,
            };
            let pre =
                input
                    .broadcast_add(&p.w.bias)?
                    .reshape((t_len, batch, rec.gates() * hidden))?;
            // The recurrence reads W_hh as stored, (gates·H, H), possibly masked; with a bias
            // block that stays inside the recurrence (the GRU's b_hn) as one more row.
            let w_hh = p.w.w_hh_t.t()?;
            let w_hh = match rec.inner_bias_block() {
                Some(q) => {
                    let inner = layer.bias_hh.narrow(0, q * hidden, hidden)?.unsqueeze(0)?;
                    Tensor::cat(&[&w_hh, &inner], 0)?
                }
                None => w_hh,
            };
            // The first state: h, then the carried c.
            let s0 = match state.get(layers + l) {
                Some(c) if rec.carried() == 2 => Tensor::cat(&[&state[l], c], 1)?,
                _ => state[l].clone(),
            };
            let y = crate::runtime::scan::run(rec, &pre, &w_hh, &s0)?;
            let end = y.get(t_len - 1)?;
            last.push(end.narrow(1, 0, hidden)?);
            if rec.carried() == 2 {
                last_c.push(end.narrow(1, hidden, hidden)?);
            }
            let h = y.narrow(2, 0, hidden)?;
            // Only the copy that goes up is masked, as in the per-step form.
            let up = match masks.outputs.get(l) {
                Some(mask) => h.mul(&mask.to_dtype(h.dtype())?)?,
                None => h,
            };
            x = Some(up.contiguous()?.reshape((t_len * batch, hidden))?);
        }
        last.extend(last_c);
        Ok((x.expect("a model has at least one layer"), last))
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

/// The sampled-softmax training loss on candle's graph (the reference for `fused/decoder.rs`): for each
/// row of `hs` (N × H), the logits of its target and of `sample`'s K ids, each minus ln E[count];
/// a sample equal to the row's target is masked out; mean cross-entropy with the target first.
pub fn sampled_softmax_loss(
    hs: &Tensor,
    dec_w: &Tensor,
    dec_b: &Tensor,
    targets: &[u32],
    sample: &Sample,
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
