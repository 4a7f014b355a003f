//! One training step: a window of truncated BPTT and the optimizer's update. Training and
//! `elman bench` both run exactly this.
//!
//! How a window's loss and gradients are found is a [`WindowBackend`]: the fused CPU window
//! (`fused/`, what training runs), candle's autograd graph (`train --reference`, what the tests
//! hold the fused window to), or the whole-window graph on the run's window device (`--device
//! cuda`: the weights go up, the gradients come down). Everything around it — the divergence check, the carried state,
//! clipping and the optimizer's step — is written once, in [`Stepper::step`].

use crate::checkpoint::TrainConfig;
use crate::config::ModelConfig;
use crate::fused::{with_params, FusedWindow};
use crate::model::{cross_entropy, sampled_softmax_loss, GraphModel, WindowMasks};
use crate::optim::{clip_scale, grads_in_order, Optimizer};
use crate::stochastic::{Dropout, EmbedDrop, Masks, Sample, WeightDrop};
use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;

/// What one training step came to.
pub enum StepResult {
    /// The window's mean cross-entropy; the update was applied.
    Ok(f64),
    /// The loss or the gradient was not finite or exploded; nothing was updated.
    Diverged(String),
}

/// What a window draws at random: its masks and its sampled softmax's negatives.
struct Noise<'a> {
    masks: Masks,
    sample: Option<&'a Sample>,
}

/// One window forward and back. `inp`/`tgt` are time-major (bptt × batch); `state` holds each
/// layer's carried state and `next` receives the window's last one. Returns the mean loss; the
/// gradients (layout order) are then in [`WindowBackend::grads`].
trait WindowBackend {
    fn window(
        &mut self,
        params: &[(String, Var)],
        inp: &[u32],
        tgt: &[u32],
        state: &[Vec<f32>],
        next: &mut [Vec<f32>],
        noise: &Noise,
    ) -> Result<f64>;

    fn grads(&self) -> &[Vec<f32>];
}

/// The fused window: the weights read where they lie (the optimizer then updates them in place).
struct Fused(FusedWindow);

impl WindowBackend for Fused {
    fn window(
        &mut self,
        params: &[(String, Var)],
        inp: &[u32],
        tgt: &[u32],
        _state: &[Vec<f32>],
        next: &mut [Vec<f32>],
        noise: &Noise,
    ) -> Result<f64> {
        let fused = &mut self.0;
        fused.set_masks(noise.masks);
        let vars: Vec<&Tensor> = params.iter().map(|(_, v)| v.as_tensor()).collect();
        let config = fused.config;
        Ok(with_params(&config, &vars, |p| match noise.sample {
            None => fused.step(p, inp, tgt, next),
            Some(sample) => fused.step_sampled(p, inp, tgt, next, sample),
        })?)
    }

    fn grads(&self) -> &[Vec<f32>] {
        &self.0.grads
    }
}

/// A window through candle's graph on `model`'s device: per step (the reference) or in the
/// whole-window form. Returns the mean loss and, by autograd, the gradients of `vars` (layout
/// order); `next` receives each layer's last state.
#[allow(clippy::too_many_arguments)]
fn graph_window(
    model: &GraphModel,
    vars: &[(String, Var)],
    whole_window: bool,
    (batch, bptt): (usize, usize),
    inp: &[u32],
    tgt: &[u32],
    state: &[Vec<f32>],
    next: &mut [Vec<f32>],
    noise: &Noise,
) -> Result<(f64, Vec<Vec<f32>>)> {
    let dev = model.device();
    let hidden = model.config.hidden;
    let inp_t = Tensor::from_slice(inp, (bptt, batch), dev)?;
    let h0 = state
        .iter()
        .map(|h| Ok(Tensor::from_slice(h, (batch, hidden), dev)?))
        .collect::<Result<Vec<_>>>()?;
    let masks = WindowMasks::of(&noise.masks.active(), &model.config, inp, batch, dev)?;
    let (hs, last) = if whole_window {
        model.forward_window_states(&inp_t, &h0, &masks)?
    } else {
        model.forward_states_masked(&inp_t, &h0, &masks)?
    };
    let dec_w = model.tensor(crate::config::Param::DecoderWeight);
    let dec_b = model.tensor(crate::config::Param::DecoderBias);
    let loss_t = match noise.sample {
        Some(sample) => sampled_softmax_loss(&hs, dec_w, dec_b, tgt, sample)?,
        None => {
            let logits = hs.matmul(&dec_w.t()?.contiguous()?)?.broadcast_add(dec_b)?;
            cross_entropy(&logits, &Tensor::from_slice(tgt, bptt * batch, dev)?)?
        }
    };
    let loss = loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let grads = grads_in_order(&loss_t.backward()?, vars)?;
    for (s, h) in next.iter_mut().zip(&last) {
        *s = h.flatten_all()?.to_vec1::<f32>()?;
    }
    Ok((loss, grads))
}

