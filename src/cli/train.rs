//! `elman train`'s options as clap reads them, and their conversion to the library's
//! [`TrainArgs`](crate::train::TrainArgs) at this edge.

use crate::cell::{Activation, CellKind};
use crate::checkpoint::Schedule;
use crate::optim::OptimizerKind;
use crate::train::{self, Hyper};
use crate::vocab::{Level, Segmenter};
use clap::Args;
use std::path::PathBuf;

/// `elman train`'s model and training options, as clap reads them: [`Hyper`] with its help and
/// defaults (`None`: the default for a new run, "keep" when resuming).
#[derive(Debug, Clone, Default, Args)]
pub struct HyperArgs {
    /// Token level: one token per character, or words and punctuation [default: char].
    #[arg(long, value_enum, help_heading = "Vocabulary")]
    pub level: Option<Level>,
    /// Word level: how text is cut into words. auto: jieba for text with Chinese, else words;
    /// words: spaces and punctuation (Chinese characters one by one); jieba: Chinese words by
    /// jieba, other text as words; spaces: whitespace only (WikiText) [default: auto].
    #[arg(long, value_enum, help_heading = "Vocabulary")]
    pub segmenter: Option<Segmenter>,
    /// Normalise the text to Unicode NFC first.
    #[arg(long, help_heading = "Vocabulary")]
    pub nfc: bool,
    /// Keep only the N most frequent tokens (special tokens included); the rest become <unk>.
    #[arg(long, value_name = "N", help_heading = "Vocabulary")]
    pub max_vocab: Option<usize>,
    /// Tokens seen fewer than N times become <unk> [default: 1; 2 when the text has more than 256
    /// distinct tokens and --max-vocab is not given, so that <unk> is trained on the rare ones].
    #[arg(long, value_name = "N", help_heading = "Vocabulary")]
    pub min_count: Option<u64>,

