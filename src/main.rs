//! The `elman` command line: parses arguments and calls the library. Nothing else lives here.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use elman::generate::{self, RankBy, SampleOptions};
use elman::infer::Engine;
use elman::{
    checkpoint, demo, eval, info, model::Activation, optim::OptimizerKind, repl, report, train,
    vocab::Detokenizer, vocab::Level,
};
use rand::SeedableRng;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
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
elman rank --model elman-demo --prompt 天空飞过一只 --candidates 小鸟,蜻蜓,人,坦克,猪\n  \
elman repl --model mybook"
)]
struct Cli {
    /// Threads [default: all cores]: training and scoring (eval, validation) split their streams
    /// among them. Runs are bit-for-bit reproducible for a given seed, data and thread count.
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
    /// Measure how far back the gradient reaches (vanishing gradients): table and SVG chart.
    Gradflow(GradflowCmd),
    /// Overlay the training curves of one or more runs in one SVG chart.
    Plot(PlotCmd),
    /// Write an HTML page showing a text shaded by the model's surprisal, predictions on hover.
    Heatmap(HeatmapCmd),
    /// Show what a checkpoint holds: vocabulary, sizes, hyperparameters, training history.
    Info(InfoCmd),
    /// Generate text, streamed as it is produced.
    Sample(SampleCmd),
    /// The most likely next tokens after a prompt, or (--beam) the most probable continuations.
    Complete(CompleteCmd),
    /// Rank candidate completions of a prompt by probability (天空飞过一只 → 小鸟, 蜻蜓, 人, 坦克, 猪).
    Rank(RankCmd),
    /// An interactive session: type text, watch it continue; :help for commands.
    Repl(ReplCmd),
    /// The showcase: train on the bundled corpus (~30 s), sample in both languages, rank 天空飞过一只__.
    Demo(DemoCmd),
    /// Measure training tokens/s, sampling chars/s, scoring tokens/s and GEMM speed on this machine.
    Bench(BenchCmd),
}

#[derive(Args)]
#[command(
    long_about = "Measure elman's throughput on this machine: training tokens/s at the four reference \
shapes of the PyTorch peer (vocabulary 65, random tokens, Adam, clipping 5), batch-1 sampling chars/s, \
scoring tokens/s, and the fp32 GEMM rate with the share of it that training turns into useful work \
(6·(H² + H·V) FLOP per token). scripts/bench-vs-pytorch.sh runs this and the PyTorch peer interleaved \
and prints the ratios.\n\nExamples:\n  elman bench\n  elman bench --only train --shape 256,64,64 --seconds 5 --json"
)]
struct BenchCmd {
    /// Seconds to measure each item (after a warm-up).
    #[arg(long, default_value_t = 3.0, value_name = "S")]
    seconds: f64,
    /// Only these parts (train, sample, eval, gemm), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PARTS")]
    only: Vec<String>,
    /// Training shapes HIDDEN,BATCH,BPTT (repeatable) [default: the four reference shapes].
    #[arg(long, value_name = "H,B,T")]
    shape: Vec<String>,
    /// Vocabulary size of the measured models (the peer's reference is 65).
    #[arg(long, default_value_t = elman::bench::VOCAB, value_name = "V")]
    vocab: usize,
    /// Measure training with a sampled softmax of K negatives.
    #[arg(long, value_name = "K")]
    sampled_softmax: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// How to pick tokens (shared by sample and repl).
#[derive(Args, Clone)]
struct SamplingFlags {
    /// Softmax temperature: below 1 is safer, above 1 wilder, 0 always takes the most likely token.
    #[arg(
        long,
        short,
        default_value_t = 0.8,
        value_name = "T",
        allow_negative_numbers = true
    )]
    temperature: f64,
    /// Sample only from the K most likely tokens.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Sample only from the smallest set of tokens whose probability reaches P (nucleus sampling).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    top_p: Option<f64>,
    /// Random seed: the same seed gives the same text [default: random, printed with --json].
    #[arg(long)]
    seed: Option<u64>,
}

