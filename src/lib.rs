//! elman — Elman recurrent neural-network language models, after chapter 13 of the book
//! (`s(t) = σ(U x(t) + W s(t−1) + b)`, `y(t) = softmax(V s(t) + c)`, trained by BPTT).
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! [`corpus`] (text files) → [`vocab`] (token ids; [`words`] cuts word-level lines) → [`model`] (the network) → [`train`]
//! (truncated BPTT with [`optim`]) → [`checkpoint`] (the folder on disk) → [`eval`] (scoring).

pub mod bench;
pub mod cell;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod demo;
pub mod eval;
pub mod fused;
pub mod generate;
pub mod gradflow;
pub mod heatmap;
pub mod infer;
pub mod info;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod plot;
pub mod progress;
pub mod repl;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod stochastic;
pub mod train;
pub mod vocab;
pub mod words;