/// candle's autograd graph, the reference: the model built on the optimizer's own Vars.
struct Graph {
    model: GraphModel,
    batch: usize,
    bptt: usize,
    grads: Vec<Vec<f32>>,
}

impl WindowBackend for Graph {
    fn window(
        &mut self,
        params: &[(String, Var)],
        inp: &[u32],
        tgt: &[u32],
        state: &[Vec<f32>],
        next: &mut [Vec<f32>],
        noise: &Noise,
    ) -> Result<f64> {
        let shape = (self.batch, self.bptt);
        let (loss, grads) = graph_window(
            &self.model,
            params,
            false,
            shape,
            inp,
            tgt,
            state,
            next,
            noise,
        )?;
        self.grads = grads;
        Ok(loss)
    }

    fn grads(&self) -> &[Vec<f32>] {
        &self.grads
    }
}

/// The whole-window graph on a device (a GPU; the CPU in the tests): each window, the weights are
/// copied to it, the forward and backward run there as whole-window operations
/// ([`GraphModel::forward_window_states`]), and the gradients come back for the optimizer, which
/// stays with the weights on the CPU.
struct OnDevice {
    dev: Device,
    config: ModelConfig,
    batch: usize,
    bptt: usize,
    grads: Vec<Vec<f32>>,
}

impl WindowBackend for OnDevice {
    fn window(
        &mut self,
        params: &[(String, Var)],
        inp: &[u32],
        tgt: &[u32],
        state: &[Vec<f32>],
        next: &mut [Vec<f32>],
        noise: &Noise,
    ) -> Result<f64> {
        let dev = &self.dev;
        let map = VarMap::new();
        let mut up = Vec::with_capacity(params.len());
        {
            let mut data = map.data().lock().expect("a fresh VarMap");
            for (name, var) in params {
                let v = Var::from_tensor(&var.as_tensor().to_device(dev)?)?;
                data.insert(name.clone(), v.clone());
                up.push((name.clone(), v));
            }
        }
        let model = GraphModel::new(self.config, VarBuilder::from_varmap(&map, DType::F32, dev))?;
        let shape = (self.batch, self.bptt);
        let (loss, grads) = graph_window(&model, &up, true, shape, inp, tgt, state, next, noise)?;
        self.grads = grads;
        Ok(loss)
    }

    fn grads(&self) -> &[Vec<f32>] {
        &self.grads
    }
}

/// Which backend a [`Stepper`] runs its windows on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The fused CPU window on this many threads (training's default).
    Fused { threads: usize },
    /// candle's per-step autograd graph on the CPU (`train --reference`).
    Reference,
    /// The whole-window graph on a device (`--device cuda`).
    Window(Device),
}

impl Backend {
    /// The backend a run asks for: `--reference`, else the runtime's window device, else fused.
    pub fn of(rt: &crate::runtime::Runtime, reference: bool) -> Backend {
        match (&rt.window_device, reference) {
            (_, true) => Backend::Reference,
            (Some(dev), false) => Backend::Window(dev.clone()),
            (None, false) => Backend::Fused {
                threads: rt.threads,
            },
        }
    }
}

