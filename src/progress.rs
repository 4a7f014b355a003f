//! Progress bars for long work (scoring a big text, a heatmap, gradflow): drawn on a terminal's
//! standard error, never when it is piped or the user asked for quiet, so scripts see only results.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// `eprintln!` that cannot panic: with standard error closed (`elman … 2>&1 | head`) the line is
/// dropped and the work goes on (a panic there lost a training run's final save). Every status
/// line of the library and the binary goes through it (`crate::note!`, `elman::note!`).
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// A bar over a known amount of work, or nothing (piped, `--quiet`, `--json`).
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar of `total` units labelled `what` (e.g. "scoring"), when standard error is a
    /// terminal and `quiet` is false.
    pub fn new(total: u64, what: &str, quiet: bool) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(&format!(
                "{what} [{{bar:28.cyan/blue}}] {{percent}}% {{human_pos}}/{{human_len}} tokens, ETA {{eta}}"
            ))
            .expect("template")
            .progress_chars("=> "),
        );
        Bar(Some(pb))
    }

    /// No bar at all.
    pub fn hidden() -> Bar {
        Bar(None)
    }

    pub fn inc(&self, n: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(n);
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
