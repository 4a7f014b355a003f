//! The command line, the only module that knows clap: the subcommand list ([`Command`]), one
//! clap struct per subcommand, and the groups several share (a prompt, the sampling rules). Each
//! converts to the library's own types at this edge. `train.rs` holds `elman train`'s options
//! ([`HyperArgs`], converted to the library's `train::Hyper`), `values.rs` clap's `ValueEnum` for
//! the library's enums; `main.rs` runs one function per subcommand.

mod train;
mod values;

pub use train::{HyperArgs, TrainCmd};

use crate::cell::Activation;
use crate::demo;
use crate::generate::{RankBy, SampleOptions};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(clap::Parser)]
#[command(
    name = "elman",
    version,
    about = "Train Elman recurrent neural-network language models on text, then use them.",
    long_about = "Train Elman recurrent neural-network language models on any UTF-8 text (Chinese, English, \
anything), then use them: sample text, complete a prompt, rank candidate completions, talk to them.\n\n\
The model is the one of the textbook chapter: s(t) = σ(U x(t) + W s(t−1) + b), y(t) = softmax(V s(t) + c), \
trained by truncated back-propagation through time.\n\n\
Quick start:\n  elman demo                                        # train on the bundled corpus, sample, rank\n  \
elman train mybook.txt --time 10m                 # writes checkpoints/mybook/\n  \
elman sample --model mybook --prompt \"Once\"\n  \
elman rank --model demo --prompt 天空飞过一只 --candidates 小鸟,蜻蜓,人,坦克,猪\n  \
elman repl --model mybook"
)]
pub struct Cli {
    /// Threads to compute with [default: all cores]. Training, eval and validation split their
    /// streams among them (bit-for-bit reproducible for a given seed, data and thread count); eval
    /// of one stream (its default) shares each step among them when the model is large enough;
    /// sampling, completion, ranking and the repl run on one.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Where training windows run: cpu, or cuda (an NVIDIA GPU; the CUDA build only).
    ///
    /// `cuda` needs the CUDA build (target/cuda/release/elman, made by scripts/build-cuda.sh; see
    /// docs/gpu.md) and an NVIDIA GPU: each window's forward and backward run there (cuBLAS for the
    /// large products, elman's own kernel for each cell's recurrence); the optimizer, validation,
    /// checkpoints, sampling and ranking stay on the CPU, so a model trained on a GPU is the same
    /// files as one trained on the CPU. Commands other than train and bench run on the CPU.
    #[arg(
        long,
        global = true,
        value_name = "DEVICE",
        default_value = "cpu",
        ignore_case = true
    )]
    pub device: crate::runtime::DeviceKind,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a model on text files (or continue one with --resume).
    #[command(
        long_about = "Train an Elman RNN language model on one or more UTF-8 text files (or folders of \
.txt files). The last --val-fraction of the text is held out for validation. The run is saved in \
checkpoints/NAME (NAME from the first file, or --out) at every evaluation; model.safetensors holds the \
best-validation weights. Ctrl-C finishes the current step, saves and exits.\n\n\
What you leave out is chosen for the text and the budget (the run prints it): 512 hidden units on an \
alphabet (≤ 256 characters; 256 for --cell lstm or gru), 256 on Chinese characters or words; the input \
read through an embedding (64 wide on an alphabet; on Chinese characters or words H wide and tied to the \
decoder, but H/2 and untied for characters the budget will read 100 times or more); dropout when \
the budget will read a small text many times; Adam at 3e-3 falling linearly to 0 by the end of the \
budget. --one-hot trains the book's model instead.\n\n\
Examples:\n  elman train corpora/elman-demo.txt --time 1m\n  \
elman train ../shared/corpora/tinyshakespeare.txt --time 10m\n  \
elman train mybook.txt --one-hot --hidden 256 --schedule plateau   # the book's model\n  \
elman train mybook.txt --cell lstm --time 10m\n  \
elman train notes.txt --level word --max-vocab 10000 --steps 5000\n  \
elman train --resume checkpoints/tinyshakespeare --time 10m\n  \
elman train sonnets.txt --init-from checkpoints/tinyshakespeare --lr 0.0005 --time 5m"
    )]
    Train(Box<TrainCmd>),
    Eval(EvalCmd),
    Gradflow(GradflowCmd),
    Plot(PlotCmd),
    Heatmap(HeatmapCmd),
    Info(InfoCmd),
    Sample(SampleCmd),
    Complete(CompleteCmd),
    Rank(RankCmd),
    Repl(ReplCmd),
    Demo(DemoCmd),
    Bench(BenchCmd),
    Serve(ServeCmd),
}