    /// The recurrent cell: elman (the chapter's network, PyTorch's nn.RNN), lstm (nn.LSTM) or gru
    /// (nn.GRU). The gated cells carry information further back (the chapter's answer to
    /// vanishing gradients) at 4× and 3× the recurrence's cost per step [default: elman].
    #[arg(long, value_enum, help_heading = "Model")]
    pub cell: Option<CellKind>,
    /// Hidden units per layer [default: 512 for the Elman cell at char level on a vocabulary of at
    /// most 256 tokens (an alphabet: the decoder is cheap, so the recurrence can be wide; with
    /// --time, 768 when the budget still reads the text 20 times at that width), else 256].
    #[arg(long, value_name = "H", help_heading = "Model")]
    pub hidden: Option<usize>,
    /// Read the input as an embedding of E units (PyTorch's nn.Embedding, `encoder.weight`) that
    /// feeds the first layer through its input weights: every step trains the shared input
    /// weights, where the one-hot U trains only the rows of the tokens it saw, so a model learns
    /// more per token [default: 64 on a vocabulary of at most 256 tokens; on a larger one (Chinese
    /// characters, words) the hidden size, tied to the decoder, except characters that the budget
    /// will read 100 times or more: half the hidden size, untied].
    #[arg(
        long,
        value_name = "E",
        help_heading = "Model",
        conflicts_with = "one_hot"
    )]
    pub embed: Option<usize>,
    /// Share the decoder's weights with the input embedding (word_language_model's --tied): one
    /// V×H matrix reads tokens in and scores them out. Implies --embed equal to --hidden
    /// [default: on at word level, and on more than 256 characters read fewer than 100 times].
    #[arg(long, help_heading = "Model", conflicts_with = "one_hot")]
    pub tie: bool,
    /// The book's model: x(t) one-hot, Uᵀx(t) a column of U (no embedding; PyTorch's nn.RNN alone).
    #[arg(long, help_heading = "Model")]
    pub one_hot: bool,
    /// Stacked recurrent layers [default: 1].
    #[arg(long, value_name = "L", help_heading = "Model")]
    pub layers: Option<usize>,
    /// The Elman cell's nonlinearity σ: tanh, or the book's sigmoid, or relu [default: tanh].
    #[arg(long, value_enum, help_heading = "Model")]
    pub activation: Option<Activation>,

    /// Train the decoder with a sampled softmax of K negatives per step instead of the full one
    /// (0 = full). Validation and every use of the model stay exact [default: 4096 for vocabularies
    /// of 20,000 tokens or more, else 0].
    #[arg(long, value_name = "K", help_heading = "Training")]
    pub sampled_softmax: Option<usize>,
    /// Parallel streams the text is cut into (the batch size) [default: 32].
    #[arg(long, value_name = "B", help_heading = "Training")]
    pub batch: Option<usize>,
    /// Steps of back-propagation through time per window [default: 64].
    #[arg(long, value_name = "T", help_heading = "Training")]
    pub bptt: Option<usize>,
    /// adam, adagrad or sgd [default: adam].
    #[arg(long, value_enum, help_heading = "Training")]
    pub optimizer: Option<OptimizerKind>,
    /// Learning rate [default: adam 0.003 (0.002 with --schedule plateau), adagrad 0.05, sgd 1.0].
    #[arg(
        long,
        value_name = "LR",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub lr: Option<f64>,
    /// Clip the global gradient norm to this (0 = off) [default: 5].
    #[arg(
        long,
        value_name = "NORM",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub clip: Option<f64>,
    /// How the learning rate moves: linear falls from --lr to 0 over the run's budget (--time,
    /// --steps or --epochs, whichever ends first), so a run of any length ends settled; plateau
    /// keeps --lr and multiplies it by --lr-decay after --patience evaluations without improvement
    /// (elman's rule before 0.9; on a small text it halves the rate at every evaluation once the
    /// model starts to overfit) [default: linear].
    #[arg(long, value_enum, value_name = "S", help_heading = "Training")]
    pub schedule: Option<Schedule>,
    /// The same as --schedule linear (kept for older scripts).
    #[arg(long, hide = true, conflicts_with = "schedule")]
    pub anneal: bool,
    /// --schedule plateau: multiply the learning rate by this when validation stops improving
    /// [default: 0.5].
    #[arg(long, value_name = "F", help_heading = "Training")]
    pub lr_decay: Option<f64>,
    /// --schedule plateau: evaluations without improvement before the learning rate decays
    /// [default: 1].
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub patience: Option<u32>,
    /// Dropout: while training, zero each unit of a layer's output with probability P on its way
    /// up (to the layer above and the decoder; never along the recurrence), scaling the rest by
    /// 1/(1 − P). Fights overfitting of big models on small texts (0.2–0.5 is usual); sampling,
    /// scoring and validation run the whole network [default: by how many times the budget will
    /// read the text: on an alphabet 0 below 20 readings, 0.2 up to 100, 0.3 beyond (--cell lstm
    /// or gru: 0 below 20, 0.5 beyond); on more characters or words 0 below 10, 0.5 beyond].
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub dropout: Option<f64>,
    /// Decoupled weight decay λ (AdamW's, as AWD-LSTM regularises with): every update first
    /// shrinks each weight by lr·λ of itself, apart from its gradient's step [default: 0].
    #[arg(
        long,
        value_name = "W",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub weight_decay: Option<f64>,
    /// Variational dropout (AWD-LSTM's LockedDropout): draw --dropout's mask once per window and
    /// stream and keep it at every time step, so a unit is dropped for the whole sequence.
    #[arg(long, help_heading = "Training")]
    pub locked_dropout: bool,
    /// DropConnect on the recurrent weights (AWD-LSTM's WeightDrop): each weight of every layer's
    /// W_hh is dropped with probability P for a whole window, the same for every stream and time
    /// step, and the rest scaled by 1/(1 − P); regularises the recurrence itself (0.2–0.5 is
    /// usual) [default: 0].
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub weight_drop: Option<f64>,
    /// Embedding dropout (AWD-LSTM's): each token of the vocabulary is dropped from a window's
    /// input with probability P (every place it is read gets only the bias), the rest scaled by
    /// 1/(1 − P), so the model cannot lean on one token's embedding (0.1 is usual) [default: 0].
    #[arg(
        long,
        value_name = "P",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub embed_dropout: Option<f64>,
    /// Validate and save an exponential moving average of the weights with decay B (0.999 is
    /// usual: about the last thousand steps) instead of the latest ones; training goes on from the
    /// latest, and a resumed run keeps the average exactly [default: 0.999 when the budget reads
    /// the text 15 times or more, else 0 (off)].
    #[arg(
        long,
        value_name = "B",
        allow_negative_numbers = true,
        help_heading = "Training"
    )]
    pub average: Option<f64>,
    /// Fraction of the text (its end) held out for validation [default: 0.1].
    #[arg(long, value_name = "F", help_heading = "Training")]
    pub val_fraction: Option<f64>,
    /// Validation tokens scored at each evaluation: the first N of the validation text, 0 for all
    /// of it [default: as many as cost a fifth of 2,000 training steps: 2.5 million at char level
    /// with the default batch and bptt, so a big text is evaluated at least every 2,000 steps].
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub val_tokens: Option<usize>,
    /// Evaluate and save every N steps [default: 200, more when scoring the validation text costs over a fifth of that training: a large vocabulary with the sampled softmax].
    #[arg(long, value_name = "N", help_heading = "Training")]
    pub eval_every: Option<u64>,
    /// Random seed (initial weights, epoch offsets) [default: 1234].
    #[arg(long, help_heading = "Training")]
    pub seed: Option<u64>,
}

