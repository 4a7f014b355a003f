//! Configuring a run: the options a checkpoint fixes ([`Hyper`]), their defaults and bounds
//! (checked in one place, [`check_hyper`]), and the two ways a run starts — fresh from text
//! files, or resumed from a checkpoint folder — both ending in a [`Run`]: where it is saved, its
//! config, its vocabulary and its token ids.

use super::options::{
    check_hyper, Hyper, TrainArgs, DEFAULT_BATCH, DEFAULT_BPTT, DEFAULT_CLIP, DEFAULT_EVAL_EVERY,
    DEFAULT_SAMPLES, SAMPLED_SOFTMAX_FROM,
};
use crate::cell::Activation;
use crate::checkpoint::{self, Config, CorpusInfo, Progress, Schedule, TrainConfig};
use crate::config::ModelConfig;
use crate::corpus::CacheDir;
use crate::optim::OptimizerKind;
use crate::tokens::{Prefix, Tokens};
use crate::vocab::{Level, Segmenter, Vocab, VocabOptions};
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};

/// The token ids of a corpus: training tokens, then validation tokens, in memory (4 bytes per
/// token) or mapped from the token cache; and the validation ids scored, copied out once
/// ([`Data::cap_val`]: the first `--val-tokens` of them).
pub struct Data {
    tokens: Tokens,
    cut: usize,
    /// Characters of the whole validation text.
    all_val_chars: usize,
    val: Vec<u32>,
    /// Characters of the scored validation ids (for bits per character).
    pub val_chars: usize,
    capped: bool,
}

impl Data {
    pub fn new(tokens: Tokens, cut: usize, val_chars: usize) -> Data {
        Data {
            tokens,
            cut,
            all_val_chars: val_chars,
            val: Vec::new(),
            val_chars,
            capped: false,
        }
    }

    /// The training ids, for cutting windows.
    pub fn train(&self) -> Prefix<'_> {
        Prefix {
            tokens: &self.tokens,
            len: self.cut,
        }
    }

    pub fn train_len(&self) -> usize {
        self.cut
    }

    /// How often `id` occurs in the training ids.
    pub fn train_count(&self, id: u32) -> usize {
        self.tokens.count(0..self.cut, id)
    }

    /// The validation ids scored ([`Data::cap_val`] first).
    pub fn val(&self) -> &[u32] {
        debug_assert!(self.capped, "Data::cap_val sets what is scored");
        &self.val
    }

    /// All the validation ids, scored or not.
    pub fn val_total(&self) -> usize {
        self.tokens.len() - self.cut
    }

    /// Scores the first `limit` validation ids (all of them with `None`), their characters
    /// counted in proportion (exact at the char level without NFC, where a token is a character).
    pub fn cap_val(&mut self, limit: Option<usize>) {
        let total = self.val_total();
        let n = limit.map_or(total, |l| l.min(total));
        self.val = self.tokens.to_vec(self.cut..self.cut + n);
        self.val_chars = if n == total {
            self.all_val_chars
        } else {
            (self.all_val_chars as f64 * n as f64 / total.max(1) as f64).round() as usize
        };
        self.capped = true;
    }
}

/// Where a corpus came from, once its text is gone.
pub struct CorpusMeta {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub sha256: String,
    pub chars: usize,
    /// What the token cache did (a line the run says), if the corpus went through it.
    pub cache: Option<String>,
}

/// A run ready to train: where it is saved, its config, its vocabulary and its data.
pub struct Run {
    pub dir: PathBuf,
    pub config: Config,
    pub vocab: Vocab,
    pub corpus: CorpusMeta,
    pub data: Data,
    pub resuming: bool,
    /// Fine-tuning: the checkpoint whose weights the run starts from.
    pub init_from: Option<InitFrom>,
    /// The defaults chosen for this text where the options were silent (a new run says them).
    pub chosen: Vec<String>,
    /// What else a new run should say before it starts (a fine-tuned vocabulary that grew).
    pub notes: Vec<String>,
}

/// The checkpoint a fine-tuned run starts from, and what its weights need to fit the run's model
/// (a vocabulary grown by the new text's characters: see [`crate::model::grow_vocab`]).
pub struct InitFrom {
    pub dir: PathBuf,
    /// The checkpoint's model (the run's has the same shape but maybe more tokens).
    pub model: ModelConfig,
    pub unk: Option<u32>,
    pub unknown_types: Option<u64>,
}