/// One step of truncated BPTT plus the optimizer update, on the fused path, the candle graph
/// (reference) or a device.
pub struct Stepper {
    backend: Box<dyn WindowBackend + Send + Sync>,
    vocab: usize,
    diverge_limit: f64,
    /// Sampled softmax: negatives per step and the run's seed.
    samples: Option<(usize, u64)>,
    /// The run's masks (dropout, DropConnect, embedding dropout), drawn afresh for every step.
    masks: Masks,
    /// The step about to run (the sample drawn and the dropout masks are pure functions of seed
    /// and step).
    step_index: u64,
}

impl Stepper {
    pub fn new(model: &GraphModel, batch: usize, bptt: usize, backend: Backend) -> Self {
        let mc = model.config;
        let backend: Box<dyn WindowBackend + Send + Sync> = match backend {
            Backend::Reference => Box::new(Graph {
                model: model.clone(),
                batch,
                bptt,
                grads: Vec::new(),
            }),
            Backend::Fused { threads } => {
                Box::new(Fused(FusedWindow::new(mc, batch, bptt, threads)))
            }
            Backend::Window(dev) => Box::new(OnDevice {
                dev,
                config: mc,
                batch,
                bptt,
                grads: Vec::new(),
            }),
        };
        Stepper {
            backend,
            vocab: mc.vocab_size,
            // Far above any loss a learning model has (ln V at the start).
            diverge_limit: 3.0 * (mc.vocab_size as f64).ln() + 10.0,
            samples: None,
            masks: Masks::default(),
            step_index: 0,
        }
    }

    /// Trains with the regularisers of `tc` that draw masks: dropout on the layers' outputs
    /// (locked or not), DropConnect on W_hh and embedding dropout (a rate of 0: none), all
    /// derived from the run's seed.
    pub fn with_masks(mut self, tc: &TrainConfig) -> Self {
        let (seed, step) = (tc.seed, 0);
        self.masks = Masks {
            dropout: Some(Dropout {
                p: tc.dropout as f32,
                seed,
                step,
                locked: tc.locked_dropout,
            }),
            weight_drop: Some(WeightDrop {
                p: tc.weight_drop as f32,
                seed,
                step,
            }),
            embed_drop: Some(EmbedDrop {
                p: tc.embed_dropout as f32,
                seed,
                step,
            }),
        }
        .active();
        self
    }

    /// Trains with a sampled softmax of `samples` negatives per step (`None`: the full softmax).
    pub fn with_sampled_softmax(mut self, samples: Option<usize>, seed: u64) -> Self {
        self.samples = samples.map(|k| (k, seed));
        self
    }

    /// Which step runs next: the negatives of a sampled softmax depend on it, so a resumed run
    /// draws exactly what the uninterrupted one would have.
    pub fn at_step(&mut self, step: u64) {
        self.step_index = step;
    }

    /// `inp`/`tgt` are time-major (bptt × batch); `state` is each layer's carried state, updated.
    pub fn step(
        &mut self,
        opt: &mut Optimizer,
        inp: &[u32],
        tgt: &[u32],
        state: &mut [Vec<f32>],
        clip: f64,
    ) -> Result<StepResult> {
        let step = self.step_index;
        let sample = self.samples.map(|(k, seed)| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed ^ 0x5A3F_0C1E_u64 ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
            Sample::draw(self.vocab, k, &mut rng)
        });
        let noise = Noise {
            masks: self.masks.at_step(step),
            sample: sample.as_ref(),
        };
        let mut next = state.to_vec();
        let loss = self
            .backend
            .window(opt.params(), inp, tgt, state, &mut next, &noise)?;
        self.step_index += 1;
        if !loss.is_finite() || loss > self.diverge_limit {
            return Ok(StepResult::Diverged(format!("loss {loss}")));
        }
        state.clone_from_slice(&next);
        let grads = self.backend.grads();
        let (norm, scale) = clip_scale(grads, clip)?;
        if !norm.is_finite() {
            return Ok(StepResult::Diverged(format!("gradient norm {norm}")));
        }
        opt.step(grads, scale)?;
        Ok(StepResult::Ok(loss))
    }
}
