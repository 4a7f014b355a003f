//! Stage 4 — checkpoints: what a training run leaves behind, and loading it back.
//!
//! A checkpoint is a folder:
//! - `model.safetensors` — the best-validation weights, PyTorch names (see `model.rs`);
//! - `config.json` — format version, vocabulary, every hyperparameter, corpus name and hash, progress;
//! - `tokenizer.json` — the vocabulary as a standard HF tokenizer;
//! - `metrics.jsonl` — one line per evaluation;
//! - `loss.svg` — those lines as a chart (train and validation loss against tokens seen);
//! - `state.safetensors` — the latest weights, optimizer moments, hidden state and loop position,
//!   everything `--resume` needs to continue exactly.
//!
//! Invariant: the folder is replaced as a whole. A new version is written into a sibling staging
//! folder (each file itself via temp file + fsync + rename), then swapped in with one atomic
//! `renameat2(RENAME_EXCHANGE)`. A `kill -9` at any instant leaves either the old or the new
//! folder, never a mix.
//!
//! The files, in the order they build on each other: `format.rs` (the folder's file names and
//! `config.json`'s types), `load.rs` (reading a folder back, every file checked before use),
//! `save.rs` (the streamed tensor files, the resume state — its one writer and reader — and the
//! atomic folder swap). This file only gathers them.

mod format;
mod load;
mod save;

pub use format::*;
pub use load::*;
pub use save::*;