/// Reads and tokenises the corpus ([`crate::corpus::load`]: streamed, the text never held).
fn load_data(
    files: &[PathBuf],
    val_files: &[PathBuf],
    vocab_opts: &VocabOptions,
    existing: Option<&Vocab>,
    val_fraction: f64,
    progress: bool,
    cache: &CacheDir,
) -> Result<(CorpusMeta, Vocab, Data)> {
    let l = crate::corpus::load(
        files,
        val_files,
        vocab_opts,
        existing,
        val_fraction,
        progress,
        Some(&super::interrupt::INTERRUPTED),
        Some(cache),
    )?;
    let meta = CorpusMeta {
        name: l.name,
        files: l.files,
        sha256: l.sha256,
        chars: l.chars,
        cache: l.cache,
    };
    Ok((meta, l.vocab, Data::new(l.tokens, l.cut, l.val_chars)))
}

/// A run continued from the checkpoint in `r`: everything but the stopping rules comes from its
/// `config.json`, and the corpus must be the one it was trained on.
pub fn resumed(args: &TrainArgs, r: &Path) -> Result<Run> {
    let dir = checkpoint::resolve_dir(r);
    let config = checkpoint::read_config(&dir)?;
    // Repeating the run's own settings is fine (the same command with --resume added); only a
    // change would break the run.
    let changed = args.hyper.changes(&config);
    if !changed.is_empty() {
        bail!(
            "{} cannot be changed when resuming ({} fixes it); only --steps, --epochs, --time, --threads, --cache-dir and --quiet apply (to train on with other settings, start a new run with --init-from {})",
            changed.join(", "),
            dir.display(),
            dir.display()
        );
    }
    // The settings a resumed run keeps are held to the same bounds as a new run's (a
    // hand-edited dropout of 1 would divide by zero).
    check_hyper(&config.training, &config.model).map_err(|e| {
        anyhow!(
            "{}: {e}; restore the file, or start a new run",
            dir.join(checkpoint::CONFIG_FILE).display()
        )
    })?;
    let or_saved = |given: &[PathBuf], saved: &[String]| -> Result<Vec<PathBuf>> {
        if !given.is_empty() {
            return Ok(given.to_vec());
        }
        let saved: Vec<PathBuf> = saved.iter().map(PathBuf::from).collect();
        // Runs saved before paths were stored absolute hold them as typed, relative to the
        // folder the run was started in.
        if let Some(gone) = saved.iter().find(|f| !f.exists()) {
            bail!(
                "{}: the text {} was trained on is not there{}; give it after the folder: elman train --resume {} FILE",
                gone.display(),
                dir.display(),
                if gone.is_relative() {
                    " (the path is relative to the folder that run was started in)"
                } else {
                    ""
                },
                dir.display()
            );
        }
        Ok(saved)
    };
    let files = or_saved(&args.files, &config.corpus.files)?;
    let val_files = or_saved(&args.val_files, &config.corpus.val_files)?;
    let vocab = Vocab::from_tokenizer_json(
        &dir.join(checkpoint::TOKENIZER_FILE),
        config.vocab.level,
        config.vocab.nfc,
        config.vocab.segmenter,
    )?;
    let vopts = config.vocab.options();
    let (corpus, vocab, mut data) = load_data(
        &files,
        &val_files,
        &vopts,
        Some(&vocab),
        config.training.val_fraction,
        !args.quiet,
        // The run's own cache folder unless another is given.
        &CacheDir::new(
            args.cache_dir
                .as_deref()
                .or(config.corpus.cache_dir.as_deref().map(Path::new)),
        ),
    )?;
    data.cap_val(config.training.val_tokens);
    if corpus.sha256 != config.corpus.sha256 {
        bail!(
            "the corpus ({}) is not the one {} was trained on (its SHA-256 differs); give the original file(s)",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
            dir.display()
        );
    }
    Ok(Run {
        dir,
        config,
        vocab,
        corpus,
        data,
        resuming: true,
        init_from: None,
        chosen: Vec::new(),
        notes: Vec::new(),
    })
}

