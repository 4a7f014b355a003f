//! One training step: a window of truncated BPTT and the optimizer's update, on the fused path or
//! (for reference) candle's autograd graph. Training and `elman bench` both run exactly this.

use crate::fused::FusedWindow;
use crate::model::{cross_entropy, GraphModel};
use crate::optim::{clip_scale, grads_in_order, Optimizer};
use crate::stochastic::Dropout;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;

/// What one training step came to.
pub enum StepResult {
    /// The window's mean cross-entropy; the update was applied.
    Ok(f64),
    /// The loss or the gradient was not finite or exploded; nothing was updated.
    Diverged(String),
}

/// One step of truncated BPTT plus the optimizer update, on the fused path or (for reference) the
/// candle graph.
pub struct Stepper {
    model: GraphModel,
    fast: Option<FusedWindow>,
    batch: usize,
    bptt: usize,
    diverge_limit: f64,
    /// Sampled softmax: negatives per step and the run's seed.
    samples: Option<(usize, u64)>,
    /// Dropout probability and the run's seed (`None`: no dropout).
    dropout: Option<(f32, u64)>,
    /// The step about to run (the sample drawn and the dropout masks are pure functions of seed
    /// and step).
    step_index: u64,
}

impl Stepper {
    pub fn new(
        model: &GraphModel,
        batch: usize,
        bptt: usize,
        threads: usize,
        reference: bool,
    ) -> Self {
        let mc = model.config;
        Stepper {
            model: model.clone(),
            fast: (!reference).then(|| FusedWindow::new(mc, batch, bptt, threads)),
            batch,
            bptt,
            // Far above any loss a learning model has (ln V at the start).
            diverge_limit: 3.0 * (mc.vocab_size as f64).ln() + 10.0,
            samples: None,
            dropout: None,
            step_index: 0,
        }
    }

    /// Trains with dropout `p` on the layers' outputs (0: none); the masks derive from `seed`.
    pub fn with_dropout(mut self, p: f64, seed: u64) -> Self {
        self.dropout = (p > 0.0).then_some((p as f32, seed));
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
        let dev = self.model.device().clone();
        let dropout = self.dropout.map(|(p, seed)| Dropout {
            p,
            seed,
            step: self.step_index,
        });
        let (loss, grads) = if let Some(fast) = self.fast.as_mut() {
            fast.set_dropout(dropout);
            // The weights are read where they lie (the optimizer then updates them in place).
            let vars: Vec<&Tensor> = opt.params().iter().map(|(_, v)| v.as_tensor()).collect();
            let mut next = state.to_vec();
            let (samples, step_index) = (self.samples, self.step_index);
            let vocab = self.model.config.vocab_size;
            let loss =
                crate::fused::with_params(&self.model.config, &vars, |params| match samples {
                    None => fast.step(params, inp, tgt, &mut next),
                    Some((k, seed)) => {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(
                            seed ^ 0x5A3F_0C1E_u64 ^ step_index.wrapping_mul(0xD1B5_4A32_D192_ED03),
                        );
                        let sample = crate::stochastic::Sample::draw(vocab, k, &mut rng);
                        fast.step_sampled(params, inp, tgt, &mut next, &sample)
                    }
                })?;
            self.step_index += 1;
            if !loss.is_finite() || loss > self.diverge_limit {
                return Ok(StepResult::Diverged(format!("loss {loss}")));
            }
            state.clone_from_slice(&next);
            let (norm, scale) = clip_scale(&fast.grads, clip)?;
            if !norm.is_finite() {
                return Ok(StepResult::Diverged(format!("gradient norm {norm}")));
            }
            opt.step(&fast.grads, scale)?;
            return Ok(StepResult::Ok(loss));
        } else {
            let hidden = self.model.config.hidden;
            let inp_t = Tensor::from_slice(inp, (self.bptt, self.batch), &dev)?;
            let tgt_t = Tensor::from_slice(tgt, self.bptt * self.batch, &dev)?;
            let h0 = state_tensors(state, self.batch, hidden, &dev)?;
            let masks = match dropout {
                Some(d) => d.mask_tensors(
                    self.model.config.layers,
                    self.bptt,
                    self.batch,
                    hidden,
                    &dev,
                )?,
                None => Vec::new(),
            };
            let (logits, last) = self.model.forward_masked(&inp_t, &h0, &masks)?;
            self.step_index += 1;
            let loss_t = cross_entropy(&logits, &tgt_t)?;
            let loss = loss_t.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !loss.is_finite() || loss > self.diverge_limit {
                return Ok(StepResult::Diverged(format!("loss {loss}")));
            }
            let grads = grads_in_order(&loss_t.backward()?, opt.params())?;
            for (s, h) in state.iter_mut().zip(&last) {
                *s = h.flatten_all()?.to_vec1::<f32>()?;
            }
            (loss, grads)
        };
        let (norm, scale) = clip_scale(&grads, clip)?;
        if !norm.is_finite() {
            return Ok(StepResult::Diverged(format!("gradient norm {norm}")));
        }
        opt.step(&grads, scale)?;
        Ok(StepResult::Ok(loss))
    }
}

/// The carried hidden state as candle tensors, one (batch × hidden) per layer.
fn state_tensors(
    state: &[Vec<f32>],
    batch: usize,
    hidden: usize,
    dev: &Device,
) -> Result<Vec<Tensor>> {
    state
        .iter()
        .map(|h| Ok(Tensor::from_slice(h, (batch, hidden), dev)?))
        .collect()
}