/// The command line as given (clap prints `--help`, `--version` and usage errors itself, and exits).
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = negative_numbers_are_values(Cli::command())
        .try_get_matches_from(std::env::args_os())
        .unwrap_or_else(|e| plainer(e).exit());
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// A whole number refused by its parser is said in words a user reads ("expected a whole number
/// ≥ 0") instead of Rust's ("invalid digit found in string"); every other error as clap puts it.
fn plainer(e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let digits = e.kind() == ErrorKind::ValueValidation
        && std::error::Error::source(&e).is_some_and(|s| {
            let s = s.to_string();
            s.contains("invalid digit") || s.contains("number too large")
        });
    match (digits, e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue)) {
        (true, Some(ContextValue::String(arg)), Some(ContextValue::String(value))) => {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value '{value}' for '{arg}': expected a whole number ≥ 0\n\nFor more information, try '--help'.\n"),
            )
        }
        _ => e,
    }
}

/// `--hidden -3` is a value for --hidden that its parser then refuses ("invalid value '-3' for
/// '--hidden <N>'"), not an unknown flag -3 with clap's tip to write `-- -3`, which would not help.
fn negative_numbers_are_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| {
        if a.get_action().takes_values() && !a.is_positional() {
            a.allow_negative_numbers(true)
        } else {
            a
        }
    })
    .mut_subcommands(negative_numbers_are_values)
}

#[derive(Args)]
#[command(
    about = "Measure training tokens/s, sampling chars/s, scoring tokens/s and GEMM speed on this machine",
    long_about = "Measure elman's throughput on this machine: training tokens/s at the four reference \
shapes of the PyTorch peer (vocabulary 65, random tokens, Adam, clipping 5), batch-1 sampling chars/s, \
scoring tokens/s, and the fp32 GEMM rate with the share of it that training turns into useful work \
(6·(H² + H·V) FLOP per token). scripts/bench-vs-pytorch.sh runs this and the PyTorch peer interleaved \
and prints the ratios.\n\nExamples:\n  elman bench\n  elman bench --only train --shape 256,64,64 --seconds 5 --json"
)]
pub struct BenchCmd {
    /// Seconds to measure each item (after a warm-up).
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    pub seconds: f64,
    /// Only these parts (train, sample, eval, gemm), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    pub only: Vec<String>,
    /// Training shapes HIDDEN,BATCH,BPTT (repeatable) [default: the four reference shapes]; scoring
    /// then runs at their widths (default 256 and 512).
    #[arg(long, value_name = "H,B,T")]
    pub shape: Vec<String>,
    /// Vocabulary size of the measured models (the peer's reference is 65).
    #[arg(long, default_value_t = crate::bench::VOCAB, value_name = "V")]
    pub vocab: usize,
    /// Measure training with a sampled softmax of K negatives.
    #[arg(long, value_name = "K")]
    pub sampled_softmax: Option<usize>,
    /// The cell of the measured models.
    #[arg(long, value_enum, default_value_t = crate::cell::CellKind::Elman)]
    pub cell: crate::cell::CellKind,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How to pick tokens (shared by sample and repl).
#[derive(Args, Clone)]
pub struct SamplingFlags {
    /// Softmax temperature: below 1 is safer, above 1 wilder, 0 always takes the most likely token.
    #[arg(
        long,
        short,
        default_value_t = 0.8,
        value_name = "T",
        allow_negative_numbers = true
    )]
    pub temperature: f64,
    /// Sample only from the K most likely tokens (0 = off, all of them, as the repl's :topk 0).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sample only from the smallest set of tokens whose probability reaches P (nucleus sampling).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    /// Random seed: the same seed gives the same text [default: a random one].
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingFlags {
    pub fn options(&self) -> Result<SampleOptions> {
        let o = SampleOptions {
            temperature: self.temperature,
            top_k: self.top_k.filter(|&k| k > 0),
            top_p: self.top_p,
        };
        o.validate()?;
        Ok(o)
    }

    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(rand::random)
    }
}