/// Fine-tuning: a new run on `args.files` that starts from the weights and vocabulary of the
/// checkpoint in `from` (char-rnn's `init_from`). The model and the vocabulary are the
/// checkpoint's; training settings are the checkpoint's unless given; the optimizer starts afresh.
pub fn initialized(args: &TrainArgs, from: &Path) -> Result<Run> {
    let src = checkpoint::resolve_dir(from);
    let base = checkpoint::read_config(&src)?;
    let fixed = args.hyper.model_changes(&base);
    if !fixed.is_empty() {
        bail!(
            "{} cannot be changed when fine-tuning: the model and vocabulary are those of {} (leave {} out)",
            fixed.join(", "),
            src.display(),
            if fixed.len() == 1 { "it" } else { "them" }
        );
    }
    if args.files.is_empty() {
        bail!(
            "--init-from needs the text to train on: elman train NEW.txt --init-from {}",
            src.display()
        );
    }
    check_val_options(args)?;
    let mut vocab = Vocab::from_tokenizer_json(
        &src.join(checkpoint::TOKENIZER_FILE),
        base.vocab.level,
        base.vocab.nfc,
        base.vocab.segmenter,
    )?;
    vocab.unknown_types = base.vocab.unknown_types;
    vocab.min_count = base.vocab.min_count;
    let mut notes = Vec::new();
    // A character vocabulary grows by the new text's characters as the text is read (words the
    // vocabulary lacks are read as <unk>, which a word vocabulary always has).
    let vopts = VocabOptions {
        grow: !args.keep_vocab && vocab.level == Level::Char,
        ..base.vocab.options()
    };
    let known = vocab.len();
    let val_fraction = args
        .hyper
        .val_fraction
        .unwrap_or(base.training.val_fraction);
    let (corpus, vocab, mut data) = load_data(
        &args.files,
        &args.val_files,
        &vopts,
        Some(&vocab),
        val_fraction,
        !args.quiet,
        &CacheDir::new(args.cache_dir.as_deref()),
    )
    .map_err(|e| anyhow!("{e} (the vocabulary is that of {})", src.display()))?;
    if vocab.len() > known {
        notes.push(grown_note(
            &vocab.tokens()[known..],
            &src,
            vocab.unk.is_some(),
        ));
    }
    let mc = ModelConfig {
        vocab_size: vocab.len(),
        ..base.model
    };
    mc.validate()?;
    // A text the vocabulary mostly cannot read trains <unk>, not the model: say so.
    if let Some(u) = vocab.unk {
        let unk = data.train_count(u);
        let share = unk as f64 / data.train_len().max(1) as f64;
        if share > 0.05 {
            notes.push(format!(
                "warning: {:.0}% of the new text's tokens are <unk> to the vocabulary of {}{}",
                100.0 * share,
                src.display(),
                if args.keep_vocab {
                    " (leave out --keep-vocab to grow the vocabulary by its characters)"
                } else {
                    ""
                }
            ));
        }
    }
    let mut tc = train_config(&args.hyper, vocab.len(), Some(&base.training))?;
    let epochs = args.epochs_or_default();
    let readings =
        super::defaults::planned_epochs(&mc, &tc, data.train_len(), epochs, args.steps, args.time);
    validation_plan(&args.hyper, &mut tc, &mc, &mut data, readings);
    check_hyper(&tc, &mc)?;
    let dir = out_dir(args, &corpus);
    if dir == src {
        bail!(
            "{}: is the checkpoint --init-from starts from; write the new run elsewhere with --out",
            dir.display()
        );
    }
    claim_folder(&dir, args.force)?;
    let mut config = new_config(args, mc, &vopts, &vocab, tc, &corpus);
    config.init_from = Some(src.display().to_string());
    Ok(Run {
        dir,
        config,
        vocab,
        corpus,
        data,
        resuming: false,
        init_from: Some(InitFrom {
            dir: src,
            model: base.model,
            unk: base.vocab.unk,
            unknown_types: base.vocab.unknown_types,
        }),
        chosen: Vec::new(),
        notes,
    })
}

/// What fine-tuning says of the characters `added` to the vocabulary of `src` (the new text's that
/// it lacked; see [`Vocab::grown_by`]).
fn grown_note(added: &[String], src: &Path, has_unk: bool) -> String {
    let shown: Vec<String> = added
        .iter()
        .take(10)
        .map(|c| crate::vocab::describe_token(c))
        .collect();
    format!(
        "the vocabulary of {} grows by {} character(s) of the new text: {}{}; {} (--keep-vocab keeps the vocabulary as it is)",
        src.display(),
        added.len(),
        shown.join(", "),
        if added.len() > shown.len() { ", …" } else { "" },
        if has_unk {
            "each starts as the model saw it, as <unk>"
        } else {
            "each starts with new weights, as unlikely as the least likely old character"
        }
    )
}

