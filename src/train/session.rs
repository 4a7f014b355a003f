//! A training session: the model, the optimizer and the loop's position, opened from a [`Run`]
//! (fresh or restored from `state.safetensors`), stepped window by window, evaluated and saved.

use super::interrupt::INTERRUPTED;
use super::options::{TrainArgs, DEFAULT_EVAL_EVERY};
use super::schedule::{self, epoch_plan, Budget};
use super::setup::{Data, Run};
use super::stepper::{Backend, StepResult, Stepper};
use crate::checkpoint::{
    self, Config, Entry, LoopState, LrRestart, Metric, TrainConfig, TrainingState,
};
use crate::config::ModelConfig;
use crate::eval::{score_reporting, window};
use crate::model::{init_params, GraphModel};
use crate::optim::{Optimizer, WeightAverage};
use crate::runtime::Runtime;
use anyhow::{bail, Result};
use candle_core::{DType, Var};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How a training session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub dir: PathBuf,
    pub step: u64,
    pub stopped: String,
    pub best_val_loss: Option<f64>,
    pub best_val_bpc: Option<f64>,
    /// What the user should know beyond that (a resumed run that had nothing left to do).
    pub note: Option<String>,
}

/// Why a session stopped, as `config.json` records it.
pub type Stopped = &'static str;

pub(super) struct Session<'a> {
    rt: &'a Runtime,
    dir: PathBuf,
    config: Config,
    data: Data,
    tokenizer_json: String,
    model: GraphModel,
    opt: Optimizer,
    /// `--average`: the moving average of the weights validation scores and the model file holds.
    average: Option<WeightAverage>,
    stepper: Stepper,
    /// The state each stream carries into the next window: each layer's h (B × H, row-major),
    /// then an LSTM's c.
    state: Vec<Vec<f32>>,
    ls: LoopState,
    metrics: Vec<Metric>,
    /// The best validation loss the plateau rule compares with (scheduled evaluations only).
    plateau_best: Option<f64>,
    stream_len: usize,
    val_streams: usize,
    progress: Progress,
    clock: Clock,
}

/// Time and throughput bookkeeping of a session.
struct Clock {
    start: Instant,
    /// Training time of the sessions before this one.
    prior_seconds: f64,
    /// The rate the last step used (differs from the base rate under --anneal); metrics report it.
    last_step_lr: f64,
    since_eval_tokens: u64,
    since_eval_time: Duration,
    last_val_bpc: Option<f64>,
    last_eval_step: Option<u64>,
}

impl Clock {
    fn tokens_per_s(&self) -> f64 {
        self.since_eval_tokens as f64 / self.since_eval_time.as_secs_f64().max(1e-9)
    }

    fn wall_time_s(&self) -> f64 {
        self.prior_seconds + self.start.elapsed().as_secs_f64()
    }
}

impl<'a> Session<'a> {
    /// Sets the session's stopping rules, checks the data fits a window, and builds (or
    /// restores) the model, the optimizer and the loop's position.
    pub(super) fn open(run: Run, args: &'a TrainArgs, rt: &'a Runtime) -> Result<Session<'a>> {
        let Run {
            dir,
            mut config,
            vocab,
            corpus,
            data,
            resuming,
            init_from,
            chosen: run_chosen,
            notes: run_notes,
        } = run;
        // The budget: a new run's is what was asked; a resumed run keeps its own unless another is
        // given (settled below, once its position is known).
        let saved = config.training.clone();
        if !resuming || !args.no_budget() {
            config.training.epochs = args.epochs_or_default();
            config.training.steps = args.steps;
            config.training.time_limit_s = args.time.map(|d| d.as_secs_f64());
            config.training.lr_restart = None;
        }
        config.training.threads = rt.threads;
        let (tc, mc) = (config.training.clone(), config.model);

        let stream_len = check_fits(&data, &tc, &corpus.files)?;
        let val_streams = tc.batch.min(data.val().len() / (tc.bptt + 1)).max(1);
        config.corpus.train_tokens = data.train_len();
        config.corpus.val_tokens = data.val().len();
        config.corpus.val_chars = data.val_chars;

