//! Where elman runs: the device and the number of threads, chosen once (by `main` from
//! `--threads`) and passed down to every stage that computes.
//!
//! Only the CPU is supported today; the device travels with the threads so that a later GPU path
//! has one place to be chosen in. How a fused window uses its threads is decided from these by
//! `fast` (one share of streams per thread, helpers for a single scored stream); scoring many
//! streams by `eval::score` (groups per thread).

use anyhow::{bail, Result};
use candle_core::Device;
use std::sync::OnceLock;

/// The device and the threads every computing stage uses.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub device: Device,
    /// Threads training and scoring split their streams over; runs are bit-for-bit reproducible
    /// for a given seed, data and thread count.
    pub threads: usize,
}

impl Runtime {
    /// The CPU with `threads` threads (`None`: every core).
    pub fn cpu(threads: Option<usize>) -> Result<Runtime> {
        let threads = match threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => n,
            None => cores(),
        };
        Ok(Runtime {
            device: Device::Cpu,
            threads,
        })
    }

    /// The CPU with exactly `threads` threads (tests, benchmarks, the demo's fixed split).
    pub fn with_threads(threads: usize) -> Runtime {
        Runtime {
            device: Device::Cpu,
            threads: threads.max(1),
        }
    }
}

impl Default for Runtime {
    /// The CPU, one thread.
    fn default() -> Runtime {
        Runtime::with_threads(1)
    }
}

/// The machine's cores (what the OS lets this process use), read once.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
