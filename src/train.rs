//! Stage 3 — training: truncated back-propagation through time.
//!
//! The token stream is cut into `batch` parallel streams. Each step takes the next window of `bptt`
//! tokens from every stream, runs the network from the hidden state the previous window left (cut
//! from the graph: gradients stop at the window edge, as in PyTorch's word_language_model), and
//! minimises the mean cross-entropy over all positions — the chapter's J(θ) divided by the number
//! of positions. Each epoch starts from s = 0 at an offset in [0, bptt) drawn from (seed, epoch), so
//! window edges move between epochs.
//!
//! Reproducibility invariant: everything that steers the weights (step, epoch, window, hidden
//! state, optimizer moments, learning rate, plateau counter) is in `state.safetensors`, and the only
//! randomness is a pure function of (seed, epoch). So a run stopped and resumed ends with the same
//! weights as one that never stopped. Evaluations at a session's end are recorded but do not steer
//! the learning rate (only the scheduled ones every `eval_every` steps do), for the same reason.

use crate::checkpoint::{self, Config, CorpusInfo, Entry, LoopState, Metric, Progress, Snapshot};
use crate::eval::{score, window};
use crate::fast::FastBptt;
use crate::model::{cross_entropy, init_params, Dropout, ElmanLM, ModelConfig};
use crate::optim::{clip_scale, grads_in_order, Optimizer, OptimizerKind};
use crate::vocab::{Vocab, VocabOptions};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Hyperparameters fixed by a checkpoint; `None` means "the default" for a new run and "keep" when
/// resuming (giving one when resuming is an error, since it would break the run).
#[derive(Debug, Clone, Default)]
pub struct Hyper {
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub activation: Option<crate::model::Activation>,
    pub batch: Option<usize>,
    pub bptt: Option<usize>,
    pub optimizer: Option<OptimizerKind>,
    pub lr: Option<f64>,
    pub clip: Option<f64>,
    pub lr_decay: Option<f64>,
    pub patience: Option<u32>,
    pub val_fraction: Option<f64>,
    pub eval_every: Option<u64>,
    pub seed: Option<u64>,
    pub level: Option<crate::vocab::Level>,
    pub nfc: bool,
    pub max_vocab: Option<usize>,
    pub min_count: Option<u64>,
    pub segmenter: Option<crate::vocab::Segmenter>,
    /// Sampled-softmax negatives per step; 0 for the full softmax.
    pub sampled_softmax: Option<usize>,
    /// Anneal the learning rate linearly to 0 over the session's budget.
    pub anneal: bool,
    /// Dropout probability on the layers' outputs.
    pub dropout: Option<f64>,
}

pub const DEFAULT_HIDDEN: usize = 256;
pub const DEFAULT_BATCH: usize = 32;
pub const DEFAULT_BPTT: usize = 64;
pub const DEFAULT_CLIP: f64 = 5.0;
pub const DEFAULT_EPOCHS: u64 = 10;
/// Vocabularies at least this large train with a sampled softmax unless told otherwise: the full
/// decoder would be nearly all of the work (see the README's WikiText-2 section).
pub const SAMPLED_SOFTMAX_FROM: usize = 20_000;
pub const DEFAULT_SAMPLES: usize = 4096;

impl Hyper {
    /// Names of the options that were given (for the resume check).
    fn given(&self) -> Vec<&'static str> {
        let mut g = Vec::new();
        macro_rules! chk {
            ($($f:ident => $n:literal),*) => { $( if self.$f.is_some() { g.push($n); } )* };
        }
        chk!(hidden => "--hidden", layers => "--layers", activation => "--activation",
             batch => "--batch", bptt => "--bptt", optimizer => "--optimizer", lr => "--lr",
             clip => "--clip", lr_decay => "--lr-decay", patience => "--patience",
             val_fraction => "--val-fraction", eval_every => "--eval-every", seed => "--seed",
             level => "--level", max_vocab => "--max-vocab", min_count => "--min-count",
             segmenter => "--segmenter", sampled_softmax => "--sampled-softmax",
             dropout => "--dropout");
        if self.nfc {
            g.push("--nfc");
        }
        if self.anneal {
            g.push("--anneal");
        }
        g
    }
}

/// Everything `elman train` takes.
#[derive(Debug, Clone, Default)]
pub struct TrainArgs {
    pub files: Vec<PathBuf>,
    /// Validation text of its own (instead of the last --val-fraction of `files`).
    pub val_files: Vec<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub force: bool,
    pub hyper: Hyper,
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub time: Option<Duration>,
    pub threads: usize,
    pub quiet: bool,
    /// Train through candle's autograd graph instead of the fused BPTT path (slower; the
    /// reference the fused path is tested against).
    pub reference: bool,
}