        // ---- model, optimizer, loop state ----
        let (model, vars) = new_model(&mc, tc.seed, rt)?;
        let mut opt = Optimizer::new(tc.optimizer, tc.lr, vars.clone())?;
        opt.weight_decay = tc.weight_decay;
        let mut ls = LoopState {
            lr: tc.lr,
            ..Default::default()
        };
        // Each layer's h, then (LSTM) each layer's c.
        let carried = mc.layers * mc.cell().carried();
        let mut state: Vec<Vec<f32>> = vec![vec![0.0; tc.batch * mc.hidden]; carried];
        // Checked here, not only for fresh runs: a resumed sampled-softmax run has the same limit.
        if args.reference && tc.softmax_samples.is_some() {
            bail!("--reference trains with the full softmax only; this run uses a sampled softmax (--sampled-softmax 0 when starting one)");
        }
        let stepper = Stepper::new(&model, tc.batch, tc.bptt, Backend::of(rt, args.reference))
            .with_sampled_softmax(tc.softmax_samples, tc.seed)
            .with_masks(&tc);
        if let Some(src) = &init_from {
            // Fine-tuning starts from the other run's best weights (with rows for the tokens a
            // grown vocabulary added).
            let path = src.dir.join(checkpoint::MODEL_FILE);
            let (weights, _) = checkpoint::read_weights(&path, &src.model, "", &rt.device)?;
            let weights = crate::model::grow_vocab(
                &weights,
                &src.model,
                &mc,
                src.unk,
                src.unknown_types,
                tc.seed,
            )?;
            for (name, var) in &vars {
                var.set(&weights[name].to_dtype(DType::F32)?)?;
            }
        }
        let mut metrics: Vec<Metric> = Vec::new();
        let mut plateau_best: Option<f64> = None;
        // The average starts from the weights the run starts from (a resumed run reads its own).
        let mut average = (tc.average > 0.0)
            .then(|| WeightAverage::new(tc.average, opt.params()))
            .transpose()?;
        if resuming {
            // Everything that steers the weights, as the interrupted session left it.
            let r = TrainingState::read(&dir, &config, opt.slot_names(), &rt.device)?;
            for (name, var) in &vars {
                var.set(&r.weights[name])?;
            }
            opt.restore(&r.optimizer)?;
            (state, ls, plateau_best) = (r.hidden, r.loop_state, r.plateau_best);
            (opt.t, opt.lr) = (ls.optimizer_t, ls.lr);
            if let Some(a) = &mut average {
                for ((name, _), avg) in opt.params().iter().zip(a.avg.iter_mut()) {
                    *avg = r.average[name]
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1()?;
                }
            }
            metrics = checkpoint::read_metrics(&dir)?;
        }
        // Where the run is in its budget (a resumed run's position): the budget it goes on to,
        // whether anything is left of it (if not, it says only that), and the rate its next step
        // uses under the linear schedule.
        let (n_windows, _) = epoch_plan(tc.seed, ls.epoch, stream_len, tc.bptt);
        let at = budget_at(&ls, n_windows, ls.train_seconds);
        let budget_note = resuming
            .then(|| settle_budget(&saved, &mut config.training, &at, opt.lr))
            .flatten();
        let tc = config.training.clone();
        let finished = resuming && schedule::budget_used(&tc, &at) >= 1.0;
        let now = (resuming && tc.anneal).then(|| opt.lr * schedule::anneal_factor(&tc, &at));
        let tokenizer_json = vocab.to_tokenizer_json()?;