impl SamplingFlags {
    fn options(&self) -> Result<SampleOptions> {
        let o = SampleOptions {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
        };
        o.validate()?;
        Ok(o)
    }

    fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(rand::random)
    }
}

#[derive(Args)]
#[command(
    long_about = "Generate text with a trained model. The hidden state is first warmed up on the whole \
prompt; tokens are then drawn one by one and printed as they come. Ctrl-C stops.\n\n\
Examples:\n  elman sample --model checkpoints/elman-demo --prompt 天空中 --length 200\n  \
elman sample --model elman-demo --prompt \"The bird\" --temperature 0.5 --count 3 --seed 1\n  \
elman sample --model elman-demo --top-p 0.9 --json"
)]
struct SampleCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    /// Text to start from (any Unicode) [default: the start of a line].
    #[arg(long, short, default_value = "")]
    prompt: String,
    /// Read the prompt from a UTF-8 file instead (for long prompts; taken exactly as written).
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
    /// Tokens to generate per sample.
    #[arg(
        long,
        short,
        visible_alias = "max-tokens",
        default_value_t = 200,
        value_name = "N"
    )]
    length: usize,
    /// Number of samples.
    #[arg(long, short = 'n', default_value_t = 1, value_name = "N")]
    count: usize,
    #[command(flatten)]
    sampling: SamplingFlags,
    /// Print one JSON object (seed, settings, samples) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    long_about = "Show what a model expects after a prompt: the K most likely next tokens with their \
probabilities, or with --beam W the W most probable continuations found by beam search (each stops at a \
line break, sentence-final punctuation, or --max-tokens).\n\n\
Examples:\n  elman complete --model elman-demo --prompt 天空中飞过一只\n  \
elman complete --model elman-demo --prompt \"A bird flew\" --beam 5 --max-tokens 30 --json"
)]
struct CompleteCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    #[command(flatten)]
    prompt: PromptArgs,
    /// How many next tokens to show.
    #[arg(long, default_value_t = 10, value_name = "K")]
    top: usize,
    /// Beam width: search for the W most probable continuations.
    #[arg(long, value_name = "W")]
    beam: Option<usize>,
    /// Longest continuation for --beam, in tokens.
    #[arg(long, visible_alias = "length", default_value_t = 20, value_name = "N")]
    max_tokens: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    long_about = "Score candidate completions of a prompt. Each candidate is scored token by token \
from the same prompt state: its total log-probability (the probability of the whole candidate), the mean \
per token, and its probability normalised over the candidate set. Candidates may have different lengths.\n\n\
Example (the chapter's):\n  elman rank --model elman-demo --prompt 天空飞过一只 --candidates 小鸟,蜻蜓,人,坦克,猪"
)]
struct RankCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Comma-separated candidates (also ， or 、); spaces around them are trimmed.
    #[arg(
        long,
        short,
        value_name = "A,B,C",
        required_unless_present = "candidates_file"
    )]
    candidates: Option<String>,
    /// A file with one candidate per line.
    #[arg(long, value_name = "FILE", conflicts_with = "candidates")]
    candidates_file: Option<PathBuf>,
    /// Sort by total or mean per-token log-probability.
    #[arg(long, value_enum, default_value_t = RankBy::Total)]
    by: RankBy,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    long_about = "An interactive session with a model. Each line you type continues the running \
context (it carries over from line to line), shows the most likely next tokens and streams a completion. \
Commands: :temp T, :topk K, :topp P, :len N, :seed S, :rank a,b,c, :beam W, :next K, :reset, :show, \
:help, :quit. Ctrl-C cancels a generation, Ctrl-D leaves. With stdin piped, lines are read plainly.\n\n\
Example:\n  elman repl --model elman-demo"
)]
struct ReplCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    /// Tokens to generate after each line.
    #[arg(long, short, default_value_t = 100, value_name = "N")]
    length: usize,
    #[command(flatten)]
    sampling: SamplingFlags,
}

