//! Stage 3a — optimizers and gradient clipping.
//!
//! Written here rather than taken from candle-nn because a resumed run must continue bit for bit:
//! that needs the optimizer's moments saved and restored, which candle-nn's `AdamW` keeps private.
//! The update rules are PyTorch's (`torch.optim.Adam`, `Adagrad`, `SGD` without momentum), and
//! `clip_scale` is PyTorch's `clip_grad_norm_`, which candle-nn does not have.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One optimizer slot of one parameter, borrowed as it lies (Adam's `exp_avg` of
/// `rnn.weight_hh_l0`, say).
pub struct OptimizerSlot<'a> {
    pub slot: &'static str,
    pub param: &'a str,
    pub data: &'a [f32],
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Decoupled weight decay (AdamW's, Loshchilov & Hutter): each update first multiplies every
    /// parameter by 1 − lr·λ, apart from the gradient's step (0: none).
    pub weight_decay: f64,
    /// Number of updates made (Adam's bias correction needs it).
    pub t: u64,
    params: Vec<(String, Var)>,
    /// `state[i][j]`: slot j of parameter i, flat.
    state: Vec<Vec<Vec<f32>>>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, lr: f64, params: Vec<(String, Var)>) -> Result<Self> {
        let state = params
            .iter()
            .map(|(_, v)| {
                kind.slots()
                    .iter()
                    .map(|_| vec![0.0f32; v.elem_count()])
                    .collect()
            })
            .collect();
        Ok(Optimizer {
            kind,
            lr,
            weight_decay: 0.0,
            t: 0,
            params,
            state,
        })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update with every gradient (flat, in parameter order) multiplied by `scale` (the
    /// clipping factor), written into each parameter's own storage: plain loops over the values
    /// as they lie, no tensor built per operation and no copy of the weights (tens of MB at the
    /// word level, read out and written back every step before).
    pub fn step(&mut self, grads: &[Vec<f32>], scale: f64) -> Result<()> {
        self.t += 1;
        assert_eq!(grads.len(), self.params.len());
        let k = Constants {
            kind: self.kind,
            lr: self.lr as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            scale: scale as f32,
            bc1: (1.0 - BETA1.powi(self.t as i32)) as f32,
            bc2: (1.0 - BETA2.powi(self.t as i32)) as f32,
        };
        for (((_, var), st), g) in self.params.iter().zip(self.state.iter_mut()).zip(grads) {
            assert_eq!(var.elem_count(), g.len());
            crate::runtime::update_f32(var.as_tensor(), "elman-optimizer-step", |p| {
                update(&k, g, st, p);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The names of the per-parameter state this optimizer keeps (Adam: `exp_avg`, `exp_avg_sq`).
    pub fn slot_names(&self) -> &'static [&'static str] {
        self.kind.slots()
    }

    /// The state for a checkpoint, borrowed as it lies (a save streams it out): every slot of
    /// every parameter.
    pub fn slots(&self) -> Vec<OptimizerSlot<'_>> {
        let mut out = Vec::new();
        for ((name, var), st) in self.params.iter().zip(&self.state) {
            for (slot, t) in self.kind.slots().iter().zip(st) {
                out.push(OptimizerSlot {
                    slot,
                    param: name,
                    data: t.as_slice(),
                    shape: var.dims().to_vec(),
                });
            }
        }
        out
    }

    /// Restores what `slots` saved, by (slot, parameter name) (`checkpoint::TrainingState::read`
    /// checked that each is there with its parameter's shape).
    pub fn restore(&mut self, saved: &HashMap<(String, String), Tensor>) -> Result<()> {
        for ((name, _), st) in self.params.iter().zip(self.state.iter_mut()) {
            for (slot, t) in self.kind.slots().iter().zip(st.iter_mut()) {
                let Some(v) = saved.get(&(slot.to_string(), name.clone())) else {
                    bail!("the training state has no optim.{slot}.{name}");
                };
                *t = v.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            }
        }
        Ok(())
    }
}

/// An exponential moving average of the parameters (Polyak averaging, as AWD-LSTM evaluates an
/// average of its weights rather than the last ones): validation scores it and it is the saved
/// model, while training goes on from the latest weights. Early on, when the start would weigh on
/// it, the decay is min(decay, (1 + t)/(10 + t)) at update t (TensorFlow's rule), a pure function
/// of the step, so a resumed run averages exactly as one that never stopped.
pub struct WeightAverage {
    pub decay: f64,
    /// The average of each parameter, flat, in the optimizer's order.
    pub avg: Vec<Vec<f32>>,
}

impl WeightAverage {
    /// Starts from the parameters as they are.
    pub fn new(decay: f64, params: &[(String, Var)]) -> Result<Self> {
        let avg = params
            .iter()
            .map(|(_, v)| read(v))
            .collect::<Result<Vec<_>>>()?;
        Ok(WeightAverage { decay, avg })
    }

    /// Folds the parameters after update `t` (1, 2, …) into the average.
    pub fn update(&mut self, params: &[(String, Var)], t: u64) -> Result<()> {
        let d = self.decay.min((1.0 + t as f64) / (10.0 + t as f64)) as f32;
        for ((_, v), avg) in params.iter().zip(self.avg.iter_mut()) {
            crate::runtime::read_f32(&[v.as_tensor()], |w| {
                for (a, &x) in avg.iter_mut().zip(w[0]) {
                    *a = d * *a + (1.0 - d) * x;
                }
            })?;
        }
        Ok(())
    }

    /// Writes the average into the parameters and returns the latest weights they held, for
    /// [`WeightAverage::restore`] to put back.
    pub fn swap_in(&self, params: &[(String, Var)]) -> Result<Vec<Vec<f32>>> {
        let latest = params
            .iter()
            .map(|(_, v)| read(v))
            .collect::<Result<Vec<_>>>()?;
        write(params, &self.avg)?;
        Ok(latest)
    }

    /// Puts the weights `swap_in` returned back.
    pub fn restore(params: &[(String, Var)], latest: &[Vec<f32>]) -> Result<()> {
        write(params, latest)
    }
}

/// A parameter's values, flat.
fn read(v: &Var) -> Result<Vec<f32>> {
    Ok(crate::runtime::read_f32(&[v.as_tensor()], |w| {
        w[0].to_vec()
    })?)
}

/// Overwrites each parameter with `values` (flat, in order).
fn write(params: &[(String, Var)], values: &[Vec<f32>]) -> Result<()> {
    for ((_, v), x) in params.iter().zip(values) {
        crate::runtime::update_f32(v.as_tensor(), "elman-weight-average", |p| {
            p.copy_from_slice(x);
            Ok(())
        })?;
    }
    Ok(())
}

/// The gradients of `params`, in order and flat, from an autograd result (zeros where the loss
/// does not depend on a parameter).
pub fn grads_in_order(
    grads: &candle_core::backprop::GradStore,
    params: &[(String, Var)],
) -> Result<Vec<Vec<f32>>> {
    params
        .iter()
        .map(|(_, v)| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?),
            None => Ok(vec![0.0; v.elem_count()]),
        })
        .collect()
}

/// Global L2 norm of all gradients and the factor that brings it down to `max_norm`
/// (`min(1, max_norm / (norm + 1e-6))`, as PyTorch's `clip_grad_norm_`). `max_norm <= 0` disables.
pub fn clip_scale(grads: &[Vec<f32>], max_norm: f64) -> Result<(f64, f64)> {
    // Sum of squares in f64, in parameter order: deterministic and accurate. Four running sums
    // (element i into sum i mod 4, added at the end) rather than one: a single chain of dependent
    // additions waits on each one's latency, ~4% of a word-level step at 17 M parameters.
    let sq: f64 = grads
        .iter()
        .map(|g| {
            let mut acc = [0f64; 4];
            let mut quads = g.chunks_exact(4);
            for q in &mut quads {
                for (a, &x) in acc.iter_mut().zip(q) {
                    *a += (x as f64) * (x as f64);
                }
            }
            let tail: f64 = quads
                .remainder()
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum();
            (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
        })
        .sum();
    let norm = sq.sqrt();
    let scale = if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    };
    Ok((norm, scale))
}

/// What one update applies to every parameter.
struct Constants {
    kind: OptimizerKind,
    lr: f32,
    /// What weight decay multiplies every parameter by first (1: none).
    decay: f32,
    /// The clipping factor every gradient is multiplied by.
    scale: f32,
    /// Adam's bias corrections, 1 − βᵗ.
    bc1: f32,
    bc2: f32,
}

/// The update of one parameter `p` from its gradient `grad` and its optimizer slots `st`.
fn update(k: &Constants, grad: &[f32], st: &mut [Vec<f32>], p: &mut [f32]) {
    let sc = k.scale;
    let lr = k.lr;
    assert_eq!(p.len(), grad.len());
    if k.decay != 1.0 {
        p.iter_mut().for_each(|p| *p *= k.decay);
    }
    match k.kind {
        OptimizerKind::Sgd => {
            for (p, &g) in p.iter_mut().zip(grad) {
                *p -= lr * (g * sc);
            }
        }
        OptimizerKind::Adagrad => {
            let sum = &mut st[0];
            for ((p, &g), s) in p.iter_mut().zip(grad).zip(sum.iter_mut()) {
                let g = g * sc;
                *s += g * g;
                *p -= lr * g / (s.sqrt() + ADAGRAD_EPS as f32);
            }
        }
        OptimizerKind::Adam => {
            // 1 − β in f64 first (as PyTorch passes it): 1 − 0.999f32 would be off by 5e-5.
            let (b1, b2) = (BETA1 as f32, BETA2 as f32);
            let (c1, c2) = ((1.0 - BETA1) as f32, (1.0 - BETA2) as f32);
            let (bc1, bc2) = (k.bc1, k.bc2);
            let (m, v) = st.split_at_mut(1);
            let (m, v) = (&mut m[0], &mut v[0]);
            for (((p, &g), m), v) in p.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = g * sc;
                *m = b1 * *m + c1 * g;
                *v = b2 * *v + c2 * g * g;
                *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + ADAM_EPS as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: OptimizerKind, lr: f64) -> Optimizer {
        let dev = crate::runtime::Runtime::default().device;
        let v = Var::from_tensor(&Tensor::new(&[1.0f32], &dev).unwrap()).unwrap();
        Optimizer::new(kind, lr, vec![("p".into(), v)]).unwrap()
    }

    fn value(o: &Optimizer) -> f32 {
        o.params()[0].1.as_tensor().to_vec1::<f32>().unwrap()[0]
    }

    /// Worked by hand: with a constant gradient Adam's bias-corrected step is lr·g/|g| = lr.
    #[test]
    fn hand_worked_updates() {
        let g = vec![vec![0.5f32]];
        let mut adam = one(OptimizerKind::Adam, 0.1);
        adam.step(&g, 1.0).unwrap();
        assert!((value(&adam) - 0.9).abs() < 1e-6);
        adam.step(&g, 1.0).unwrap();
        assert!((value(&adam) - 0.8).abs() < 2e-6, "{}", value(&adam));
        let mut ada = one(OptimizerKind::Adagrad, 0.1);
        ada.step(&g, 1.0).unwrap(); // G = 0.25, step 0.1·0.5/0.5
        assert!((value(&ada) - 0.9).abs() < 1e-6);
        let mut sgd = one(OptimizerKind::Sgd, 0.1);
        sgd.step(&g, 0.5).unwrap(); // clipped gradient 0.25
        assert!((value(&sgd) - 0.975).abs() < 1e-7);
    }

    /// Decoupled weight decay, worked by hand: the parameter shrinks by lr·λ of itself, then
    /// takes its gradient's step (with λ = 0 exactly the step without).
    #[test]
    fn weight_decay_is_decoupled() {
        let g = vec![vec![0.5f32]];
        let mut sgd = one(OptimizerKind::Sgd, 0.1);
        sgd.weight_decay = 2.0;
        sgd.step(&g, 1.0).unwrap(); // 1·(1 − 0.2) − 0.1·0.5
        assert!((value(&sgd) - 0.75).abs() < 1e-7, "{}", value(&sgd));
        let mut adam = one(OptimizerKind::Adam, 0.1);
        adam.weight_decay = 0.5;
        adam.step(&g, 1.0).unwrap(); // 1·(1 − 0.05) − 0.1
        assert!((value(&adam) - 0.85).abs() < 1e-6, "{}", value(&adam));
        // A zero rate is the plain update, bit for bit.
        let (mut a, mut b) = (one(OptimizerKind::Adam, 0.1), one(OptimizerKind::Adam, 0.1));
        b.weight_decay = 0.0;
        for _ in 0..3 {
            a.step(&g, 0.7).unwrap();
            b.step(&g, 0.7).unwrap();
        }
        assert_eq!(value(&a).to_bits(), value(&b).to_bits());
    }

    #[test]
    fn clipping_is_global_norm() {
        let g = vec![vec![3.0f32], vec![4.0f32]];
        let (norm, scale) = clip_scale(&g, 1.0).unwrap();
        assert_eq!(norm, 5.0);
        assert!((scale - 1.0 / (5.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(clip_scale(&g, 10.0).unwrap().1, 1.0);
        assert_eq!(clip_scale(&g, 0.0).unwrap().1, 1.0);
        // Lengths that leave 0–3 elements past the last group of four: 1² + … + 11² = 506, plus
        // 2² + 2² + 2² + 2² = 16 and 1.5² · 3 = 6.75.
        let g = vec![
            (1..=11).map(|x| x as f32).collect(),
            vec![2.0f32; 4],
            vec![1.5f32; 3],
            vec![],
        ];
        assert_eq!(
            clip_scale(&g, 0.0).unwrap().0,
            (506.0f64 + 16.0 + 6.75).sqrt()
        );
    }
}