        let (epoch_windows, _) = epoch_plan(tc.seed, 0, stream_len, tc.bptt);
        let mut total_steps = tc.epochs.map(|e| e * epoch_windows);
        if let Some(s) = tc.steps {
            total_steps = Some(total_steps.map_or(s, |t| t.min(s)));
        }
        let time_left = tc
            .time_limit_s
            .map(|t| Duration::from_secs_f64((t - ls.train_seconds).max(0.0)));
        let progress = Progress::new(args.quiet, total_steps, time_left, ls.step);
        let verb = match (&init_from, resuming) {
            (Some(src), _) => format!("fine-tuning {} on", src.dir.display()),
            (None, true) => "resuming".to_string(),
            (None, false) => "training on".to_string(),
        };
        if !finished {
            progress.say(intro_line(&config, &verb, &corpus.name, &data, opt.lr, now));
        }
        for note in corpus.cache.iter().chain(&run_notes) {
            progress.say(note.clone());
        }
        if data.val().len() < data.val_total() && !finished {
            progress.say(format!(
                "validating on the first {} of the {} validation tokens (--val-tokens sets it, 0 scores them all)",
                data.val().len(),
                data.val_total()
            ));
        }
        if !run_chosen.is_empty() {
            progress.say(format!(
                "chosen for this text: {}; --hidden, --embed, --dropout, --average and --lr set them, --one-hot is the book's model",
                run_chosen.join(", ")
            ));
        }
        if let Some(note) = budget_note {
            progress.say(note);
        }
        if rt.window_device.is_some() && !args.reference && !finished {
            progress.say(format!(
                "each window's forward and backward on the {}{}; the optimizer, validation and checkpoints on the CPU ({} threads)",
                rt.window_label(),
                if mc.cell().scan().is_some() {
                    ", the recurrence one kernel per layer"
                } else {
                    ", its recurrence step by step (no window kernel for this cell)"
                },
                rt.threads
            ));
        }
        if tc.eval_every > DEFAULT_EVAL_EVERY && args.hyper.eval_every.is_none() && !resuming {
            progress.say(format!(
                "evaluating every {} steps: scoring the {} validation tokens with the full softmax is worth ~{:.0} training steps in FLOPs (--eval-every sets it)",
                tc.eval_every,
                data.val().len(),
                schedule::validation_in_steps(&mc, &tc, data.val().len()),
            ));
        }
        let clock = Clock {
            start: Instant::now(),
            prior_seconds: ls.train_seconds,
            last_step_lr: opt.lr,
            since_eval_tokens: 0,
            since_eval_time: Duration::ZERO,
            last_val_bpc: metrics.last().map(|m| m.val_bpc),
            last_eval_step: metrics.last().map(|m| m.step),
        };
        Ok(Session {
            rt,
            dir,
            config,
            data,
            tokenizer_json,
            model,
            opt,
            average,
            stepper,
            state,
            ls,
            metrics,
            plateau_best,
            stream_len,
            val_streams,
            progress,
            clock,
        })
    }

    fn tc(&self) -> &checkpoint::TrainConfig {
        &self.config.training
    }

    /// Moves to the next epoch when this one's windows are done (from s = 0 again); then says
    /// whether a stopping rule has been reached, and which.
    pub(super) fn stop_reason(&mut self) -> Option<Stopped> {
        let tc = self.config.training.clone();
        loop {
            let (n_windows, _) = epoch_plan(tc.seed, self.ls.epoch, self.stream_len, tc.bptt);
            if self.ls.window < n_windows {
                break;
            }
            self.ls.epoch += 1;
            self.ls.window = 0;
            self.state
                .iter_mut()
                .for_each(|h| h.iter_mut().for_each(|x| *x = 0.0));
        }
        if tc.steps.is_some_and(|s| self.ls.step >= s) {
            return Some("steps");
        }
        if tc.epochs.is_some_and(|e| self.ls.epoch >= e) {
            return Some("epochs");
        }
        if tc
            .time_limit_s
            .is_some_and(|t| self.clock.wall_time_s() >= t)
        {
            return Some("time");
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Some("interrupted");
        }
        None
    }

    /// One step of truncated BPTT on the next window, with the optimizer's update.
    pub(super) fn step(&mut self) -> Result<()> {
        let tc = self.config.training.clone();
        let t0 = Instant::now();
        let (n_windows, offset) = epoch_plan(tc.seed, self.ls.epoch, self.stream_len, tc.bptt);
        let pos = offset + (self.ls.window as usize) * tc.bptt;
        let (inp, tgt) = window(&self.data.train(), tc.batch, self.stream_len, pos, tc.bptt);
        self.stepper.at_step(self.ls.step);
        // --schedule linear: this step's rate is the base rate times the share of the budget still
        // ahead (see schedule::anneal_factor for what the budget counts).
        let base_lr = self.opt.lr;
        if tc.anneal {
            let at = budget_at(&self.ls, n_windows, self.clock.wall_time_s());
            let factor = schedule::anneal_factor(&tc, &at);
            self.opt.lr = base_lr * factor;
        }
        self.clock.last_step_lr = self.opt.lr;
        let result = self
            .stepper
            .step(&mut self.opt, &inp, &tgt, &mut self.state, tc.clip);
        self.opt.lr = base_lr;
        let loss = match result? {
            StepResult::Ok(l) => l,
            StepResult::Diverged(what) => {
                self.progress.finish();
                bail!(
                    "training diverged at step {} ({what}); {} — try a lower --lr (it was {}) or a smaller --clip",
                    self.ls.step + 1,
                    if self.dir.join(checkpoint::CONFIG_FILE).exists() {
                        format!("the last good checkpoint is kept in {}", self.dir.display())
                    } else {
                        "no checkpoint had been saved yet".to_string()
                    },
                    self.opt.lr
                );
            }
        };
        if let Some(a) = &mut self.average {
            a.update(self.opt.params(), self.ls.step + 1)?;
        }
        // The loss reported is charged for <unk> as validation is (see eval::unknown_charge), so
        // the two are measured alike; what is optimised is not changed by a constant.
        let v = &self.config.vocab;
        let loss = loss
            + crate::eval::unknown_cost(v.unk, v.unknown_types).map_or(0.0, |(u, ln_n)| {
                let unk = tgt.iter().filter(|&&t| t == u).count();
                unk as f64 * ln_n / tgt.len().max(1) as f64
            });
        let ls = &mut self.ls;
        ls.step += 1;
        ls.window += 1;
        ls.optimizer_t = self.opt.t;
        ls.train_loss_sum += loss;
        ls.train_loss_count += 1;
        let step_tokens = (tc.batch * tc.bptt) as u64;
        ls.tokens_seen += step_tokens;
        self.clock.since_eval_tokens += step_tokens;
        self.clock.since_eval_time += t0.elapsed();
        self.progress.update(
            ls.step,
            format!(
                "loss {loss:.3} | val bpc {} | {:.0} tok/s",
                self.clock
                    .last_val_bpc
                    .map_or("-".into(), |b| format!("{b:.3}")),
                self.clock.tokens_per_s()
            ),
        );
        Ok(())
    }

    /// The outcome of a resumed run that had already reached its stopping rule `why`: nothing
    /// trained or written, and a note saying which option extends it.
    pub(super) fn nothing_left(&self, why: Stopped) -> Outcome {
        let p = &self.config.progress;
        Outcome {
            dir: self.dir.clone(),
            step: self.ls.step,
            stopped: why.to_string(),
            best_val_loss: p.best_val_loss,
            best_val_bpc: p.best_val_bpc,
            note: Some(self.nothing_left_note(why)),
        }
    }

    fn nothing_left_note(&self, why: Stopped) -> String {
        let (dir, tc, ls) = (self.dir.display(), &self.config.training, &self.ls);
        match why {
            "steps" => format!(
                "{dir}: nothing left to do: the run already has {} steps (its budget: {}); continue it with a larger --steps, or --time (both count the whole run)",
                ls.step,
                schedule::describe_budget(tc)
            ),
            "time" => {
                let t = tc.time_limit_s.unwrap_or(0.0);
                format!(
                    "{dir}: nothing left to do: the run already trained for {} (its budget: {}); continue it with a larger --time, such as --time {} (it counts the whole run), or --epochs/--steps",
                    schedule::format_seconds(ls.train_seconds),
                    schedule::describe_budget(tc),
                    schedule::format_seconds(ls.train_seconds.max(t) + 600.0)
                )
            }
            _ => {
                let e = tc.epochs.unwrap_or(0);
                format!(
                    "{dir}: nothing left to do: the run already trained {} epochs (its budget: {}); continue it with --epochs {}, --steps N or --time 10m (all count the whole run)",
                    ls.epoch,
                    schedule::describe_budget(tc),
                    ls.epoch + e.max(1)
                )
            }
        }
    }

    /// A scheduled evaluation is due after this step.
    pub(super) fn eval_due(&self) -> bool {
        self.ls.step.is_multiple_of(self.tc().eval_every)
    }

    /// Scores the validation text: (nats per token, bits per character).
    fn validate(&self) -> Result<(f64, f64)> {
        let (val, bptt) = (self.data.val(), self.tc().bptt);
        // A long validation (a big vocabulary) shows its progress in the bar's message.
        let total = val.len().max(1) as u64;
        let done = std::sync::atomic::AtomicU64::new(0);
        let progress = |n: u64| {
            let d = done.fetch_add(n, Ordering::Relaxed) + n;
            self.progress
                .note(format!("validating {}%", 100 * d / total));
        };
        let threads = self.rt.threads;
        let mut s = score_reporting(&self.model, val, self.val_streams, bptt, threads, &progress)?;
        // A rare token read as <unk> is charged its share of p(<unk>), as `elman eval` does.
        let v = &self.config.vocab;
        s.nats += crate::eval::unknown_charge(val, self.val_streams, v.unk, v.unknown_types).1;
        Ok((
            s.nats_per_token(),
            s.bits_per_char(val.len(), self.data.val_chars.max(1)),
        ))
    }

    /// The evaluation record for this point of the run.
    fn metric(&self, val_loss: f64, val_bpc: f64) -> Metric {
        Metric {
            step: self.ls.step,
            epoch: self.ls.epoch,
            tokens_seen: self.ls.tokens_seen,
            train_loss: self.ls.train_loss_sum / self.ls.train_loss_count.max(1) as f64,
            val_loss,
            val_bpc,
            tokens_per_s: self.clock.tokens_per_s(),
            lr: self.clock.last_step_lr,
            wall_time_s: self.clock.wall_time_s(),
            train_loss_sampled: self.tc().softmax_samples.is_some(),
        }
    }

    /// Runs `f` with the weight average in the model (validation scores it, the model file holds
    /// it), the latest weights lent to `f` for the training state and put back after.
    fn averaged<R>(
        &mut self,
        f: impl FnOnce(&mut Self, Option<&[Vec<f32>]>) -> Result<R>,
    ) -> Result<R> {
        let latest = match &self.average {
            Some(a) => Some(a.swap_in(self.opt.params())?),
            None => None,
        };
        let r = f(self, latest.as_deref());
        if let Some(l) = &latest {
            WeightAverage::restore(self.opt.params(), l)?;
        }
        r
    }

    /// A scheduled evaluation and save: the only evaluations that may lower the learning rate
    /// (so that a resumed run takes the same decisions as an uninterrupted one).
    pub(super) fn evaluate_and_save(&mut self) -> Result<()> {
        self.averaged(|s, latest| s.evaluate_and_save_with(latest))
    }

    fn evaluate_and_save_with(&mut self, latest: Option<&[Vec<f32>]>) -> Result<()> {
        let (val_loss, val_bpc) = self.validate()?;
        let m = self.metric(val_loss, val_bpc);
        self.ls.train_loss_sum = 0.0;
        self.ls.train_loss_count = 0;
        self.clock.since_eval_tokens = 0;
        self.clock.since_eval_time = Duration::ZERO;
        // The evaluation's line first, then what it decided.
        self.progress.say(format_metric(&m));
        if self.plateau_best.is_none_or(|b| val_loss < b) {
            self.plateau_best = Some(val_loss);
            self.ls.bad_evals = 0;
        } else {
            self.ls.bad_evals += 1;
            if self.tc().plateau && self.ls.bad_evals >= self.tc().patience {
                self.opt.lr *= self.tc().lr_decay;
                self.ls.bad_evals = 0;
                self.progress.say(format!(
                    "validation stopped improving at step {}: learning rate lowered to {:.3e}",
                    self.ls.step, self.opt.lr
                ));
            }
        }
        self.ls.lr = self.opt.lr;
        self.clock.last_val_bpc = Some(val_bpc);
        self.clock.last_eval_step = Some(self.ls.step);
        let best = self.record(m);
        self.ls.train_seconds = self.clock.wall_time_s();
        self.save(best, None, latest)
    }

    /// Ends the session: a last evaluation unless one was just made (or Ctrl-C asked to stop),
    /// which never steers the learning rate, then the final save.
    pub(super) fn finish(mut self, stopped: Stopped) -> Result<Outcome> {
        self.averaged(|s, latest| {
            let mut best = false;
            if stopped != "interrupted" && s.clock.last_eval_step != Some(s.ls.step) {
                let (val_loss, val_bpc) = s.validate()?;
                let m = s.metric(val_loss, val_bpc);
                s.progress.say(format_metric(&m));
                best = s.record(m);
            }
            s.ls.train_seconds = s.clock.wall_time_s();
            s.save(best, Some(stopped), latest)
        })?;
        self.progress.finish();
        let p = &self.config.progress;
        Ok(Outcome {
            dir: self.dir.clone(),
            step: self.ls.step,
            stopped: stopped.to_string(),
            best_val_loss: p.best_val_loss,
            best_val_bpc: p.best_val_bpc,
            note: None,
        })
    }

    /// Adds an evaluation to the metrics; true when it is the best so far (the save that follows
    /// then writes the current weights as the new `model.safetensors`).
    fn record(&mut self, m: Metric) -> bool {
        let p = &mut self.config.progress;
        let best = p.best_val_loss.is_none_or(|b| m.val_loss < b);
        if best {
            p.best_val_loss = Some(m.val_loss);
            p.best_val_bpc = Some(m.val_bpc);
            p.best_step = Some(m.step);
        }
        p.last_val_loss = Some(m.val_loss);
        self.metrics.push(m);
        best
    }

    /// Saves the checkpoint: everything is streamed out from where it lies (the weights are
    /// candle tensors, the optimizer's moments and the hidden state plain slices).
    /// `latest`: the latest weights, when the model holds the average of them (`--average`).
    fn save(
        &self,
        best: bool,
        stopped: Option<Stopped>,
        latest: Option<&[Vec<f32>]>,
    ) -> Result<()> {
        let ls = &self.ls;
        let mut config = self.config.clone();
        config.progress.step = ls.step;
        config.progress.epoch = ls.epoch;
        config.progress.tokens_seen = ls.tokens_seen;
        // The rate in use (the last step's; under the linear schedule below the base rate).
        config.progress.lr = self.clock.last_step_lr;
        config.progress.train_seconds = ls.train_seconds;
        config.progress.stopped = stopped.map(str::to_string);
        let entries =
            |tensors: Vec<(String, candle_core::Tensor)>| -> Result<Vec<(String, Entry)>> {
                tensors
                    .iter()
                    .map(|(n, t)| Ok((n.clone(), Entry::tensor(t)?)))
                    .collect()
            };
        // The resume state holds each parameter once; model.safetensors every name PyTorch's
        // modules give them (a tied decoder weight twice).
        let params = self.opt.params();
        let (weights, average) = match latest {
            // The model holds the average: the latest weights come from `latest`.
            Some(latest) => (
                params
                    .iter()
                    .zip(latest)
                    .map(|((n, v), x)| (n.clone(), Entry::F32(x, v.dims().to_vec())))
                    .collect(),
                entries(self.model.named_tensors())?,
            ),
            None => (entries(self.model.named_tensors())?, Vec::new()),
        };
        let export = entries(self.model.export_tensors())?;
        let (batch, h) = (config.training.batch, config.model.hidden);
        let training = TrainingState {
            weights: weights
                .iter()
                .map(|(n, e)| (n.clone(), e.share()))
                .collect(),
            optimizer: self.opt.slots(),
            hidden: self
                .state
                .iter()
                .map(|layer| Entry::F32(layer, vec![batch, h]))
                .collect(),
            carried: config.model.cell().carried(),
            loop_state: ls.clone(),
            plateau_best: self.plateau_best,
            average,
        };
        // A first save with no evaluation yet (interrupted early) writes the latest weights.
        let best = best || config.progress.best_step.is_none();
        // The training curves as a picture (none while all losses are non-finite: a diverged run
        // has nothing to draw).
        let chart = (!self.metrics.is_empty())
            .then(|| {
                let name = self
                    .dir
                    .file_name()
                    .map_or("run".into(), |n| n.to_string_lossy().into_owned());
                crate::plot::svg(&crate::plot::loss_chart(&[(name, self.metrics.clone())])).ok()
            })
            .flatten();
        checkpoint::save_run(
            &self.dir,
            &config,
            &self.tokenizer_json,
            best.then_some(export),
            &training,
            &self.metrics,
            chart.as_deref(),
        )
    }
}

