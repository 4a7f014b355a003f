//! Stage 3a — optimizers and gradient clipping.
//!
//! Written here rather than taken from candle-nn because a resumed run must continue bit for bit:
//! that needs the optimizer's moments saved and restored, which candle-nn's `AdamW` keeps private.
//! The update rules are PyTorch's (`torch.optim.Adam`, `Adagrad`, `SGD` without momentum), and
//! `clip_scale` is PyTorch's `clip_grad_norm_`, which candle-nn does not have.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e-8).
    Adam,
    /// Adagrad (ε = 1e-10), the classic char-rnn choice.
    Adagrad,
    /// Plain gradient descent, the book's.
    Sgd,
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adagrad => "adagrad",
            OptimizerKind::Sgd => "sgd",
        })
    }
}

impl OptimizerKind {
    /// Names of the per-parameter state tensors.
    fn slots(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Adam => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Adagrad => &["sum"],
            OptimizerKind::Sgd => &[],
        }
    }
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const ADAM_EPS: f64 = 1e-8;
const ADAGRAD_EPS: f64 = 1e-10;

pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f64,
    /// Number of updates made (Adam's bias correction needs it).
    pub t: u64,
    params: Vec<(String, Var)>,
    /// `state[i][j]`: slot j of parameter i.
    state: Vec<Vec<Tensor>>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, lr: f64, params: Vec<(String, Var)>) -> Result<Self> {
        let state = params
            .iter()
            .map(|(_, v)| {
                kind.slots()
                    .iter()
                    .map(|_| v.as_tensor().zeros_like())
                    .collect::<candle_core::Result<Vec<_>>>()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Optimizer {
            kind,
            lr,
            t: 0,
            params,
            state,
        })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update with every gradient (in parameter order) multiplied by `scale` (the clipping
    /// factor).
    pub fn step(&mut self, grads: &[Tensor], scale: f64) -> Result<()> {
        self.t += 1;
        let lr = self.lr;
        assert_eq!(grads.len(), self.params.len());
        for (((_, var), st), g) in self.params.iter().zip(self.state.iter_mut()).zip(grads) {
            let g = if scale == 1.0 {
                g.clone()
            } else {
                g.affine(scale, 0.0)?
            };
            let p = var.as_tensor();
            let new_p = match self.kind {
                OptimizerKind::Sgd => (p - g.affine(lr, 0.0)?)?,
                OptimizerKind::Adagrad => {
                    st[0] = (&st[0] + g.sqr()?)?;
                    let denom = (st[0].sqrt()? + ADAGRAD_EPS)?;
                    (p - (g / denom)?.affine(lr, 0.0)?)?
                }
                OptimizerKind::Adam => {
                    st[0] = (st[0].affine(BETA1, 0.0)? + g.affine(1.0 - BETA1, 0.0)?)?;
                    st[1] = (st[1].affine(BETA2, 0.0)? + g.sqr()?.affine(1.0 - BETA2, 0.0)?)?;
                    let bc1 = 1.0 - BETA1.powi(self.t as i32);
                    let bc2 = 1.0 - BETA2.powi(self.t as i32);
                    let denom = ((st[1].affine(1.0 / bc2, 0.0)?).sqrt()? + ADAM_EPS)?;
                    (p - (st[0].affine(lr / bc1, 0.0)? / denom)?)?
                }
            };
            var.set(&new_p)?;
        }
        Ok(())
    }

    /// State tensors for a checkpoint: `optim.{slot}.{param}`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, _), st) in self.params.iter().zip(&self.state) {
            for (slot, t) in self.kind.slots().iter().zip(st) {
                out.push((format!("optim.{slot}.{name}"), t.clone()));
            }
        }
        out
    }

    /// Restores what `state_tensors` saved.
    pub fn load_state(&mut self, get: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        for ((name, var), st) in self.params.iter().zip(self.state.iter_mut()) {
            for (slot, t) in self.kind.slots().iter().zip(st.iter_mut()) {
                let key = format!("optim.{slot}.{name}");
                let Some(v) = get(&key) else {
                    bail!("the training state has no {key}");
                };
                if v.dims() != var.dims() {
                    bail!("{key} has shape {:?}, expected {:?}", v.dims(), var.dims());
                }
                *t = v.to_dtype(var.dtype())?;
            }
        }
        Ok(())
    }
}

/// The gradients of `params`, in order, from an autograd result (zeros where the loss does not
/// depend on a parameter).
pub fn grads_in_order(
    grads: &candle_core::backprop::GradStore,
    params: &[(String, Var)],
) -> Result<Vec<Tensor>> {
    params
        .iter()
        .map(|(_, v)| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => Ok(v.as_tensor().zeros_like()?),
        })
        .collect()
}

/// Global L2 norm of all gradients and the factor that brings it down to `max_norm`
/// (`min(1, max_norm / (norm + 1e-6))`, as PyTorch's `clip_grad_norm_`). `max_norm <= 0` disables.
pub fn clip_scale(grads: &[Tensor], max_norm: f64) -> Result<(f64, f64)> {
    let mut sq = 0.0f64;
    for g in grads {
        sq += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    let norm = sq.sqrt();
    let scale = if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    Ok((norm, scale))
}