/// A new run on `args.files`, with `args.hyper`'s settings and the defaults for the rest.
pub fn fresh(args: &TrainArgs) -> Result<Run> {
    let h = &args.hyper;
    let mut vopts = VocabOptions {
        level: h.level.unwrap_or(Level::Char),
        nfc: h.nfc,
        max_vocab: h.max_vocab,
        min_count: h.min_count.unwrap_or(1),
        segmenter: h.segmenter.unwrap_or(Segmenter::Auto),
        // Where the options are silent, a large vocabulary trains its <unk> on the tokens the
        // text holds once: a model that can read any text.
        rare_to_unk_above: (h.min_count.is_none() && h.max_vocab.is_none())
            .then_some(super::defaults::SMALL_VOCAB),
        grow: false,
    };
    if h.segmenter.is_some() && vopts.level != Level::Word {
        bail!("--segmenter applies to word-level vocabularies: add --level word");
    }
    check_val_options(args)?;
    let (corpus, vocab, mut data) = load_data(
        &args.files,
        &args.val_files,
        &vopts,
        None,
        h.val_fraction.unwrap_or(0.1),
        !args.quiet,
        &CacheDir::new(args.cache_dir.as_deref()),
    )?;
    let mut tc = train_config(h, vocab.len(), None)?;
    let mut chosen = Vec::new();
    if vocab.min_count != vopts.min_count {
        vopts.min_count = vocab.min_count;
        let unk = vocab.unk.map_or(0, |u| data.train_count(u));
        chosen.push(format!(
            "<unk> for the {} {} seen once (trained on their {unk} places in the training part: it learns to stand for {} the model never saw; --min-count 1 keeps them)",
            vocab.unknown_types.unwrap_or(0),
            vopts.level.plural(),
            vopts.level.plural()
        ));
    }
    let config = |shape: &super::defaults::Shape| ModelConfig {
        vocab_size: vocab.len(),
        hidden: shape.hidden,
        layers: h.layers.unwrap_or(1),
        activation: h.activation.unwrap_or(Activation::Tanh),
        cell: h.cell.unwrap_or_default(),
        embed: shape.embed,
        tied: shape.tied,
    };
    // How many times the budget reads the text with a given shape (the defaults' one measure).
    let epochs = args.epochs_or_default();
    let readings = |mc: &ModelConfig, tc: &TrainConfig| {
        super::defaults::planned_epochs(mc, tc, data.train_len(), epochs, args.steps, args.time)
    };
    let shape = super::defaults::shape(h, vopts.level, vocab.len(), |s| readings(&config(s), &tc));
    let mc = config(&shape);
    chosen.splice(0..0, shape.chosen);
    // The readings are what the dropout and average rules go by: said with either.
    let planned = readings(&mc, &tc);
    let often = match planned {
        x if x < 0.5 => "less than once".to_string(),
        x if x < 1.5 => "about once".to_string(),
        x => format!("~{x:.0} times"),
    };
    // A time budget is turned into readings at a reference speed, not this machine's (so the same
    // command makes the same model everywhere): say so.
    let by_time = args.time.is_some_and(|t| {
        let n = data.train_len();
        super::defaults::planned_epochs(&mc, &tc, n, None, None, Some(t)) <= planned
    });
    let at = if by_time {
        format!(
            " at the reference {:.0} GFLOP/s",
            super::defaults::NOMINAL_FLOPS / 1e9
        )
    } else {
        String::new()
    };
    let reads = format!("the budget reads the text {often}{at}");
    if h.dropout.is_none() {
        tc.dropout = super::defaults::dropout(planned, mc.vocab_size, mc.cell);
        if h.locked_dropout && tc.dropout == 0.0 {
            bail!("--locked-dropout keeps dropout's mask across time steps, but this budget's default is no dropout ({reads}); give --dropout P too");
        }
        chosen.push(if tc.dropout > 0.0 {
            format!("dropout {} ({reads})", tc.dropout)
        } else {
            format!("no dropout ({reads})")
        });
    }
    if h.average.is_none() {
        tc.average = super::defaults::average(planned);
        if tc.average > 0.0 {
            let why = if h.dropout.is_none() {
                format!("{:.0} readings or more", super::defaults::AVERAGE_FROM)
            } else {
                format!("{reads}, {:.0} or more", super::defaults::AVERAGE_FROM)
            };
            chosen.push(format!(
                "a moving average of the weights ({}, about the last {} steps) for validation and the saved model ({why}; --average 0 keeps the latest weights)",
                tc.average,
                (1.0 / (1.0 - tc.average)).round()
            ));
        }
    }
    validation_plan(h, &mut tc, &mc, &mut data, planned);
    check_hyper(&tc, &mc)?;
    if mc.vocab_size > crate::config::MAX_VOCAB {
        bail!(
            "the corpus has {} distinct tokens, more than elman's limit of {}; pass --max-vocab (e.g. --max-vocab 50000) to map rare ones to <unk>",
            mc.vocab_size,
            crate::config::MAX_VOCAB
        );
    }
    mc.validate()?;
    let dir = out_dir(args, &corpus);
    claim_folder(&dir, args.force)?;
    let config = new_config(args, mc, &vopts, &vocab, tc, &corpus);
    Ok(Run {
        dir,
        config,
        vocab,
        corpus,
        data,
        resuming: false,
        init_from: None,
        chosen,
        notes: Vec::new(),
    })
}