/// A fresh model of `mc` drawn from `seed`, and its parameters as variables in layout order (what
/// the optimizer updates in place).
fn new_model(
    mc: &ModelConfig,
    seed: u64,
    rt: &Runtime,
) -> Result<(GraphModel, Vec<(String, Var)>)> {
    let varmap: VarMap = init_params(mc, seed, DType::F32, &rt.device)?;
    let model = GraphModel::new(
        *mc,
        VarBuilder::from_varmap(&varmap, DType::F32, &rt.device),
    )?;
    let data = varmap.data().lock().expect("varmap lock");
    let vars = mc
        .param_shapes()
        .into_iter()
        .map(|(n, _)| {
            let v = data[&n].clone();
            (n, v)
        })
        .collect();
    Ok((model, vars))
}

/// Checks that the data fits one training window and holds a validation split; returns the
/// length of each of the batch's streams.
fn check_fits(data: &Data, tc: &checkpoint::TrainConfig, files: &[PathBuf]) -> Result<usize> {
    let stream_len = data.train_len() / tc.batch;
    let files = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if stream_len < tc.bptt + 1 {
        bail!(
            "{files}: the corpus is too short for one training window: {} training tokens in {} streams give {} tokens each, but --bptt {} needs {}; lower --batch or --bptt, or give more text",
            data.train_len(),
            tc.batch,
            stream_len,
            tc.bptt,
            tc.bptt + 1
        );
    }
    if data.val().len() < 2 {
        bail!(
            "{files}: the validation split holds {} token(s): raise --val-fraction or give more text",
            data.val().len()
        );
    }
    Ok(stream_len)
}