#[derive(Args)]
#[command(
    about = "Generate text, streamed as it is produced",
    long_about = "Generate text with a trained model. The hidden state is first warmed up on the whole \
prompt; tokens are then drawn one by one and printed as they come. Ctrl-C stops.\n\n\
Examples:\n  elman sample --model checkpoints/demo --prompt 天空中 --length 200\n  \
elman sample --model demo --prompt \"The bird\" --temperature 0.5 --count 3 --seed 1\n  \
elman sample --model demo --top-p 0.9 --json"
)]
pub struct SampleCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    /// Text to start from (any Unicode) [default: the start of a line].
    #[arg(long, short)]
    pub prompt: Option<String>,
    /// Read the prompt from a UTF-8 file instead (for long prompts; taken exactly as written).
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
    /// Tokens to generate per sample.
    #[arg(
        long,
        short,
        visible_alias = "max-tokens",
        default_value_t = 200,
        value_name = "N"
    )]
    pub length: usize,
    /// Number of samples.
    #[arg(long, short = 'n', default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    #[command(flatten)]
    pub sampling: SamplingFlags,
    /// Print one JSON object (seed, settings, samples) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    about = "The most likely next tokens after a prompt, or (--beam) the most probable continuations",
    long_about = "Show what a model expects after a prompt: the K most likely next tokens with their \
probabilities, or with --beam W the W most probable continuations found by beam search (each stops at a \
line break, sentence-final punctuation, or --max-tokens).\n\n\
Examples:\n  elman complete --model demo --prompt 天空中飞过一只\n  \
elman complete --model demo --prompt \"A bird flew\" --beam 5 --max-tokens 30 --json"
)]
pub struct CompleteCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// How many next tokens to show.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub top: usize,
    /// Beam width: search for the W most probable continuations.
    #[arg(long, value_name = "W")]
    pub beam: Option<usize>,
    /// Longest continuation for --beam, in tokens.
    #[arg(long, visible_alias = "length", default_value_t = 20, value_name = "N")]
    pub max_tokens: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    about = "Rank candidate completions of a prompt by probability (天空飞过一只 → 小鸟, 蜻蜓, 人, 坦克, 猪)",
    long_about = "Score candidate completions of a prompt. Each candidate is scored token by token \
from the same prompt state: its total log-probability (the probability of the whole candidate), the mean \
per token, and its probability normalised over the candidate set. Candidates may have different lengths. \
A candidate with pieces the vocabulary lacks is marked *: each unknown piece scores p(<unk>) shared evenly \
over the tokens the vocabulary left out (as SRILM and KenLM score an out-of-vocabulary word), so it never \
wins for being unknown; with a checkpoint that does not record that number, unknown candidates rank last.\n\n\
Example (the chapter's):\n  elman rank --model demo --prompt 天空飞过一只 --candidates 小鸟,蜻蜓,人,坦克,猪"
)]
pub struct RankCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Comma-separated candidates (also ， or 、); spaces around them are trimmed (give a candidate
    /// that starts or ends with a space in --candidates-file).
    #[arg(
        long,
        short,
        value_name = "A,B,C",
        required_unless_present = "candidates_file"
    )]
    pub candidates: Option<String>,
    /// A file with one candidate per line, each scored exactly as written (spaces included; empty
    /// lines skipped).
    #[arg(long, value_name = "FILE", conflicts_with = "candidates")]
    pub candidates_file: Option<PathBuf>,
    /// Sort by total or mean per-token log-probability.
    #[arg(long, value_enum, default_value_t = RankBy::Total)]
    pub by: RankBy,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    about = "An interactive session: type text, watch it continue; :help for commands",
    long_about = "An interactive session with a model. Each line you type continues the running \
context (it carries over from line to line), shows the most likely next tokens and streams a completion. \
Commands: :temp T, :topk K, :topp P, :len N, :seed S, :rank a,b,c, :beam W, :next K, :reset, :show, \
:help, :quit. Ctrl-C cancels a generation, Ctrl-D leaves. With stdin piped, lines are read plainly.\n\n\
Example:\n  elman repl --model demo"
)]
pub struct ReplCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    /// Tokens to generate after each line.
    #[arg(long, short, default_value_t = 100, value_name = "N")]
    pub length: usize,
    #[command(flatten)]
    pub sampling: SamplingFlags,
}