/// How a training session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub dir: PathBuf,
    pub step: u64,
    pub stopped: String,
    pub best_val_loss: Option<f64>,
    pub best_val_bpc: Option<f64>,
}

/// Set by Ctrl-C; the loop finishes its step, saves and returns.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Routes Ctrl-C to [`INTERRUPTED`]; a second Ctrl-C exits at once (the checkpoint folder is
/// swapped atomically, so that is safe too).
pub fn install_ctrlc_handler() {
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let _ = ctrlc::set_handler(move || {
        if hits.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("\ninterrupted twice: exiting now");
            std::process::exit(130);
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
}

/// Validates a fresh run's hyperparameters (one message per bad value).
fn check_hyper(tc: &checkpoint::TrainConfig, mc: &ModelConfig) -> Result<()> {
    if tc.batch == 0 || tc.batch > 1 << 16 {
        bail!("--batch {} is out of range 1..=65536", tc.batch);
    }
    if tc.bptt == 0 || tc.bptt > 1 << 16 {
        bail!("--bptt {} is out of range 1..=65536", tc.bptt);
    }
    if !(tc.lr.is_finite() && tc.lr > 0.0) {
        bail!("--lr {} must be a positive number", tc.lr);
    }
    if !(tc.clip.is_finite() && tc.clip >= 0.0) {
        bail!("--clip {} must be ≥ 0 (0 turns clipping off)", tc.clip);
    }
    if !(tc.dropout >= 0.0 && tc.dropout < 1.0) {
        // (NaN fails this too.)
        bail!(
            "--dropout {} must be in [0, 1): the probability of dropping a unit (0 = off)",
            tc.dropout
        );
    }
    if !(tc.lr_decay > 0.0 && tc.lr_decay <= 1.0) {
        bail!("--lr-decay {} must be in (0, 1]", tc.lr_decay);
    }
    if !(tc.val_fraction > 0.0 && tc.val_fraction < 1.0) {
        // (NaN fails this too.)
        bail!(
            "--val-fraction {} must be strictly between 0 and 1",
            tc.val_fraction
        );
    }
    if tc.eval_every == 0 {
        bail!("--eval-every must be at least 1");
    }
    if mc.hidden == 0 || mc.hidden > crate::model::MAX_HIDDEN {
        bail!(
            "--hidden {} is out of range 1..={}",
            mc.hidden,
            crate::model::MAX_HIDDEN
        );
    }
    if mc.layers == 0 || mc.layers > crate::model::MAX_LAYERS {
        bail!(
            "--layers {} is out of range 1..={}",
            mc.layers,
            crate::model::MAX_LAYERS
        );
    }
    Ok(())
}

/// The token ids of a corpus: training tokens, then validation tokens, in one allocation (the only
/// corpus-sized memory training holds: 4 bytes per token).
struct Data {
    ids: Vec<u32>,
    cut: usize,
    val_chars: usize,
}

impl Data {
    fn train(&self) -> &[u32] {
        &self.ids[..self.cut]
    }
    fn val(&self) -> &[u32] {
        &self.ids[self.cut..]
    }
}

/// Where a corpus came from, once its text is gone.
struct CorpusMeta {
    name: String,
    files: Vec<PathBuf>,
    sha256: String,
    chars: usize,
}

/// Reads and tokenises the corpus ([`crate::corpus::load`]: streamed, the text never held).
fn load_data(
    files: &[PathBuf],
    val_files: &[PathBuf],
    vocab_opts: &VocabOptions,
    existing: Option<&Vocab>,
    val_fraction: f64,
    progress: bool,
) -> Result<(CorpusMeta, Vocab, Data)> {
    let l = crate::corpus::load(
        files,
        val_files,
        vocab_opts,
        existing,
        val_fraction,
        progress,
        Some(&INTERRUPTED),
    )?;
    let meta = CorpusMeta {
        name: l.name,
        files: l.files,
        sha256: l.sha256,
        chars: l.chars,
    };
    let data = Data {
        ids: l.ids,
        cut: l.cut,
        val_chars: l.val_chars,
    };
    Ok((meta, l.vocab, data))
}

/// Number of windows in `epoch` and the offset it starts at.
fn epoch_plan(seed: u64, epoch: u64, stream_len: usize, bptt: usize) -> (u64, usize) {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let max_off = (stream_len - 1).saturating_sub(bptt);
    let offset = rng.random_range(0..bptt).min(max_off);
    (((stream_len - 1 - offset) / bptt) as u64, offset)
}

/// Parses `90`, `90s`, `10m`, `1h30m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let err = || anyhow!("--time {s:?}: expected a duration such as 90s, 10m or 1h30m");
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

/// Runs (or resumes) a training session.
pub fn train(args: &TrainArgs) -> Result<Outcome> {
    let dev = Device::Cpu;
    let resuming = args.resume.is_some();

    // ---- configuration: fresh, or read back from the checkpoint ----
    let (dir, mut config, vocab, corpus, data) = if let Some(r) = &args.resume {
        let dir = checkpoint::resolve_dir(r);
        let given = args.hyper.given();
        if !given.is_empty() {
            bail!(
                "{} cannot be changed when resuming ({} fixes it); only --steps, --epochs, --time, --threads and --quiet apply",
                given.join(", "),
                dir.display()
            );
        }
        let config = checkpoint::read_config(&dir)?;
        // The settings a resumed run keeps are held to the same bounds as a new run's (a
        // hand-edited dropout of 1 would divide by zero).
        check_hyper(&config.training, &config.model).map_err(|e| {
            anyhow!(
                "{}: {e}; restore the file, or start a new run",
                dir.join(checkpoint::CONFIG_FILE).display()
            )
        })?;
        let files: Vec<PathBuf> = if args.files.is_empty() {
            config.corpus.files.iter().map(PathBuf::from).collect()
        } else {
            args.files.clone()
        };
        let vocab = Vocab::from_tokenizer_json(
            &dir.join(checkpoint::TOKENIZER_FILE),
            config.vocab.level,
            config.vocab.nfc,
            config.vocab.segmenter,
        )?;
        let vopts = VocabOptions {
            level: config.vocab.level,
            nfc: config.vocab.nfc,
            max_vocab: config.vocab.max_vocab,
            min_count: config.vocab.min_count,
            segmenter: config.vocab.segmenter,
        };
        let val_files: Vec<PathBuf> = if args.val_files.is_empty() {
            config.corpus.val_files.iter().map(PathBuf::from).collect()
        } else {
            args.val_files.clone()
        };
        let (corpus, vocab, data) = load_data(
            &files,
            &val_files,
            &vopts,
            Some(&vocab),
            config.training.val_fraction,
            !args.quiet,
        )?;
        if corpus.sha256 != config.corpus.sha256 {
            bail!(
                "the corpus ({}) is not the one {} was trained on (its SHA-256 differs); give the original file(s)",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
                dir.display()
            );
        }
        (dir, config, vocab, corpus, data)
    } else {
        let h = &args.hyper;
        let vopts = VocabOptions {
            level: h.level.unwrap_or(crate::vocab::Level::Char),
            nfc: h.nfc,
            max_vocab: h.max_vocab,
            min_count: h.min_count.unwrap_or(1),
            segmenter: h.segmenter.unwrap_or(crate::vocab::Segmenter::Auto),
        };
        if h.segmenter.is_some() && vopts.level != crate::vocab::Level::Word {
            bail!("--segmenter applies to word-level vocabularies: add --level word");
        }
        if !args.val_files.is_empty() && h.val_fraction.is_some() {
            bail!("--val and --val-fraction exclude each other: the validation text is either its own file or the end of the training text");
        }
        let (corpus, vocab, data) = load_data(
            &args.files,
            &args.val_files,
            &vopts,
            None,
            h.val_fraction.unwrap_or(0.1),
            !args.quiet,
        )?;
        let optimizer = h.optimizer.unwrap_or(OptimizerKind::Adam);
        let mut tc = checkpoint::TrainConfig {
            batch: h.batch.unwrap_or(DEFAULT_BATCH),
            bptt: h.bptt.unwrap_or(DEFAULT_BPTT),
            optimizer,
            lr: h.lr.unwrap_or(match optimizer {
                OptimizerKind::Adam => 2e-3,
                OptimizerKind::Adagrad => 0.05,
                OptimizerKind::Sgd => 1.0,
            }),
            clip: h.clip.unwrap_or(DEFAULT_CLIP),
            lr_decay: h.lr_decay.unwrap_or(0.5),
            patience: h.patience.unwrap_or(1),
            val_fraction: h.val_fraction.unwrap_or(0.1),
            eval_every: h.eval_every.unwrap_or(DEFAULT_EVAL_EVERY),
            epochs: None,
            steps: None,
            time_limit_s: None,
            seed: h.seed.unwrap_or(1234),
            threads: args.threads,
            softmax_samples: match h.sampled_softmax {
                Some(0) => None,
                Some(k) => Some(k),
                None if vocab.len() >= SAMPLED_SOFTMAX_FROM => Some(DEFAULT_SAMPLES),
                None => None,
            },
            anneal: h.anneal,
            dropout: h.dropout.unwrap_or(0.0),
        };
        if let Some(k) = tc.softmax_samples {
            if k + 1 > vocab.len() / 2 {
                bail!(
                    "--sampled-softmax {k}: the vocabulary has {} tokens; sample fewer than half of them, or pass 0 for the full softmax",
                    vocab.len()
                );
            }
        }
        let mc = ModelConfig {
            vocab_size: vocab.len(),
            hidden: h.hidden.unwrap_or(DEFAULT_HIDDEN),
            layers: h.layers.unwrap_or(1),
            activation: h.activation.unwrap_or(crate::model::Activation::Tanh),
        };
        if h.eval_every.is_none() {
            tc.eval_every = default_eval_every(&mc, &tc, data.val().len());
        }
        check_hyper(&tc, &mc)?;
        if mc.vocab_size > crate::model::MAX_VOCAB {
            bail!(
                "the corpus has {} distinct tokens, more than elman's limit of {}; pass --max-vocab (e.g. --max-vocab 50000) to map rare ones to <unk>",
                mc.vocab_size,
                crate::model::MAX_VOCAB
            );
        }
        mc.validate()?;
        let dir = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("checkpoints").join(&corpus.name));
        if dir.exists() {
            let is_ckpt = dir.join(checkpoint::CONFIG_FILE).exists();
            let empty = dir
                .read_dir()
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                if !is_ckpt {
                    bail!(
                        "{}: exists and is not an elman checkpoint; refusing to replace it (choose another --out)",
                        dir.display()
                    );
                }
                if !args.force {
                    bail!(
                        "{}: a checkpoint is already there; continue it with `elman train --resume {}`, or replace it with --force",
                        dir.display(),
                        dir.display()
                    );
                }
            } else {
                std::fs::remove_dir(&dir).ok();
            }
        }
        let config = Config {
            format_version: checkpoint::FORMAT_VERSION,
            elman_version: env!("CARGO_PKG_VERSION").to_string(),
            model: mc,
            vocab: checkpoint::VocabConfig {
                level: vopts.level,
                nfc: vopts.nfc,
                max_vocab: vopts.max_vocab,
                min_count: vopts.min_count,
                segmenter: vocab.segmenter,
                size: vocab.len(),
                unk: vocab.unk,
                eos: vocab.eos,
            },
            training: tc,
            corpus: CorpusInfo {
                name: corpus.name.clone(),
                files: corpus
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect(),
                val_files: args
                    .val_files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect(),
                sha256: corpus.sha256.clone(),
                chars: corpus.chars,
                train_tokens: 0,
                val_tokens: 0,
                val_chars: 0,
            },
            progress: Progress::default(),
        };
        (dir, config, vocab, corpus, data)
    };
    config.training.epochs = args
        .epochs
        .or(if args.steps.is_none() && args.time.is_none() {
            Some(DEFAULT_EPOCHS)
        } else {
            None
        });
    config.training.steps = args.steps;
    config.training.time_limit_s = args.time.map(|d| d.as_secs_f64());
    config.training.threads = args.threads;
    let tc = config.training.clone();
    let mc = config.model;

    // ---- data ----
    let stream_len = data.train().len() / tc.batch;
    let files = corpus
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if stream_len < tc.bptt + 1 {
        bail!(
            "{files}: the corpus is too short for one training window: {} training tokens in {} streams give {} tokens each, but --bptt {} needs {}; lower --batch or --bptt, or give more text",
            data.train().len(),
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
    let val_streams = tc.batch.min(data.val().len() / (tc.bptt + 1)).max(1);
    config.corpus.train_tokens = data.train().len();
    config.corpus.val_tokens = data.val().len();
    config.corpus.val_chars = data.val_chars;

    // ---- model, optimizer, loop state ----
    let varmap: VarMap = init_params(&mc, tc.seed, DType::F32, &dev)?;
    let model = ElmanLM::new(mc, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let vars: Vec<(String, Var)> = {
        let data = varmap.data().lock().expect("varmap lock");
        mc.param_shapes()
            .into_iter()
            .map(|(n, _)| {
                let v = data[&n].clone();
                (n, v)
            })
            .collect()
    };
    let mut opt = Optimizer::new(tc.optimizer, tc.lr, vars.clone())?;
    let mut ls = LoopState {
        lr: tc.lr,
        ..Default::default()
    };
    // The hidden state each stream carries into the next window, per layer (B × H, row-major).
    let mut state: Vec<Vec<f32>> = vec![vec![0.0; tc.batch * mc.hidden]; mc.layers];
    // Checked here, not only for fresh runs: a resumed sampled-softmax run has the same limit.
    if args.reference && tc.softmax_samples.is_some() {
        bail!("--reference trains with the full softmax only; this run uses a sampled softmax (--sampled-softmax 0 when starting one)");
    }
    let mut stepper = Stepper::new(&model, tc.batch, tc.bptt, args.threads, args.reference)
        .with_sampled_softmax(tc.softmax_samples, tc.seed)
        .with_dropout(tc.dropout, tc.seed);
    let mut metrics: Vec<Metric> = Vec::new();
    let mut plateau_best: Option<f64> = None;
    if resuming {
        let (ts, meta) =
            checkpoint::read_weights(&dir.join(checkpoint::STATE_FILE), &mc, "param.", &dev)
                .context("reading the training state to resume")?;
        for (name, var) in &vars {
            var.set(&ts[&format!("param.{name}")])?;
        }
        opt.load_state(|k| ts.get(k).cloned())?;
        for (k, h) in state.iter_mut().enumerate() {
            let key = format!("hidden.l{k}");
            let t = ts
                .get(&key)
                .ok_or_else(|| anyhow!("the training state has no {key}"))?;
            if t.dims() != [tc.batch, mc.hidden] {
                bail!("{key} has shape {:?}", t.dims());
            }
            *h = t.flatten_all()?.to_vec1::<f32>()?;
        }
        let loop_json = meta
            .get("loop")
            .ok_or_else(|| anyhow!("the training state has no loop position"))?;
        ls = serde_json::from_str(loop_json).context("the training state's loop position")?;
        plateau_best = meta.get("plateau_best").and_then(|s| s.parse().ok());
        opt.t = ls.optimizer_t;
        opt.lr = ls.lr;
        metrics = checkpoint::read_metrics(&dir)?;
    }
    let tokenizer_json = vocab.to_tokenizer_json()?;

    // ---- progress display ----
    let (epoch_windows, _) = epoch_plan(tc.seed, 0, stream_len, tc.bptt);
    let mut total_steps = tc.epochs.map(|e| e * epoch_windows);
    if let Some(s) = tc.steps {
        total_steps = Some(total_steps.map_or(s, |t| t.min(s)));
    }
    let tty = std::io::stderr().is_terminal();
    let pb = if args.quiet || !tty {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::with_draw_target(total_steps, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:28.cyan/blue}] step {pos}/{len} {msg} ETA {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        pb.set_position(ls.step);
        pb
    };
    let say = |line: String| {
        if args.quiet {
        } else if tty {
            pb.println(line);
        } else {
            eprintln!("{line}");
        }
    };
    say(format!(
        "{} {}: {} chars, {} train / {} val tokens, vocab {} ({}), {} parameters, hidden {} × {} layer(s) {}, batch {} × bptt {}, {} lr {}{}",
        if resuming { "resuming" } else { "training on" },
        corpus.name,
        config.corpus.chars,
        data.train().len(),
        data.val().len(),
        vocab.len(),
        config.vocab.level,
        mc.num_params(),
        mc.hidden,
        mc.layers,
        mc.activation,
        tc.batch,
        tc.bptt,
        tc.optimizer,
        opt.lr,
        if tc.dropout > 0.0 {
            format!(", dropout {}", tc.dropout)
        } else {
            String::new()
        },
    ));
    if tc.eval_every > DEFAULT_EVAL_EVERY && args.hyper.eval_every.is_none() && !resuming {
        say(format!(
            "evaluating every {} steps: scoring the {} validation tokens with the full softmax is worth ~{:.0} training steps in FLOPs (--eval-every sets it)",
            tc.eval_every,
            data.val().len(),
            validation_in_steps(&mc, &tc, data.val().len()),
        ));
    }

    // ---- the loop ----
    let session_start = Instant::now();
    let session_first_step = ls.step;
    // The rate the last step used (differs from the base rate under --anneal); metrics report it.
    let mut last_step_lr = opt.lr;
    let prior_seconds = ls.train_seconds;
    let mut since_eval_tokens = 0u64;
    let mut since_eval_time = Duration::ZERO;
    let mut last_val_bpc: Option<f64> = metrics.last().map(|m| m.val_bpc);
    let mut last_eval_step = metrics.last().map(|m| m.step);

    let val_score = |model: &ElmanLM| -> Result<(f64, f64)> {
        let s = score(model, data.val(), val_streams, tc.bptt, args.threads)?;
        Ok((
            s.nats_per_token(),
            s.bits_per_char(data.val().len(), data.val_chars.max(1)),
        ))
    };

    let stopped: String = loop {
        let (n_windows, offset) = epoch_plan(tc.seed, ls.epoch, stream_len, tc.bptt);
        if ls.window >= n_windows {
            ls.epoch += 1;
            ls.window = 0;
            state
                .iter_mut()
                .for_each(|h| h.iter_mut().for_each(|x| *x = 0.0));
            continue;
        }
        if tc.steps.is_some_and(|s| ls.step >= s) {
            break "steps".into();
        }
        if tc.epochs.is_some_and(|e| ls.epoch >= e) {
            break "epochs".into();
        }
        if args.time.is_some_and(|t| session_start.elapsed() >= t) {
            break "time".into();
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break "interrupted".into();
        }

        // One step of truncated BPTT.
        let t0 = Instant::now();
        let pos = offset + (ls.window as usize) * tc.bptt;
        let (inp, tgt) = window(data.train(), tc.batch, stream_len, pos, tc.bptt);
        stepper.at_step(ls.step);
        // --anneal: this step's rate is the (plateau-managed) base rate times the share of the
        // session's budget still ahead; whichever stopping rule is nearest sets the pace.
        let base_lr = opt.lr;
        if tc.anneal {
            let mut done: f64 = 0.0;
            if let Some(s) = tc.steps {
                let span = s.saturating_sub(session_first_step).max(1);
                done = done.max((ls.step - session_first_step) as f64 / span as f64);
            }
            if let Some(t) = args.time {
                done = done.max(session_start.elapsed().as_secs_f64() / t.as_secs_f64());
            }
            if let Some(e) = tc.epochs {
                let at = ls.epoch as f64 + ls.window as f64 / n_windows.max(1) as f64;
                done = done.max(at / e.max(1) as f64);
            }
            opt.lr = base_lr * (1.0 - done).clamp(0.0, 1.0);
        }
        last_step_lr = opt.lr;
        let result = stepper.step(&mut opt, &inp, &tgt, &mut state, tc.clip);
        opt.lr = base_lr;
        let loss_val = match result? {
            StepResult::Ok(l) => l,
            StepResult::Diverged(what) => {
                pb.finish_and_clear();
                bail!(
                    "training diverged at step {} ({what}); {} — try a lower --lr (it was {}) or a smaller --clip",
                    ls.step + 1,
                    if dir.join(checkpoint::CONFIG_FILE).exists() {
                        format!("the last good checkpoint is kept in {}", dir.display())
                    } else {
                        "no checkpoint had been saved yet".to_string()
                    },
                    opt.lr
                );
            }
        };
        ls.step += 1;
        ls.window += 1;
        ls.optimizer_t = opt.t;
        ls.train_loss_sum += loss_val;
        ls.train_loss_count += 1;
        let step_tokens = (tc.batch * tc.bptt) as u64;
        ls.tokens_seen += step_tokens;
        since_eval_tokens += step_tokens;
        since_eval_time += t0.elapsed();
        let tok_s = since_eval_tokens as f64 / since_eval_time.as_secs_f64().max(1e-9);
        pb.set_position(ls.step);
        pb.set_message(format!(
            "loss {loss_val:.3} | val bpc {} | {:.0} tok/s",
            last_val_bpc.map_or("-".into(), |b| format!("{b:.3}")),
            tok_s
        ));

        if ls.step.is_multiple_of(tc.eval_every) {
            // A scheduled evaluation: it may lower the learning rate.
            let (val_loss, val_bpc) = val_score(&model)?;
            let m = Metric {
                step: ls.step,
                epoch: ls.epoch,
                tokens_seen: ls.tokens_seen,
                train_loss: ls.train_loss_sum / ls.train_loss_count.max(1) as f64,
                val_loss,
                val_bpc,
                tokens_per_s: tok_s,
                lr: last_step_lr,
                wall_time_s: prior_seconds + session_start.elapsed().as_secs_f64(),
                train_loss_sampled: tc.softmax_samples.is_some(),
            };
            ls.train_loss_sum = 0.0;
            ls.train_loss_count = 0;
            since_eval_tokens = 0;
            since_eval_time = Duration::ZERO;
            if plateau_best.is_none_or(|b| val_loss < b) {
                plateau_best = Some(val_loss);
                ls.bad_evals = 0;
            } else {
                ls.bad_evals += 1;
                if ls.bad_evals >= tc.patience {
                    opt.lr *= tc.lr_decay;
                    ls.bad_evals = 0;
                    say(format!(
                        "validation stopped improving: learning rate lowered to {:.3e}",
                        opt.lr
                    ));
                }
            }
            ls.lr = opt.lr;
            last_val_bpc = Some(val_bpc);
            last_eval_step = Some(ls.step);
            say(format_metric(&m));
            let best = record(&mut config, &mut metrics, m);
            ls.train_seconds = prior_seconds + session_start.elapsed().as_secs_f64();
            save(
                &dir,
                &config,
                &tokenizer_json,
                best,
                &model,
                &opt,
                &state,
                &ls,
                plateau_best,
                &metrics,
                None,
            )?;
        }
    };

    // ---- end of session: evaluate (unless just done or interrupted) and save ----
    let mut best = false;
    if stopped != "interrupted" && last_eval_step != Some(ls.step) {
        let (val_loss, val_bpc) = val_score(&model)?;
        let m = Metric {
            step: ls.step,
            epoch: ls.epoch,
            tokens_seen: ls.tokens_seen,
            train_loss: ls.train_loss_sum / ls.train_loss_count.max(1) as f64,
            val_loss,
            val_bpc,
            tokens_per_s: since_eval_tokens as f64 / since_eval_time.as_secs_f64().max(1e-9),
            lr: last_step_lr,
            wall_time_s: prior_seconds + session_start.elapsed().as_secs_f64(),
            train_loss_sampled: tc.softmax_samples.is_some(),
        };
        say(format_metric(&m));
        best = record(&mut config, &mut metrics, m);
    }
    ls.train_seconds = prior_seconds + session_start.elapsed().as_secs_f64();
    save(
        &dir,
        &config,
        &tokenizer_json,
        best,
        &model,
        &opt,
        &state,
        &ls,
        plateau_best,
        &metrics,
        Some(&stopped),
    )?;
    pb.finish_and_clear();
    Ok(Outcome {
        dir,
        step: ls.step,
        stopped,
        best_val_loss: config.progress.best_val_loss,
        best_val_bpc: config.progress.best_val_bpc,
    })
}

/// Steps between evaluations unless `--eval-every` says otherwise.
pub const DEFAULT_EVAL_EVERY: u64 = 200;

/// The default evaluation interval: `DEFAULT_EVAL_EVERY` steps, or more when scoring the
/// validation text (always with the full softmax) would take over a fifth of the training time
/// between two evaluations. Only a large vocabulary trained with the sampled softmax gets there:
/// WikiText-2's 217,646 validation tokens at 33,278 words and H = 256 cost as much as ~270
/// sampled-softmax steps, and every 200 steps they took ~45% of the run's time. Counted in
/// FLOPs (a pure function of the shapes, so a run's schedule does not depend on the machine),
/// rounded up to a hundred steps.
pub fn default_eval_every(
    mc: &ModelConfig,
    tc: &checkpoint::TrainConfig,
    val_tokens: usize,
) -> u64 {
    let steps = (5.0 * validation_in_steps(mc, tc, val_tokens)).ceil();
    if steps <= DEFAULT_EVAL_EVERY as f64 {
        DEFAULT_EVAL_EVERY
    } else {
        (steps.min(1e12) as u64).div_ceil(100) * 100
    }
}

/// What scoring `val_tokens` validation tokens costs, in training steps' FLOPs.
fn validation_in_steps(mc: &ModelConfig, tc: &checkpoint::TrainConfig, val_tokens: usize) -> f64 {
    let (h, v) = (mc.hidden as f64, mc.vocab_size as f64);
    // Recurrent and (above layer 0) input products per token; layer 0's input is a lookup.
    let recurrence = (2 * mc.layers - 1) as f64 * h * h;
    let trained_outputs = tc.softmax_samples.map_or(v, |k| (k + 1) as f64);
    let step = 6.0 * (recurrence + h * trained_outputs) * (tc.batch * tc.bptt) as f64;
    let validation = 2.0 * (recurrence + h * v) * val_tokens as f64;
    validation / step.max(1.0)
}

/// What one training step came to.
pub enum StepResult {
    /// The window's mean cross-entropy; the update was applied.
    Ok(f64),
    /// The loss or the gradient was not finite or exploded; nothing was updated.
    Diverged(String),
}

/// One step of truncated BPTT plus the optimizer update, on the fused path or (for reference) the
/// candle graph. Training and `elman bench` both run exactly this.
pub struct Stepper {
    model: ElmanLM,
    fast: Option<FastBptt>,
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
        model: &ElmanLM,
        batch: usize,
        bptt: usize,
        threads: usize,
        reference: bool,
    ) -> Self {
        let mc = model.config;
        Stepper {
            model: model.clone(),
            fast: (!reference).then(|| FastBptt::new(mc, batch, bptt, threads)),
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
        let dev = Device::Cpu;
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
                crate::fast::with_params(&self.model.config, &vars, |params| match samples {
                    None => fast.step(params, inp, tgt, &mut next),
                    Some((k, seed)) => {
                        let mut rng = rand::rngs::StdRng::seed_from_u64(
                            seed ^ 0x5A3F_0C1E_u64 ^ step_index.wrapping_mul(0xD1B5_4A32_D192_ED03),
                        );
                        let sample = crate::fast::Sample::draw(vocab, k, &mut rng);
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

fn format_metric(m: &Metric) -> String {
    format!(
        "step {:>6}  epoch {:>3}  train loss {:.4}  val loss {:.4} nats/token  val {:.4} bpc  {:.0} tok/s  lr {:.2e}",
        m.step, m.epoch, m.train_loss, m.val_loss, m.val_bpc, m.tokens_per_s, m.lr
    )
}

/// Adds an evaluation to the metrics; true when it is the best so far (the save that follows
/// then writes the current weights as the new `model.safetensors`).
fn record(config: &mut Config, metrics: &mut Vec<Metric>, m: Metric) -> bool {
    let best = config.progress.best_val_loss.is_none_or(|b| m.val_loss < b);
    if best {
        config.progress.best_val_loss = Some(m.val_loss);
        config.progress.best_val_bpc = Some(m.val_bpc);
        config.progress.best_step = Some(m.step);
    }
    config.progress.last_val_loss = Some(m.val_loss);
    metrics.push(m);
    best
}

#[allow(clippy::too_many_arguments)]
fn save(
    dir: &Path,
    config: &Config,
    tokenizer_json: &str,
    best: bool,
    model: &ElmanLM,
    opt: &Optimizer,
    hidden: &[Vec<f32>],
    ls: &LoopState,
    plateau_best: Option<f64>,
    metrics: &[Metric],
    stopped: Option<&str>,
) -> Result<()> {
    let mut config = config.clone();
    config.progress.step = ls.step;
    config.progress.epoch = ls.epoch;
    config.progress.tokens_seen = ls.tokens_seen;
    config.progress.lr = ls.lr;
    config.progress.train_seconds = ls.train_seconds;
    config.progress.stopped = stopped.map(str::to_string);
    // Everything is streamed out from where it lies: the weights are candle tensors, the
    // optimizer's moments and the hidden state plain slices.
    let weights: Vec<(String, Entry)> = model
        .named_tensors()
        .iter()
        .map(|(n, t)| Ok((n.clone(), Entry::tensor(t)?)))
        .collect::<Result<_>>()?;
    let mut state: Vec<(String, Entry)> = weights
        .iter()
        .map(|(n, e)| (format!("param.{n}"), e.share()))
        .collect();
    for (name, data, shape) in opt.state_slices() {
        state.push((name, Entry::F32(data, shape)));
    }
    let (batch, h) = (config.training.batch, config.model.hidden);
    for (k, layer) in hidden.iter().enumerate() {
        state.push((format!("hidden.l{k}"), Entry::F32(layer, vec![batch, h])));
    }
    let mut state_meta = HashMap::new();
    state_meta.insert("loop".to_string(), serde_json::to_string(ls)?);
    if let Some(p) = plateau_best {
        state_meta.insert("plateau_best".to_string(), format!("{p:?}"));
    }
    // A first save with no evaluation yet (interrupted early) writes the latest weights.
    let best = best || config.progress.best_step.is_none();
    checkpoint::commit(
        dir,
        &Snapshot {
            config: &config,
            tokenizer_json,
            best: best.then_some(weights),
            state,
            state_meta,
            metrics,
        },
    )
}
