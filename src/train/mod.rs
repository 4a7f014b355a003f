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
//!
//! A run reads top to bottom in [`train`]: configure it ([`setup`]: fresh, or resumed from a
//! checkpoint), open a [`session`] (model, optimizer, loop position), then step window by window
//! ([`stepper`]), evaluating and saving every `eval_every` steps, until a stopping rule
//! ([`schedule`]) or Ctrl-C ends it with a last evaluation and save.

pub mod defaults;
mod schedule;
mod session;
mod setup;
mod stepper;

pub use schedule::{default_eval_every, parse_duration, training_flops_per_token};
pub use setup::{
    check_hyper, Hyper, DEFAULT_BATCH, DEFAULT_BPTT, DEFAULT_CLIP, DEFAULT_EPOCHS,
    DEFAULT_EVAL_EVERY, DEFAULT_SAMPLES, SAMPLED_SOFTMAX_FROM,
};
pub use stepper::{StepResult, Stepper};

use crate::runtime::Runtime;
use anyhow::Result;
use session::Session;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Everything `elman train` takes.
#[derive(Debug, Clone, Default)]
pub struct TrainArgs {
    pub files: Vec<PathBuf>,
    /// Validation text of its own (instead of the last --val-fraction of `files`).
    pub val_files: Vec<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// Fine-tune: a new run from this checkpoint's weights and vocabulary.
    pub init_from: Option<PathBuf>,
    pub force: bool,
    pub hyper: Hyper,
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub time: Option<Duration>,
    pub quiet: bool,
    /// Train through candle's autograd graph instead of the fused BPTT path (slower; the
    /// reference the fused path is tested against).
    pub reference: bool,
    /// Recorded as the checkpoint's `made_by` (the demo marks its model, so that it never
    /// replaces one it did not make).
    pub made_by: Option<String>,
}

impl TrainArgs {
    /// No stopping option given: the session then runs to `DEFAULT_EPOCHS`.
    pub fn no_budget(&self) -> bool {
        self.epochs.is_none() && self.steps.is_none() && self.time.is_none()
    }

    /// The epoch limit of this session: `--epochs`, or the default when nothing else stops it.
    pub fn epochs_or_default(&self) -> Option<u64> {
        self.epochs
            .or((self.steps.is_none() && self.time.is_none()).then_some(DEFAULT_EPOCHS))
    }
}

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

/// Runs (or resumes) a training session on `rt`'s device and threads.
pub fn train(args: &TrainArgs, rt: &Runtime) -> Result<Outcome> {
    let run = match (&args.resume, &args.init_from) {
        (Some(dir), _) => setup::resumed(args, dir)?,
        (None, Some(from)) => setup::initialized(args, from)?,
        (None, None) => setup::fresh(args)?,
    };
    let resuming = run.resuming;
    let mut session = Session::open(run, args, rt)?;
    if resuming {
        // A resumed run with nothing left to do leaves its checkpoint as it is, and says so and
        // which option extends it.
        if let Some(why) = session.stop_reason().filter(|&w| w != "interrupted") {
            return Ok(session.nothing_left(why));
        }
    }
    let stopped = loop {
        if let Some(why) = session.stop_reason() {
            break why;
        }
        session.step()?;
        if session.eval_due() {
            session.evaluate_and_save()?;
        }
    };
    session.finish(stopped)
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