#[derive(Args)]
struct DemoCmd {
    /// The corpus to train on.
    #[arg(long, default_value = demo::DEMO_CORPUS, value_name = "FILE")]
    corpus: PathBuf,
    /// Where the demo model goes.
    #[arg(
        long,
        short,
        default_value = "checkpoints/elman-demo",
        value_name = "DIR"
    )]
    out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = demo::DEMO_STEPS, value_name = "N")]
    steps: u64,
    /// Skip training when the demo model is already there.
    #[arg(long)]
    reuse: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct TrainCmd {
    /// Text files or folders (UTF-8). With --resume, defaults to the files the run was started on.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Validation text of its own (files or folders), instead of the last --val-fraction of FILE;
    /// the vocabulary is built from both.
    #[arg(long = "val", value_name = "FILE")]
    val_files: Vec<PathBuf>,
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
    /// Word level: how text is cut into words. auto: jieba for text with Chinese, else words;
    /// words: spaces and punctuation (Chinese characters one by one); jieba: Chinese words by
    /// jieba, other text as words; spaces: whitespace only (WikiText) [default: auto].
    #[arg(long, value_enum, help_heading = "Vocabulary")]
    segmenter: Option<elman::vocab::Segmenter>,
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

    /// Train the decoder with a sampled softmax of K negatives per step instead of the full one
    /// (0 = full). Validation and every use of the model stay exact [default: 4096 for vocabularies
    /// of 20,000 tokens or more, else 0].
    #[arg(long, value_name = "K", help_heading = "Training")]
    sampled_softmax: Option<usize>,
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
    /// Lower the learning rate linearly to 0 over this session's budget (--steps, --time or
    /// --epochs, whichever ends first): usually a better final model for a fixed budget.
    #[arg(long, help_heading = "Training")]
    anneal: bool,
    /// Evaluations without improvement before the learning rate decays [default: 1].
    #[arg(long, value_name = "N", help_heading = "Training")]
    patience: Option<u32>,
    /// Dropout: while training, zero each unit of a layer's output with probability P on its way
    /// up (to the layer above and the decoder; never along the recurrence), scaling the rest by
    /// 1/(1 − P). Fights overfitting of big models on small texts (0.2–0.5 is usual); sampling,
    /// scoring and validation run the whole network [default: 0].
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    dropout: Option<f64>,
    /// Fraction of the text (its end) held out for validation [default: 0.1].
    #[arg(long, value_name = "F", help_heading = "Training")]
    val_fraction: Option<f64>,
    /// Evaluate and save every N steps [default: 200, more when scoring the validation text costs over a fifth of that training: a large vocabulary with the sampled softmax].
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
    /// Stop after this much training time in this session: 90s, 10m, 1h30m. The final validation
    /// runs after it (a minute at a 33k-word vocabulary), as benchmarks with a training budget expect.
    #[arg(long, value_name = "DURATION", value_parser = parse_time, help_heading = "Stopping (whichever comes first)")]
    time: Option<std::time::Duration>,

    /// No progress bar or evaluation lines.
    #[arg(long, short)]
    quiet: bool,
    /// Train through candle's autograd graph, step by step, instead of the fused BPTT path: much
    /// slower; the reference the fused path is tested against.
    #[arg(long)]
    reference: bool,
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
#[command(
    long_about = "Measure ‖∂loss(t)/∂s(t−k)‖, the gradient that back-propagation through time carries \
from the loss at position t to the hidden state k steps earlier, for k = 0..K, averaged over many \
positions of real text. The chapter's point: with the sigmoid σ′ ≤ 1/4, so the gradient shrinks about \
(1/4)^k (exactly: at least as fast as (‖W‖₂/4)^k); tanh and ReLU keep more of it.\n\n\
Measures a trained model (--model), fresh untrained ones (--compare, or --activation), or both; prints a \
table and writes an SVG chart with one curve per model and the bound for sigmoid.\n\n\
Examples:\n  elman gradflow --model checkpoints/elman-demo\n  \
elman gradflow --compare sigmoid,tanh,relu --hidden 128 --out gradflow.svg\n  \
elman gradflow --model elman-demo --compare sigmoid,tanh,relu --text corpora/elman-demo.txt\n  \
elman gradflow --activation sigmoid --w-norm 0.9        # ‖W‖₂ ≤ 1: under (1/4)^k"
)]
struct GradflowCmd {
    /// A trained checkpoint to measure (fresh models then share its vocabulary and size).
    #[arg(long, short, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Text to take positions from [default: the model's training files, or the bundled corpus].
    #[arg(long, value_name = "FILE")]
    text: Vec<PathBuf>,
    /// Also measure fresh, untrained models with these activations (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ACTS")]
    compare: Vec<Activation>,
    /// Measure a fresh model with this activation (the default without --model: sigmoid).
    #[arg(long, value_enum)]
    activation: Option<Activation>,
    /// Hidden size of fresh models [default: the model's, or 256].
    #[arg(long, value_name = "H")]
    hidden: Option<usize>,
    /// Seed of fresh models' weights.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Rescale fresh models' recurrent weight W to this spectral norm ‖W‖₂.
    #[arg(long, value_name = "X")]
    w_norm: Option<f64>,
    /// Largest number of steps back, K.
    #[arg(long, default_value_t = 30, value_name = "K")]
    max_k: usize,
    /// Positions of the text averaged over.
    #[arg(long, default_value_t = 500, value_name = "N")]
    positions: usize,
    /// Read at most this many tokens of the text.
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    max_tokens: usize,
    /// Where the chart goes.
    #[arg(long, short, default_value = "gradflow.svg", value_name = "FILE")]
    out: PathBuf,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(
    long_about = "Draw the training and validation loss of one or more runs against tokens seen, in one \
SVG chart (each training run also keeps its own loss.svg, refreshed at every evaluation).\n\n\
Example:\n  elman plot checkpoints/small checkpoints/big --out compare.svg"
)]
struct PlotCmd {
    /// Checkpoint folders (or names under checkpoints/).
    #[arg(value_name = "DIR", required = true)]
    runs: Vec<PathBuf>,
    /// Where the chart goes.
    #[arg(long, short, default_value = "loss.svg", value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args)]
#[command(
    long_about = "Write a self-contained HTML page showing a text as the model reads it: every token \
shaded by its surprisal −log₂ p (white: expected, red: surprising), the model's top predictions at that \
point on hover, and with --unit N one hidden unit's activation as a second view (as in Karpathy's \
char-rnn visualisations). Open the page in any browser; it needs no network.\n\n\
Examples:\n  elman heatmap --model checkpoints/elman-demo corpora/elman-demo.txt --max-tokens 2000\n  \
elman heatmap --model elman-demo story.txt --unit 17 --out story.html"
)]
struct HeatmapCmd {
    /// Checkpoint folder (or a name under checkpoints/).
    #[arg(long, short, value_name = "DIR")]
    model: PathBuf,
    /// The text to show (UTF-8 files or folders).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Where the page goes.
    #[arg(long, short, default_value = "heatmap.html", value_name = "FILE")]
    out: PathBuf,
    /// Also show this hidden unit's activation.
    #[arg(long, value_name = "N")]
    unit: Option<usize>,
    /// The layer of --unit, from 0 [default: the top layer].
    #[arg(long, value_name = "L", requires = "unit")]
    layer: Option<usize>,
    /// Predictions shown on hover.
    #[arg(long, default_value_t = 5, value_name = "K")]
    top: usize,
    /// Show at most the first N tokens of the text.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_tokens: usize,
    /// Print a JSON summary (tokens, nats/token, bits/char) instead of text.
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

/// A prompt that must be given, on the command line or in a file (complete, rank).
#[derive(Args)]
struct PromptArgs {
    /// The text to continue (any Unicode).
    #[arg(long, short, required_unless_present = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from a UTF-8 file instead (for long prompts; taken exactly as written).
    #[arg(long, value_name = "FILE", conflicts_with = "prompt")]
    prompt_file: Option<PathBuf>,
}

/// The prompt from `--prompt` or `--prompt-file`.
fn prompt_text(prompt: Option<String>, file: &Option<PathBuf>) -> Result<String> {
    match file {
        Some(f) => {
            let bytes = std::fs::read(f).map_err(|e| elman::corpus::file_error(f, &e))?;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match cli.threads {
        Some(0) => {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(2);
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // candle (validation scoring, the reference path) sizes its thread pool from this variable; at
    // elman's matrix sizes one thread was measured faster than two. Set before any maths runs.
    std::env::set_var("RAYON_NUM_THREADS", "1");
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
                val_files: c.val_files,
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
                    segmenter: c.segmenter,
                    sampled_softmax: c.sampled_softmax,
                    anneal: c.anneal,
                    dropout: c.dropout,
                },
                epochs: c.epochs,
                steps: c.steps,
                time: c.time,
                threads,
                quiet: c.quiet,
                reference: c.reference,
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
            let r = eval::eval_files(&loaded, &c.files, c.streams, threads)?;
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
        Command::Sample(mut c) => {
            c.prompt = prompt_text(Some(c.prompt), &c.prompt_file)?;
            let opts = c.sampling.options()?;
            let seed = c.sampling.seed();
            let loaded = checkpoint::load(&c.model, &candle_core::Device::Cpu)?;
            let engine = Engine::new(&loaded.model)?;
            let vocab = &loaded.vocab;
            let prompt = generate::encode_prompt(vocab, &c.prompt, "--prompt")?;
            for w in &prompt.warnings {
                eprintln!("warning: {w}");
            }
            let start = generate::warm_up(&engine, vocab, &prompt.ids)?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            repl::CANCEL.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = ctrlc::set_handler(|| {
                repl::CANCEL.store(true, std::sync::atomic::Ordering::SeqCst)
            });
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut samples = Vec::new();
            for i in 0..c.count {
                if !c.json {
                    if i > 0 {
                        writeln!(out, "\n---")?;
                    }
                    write!(out, "{}", c.prompt)?;
                }
                let mut st = start.clone();
                let mut detok = Detokenizer::new(&c.prompt);
                let mut text = String::new();
                generate::generate(&engine, &mut st, c.length, &opts, &mut rng, |x| {
                    let piece = detok.piece(vocab, x);
                    if !c.json {
                        let _ = write!(out, "{piece}");
                        let _ = out.flush();
                    }
                    text.push_str(&piece);
                    !repl::CANCEL.load(std::sync::atomic::Ordering::SeqCst)
                });
                let tail = detok.finish(vocab);
                if !c.json {
                    write!(out, "{tail}")?;
                }
                text.push_str(&tail);
                samples.push(text);
                if repl::CANCEL.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
            if c.json {
                let v = serde_json::json!({
                    "model": loaded.dir.display().to_string(),
                    "prompt": c.prompt,
                    "seed": seed,
                    "length": c.length,
                    "temperature": opts.temperature,
                    "top_k": opts.top_k,
                    "top_p": opts.top_p,
                    "samples": samples,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(out)?;
            }
            if repl::CANCEL.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(ExitCode::from(130));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Complete(c) => {
            let prompt_str = prompt_text(c.prompt.prompt, &c.prompt.prompt_file)?;
            let loaded = checkpoint::load(&c.model, &candle_core::Device::Cpu)?;
            let engine = Engine::new(&loaded.model)?;
            let vocab = &loaded.vocab;
            let prompt = generate::encode_prompt(vocab, &prompt_str, "--prompt")?;
            for w in &prompt.warnings {
                eprintln!("warning: {w}");
            }
            let st = generate::warm_up(&engine, vocab, &prompt.ids)?;
            if let Some(w) = c.beam {
                if w == 0 || c.max_tokens == 0 {
                    anyhow::bail!("--beam and --max-tokens must be at least 1");
                }
                let beams = generate::beam_search(&engine, vocab, &st, w, c.max_tokens);
                if c.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"prompt": prompt_str, "beam": w, "continuations": beams})
                        )?
                    );
                } else {
                    print!("{}", report::beam_table(&prompt_str, &beams));
                }
            } else {
                let next = generate::top_next(&engine, vocab, &st, c.top.max(1));
                if c.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"prompt": prompt_str, "next": next})
                        )?
                    );
                } else {
                    print!("{}", report::next_table(&prompt_str, &next));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rank(c) => {
            let prompt_str = prompt_text(c.prompt.prompt.clone(), &c.prompt.prompt_file)?;
            let cands: Vec<String> = match (&c.candidates, &c.candidates_file) {
                (Some(s), _) => generate::split_candidates(s),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| elman::corpus::file_error(f, &e))?
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect(),
                (None, None) => unreachable!("clap requires one"),
            };
            let loaded = checkpoint::load(&c.model, &candle_core::Device::Cpu)?;
            let engine = Engine::new(&loaded.model)?;
            let vocab = &loaded.vocab;
            let prompt = generate::encode_prompt(vocab, &prompt_str, "--prompt")?;
            for w in &prompt.warnings {
                eprintln!("warning: {w}");
            }
            let st = generate::warm_up(&engine, vocab, &prompt.ids)?;
            let ranked = generate::rank(&engine, vocab, &st, &cands, c.by)?;
            for r in &ranked {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
            }
            if c.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "prompt": prompt_str, "sorted_by": c.by, "candidates": ranked
                    }))?
                );
            } else {
                print!("{}", report::rank_table(&prompt_str, &ranked, c.by));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Repl(c) => {
            let opts = c.sampling.options()?;
            let loaded = checkpoint::load(&c.model, &candle_core::Device::Cpu)?;
            let engine = Engine::new(&loaded.model)?;
            repl::run(
                &engine,
                &loaded.vocab,
                repl::Settings {
                    sample: opts,
                    length: c.length,
                    seed: c.sampling.seed(),
                    next: 5,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(c) => {
            train::install_ctrlc_handler();
            let args = demo::DemoArgs {
                corpus: c.corpus,
                out: c.out,
                steps: c.steps,
                reuse: c.reuse,
                threads,
                quiet: c.quiet,
            };
            demo::run(&args, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(c) => {
            if !(c.seconds.is_finite() && c.seconds > 0.0) {
                anyhow::bail!("--seconds must be a positive number");
            }
            let want = |p: &str| c.only.is_empty() || c.only.iter().any(|x| x == p);
            for p in &c.only {
                if !["train", "sample", "eval", "gemm"].contains(&p.as_str()) {
                    anyhow::bail!("--only {p}: expected train, sample, eval or gemm");
                }
            }
            let shapes = if c.shape.is_empty() {
                elman::bench::TRAIN_SHAPES.to_vec()
            } else {
                c.shape
                    .iter()
                    .map(|s| {
                        let v: Vec<usize> =
                            s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                        match v.as_slice() {
                            [h, b, t] if *h > 0 && *b > 0 && *t > 0 && *h <= 4096 => {
                                Ok((*h, *b, *t))
                            }
                            _ => Err(anyhow::anyhow!(
                                "--shape {s:?}: expected HIDDEN,BATCH,BPTT, e.g. 256,64,64"
                            )),
                        }
                    })
                    .collect::<Result<_>>()?
            };
            if c.vocab < 2 || c.vocab > elman::model::MAX_VOCAB {
                anyhow::bail!(
                    "--vocab {} is out of range 2..={}",
                    c.vocab,
                    elman::model::MAX_VOCAB
                );
            }
            if c.sampled_softmax
                .is_some_and(|k| k == 0 || k >= c.vocab / 2)
            {
                anyhow::bail!("--sampled-softmax must be between 1 and half the vocabulary");
            }
            let args = elman::bench::BenchArgs {
                threads,
                vocab: c.vocab,
                samples: c.sampled_softmax,
                seconds: c.seconds,
                shapes: if want("train") { shapes } else { Vec::new() },
                sample: want("sample"),
                eval: want("eval"),
                gemm: want("gemm"),
            };
            let quiet = c.json;
            let r = elman::bench::run(&args, |what| {
                if !quiet {
                    eprintln!("measuring {what} …");
                }
            })?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", elman::bench::render(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gradflow(c) => {
            let mut fresh = c.compare.clone();
            if let Some(a) = c.activation {
                if !fresh.contains(&a) {
                    fresh.push(a);
                }
            }
            if fresh.is_empty() && c.model.is_none() {
                fresh.push(Activation::Sigmoid);
            }
            if c.max_k == 0 {
                anyhow::bail!("--max-k must be at least 1");
            }
            let req = elman::gradflow::Request {
                model: c.model,
                text: c.text,
                fresh,
                hidden: c.hidden,
                seed: c.seed,
                w_norm: c.w_norm,
                options: elman::gradflow::Options {
                    max_k: c.max_k,
                    positions: c.positions,
                },
                max_tokens: c.max_tokens,
            };
            let r = elman::gradflow::run(&req)?;
            let name = r.text.join(", ");
            let svg = elman::plot::svg(&elman::gradflow::chart(&r.curves, &name))?;
            checkpoint::write_atomic(&c.out, svg.as_bytes())?;
            if c.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "mean ‖∂loss(t)/∂s(t−k)‖ over {} positions of {name} ({} tokens)",
                    r.curves.first().map_or(0, |c| c.positions),
                    r.tokens
                );
                print!("{}", elman::gradflow::table(&r.curves));
                println!("chart written to {}", c.out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plot(c) => {
            let mut runs = Vec::new();
            for r in &c.runs {
                let dir = checkpoint::resolve_dir(r);
                checkpoint::read_config(&dir)?;
                let metrics = checkpoint::read_metrics(&dir)?;
                if metrics.is_empty() {
                    anyhow::bail!(
                        "{}: no evaluations yet, nothing to plot (train longer than --eval-every steps)",
                        dir.display()
                    );
                }
                let name = dir
                    .file_name()
                    .map_or(dir.display().to_string(), |n| n.to_string_lossy().into());
                runs.push((name, metrics));
            }
            let svg = elman::plot::svg(&elman::plot::loss_chart(&runs))?;
            checkpoint::write_atomic(&c.out, svg.as_bytes())?;
            println!("chart written to {}", c.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Heatmap(c) => {
            if c.max_tokens < 2 {
                anyhow::bail!("--max-tokens must be at least 2");
            }
            let loaded = checkpoint::load(&c.model, &candle_core::Device::Cpu)?;
            let engine = Engine::new(&loaded.model)?;
            let corpus = elman::corpus::Corpus::read(&c.files)?;
            let text_name = corpus
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let h = elman::heatmap::analyse(
                &engine,
                &loaded.vocab,
                &corpus.text,
                elman::heatmap::Options {
                    unit: c.unit,
                    layer: c.layer,
                    top: c.top,
                    max_tokens: c.max_tokens,
                },
                &loaded.dir.display().to_string(),
                &text_name,
            )
            .map_err(|e| {
                elman::corpus::unknown_char_error(&corpus.files, &loaded.vocab)
                    .unwrap_or_else(|| anyhow::anyhow!("{text_name}: {e}"))
            })?;
            checkpoint::write_atomic(&c.out, elman::heatmap::page(&h)?.as_bytes())?;
            if c.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "out": c.out.display().to_string(),
                        "tokens": h.tokens.len(),
                        "predicted": h.predicted,
                        "nats_per_token": h.nats_per_token,
                        "bits_per_char": h.bits_per_char,
                        "truncated": h.truncated,
                    }))?
                );
            } else {
                if h.truncated {
                    eprintln!(
                        "note: the page shows the first {} tokens of the text (--max-tokens)",
                        h.tokens.len()
                    );
                }
                println!(
                    "{} tokens, {:.4} nats/token, {:.4} bits/char; page written to {}",
                    h.tokens.len(),
                    h.nats_per_token,
                    h.bits_per_char,
                    c.out.display()
                );
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