impl From<HyperArgs> for Hyper {
    fn from(a: HyperArgs) -> Hyper {
        Hyper {
            level: a.level,
            segmenter: a.segmenter,
            nfc: a.nfc,
            max_vocab: a.max_vocab,
            min_count: a.min_count,
            cell: a.cell,
            hidden: a.hidden,
            embed: a.embed,
            tie: a.tie,
            one_hot: a.one_hot,
            layers: a.layers,
            activation: a.activation,
            sampled_softmax: a.sampled_softmax,
            batch: a.batch,
            bptt: a.bptt,
            optimizer: a.optimizer,
            lr: a.lr,
            clip: a.clip,
            schedule: a.schedule,
            anneal: a.anneal,
            lr_decay: a.lr_decay,
            patience: a.patience,
            dropout: a.dropout,
            weight_decay: a.weight_decay,
            locked_dropout: a.locked_dropout,
            weight_drop: a.weight_drop,
            embed_dropout: a.embed_dropout,
            average: a.average,
            val_fraction: a.val_fraction,
            eval_every: a.eval_every,
            val_tokens: a.val_tokens,
            seed: a.seed,
        }
    }
}

#[derive(Args)]
pub struct TrainCmd {
    /// Text files or folders (UTF-8). With --resume, defaults to the files the run was started on.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Validation text of its own (files or folders), instead of the last --val-fraction of FILE;
    /// the vocabulary is built from both.
    #[arg(long = "val", value_name = "FILE")]
    pub val_files: Vec<PathBuf>,
    /// Checkpoint folder to write [default: checkpoints/<name of the first file>].
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run saved in DIR exactly where it stopped (weights, optimizer, data position,
    /// learning rate) and finish its own budget. Options equal to the run's own may be repeated;
    /// --epochs, --steps or --time given here replace the budget (an extension: under --schedule
    /// linear the rate goes on from where it was and falls to 0 at the new end).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "force", "init_from"])]
    pub resume: Option<PathBuf>,
    /// Fine-tune: start a new run on FILE from the weights and vocabulary of the checkpoint in DIR
    /// (its model is kept; training settings are the checkpoint's unless given, the optimizer
    /// starts afresh). A character model's vocabulary grows by FILE's new characters (rows that
    /// start as <unk>'s, or fresh ones); words it lacks are read as <unk>.
    #[arg(long, value_name = "DIR")]
    pub init_from: Option<PathBuf>,
    /// With --init-from: keep the checkpoint's vocabulary as it is; characters it lacks become
    /// <unk> (a model without one refuses them).
    #[arg(long, requires = "init_from")]
    pub keep_vocab: bool,
    /// Replace an existing checkpoint at --out.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub hyper: HyperArgs,

    /// Stop after N epochs [default: 10 when neither --steps nor --time is given].
    #[arg(
        long,
        value_name = "N",
        help_heading = "Stopping (whichever comes first)"
    )]
    pub epochs: Option<u64>,
    /// Stop when the run reaches N steps in total (a resumed run counts its earlier ones).
    #[arg(
        long,
        value_name = "N",
        help_heading = "Stopping (whichever comes first)"
    )]
    pub steps: Option<u64>,
    /// Stop after this much training time in the whole run (a resumed run counts its earlier
    /// sessions): 90s, 10m, 1h30m. The final validation runs after it (a minute at a 33k-word
    /// vocabulary), as benchmarks with a training budget expect.
    #[arg(long, value_name = "DURATION", value_parser = parse_time, help_heading = "Stopping (whichever comes first)")]
    pub time: Option<std::time::Duration>,

    /// Where the token files of texts of 16 MiB or more are kept: the text encoded once, reused
    /// by later runs on the same text and settings and by --resume, read through a memory map so
    /// the text never has to fit in memory. Naming a folder caches every text [default:
    /// $ELMAN_CACHE_DIR, else $XDG_CACHE_HOME/elman, else ~/.cache/elman].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// No progress bar or evaluation lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Train through candle's autograd graph, step by step, instead of the fused BPTT path: much
    /// slower; the reference the fused path is tested against.
    #[arg(long)]
    pub reference: bool,
}

pub fn parse_time(s: &str) -> Result<std::time::Duration, String> {
    train::parse_duration(s).map_err(|e| e.to_string())
}

impl TrainCmd {
    /// What `train::train` takes (the model and training settings pass as they are).
    pub fn into_args(self) -> train::TrainArgs {
        train::TrainArgs {
            files: self.files,
            val_files: self.val_files,
            out: self.out,
            resume: self.resume,
            init_from: self.init_from,
            keep_vocab: self.keep_vocab,
            force: self.force,
            hyper: self.hyper.into(),
            epochs: self.epochs,
            steps: self.steps,
            time: self.time,
            quiet: self.quiet,
            reference: self.reference,
            made_by: None,
            cache_dir: self.cache_dir,
        }
    }
}