/// `--val` names the validation text, `--val-fraction` cuts it from the end: not both.
fn check_val_options(args: &TrainArgs) -> Result<()> {
    if !args.val_files.is_empty() && args.hyper.val_fraction.is_some() {
        bail!("--val and --val-fraction exclude each other: the validation text is either its own file or the end of the training text");
    }
    Ok(())
}

/// The evaluation interval of a new run when `--eval-every` was not given (it depends on what
/// scoring the validation text costs against training).
/// What a new run scores when it validates (`--val-tokens`, or the default: see
/// [`super::schedule::default_val_tokens`]; `readings` is how often the budget reads the text),
/// and then how often it validates.
fn validation_plan(
    h: &Hyper,
    tc: &mut TrainConfig,
    mc: &ModelConfig,
    data: &mut Data,
    readings: f64,
) {
    let steps = readings * data.train_len() as f64 / (tc.batch * tc.bptt).max(1) as f64;
    tc.val_tokens = match h.val_tokens {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(super::schedule::default_val_tokens(mc, tc, steps)),
    };
    data.cap_val(tc.val_tokens);
    if h.eval_every.is_none() {
        tc.eval_every =
            super::schedule::default_eval_every(mc, tc, data.val().len(), data.train_len());
    }
}

/// Where a new run is saved: `--out`, or `checkpoints/` and the corpus's name.
fn out_dir(args: &TrainArgs, corpus: &CorpusMeta) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| PathBuf::from("checkpoints").join(&corpus.name))
}

/// The config of a new run (fresh or fine-tuned), before its first save.
fn new_config(
    args: &TrainArgs,
    mc: ModelConfig,
    vopts: &VocabOptions,
    vocab: &Vocab,
    tc: TrainConfig,
    corpus: &CorpusMeta,
) -> Config {
    Config {
        format_version: checkpoint::format_version_for(&mc),
        elman_version: env!("CARGO_PKG_VERSION").to_string(),
        made_by: args.made_by.clone(),
        init_from: None,
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
            unknown_types: vocab.unknown_types,
        },
        training: tc,
        corpus: CorpusInfo {
            name: corpus.name.clone(),
            // Absolute, so that `--resume` finds the text from any working folder.
            files: corpus.files.iter().map(|f| absolute(f)).collect(),
            val_files: args.val_files.iter().map(|f| absolute(f)).collect(),
            sha256: corpus.sha256.clone(),
            chars: corpus.chars,
            train_tokens: 0,
            val_tokens: 0,
            val_chars: 0,
            cache_dir: args.cache_dir.as_ref().map(|d| absolute(d)),
        },
        progress: Progress::default(),
    }
}