/// Where the loop stands in its budget: `n_windows` is the current epoch's window count,
/// `seconds` the run's training time so far.
fn budget_at(ls: &LoopState, n_windows: u64, seconds: f64) -> Budget {
    Budget {
        step: ls.step,
        epoch_at: ls.epoch as f64 + ls.window as f64 / n_windows.max(1) as f64,
        seconds,
    }
}

/// A resumed run's budget: its own (`saved`) when no --epochs, --steps or --time was given, else
/// the one given (already in `tc`). Under the linear schedule a changed budget never makes the
/// learning rate jump: the rate goes on from the one in use and falls to 0 at the new end; a run
/// that had finished its budget (rate 0) starts the extension where a run planned for the new
/// budget would be. Returns the line that says what the run now does.
fn settle_budget(
    saved: &TrainConfig,
    tc: &mut TrainConfig,
    at: &Budget,
    base_lr: f64,
) -> Option<String> {
    let new = schedule::describe_budget(tc);
    let left = schedule::describe_left(tc, at);
    let unchanged =
        (tc.epochs, tc.steps, tc.time_limit_s) == (saved.epochs, saved.steps, saved.time_limit_s);
    let used = schedule::budget_used(tc, at);
    if used >= 1.0 {
        // Nothing left: the session says so and how to extend the run.
        return None;
    }
    if unchanged {
        return Some(format!("going on to the run's budget, {new}: {left}"));
    }
    let was = schedule::describe_budget(saved);
    if !tc.anneal {
        return Some(format!("the budget is now {new}, {left} (it was {was})"));
    }
    let before = schedule::anneal_factor(saved, at);
    let how = if before > 0.0 {
        tc.lr_restart = Some(LrRestart {
            factor: before,
            done: used,
        });
        format!(
            "the learning rate goes on from {:.3e} and falls linearly to 0 at its end",
            base_lr * before
        )
    } else {
        format!(
            "the run had finished its budget, so the learning rate starts again at {:.3e}, where a run planned for the new budget would be now, and falls linearly to 0 at its end",
            base_lr * (1.0 - used)
        )
    };
    Some(format!(
        "the budget is now {new}, {left} (it was {was}): {how}"
    ))
}

