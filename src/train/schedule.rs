//! The schedule of a run: which windows an epoch reads, when to evaluate, how the learning rate
//! anneals over a budget, and the `--time` durations.

use crate::checkpoint::TrainConfig;
use crate::config::ModelConfig;
use anyhow::{anyhow, Result};
use rand::{Rng, SeedableRng};
use std::time::Duration;

use super::options::DEFAULT_EVAL_EVERY;

/// Number of windows in `epoch` and the offset it starts at: each epoch starts at an offset in
/// [0, bptt) drawn from (seed, epoch), so window edges move between epochs.
pub fn epoch_plan(seed: u64, epoch: u64, stream_len: usize, bptt: usize) -> (u64, usize) {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let max_off = (stream_len - 1).saturating_sub(bptt);
    let offset = rng.random_range(0..bptt).min(max_off);
    (((stream_len - 1 - offset) / bptt) as u64, offset)
}

/// Parses `90`, `90s`, `10m`, `1h30m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let err = || anyhow!("--time {s:?}: expected a duration above zero, such as 90s, 10m or 1h30m");
    if s.is_empty() {
        return Err(err());
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs > 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(err());
    }
    let mut total = 0.0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
        } else {
            let n: f64 = num.parse().map_err(|_| err())?;
            num.clear();
            total += n * match c {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                'd' => 86400.0,
                _ => return Err(err()),
            };
        }
    }
    if !num.is_empty() || total <= 0.0 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

/// The default evaluation interval: `DEFAULT_EVAL_EVERY` steps, or more when scoring the
/// validation text (always with the full softmax) would take over a fifth of the training time
/// between two evaluations. Only a large vocabulary trained with the sampled softmax gets there:
/// WikiText-2's 217,646 validation tokens at 33,278 words and H = 256 cost as much as ~270
/// sampled-softmax steps, and every 200 steps they took ~45% of the run's time. Counted in
/// FLOPs (a pure function of the shapes, so a run's schedule does not depend on the machine),
/// rounded up to a hundred steps. A text shorter than that many steps is evaluated every epoch
/// (a small text overfits within a few epochs, and its best model would fall between evaluations;
/// its validation costs a few percent of an epoch).
pub fn default_eval_every(
    mc: &ModelConfig,
    tc: &TrainConfig,
    val_tokens: usize,
    train_tokens: usize,
) -> u64 {
    let steps = (5.0 * validation_in_steps(mc, tc, val_tokens)).ceil();
    let by_cost = if steps <= DEFAULT_EVAL_EVERY as f64 {
        DEFAULT_EVAL_EVERY
    } else {
        (steps.min(1e12) as u64).div_ceil(100) * 100
    };
    let epoch = (train_tokens / (tc.batch * tc.bptt).max(1)).max(1) as u64;
    if epoch < DEFAULT_EVAL_EVERY {
        epoch
    } else {
        by_cost
    }
}

/// The longest interval between evaluations that the default `--val-tokens` allows.
pub const MAX_DEFAULT_EVAL_EVERY: u64 = 2000;

/// The validation tokens a run scores by default: as many as cost a fifth of
/// [`MAX_DEFAULT_EVAL_EVERY`] training steps (2,457,600 at the char level with the default batch
/// and bptt), so that a big text is still evaluated at least that often, each evaluation costing
/// a fifth of the training between two as [`default_eval_every`] keeps it; and, for a budget of
/// fewer steps (`planned_steps`, at the reference speed), a fifth of the whole budget (but never
/// under [`DEFAULT_EVAL_EVERY`] steps' fifth): a 40-second run on a big text is not kept a minute
/// by its last evaluation. Every validation text of the reference corpora is shorter at 3 minutes
/// and more (WikiText-2's 217,646 words with the sampled softmax are worth ~270 steps).
pub fn default_val_tokens(mc: &ModelConfig, tc: &TrainConfig, planned_steps: f64) -> usize {
    let step = training_flops_per_token(mc, tc) * (tc.batch * tc.bptt) as f64;
    let per_token = forward_flops(mc, mc.vocab_size as f64);
    let steps = planned_steps.clamp(DEFAULT_EVAL_EVERY as f64, MAX_DEFAULT_EVAL_EVERY as f64);
    (steps / 5.0 * step / per_token.max(1.0)).min(1e15) as usize
}