#[derive(Args)]
#[command(
    about = "The showcase: train on the bundled corpus (5–30 s), sample in both languages, rank 天空飞过一只__",
    long_about = "The showcase: train an Elman network on the bundled Chinese–English corpus (a fixed \
number of steps on 2 threads, so every machine of a kind gets the same model), print samples in both \
languages, and rank the chapter's candidates for 天空飞过一只__ (小鸟, 蜻蜓, 人, 坦克, 猪). The model goes to \
checkpoints/demo, a folder of its own: the demo never replaces a checkpoint it did not make.\n\n\
Examples:\n  elman demo\n  elman demo --reuse            # skip training when checkpoints/demo is there\n  \
elman demo --steps 3000 --out checkpoints/demo-long"
)]
pub struct DemoCmd {
    /// The corpus to train on.
    #[arg(long, default_value = demo::DEMO_CORPUS, value_name = "FILE")]
    pub corpus: PathBuf,
    /// Where the demo model goes.
    #[arg(long, short, default_value = demo::DEMO_OUT, value_name = "DIR")]
    pub out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = demo::DEMO_STEPS, value_name = "N")]
    pub steps: u64,
    /// Skip training when the demo model is already there.
    #[arg(long)]
    pub reuse: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Args)]
#[command(
    about = "Score text with a model: nats per token, bits per character, perplexity",
    long_about = "Score UTF-8 text with a trained model. Reports the number of tokens, nats per \
token, bits per character and perplexity of the whole text, as one stream from an empty state (the \
exact likelihood).\n\nExample:\n  elman eval --model checkpoints/demo corpora/elman-demo.txt --json"
)]
pub struct EvalCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    /// Text files or folders to score.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Score the text as N parallel streams (faster, slightly pessimistic: each starts from s = 0).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub streams: usize,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    about = "Measure how far back the gradient reaches (vanishing gradients): table and SVG chart",
    long_about = "Measure ‖∂loss(t)/∂s(t−k)‖, the gradient that back-propagation through time carries \
from the loss at position t to the hidden state k steps earlier, for k = 0..K, averaged over many \
positions of real text. The chapter's point: with the sigmoid σ′ ≤ 1/4, so the gradient shrinks about \
(1/4)^k (exactly: at least as fast as (‖W‖₂/4)^k); tanh and ReLU keep more of it.\n\n\
Measures a trained model (--model), fresh untrained ones (--compare, or --activation), or both; prints a \
table and writes an SVG chart with one curve per model and the bound for sigmoid.\n\n\
Examples:\n  elman gradflow --model checkpoints/demo\n  \
elman gradflow --compare sigmoid,tanh,relu --hidden 128 --out gradflow.svg\n  \
elman gradflow --model demo --compare sigmoid,tanh,relu --text corpora/elman-demo.txt\n  \
elman gradflow --activation sigmoid --w-norm 0.9        # ‖W‖₂ ≤ 1: under (1/4)^k"
)]
pub struct GradflowCmd {
    /// A trained checkpoint to measure (fresh models then share its vocabulary and size).
    #[arg(long, short, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Text to take positions from [default: the model's training files, or the bundled corpus].
    #[arg(long, value_name = "FILE")]
    pub text: Vec<PathBuf>,
    /// Also measure fresh, untrained models of these kinds (comma-separated): Elman networks by
    /// their nonlinearity (sigmoid, tanh, relu; elman is tanh), or the gated cells lstm and gru.
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub compare: Vec<crate::gradflow::Kind>,
    /// Measure a fresh Elman model with this activation (the default without --model: sigmoid).
    #[arg(long, value_enum)]
    pub activation: Option<Activation>,
    /// Hidden size of fresh models [default: the model's, or 256].
    #[arg(long, value_name = "H")]
    pub hidden: Option<usize>,
    /// Seed of fresh models' weights.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Rescale fresh models' recurrent weight W to this spectral norm ‖W‖₂.
    #[arg(long, value_name = "X")]
    pub w_norm: Option<f64>,
    /// Largest number of steps back, K.
    #[arg(long, default_value_t = 30, value_name = "K")]
    pub max_k: usize,
    /// Positions of the text averaged over.
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub positions: usize,
    /// Read at most this many tokens of the text.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    pub max_tokens: usize,
    /// Where the chart goes.
    #[arg(long, short, default_value = "gradflow.svg", value_name = "FILE")]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    about = "Overlay the learning curves of several runs (elman's or a peer's) in one SVG chart",
    long_about = "Draw the training and validation loss of one or more runs in one SVG chart, against \
tokens seen or against training time (each training run also keeps its own loss.svg, refreshed at every \
evaluation). A run is a checkpoint folder, or any folder or file holding a metrics.jsonl with the same \
fields: scripts/torch_curve.py writes one for the PyTorch peer, so the two programs' curves share a chart.\n\n\
Examples:\n  elman plot checkpoints/small checkpoints/big --out compare.svg\n  \
python3 scripts/torch_curve.py --corpus shakespeare.txt --seconds 180 --out runs/pytorch\n  \
elman plot checkpoints/shakespeare runs/pytorch --x time --validation-only --out vs-pytorch.svg"
)]
pub struct PlotCmd {
    /// Checkpoint folders (or names under checkpoints/), or folders or files with a metrics.jsonl.
    #[arg(value_name = "RUN", required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the chart goes.
    #[arg(long, short, default_value = "loss.svg", value_name = "FILE")]
    pub out: PathBuf,
    /// The x axis: tokens seen, or seconds of training.
    #[arg(long, value_enum, default_value_t = crate::plot::XAxis::Tokens)]
    pub x: crate::plot::XAxis,
    /// Only the validation curves (comparing runs: the training loss of each is noisier and less
    /// comparable).
    #[arg(long)]
    pub validation_only: bool,
    /// Cut the y axis at this loss (the first evaluations of a run are far above the rest).
    #[arg(long, value_name = "NATS")]
    pub y_max: Option<f64>,
}

