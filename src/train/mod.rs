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
mod interrupt;
mod options;
mod schedule;
mod session;
mod setup;
mod stepper;

pub use interrupt::{install_ctrlc_handler, INTERRUPTED};
pub use options::{
    check_hyper, Hyper, TrainArgs, DEFAULT_BATCH, DEFAULT_BPTT, DEFAULT_CLIP, DEFAULT_EPOCHS,
    DEFAULT_EVAL_EVERY, DEFAULT_SAMPLES, SAMPLED_SOFTMAX_FROM,
};
pub use schedule::{
    default_eval_every, default_val_tokens, parse_duration, training_flops_per_token,
};
pub use session::Outcome;
pub use stepper::{Backend, StepResult, Stepper};

use crate::runtime::Runtime;
use anyhow::Result;
use session::Session;

/// Runs (or resumes) a training session on `rt`'s device and threads.
pub fn train(args: &TrainArgs, rt: &Runtime) -> Result<Outcome> {
    // Refused before any text is read.
    if args.reference && rt.window_device.as_ref().is_some_and(|d| !d.is_cpu()) {
        anyhow::bail!("--reference runs candle's per-step graph on the CPU, the reference the other paths are held to; leave out --device cuda or --reference");
    }
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
