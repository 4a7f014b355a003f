//! Ctrl-C during training: the loop finishes its step, saves and returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set by Ctrl-C; the loop finishes its step, saves and returns.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Routes Ctrl-C to [`INTERRUPTED`]; a second Ctrl-C exits at once (the checkpoint folder is
/// swapped atomically, so that is safe too).
pub fn install_ctrlc_handler() {
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let _ = ctrlc::set_handler(move || {
        if hits.fetch_add(1, Ordering::SeqCst) > 0 {
            crate::note!("\ninterrupted twice: exiting now");
            std::process::exit(130);
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
}