/// The line a session starts with: the corpus, the model and the training settings.
/// `now`: the rate the next step uses, where it is not `lr` (a resumed run under the linear
/// schedule).
fn intro_line(
    config: &Config,
    verb: &str,
    name: &str,
    data: &Data,
    lr: f64,
    now: Option<f64>,
) -> String {
    let (mc, tc) = (&config.model, &config.training);
    format!(
        "{} {}: {} chars, {} train / {} val tokens, vocab {} ({}), {} parameters, {}{} × {} layer(s) {}{}, batch {} × bptt {}, {} lr {}{}{}",
        verb,
        name,
        config.corpus.chars,
        data.train_len(),
        data.val_total(),
        mc.vocab_size,
        config.vocab.level,
        mc.num_params(),
        mc.embed
            .map_or("one-hot input, ".to_string(), |e| format!("embedding {e}, ")),
        mc.hidden,
        mc.layers,
        mc.cell.short_label(mc.activation),
        if mc.tied { ", decoder tied" } else { "" },
        tc.batch,
        tc.bptt,
        tc.optimizer,
        lr,
        match (tc.anneal, now) {
            (true, Some(now)) => format!(" falling linearly to 0, now {now:.3e}"),
            (true, None) => " falling linearly to 0".to_string(),
            _ => String::new(),
        },
        tc.regularisers(),
    )
}

