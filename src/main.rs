//! The `elman` command line: parses arguments and calls the library. Nothing else lives here.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use elman::{checkpoint, eval, info, model::Activation, optim::OptimizerKind, train, vocab::Level};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "elman",
    version,
    about = "Train Elman recurrent neural-network language models on text, then use them.",
    long_about = "Train Elman recurrent neural-network language models on any UTF-8 text (Chinese, English, \
anything), then evaluate and inspect them.\n\n\
The model is the one of the textbook chapter: s(t) = σ(U x(t) + W s(t−1) + b), y(t) = softmax(V s(t) + c), \
trained by truncated back-propagation through time.\n\n\
Quick start:\n  elman train corpora/elman-demo.txt --time 1m     # writes checkpoints/elman-demo/\n  \
elman eval --model checkpoints/elman-demo some.txt\n  elman info --model checkpoints/elman-demo"
)]
struct Cli {
    /// Worker threads for the maths [default: 1]. Runs are bit-for-bit reproducible for a given
    /// seed, data and thread count. (At the sizes elman trains, candle's multi-threaded matrix
    /// products were measured slower than one thread on a 2-core machine.)
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on text files (or continue one with --resume).
    #[command(
        long_about = "Train an Elman RNN language model on one or more UTF-8 text files (or folders of \
.txt files). The last --val-fraction of the text is held out for validation. The run is saved in \
checkpoints/NAME (NAME from the first file, or --out) at every evaluation; model.safetensors holds the \
best-validation weights. Ctrl-C finishes the current step, saves and exits.\n\n\
Examples:\n  elman train corpora/elman-demo.txt --time 1m\n  \
elman train ../shared/corpora/tinyshakespeare.txt --hidden 512 --time 10m\n  \
elman train notes.txt --level word --max-vocab 10000 --steps 5000\n  \
elman train --resume checkpoints/tinyshakespeare --time 10m"
    )]
    Train(Box<TrainCmd>),
    /// Score text with a model: nats per token, bits per character, perplexity.
    Eval(EvalCmd),
    /// Show what a checkpoint holds: vocabulary, sizes, hyperparameters, training history.
    Info(InfoCmd),
}

#[derive(Args)]
struct TrainCmd {
    /// Text files or folders (UTF-8). With --resume, defaults to the files the run was started on.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Checkpoint folder to write [default: checkpoints/<name of the first file>].
    #[arg(long, short, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run saved in DIR exactly where it stopped (weights, optimizer, data position).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "force"])]
    resume: Option<PathBuf>,
    /// Replace an existing checkpoint at --out.
    #[arg(long)]
    force: bool,

    /// Token level: one token per character, or words and punctuation [default: char].
    #[arg(long, value_enum, help_heading = "Vocabulary")]
    level: Option<Level>,
    /// Normalise the text to Unicode NFC first.
    #[arg(long, help_heading = "Vocabulary")]
    nfc: bool,
    /// Keep only the N most frequent tokens (special tokens included); the rest become <unk>.
    #[arg(long, value_name = "N", help_heading = "Vocabulary")]
    max_vocab: Option<usize>,
    /// Tokens seen fewer than N times become <unk> [default: 1].
    #[arg(long, value_name = "N", help_heading = "Vocabulary")]
    min_count: Option<u64>,

    /// Hidden units per layer [default: 256].
    #[arg(long, value_name = "H", help_heading = "Model")]
    hidden: Option<usize>,
    /// Stacked Elman layers [default: 1].
    #[arg(long, value_name = "L", help_heading = "Model")]
    layers: Option<usize>,
    /// Hidden nonlinearity σ: tanh, or the book's sigmoid, or relu [default: tanh].
    #[arg(long, value_enum, help_heading = "Model")]
    activation: Option<Activation>,

    /// Parallel streams the text is cut into (the batch size) [default: 32].
    #[arg(long, value_name = "B", help_heading = "Training")]
    batch: Option<usize>,
    /// Steps of back-propagation through time per window [default: 64].
    #[arg(long, value_name = "T", help_heading = "Training")]
    bptt: Option<usize>,
    /// adam, adagrad or sgd [default: adam].
    #[arg(long, value_enum, help_heading = "Training")]
    optimizer: Option<OptimizerKind>,
    /// Learning rate [default: 0.002 for adam, 0.05 adagrad, 1.0 sgd].
    #[arg(
        long,
        value_name = "LR",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    lr: Option<f64>,
    /// Clip the global gradient norm to this (0 = off) [default: 5].
    #[arg(
        long,
        value_name = "NORM",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    clip: Option<f64>,
    /// Multiply the learning rate by this when validation stops improving [default: 0.5].
    #[arg(long, value_name = "F", help_heading = "Training")]
    lr_decay: Option<f64>,
    /// Evaluations without improvement before the learning rate decays [default: 1].
    #[arg(long, value_name = "N", help_heading = "Training")]
    patience: Option<u32>,
    /// Fraction of the text (its end) held out for validation [default: 0.1].
    #[arg(long, value_name = "F", help_heading = "Training")]
    val_fraction: Option<f64>,
    /// Evaluate and save every N steps [default: 200].
    #[arg(long, value_name = "N", help_heading = "Training")]
    eval_every: Option<u64>,
    /// Random seed (initial weights, epoch offsets) [default: 1234].
    #[arg(long, help_heading = "Training")]
    seed: Option<u64>,