#[derive(Args)]
#[command(
    about = "Write an HTML page showing a text shaded by the model's surprisal, predictions on hover",
    long_about = "Write a self-contained HTML page showing a text as the model reads it: every token \
shaded by its surprisal −log₂ p (white: expected, red: surprising), the model's top predictions at that \
point on hover, and with --unit N one hidden unit's activation as a second view (as in Karpathy's \
char-rnn visualisations). Open the page in any browser; it needs no network.\n\n\
Examples:\n  elman heatmap --model checkpoints/demo corpora/elman-demo.txt --max-tokens 2000\n  \
elman heatmap --model demo story.txt --unit 17 --out story.html"
)]
pub struct HeatmapCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    /// The text to show (UTF-8 files or folders).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Where the page goes.
    #[arg(long, short, default_value = "heatmap.html", value_name = "FILE")]
    pub out: PathBuf,
    /// Also show this hidden unit's activation.
    #[arg(long, value_name = "N")]
    pub unit: Option<usize>,
    /// With --unit on an LSTM: show the unit's cell state c instead of its output h.
    #[arg(long, requires = "unit")]
    pub cell_state: bool,
    /// The layer of --unit, from 0 [default: the top layer].
    #[arg(long, value_name = "L", requires = "unit")]
    pub layer: Option<usize>,
    /// Predictions shown on hover.
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top: usize,
    /// Show at most the first N tokens of the text.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_tokens: usize,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print a JSON summary (tokens, nats/token, bits/char) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    about = "Show what a checkpoint holds: vocabulary, sizes, hyperparameters, training history",
    long_about = "Show what a checkpoint holds: its vocabulary, the model's size and cell, every \
training setting, the corpus it was trained on (name, size, SHA-256), its progress and the history of \
its evaluations.\n\nExamples:\n  elman info --model checkpoints/demo\n  elman info --model demo --json"
)]
pub struct InfoCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A prompt that must be given, on the command line or in a file (complete, rank).
#[derive(Args)]
pub struct PromptArgs {
    /// The text to continue (any Unicode).
    #[arg(long, short, required_unless_present = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from a UTF-8 file instead (for long prompts; taken exactly as written).
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    pub prompt_file: Option<PathBuf>,
}