/// The training settings of a new run: what was given, then `base`'s (fine-tuning), then the
/// defaults.
fn train_config(h: &Hyper, vocab_len: usize, base: Option<&TrainConfig>) -> Result<TrainConfig> {
    let optimizer = h
        .optimizer
        .or(base.map(|b| b.optimizer))
        .unwrap_or(OptimizerKind::Adam);
    // The base's learning rate only goes with the base's optimizer.
    let base_lr = base.filter(|b| b.optimizer == optimizer).map(|b| b.lr);
    let pick = |given: Option<usize>, of: fn(&TrainConfig) -> usize, default: usize| {
        given.or(base.map(of)).unwrap_or(default)
    };
    let pickf = |given: Option<f64>, of: fn(&TrainConfig) -> f64, default: f64| {
        given.or(base.map(of)).unwrap_or(default)
    };
    let (anneal, plateau) = h
        .chosen_schedule()
        .map(|s| s.flags())
        .or(base.map(|b| (b.anneal, b.plateau)))
        .unwrap_or(Schedule::Linear.flags());
    let tc = TrainConfig {
        batch: pick(h.batch, |b| b.batch, DEFAULT_BATCH),
        bptt: pick(h.bptt, |b| b.bptt, DEFAULT_BPTT),
        optimizer,
        lr: h.lr.or(base_lr).unwrap_or(match optimizer {
            // With the rate falling to 0 over the budget, a higher start pays.
            OptimizerKind::Adam if anneal => 3e-3,
            OptimizerKind::Adam => 2e-3,
            OptimizerKind::Adagrad => 0.05,
            OptimizerKind::Sgd => 1.0,
        }),
        clip: pickf(h.clip, |b| b.clip, DEFAULT_CLIP),
        lr_decay: pickf(h.lr_decay, |b| b.lr_decay, 0.5),
        patience: h.patience.or(base.map(|b| b.patience)).unwrap_or(1),
        val_fraction: pickf(h.val_fraction, |b| b.val_fraction, 0.1),
        eval_every: h.eval_every.unwrap_or(DEFAULT_EVAL_EVERY),
        val_tokens: None,
        epochs: None,
        steps: None,
        time_limit_s: None,
        seed: h.seed.or(base.map(|b| b.seed)).unwrap_or(1234),
        threads: 1,
        softmax_samples: match h.sampled_softmax {
            Some(0) => None,
            Some(k) => Some(k),
            None => match base {
                Some(b) => b.softmax_samples,
                None if vocab_len >= SAMPLED_SOFTMAX_FROM => Some(DEFAULT_SAMPLES),
                None => None,
            },
        },
        anneal,
        lr_restart: None,
        plateau,
        dropout: pickf(h.dropout, |b| b.dropout, 0.0),
        weight_decay: pickf(h.weight_decay, |b| b.weight_decay, 0.0),
        average: pickf(h.average, |b| b.average, 0.0),
        locked_dropout: h.locked_dropout || base.is_some_and(|b| b.locked_dropout),
        weight_drop: pickf(h.weight_drop, |b| b.weight_drop, 0.0),
        embed_dropout: pickf(h.embed_dropout, |b| b.embed_dropout, 0.0),
    };
    if !tc.plateau && (h.lr_decay.is_some() || h.patience.is_some()) {
        bail!("--lr-decay and --patience steer the plateau rule: add --schedule plateau");
    }
    if let Some(k) = tc.softmax_samples {
        if k + 1 > vocab_len / 2 {
            bail!(
                "--sampled-softmax {k}: the vocabulary has {vocab_len} tokens; sample fewer than half of them, or pass 0 for the full softmax"
            );
        }
    }
    Ok(tc)
}

/// Makes sure a new run may write `dir`: absent, empty, or (with `force`) a checkpoint to replace;
/// never a folder of something else.
fn claim_folder(dir: &Path, force: bool) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let is_ckpt = dir.join(checkpoint::CONFIG_FILE).exists();
    let empty = dir
        .read_dir()
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if empty {
        std::fs::remove_dir(dir).ok();
        return Ok(());
    }
    if !is_ckpt {
        bail!(
            "{}: exists and is not an elman checkpoint; refusing to replace it (choose another --out)",
            dir.display()
        );
    }
    if !force {
        bail!(
            "{}: a checkpoint is already there; continue it with `elman train --resume {}`, write the new run elsewhere with --out DIR, or replace it with --force",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// `path` made absolute against the working folder (without resolving links), as text.
fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