    /// Stop after N epochs [default: 10 when neither --steps nor --time is given].
    #[arg(
        long,
        value_name = "N",
        help_heading = "Stopping (whichever comes first)"
    )]
    epochs: Option<u64>,
    /// Stop when the run reaches N steps in total (a resumed run counts its earlier steps).
    #[arg(
        long,
        value_name = "N",
        help_heading = "Stopping (whichever comes first)"
    )]
    steps: Option<u64>,
    /// Stop after this much time in this session: 90s, 10m, 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = parse_time, help_heading = "Stopping (whichever comes first)")]
    time: Option<std::time::Duration>,

    /// No progress bar or evaluation lines.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_time(s: &str) -> Result<std::time::Duration, String> {
    train::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args)]
#[command(
    long_about = "Score UTF-8 text with a trained model. Reports the number of tokens, nats per \
token, bits per character and perplexity of the whole text, as one stream from an empty state (the \
exact likelihood).\n\nExample:\n  elman eval --model checkpoints/elman-demo corpora/elman-demo.txt --json"
)]
struct EvalCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    /// Text files or folders to score.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Score the text as N parallel streams (faster, slightly pessimistic: each starts from s = 0).
    #[arg(long, default_value_t = 1, value_name = "N")]
    streams: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InfoCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match cli.threads {
        Some(0) => {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(2);
        }
        Some(n) => n,
        None => 1,
    };
    // candle sizes its thread pools from this variable; set it before any maths runs.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    match run(cli.cmd, threads) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes, no backtrace.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command, threads: usize) -> Result<ExitCode> {
    match cmd {
        Command::Train(c) => {
            let c = *c;
            train::install_ctrlc_handler();
            let args = train::TrainArgs {
                files: c.files,
                out: c.out,
                resume: c.resume,
                force: c.force,
                hyper: train::Hyper {
                    hidden: c.hidden,
                    layers: c.layers,
                    activation: c.activation,
                    batch: c.batch,
                    bptt: c.bptt,
                    optimizer: c.optimizer,
                    lr: c.lr,
                    clip: c.clip,
                    lr_decay: c.lr_decay,
                    patience: c.patience,
                    val_fraction: c.val_fraction,
                    eval_every: c.eval_every,
                    seed: c.seed,
                    level: c.level,
                    nfc: c.nfc,
                    max_vocab: c.max_vocab,
                    min_count: c.min_count,
                },
                epochs: c.epochs,
                steps: c.steps,
                time: c.time,
                threads,
                quiet: c.quiet,
            };
            let o = train::train(&args)?;
            if !c.quiet {
                let best = match (o.best_val_loss, o.best_val_bpc) {
                    (Some(l), Some(b)) => format!("best validation {l:.4} nats/token, {b:.4} bpc"),
                    _ => "no evaluation yet".into(),
                };
                let why = match o.stopped.as_str() {
                    "interrupted" => "interrupted".to_string(),
                    other => format!("stopped by --{other}"),
                };
                eprintln!(
                    "{why} at step {}; {best}; checkpoint saved in {}",
                    o.step,
                    o.dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(c) => {
            if c.streams == 0 {
                anyhow::bail!("--streams must be at least 1");
            }
            let loaded = checkpoint::load(&c.model, &candle_core::Device::Cpu)?;
            let r = eval::eval_files(&loaded, &c.files, c.streams)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("model          {}", r.model);
                println!("text           {} ({} chars)", r.files.join(", "), r.chars);
                println!("tokens         {} ({} predicted)", r.tokens, r.predicted);
                if r.unknown > 0 {
                    println!("unknown        {} mapped to <unk>", r.unknown);
                }
                println!("nats/token     {:.4}", r.nats_per_token);
                println!("bits/char      {:.4}", r.bits_per_char);
                println!("perplexity     {:.3}", r.perplexity);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Info(c) => {
            let i = info::info(&c.model)?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{}", info::render(&i));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