/// The prompt from `--prompt` or `--prompt-file`.
pub fn prompt_text(prompt: Option<String>, file: &Option<PathBuf>) -> Result<String> {
    match file {
        Some(f) => {
            let bytes = std::fs::read(f).map_err(|e| crate::corpus::file_error(f, &e))?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: invalid UTF-8 at byte offset {}",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })
        }
        None => Ok(prompt.unwrap_or_default()),
    }
}

impl RankCmd {
    /// The candidates from `--candidates` (spaces around the commas dropped) or
    /// `--candidates-file` (one per line exactly as written, spaces included; empty lines skipped).
    pub fn candidates(&self) -> Result<Vec<String>> {
        let cands: Vec<String> = match (&self.candidates, &self.candidates_file) {
            (Some(s), _) => crate::generate::split_candidates(s),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| crate::corpus::file_error(f, &e))?
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            (None, None) => unreachable!("clap requires one"),
        };
        if cands.is_empty() {
            anyhow::bail!(
                "no candidates to rank: give --candidates a,b,c, or a --candidates-file with one per line"
            );
        }
        Ok(cands)
    }
}

impl BenchCmd {
    /// The checked measurement plan.
    pub fn to_args(&self, rt: &crate::runtime::Runtime) -> Result<crate::bench::BenchArgs> {
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            anyhow::bail!("--seconds must be a positive number");
        }
        let want = |p: &str| self.only.is_empty() || self.only.iter().any(|x| x == p);
        for p in &self.only {
            if !["train", "sample", "eval", "gemm"].contains(&p.as_str()) {
                anyhow::bail!("--only {p}: expected train, sample, eval or gemm");
            }
        }
        let shapes = if self.shape.is_empty() {
            crate::bench::TRAIN_SHAPES.to_vec()
        } else {
            self.shape
                .iter()
                .map(|s| {
                    let v: Vec<usize> =
                        s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                    match v.as_slice() {
                        [h, b, t] if *h > 0 && *b > 0 && *t > 0 && *h <= 4096 => Ok((*h, *b, *t)),
                        _ => Err(anyhow::anyhow!(
                            "--shape {s:?}: expected HIDDEN,BATCH,BPTT, e.g. 256,64,64"
                        )),
                    }
                })
                .collect::<Result<_>>()?
        };
        if self.vocab < 2 || self.vocab > crate::config::MAX_VOCAB {
            anyhow::bail!(
                "--vocab {} is out of range 2..={}",
                self.vocab,
                crate::config::MAX_VOCAB
            );
        }
        if self
            .sampled_softmax
            .is_some_and(|k| k == 0 || k >= self.vocab / 2)
        {
            anyhow::bail!("--sampled-softmax must be between 1 and half the vocabulary");
        }
        // Scoring at the widths asked for (--shape), else the reference 256 and 512.
        let mut eval_hidden: Vec<usize> = if self.shape.is_empty() {
            vec![256, 512]
        } else {
            shapes.iter().map(|s| s.0).collect()
        };
        eval_hidden.dedup();
        Ok(crate::bench::BenchArgs {
            rt: rt.clone(),
            cell: self.cell,
            vocab: self.vocab,
            samples: self.sampled_softmax,
            seconds: self.seconds,
            shapes: if want("train") { shapes } else { Vec::new() },
            sample: want("sample"),
            eval_hidden: if want("eval") {
                eval_hidden
            } else {
                Vec::new()
            },
            gemm: want("gemm"),
        })
    }
}