/// Multiply–adds ×2 of one token through the network (forward) and of the decoder over
/// `outputs` classes: the recurrence and the input products of every layer (layer 0's input is
/// a lookup when one-hot, a product with the embedding otherwise).
fn forward_flops(mc: &ModelConfig, outputs: f64) -> f64 {
    let (h, g) = (mc.hidden as f64, (mc.cell().gates() * mc.hidden) as f64);
    let input0 = mc.embed.map_or(0.0, |e| e as f64);
    let layers = (0..mc.layers)
        .map(|k| g * (h + if k == 0 { input0 } else { h }))
        .sum::<f64>();
    2.0 * (layers + h * outputs)
}

/// Training FLOPs per token (forward and backward: three times the forward).
pub fn training_flops_per_token(mc: &ModelConfig, tc: &TrainConfig) -> f64 {
    let trained_outputs = tc
        .softmax_samples
        .map_or(mc.vocab_size as f64, |k| (k + 1) as f64);
    3.0 * forward_flops(mc, trained_outputs)
}

/// What scoring `val_tokens` validation tokens costs, in training steps' FLOPs.
pub fn validation_in_steps(mc: &ModelConfig, tc: &TrainConfig, val_tokens: usize) -> f64 {
    let step = training_flops_per_token(mc, tc) * (tc.batch * tc.bptt) as f64;
    let validation = forward_flops(mc, mc.vocab_size as f64) * val_tokens as f64;
    validation / step.max(1.0)
}

/// Where a run is in its budget (all counted over the whole run, every session of it).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Steps so far, the epoch (with the fraction of the current one done), and the training
    /// time so far in seconds.
    pub step: u64,
    pub epoch_at: f64,
    pub seconds: f64,
}

/// The share of the run's budget used at `at`: the nearest stopping rule's (`--steps`,
/// `--epochs`, `--time`), 1 or more once one is reached.
pub fn budget_used(tc: &TrainConfig, at: &Budget) -> f64 {
    let mut done: f64 = 0.0;
    if let Some(s) = tc.steps {
        done = done.max(at.step as f64 / s.max(1) as f64);
    }
    if let Some(t) = tc.time_limit_s {
        done = done.max(at.seconds / t.max(1e-9));
    }
    if let Some(e) = tc.epochs {
        done = done.max(at.epoch_at / e.max(1) as f64);
    }
    done
}

/// `--schedule linear`: the share of the base learning rate a step uses, the share of the budget
/// still ahead. The budget counts the whole run, so a resumed run goes on with the very rates it
/// would have used; where a resumed run's budget was changed ([`crate::checkpoint::LrRestart`]), the rate goes on from
/// the one it had there and falls to 0 at the new end.
pub fn anneal_factor(tc: &TrainConfig, at: &Budget) -> f64 {
    let done = budget_used(tc, at);
    let factor = match tc.lr_restart {
        None => 1.0 - done,
        Some(r) => r.factor * (1.0 - done) / (1.0 - r.done).max(1e-12),
    };
    factor.clamp(0.0, 1.0)
}

/// A run's budget as the options that set it: `--epochs 10`, `--steps 15000, --time 2m`.
pub fn describe_budget(tc: &TrainConfig) -> String {
    let mut parts = Vec::new();
    if let Some(e) = tc.epochs {
        parts.push(format!("--epochs {e}"));
    }
    if let Some(s) = tc.steps {
        parts.push(format!("--steps {s}"));
    }
    if let Some(t) = tc.time_limit_s {
        parts.push(format!("--time {}", format_seconds(t)));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}

/// What is left of each of the budget's rules at `at`: "9963 steps left", "1m12s of training
/// time left", "3.4 epochs left".
pub fn describe_left(tc: &TrainConfig, at: &Budget) -> String {
    let mut parts = Vec::new();
    if let Some(e) = tc.epochs {
        parts.push(format!(
            "{:.1} epochs left",
            (e as f64 - at.epoch_at).max(0.0)
        ));
    }
    if let Some(s) = tc.steps {
        parts.push(format!("{} steps left", s.saturating_sub(at.step)));
    }
    if let Some(t) = tc.time_limit_s {
        parts.push(format!(
            "{} of training time left",
            format_seconds((t - at.seconds).max(0.0))
        ));
    }
    parts.join(", ")
}

/// Seconds as `--time` takes them: `45s`, `2m`, `1m12s`, `1h30m`.
pub fn format_seconds(secs: f64) -> String {
    let total = secs.round().max(0.0) as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}
