//! elman — Elman recurrent neural-network language models, after chapter 13 of the book
//! (`s(t) = σ(U x(t) + W s(t−1) + b)`, `y(t) = softmax(V s(t) + c)`, trained by BPTT).
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md, which also gives the stairs imports
//! run down): [`corpus`] (text files) → [`vocab`] (token ids; [`words`] cuts word-level lines) →
//! [`config`] and [`cell`] (what the network is) → [`model`] (the network on candle's graph, the
//! reference), [`fused`] (the fused CPU window training and scoring run) and [`infer`] (batch 1) →
//! [`train`] (truncated BPTT with [`optim`]) → [`checkpoint`] (the folder on disk) → [`eval`]
//! (scoring) and [`generate`] (sampling, completion, ranking). [`kernels`] hold every hot loop;
//! [`runtime`] is the device; only [`cli`] knows the command line.

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
pub mod tokens;
pub mod train;
pub mod vocab;
pub mod words;