impl GradflowCmd {
    /// The measurement asked for, where the chart goes, and whether to print JSON.
    pub fn into_request(self) -> Result<(crate::gradflow::Request, PathBuf, bool)> {
        let elman = |activation| crate::gradflow::Kind {
            cell: crate::cell::CellKind::Elman,
            activation,
        };
        let mut fresh = self.compare.clone();
        if let Some(a) = self.activation {
            if !fresh.contains(&elman(a)) {
                fresh.push(elman(a));
            }
        }
        if fresh.is_empty() && self.model.is_none() {
            fresh.push(elman(Activation::Sigmoid));
        }
        if self.w_norm.is_some() && fresh.is_empty() {
            anyhow::bail!(
                "--w-norm rescales the fresh models that --compare or --activation asks for, not a trained --model; add e.g. --compare sigmoid,tanh"
            );
        }
        if self.max_k == 0 {
            anyhow::bail!("--max-k must be at least 1");
        }
        let req = crate::gradflow::Request {
            model: self.model,
            text: self.text,
            fresh,
            hidden: self.hidden,
            seed: self.seed,
            w_norm: self.w_norm,
            options: crate::gradflow::Options {
                max_k: self.max_k,
                positions: self.positions,
            },
            max_tokens: self.max_tokens,
            quiet: self.quiet || self.json,
        };
        Ok((req, self.out, self.json))
    }
}

#[derive(Args)]
#[command(
    about = "Serve models over HTTP: a playground page and a JSON API (next tokens, sample, complete, rank, score)",
    long_about = "Serve one or more trained models on this machine: a playground page at / (type and \
watch the next-token chart change, generate with streamed output, rank candidates, see the surprisal of \
your text), and a JSON API with the same numbers as the command line: POST /api/next, /api/sample, \
/api/sample/stream (server-sent events), /api/complete, /api/rank, /api/score; GET /api/info, \
/api/models. It listens on 127.0.0.1 unless --host says otherwise, bounds every request, and reads or \
writes no file a request names. Ctrl-C stops it.\n\n\
Examples:\n  elman serve --model demo                       # then open http://127.0.0.1:8080/\n  \
elman serve --model demo --model tinyshakespeare --port 9000\n  \
curl -s localhost:8080/api/next -d '{\"prompt\": \"天空飞过一只\", \"top\": 5}'"
)]
pub struct ServeCmd {
    /// Checkpoint folder (or a name under checkpoints/); repeat to serve several, each under its
    /// folder's name (requests choose with "model").
    #[arg(long, short, value_name = "DIR", required = true)]
    pub model: Vec<PathBuf>,
    /// The address to listen on: 127.0.0.1 keeps it to this machine; 0.0.0.0 opens it to the network.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub host: String,
    /// The port (0 picks a free one, printed when listening).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every request but the playground page itself (401
    /// otherwise; the page asks for the key). Also read from $ELMAN_API_KEY. Never printed.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Serve beyond the loopback address without a key (refused otherwise).
    #[arg(long)]
    pub insecure: bool,
    /// Serve a checkpoint's new version as soon as it is saved (a running `elman train` saving a
    /// new best): the folder is looked at twice a second and swapped in whole from the next
    /// request; requests already running finish on the version they started with.
    #[arg(long)]
    pub watch: bool,
}