fn format_metric(m: &Metric) -> String {
    format!(
        "step {:>6}  epoch {:>3}  train loss {:.4}  val loss {:.4} nats/token  val {:.4} bpc  {:.0} tok/s  lr {:.2e}",
        m.step, m.epoch, m.train_loss, m.val_loss, m.val_bpc, m.tokens_per_s, m.lr
    )
}

/// The progress bar on a terminal, and the evaluation lines (above the bar, or plain lines on a
/// pipe); nothing with `--quiet`. The bar counts steps when the run's end is a number of steps
/// (`--steps`, `--epochs`), and time when it is a time budget (`--time` alone: the time left of it).
struct Progress {
    bar: ProgressBar,
    quiet: bool,
    tty: bool,
    /// The session's time budget, when the bar counts time; and when the session started.
    budget: Option<(Duration, Instant)>,
}

impl Progress {
    fn new(quiet: bool, total_steps: Option<u64>, time: Option<Duration>, at: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let budget = match (total_steps, time) {
            (None, Some(t)) => Some((t, Instant::now())),
            _ => None,
        };
        let bar = if quiet || !tty {
            ProgressBar::hidden()
        } else {
            let (len, template) = match budget {
                Some((t, _)) => (
                    Some(t.as_millis() as u64),
                    "{elapsed_precise} [{bar:28.cyan/blue}] {msg} · {eta} left",
                ),
                None => (
                    total_steps,
                    "{elapsed_precise} [{bar:28.cyan/blue}] step {pos}/{len} {msg} ETA {eta}",
                ),
            };
            let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template(template)
                    .expect("template")
                    .progress_chars("=> "),
            );
            if budget.is_none() {
                pb.set_position(at);
            }
            pb
        };
        Progress {
            bar,
            quiet,
            tty,
            budget,
        }
    }

    fn say(&self, line: String) {
        if self.quiet {
        } else if self.tty {
            self.bar.println(line);
        } else {
            // A closed standard error (`elman train … 2>&1 | head`) must not stop the run before
            // its save: the line is dropped, training goes on.
            crate::note!("{line}");
        }
    }

    fn update(&self, step: u64, msg: String) {
        match self.budget {
            Some((_, start)) => {
                self.bar.set_position(start.elapsed().as_millis() as u64);
                self.bar.set_message(format!("step {step} | {msg}"));
            }
            None => {
                self.bar.set_position(step);
                self.bar.set_message(msg);
            }
        }
    }

    /// A passing note in the bar's message (the next step's update replaces it).
    fn note(&self, msg: String) {
        self.bar.set_message(msg);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
