//! The device module: where elman runs — the devices and the number of threads, chosen once (by
//! `main` from `--device` and `--threads`) and passed down to every stage that computes — and the
//! only code that names a device or reaches into a tensor's storage ([`read_f32`], [`update_f32`],
//! the CPU and CUDA bodies of the window scan in [`scan`]).
//!
//! Parameters, the optimizer, checkpoints, scoring and generation always run on the CPU
//! ([`Runtime::device`]). `--device cuda` adds a GPU ([`Runtime::window_device`]) on which
//! training runs each window's forward and backward: the weights go up, the gradients come down.
//! How a fused window uses its threads is decided from these by `fused/` (one share of streams
//! per thread, helpers for a single scored stream); scoring many streams by `eval::score` (groups
//! per thread).

pub mod scan;

use anyhow::{bail, Result};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use std::sync::OnceLock;

/// Where training windows run (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The fused CPU window (the default).
    #[default]
    Cpu,
    /// An NVIDIA GPU, the first one CUDA lists (a build with the `cuda` feature).
    Cuda,
}

/// The devices and the threads every computing stage uses.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Where parameters live and everything but a training window computes: the CPU.
    pub device: Device,
    /// Where training windows run when it is not the CPU's fused window (`--device cuda`).
    pub window_device: Option<Device>,
    /// Threads training and scoring split their streams over; runs are bit-for-bit reproducible
    /// for a given seed, data and thread count.
    pub threads: usize,
}

impl Runtime {
    /// The devices `kind` asks for, with `threads` CPU threads (`None`: every core). The one
    /// place a device is opened.
    pub fn new(kind: DeviceKind, threads: Option<usize>) -> Result<Runtime> {
        let mut rt = Runtime::cpu(threads)?;
        rt.window_device = match kind {
            DeviceKind::Cpu => None,
            DeviceKind::Cuda => Some(cuda()?),
        };
        Ok(rt)
    }

    /// The CPU with `threads` threads (`None`: every core).
    pub fn cpu(threads: Option<usize>) -> Result<Runtime> {
        let threads = match threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => n,
            None => cores(),
        };
        Ok(Runtime {
            device: Device::Cpu,
            window_device: None,
            threads,
        })
    }

    /// The CPU with exactly `threads` threads (tests, benchmarks, the demo's fixed split).
    pub fn with_threads(threads: usize) -> Runtime {
        Runtime {
            device: Device::Cpu,
            window_device: None,
            threads: threads.max(1),
        }
    }

    /// The same, with training windows run as whole-window graphs on the CPU (the GPU path's
    /// code on the CPU device): what the tests hold to the reference graph.
    pub fn with_window_graph_on_cpu(threads: usize) -> Runtime {
        Runtime {
            window_device: Some(Device::Cpu),
            ..Runtime::with_threads(threads)
        }
    }

    /// What runs training windows, for the run's header: "CPU" or the GPU.
    pub fn window_label(&self) -> String {
        match &self.window_device {
            None => "CPU".into(),
            Some(d) if d.is_cpu() => "CPU (window graph)".into(),
            Some(d) => format!("GPU {:?}", d.location()),
        }
    }
}

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set
/// (errors are one line).
pub fn without_backtrace(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(inner),
        e => e.to_string(),
    }
}

/// The first CUDA GPU.
#[cfg(feature = "cuda")]
fn cuda() -> Result<Device> {
    Device::new_cuda(0).map_err(|e| {
        anyhow::anyhow!(
            "--device cuda: no usable NVIDIA GPU ({}); check the driver and `nvidia-smi`, or leave out --device",
            without_backtrace(&e)
        )
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device> {
    bail!(
        "--device cuda: this elman was built without CUDA; the CUDA build is target/cuda/release/elman, made by scripts/build-cuda.sh (docs/gpu.md), or leave out --device"
    )
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

/// Runs `f` on the tensors' f32 data, read in place where a tensor is a contiguous f32 CPU tensor
/// (a model's own weights are: no copy of them, tens of MB at the word level), else through a
/// contiguous f32 copy made on the CPU. A tensor on another device is an error, never copied
/// across silently. The tensors are read-locked meanwhile: `f` must not write them.
pub fn read_f32<R>(
    tensors: &[&Tensor],
    f: impl FnOnce(Vec<&[f32]>) -> R,
) -> candle_core::Result<R> {
    if let Some(t) = tensors.iter().find(|t| !t.device().is_cpu()) {
        candle_core::bail!(
            "the CPU kernels read tensors on the CPU, not on {:?}",
            t.device().location()
        );
    }
    let in_place = |t: &Tensor| t.dtype() == DType::F32 && t.is_contiguous();
    // Copies first, for the others (before any lock is held).
    let copies: Vec<Option<Vec<f32>>> = tensors
        .iter()
        .map(|t| {
            if in_place(t) {
                Ok(None)
            } else {
                Ok(Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?))
            }
        })
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = tensors
        .iter()
        .zip(&copies)
        .map(|(t, c)| c.is_none().then(|| t.storage_and_layout()))
        .collect();
    let mut flat = Vec::with_capacity(tensors.len());
    for (g, c) in guards.iter().zip(&copies) {
        flat.push(match (g, c) {
            (_, Some(c)) => c.as_slice(),
            (Some((storage, layout)), None) => match (&**storage, layout.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) => &data[a..b],
                _ => candle_core::bail!("a parameter changed layout while being read"),
            },
            (None, None) => unreachable!("every tensor is either locked or copied"),
        });
    }
    Ok(f(flat))
}

/// Runs `f` on a parameter's f32 data in place (`Tensor::inplace_op1`: the only public way to
/// write a `Var`'s data without building a tensor to copy from). The CPU body; a GPU's goes beside
/// it.
pub fn update_f32(
    t: &Tensor,
    name: &'static str,
    f: impl FnMut(&mut [f32]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    struct Update<F> {
        name: &'static str,
        f: std::cell::RefCell<F>,
    }
    impl<F: FnMut(&mut [f32]) -> candle_core::Result<()>> candle_core::InplaceOp1 for Update<F> {
        fn name(&self) -> &'static str {
            self.name
        }

        fn cpu_fwd(
            &self,
            storage: &mut CpuStorage,
            layout: &candle_core::Layout,
        ) -> candle_core::Result<()> {
            let (CpuStorage::F32(data), Some((a, b))) = (storage, layout.contiguous_offsets())
            else {
                candle_core::bail!("elman trains contiguous f32 parameters only");
            };
            (self.f.borrow_mut())(&mut data[a..b])
        }
    }
    t.inplace_op1(&Update {
        name,
        f: std::cell::RefCell::new(f),
    })
}
