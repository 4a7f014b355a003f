//! A layer's recurrence over a whole window as one candle op with its own backward, so that a
//! graph built on it runs T steps as one kernel launch (a GPU's persistent kernel) instead of T
//! small products. Each op has its CPU body (the plain loops of `kernels::scan`, the reference)
//! and its CUDA body (`kernels/cuda/scan.cu`) side by side, as candle's own ops do.
//!
//! ```text
//! Y = scan(P, W, s0)             the forward of kernels::scan (Y: S, or the LSTM's h, c, gates …)
//! backward, given G = ∂L/∂Y:     D = scan_back(G, Wᵀ, Y)       (∂L/∂P, then the LSTM's ∂L/∂c_{t−1})
//!                                ∂L/∂P = D's first part    ∂L/∂W = Σ_t ∂L/∂P_tᵀ·h_{t−1}
//!                                ∂L/∂s0 = (∂L/∂P_0·W, then the LSTM's ∂L/∂c_{−1})
//! ```
//!
//! The sum over the window is one large product (cuBLAS on a GPU).

use crate::kernels::scan::{self, Recurrence};
use candle_core::{CpuStorage, Layout, Shape, Tensor};

/// Y (T, B, saved·H) of `rec` over the window from `p` (T, B, gates·H), `w` (gates·H, H; the
/// GRU's with b_hn as one more row) and the first state `s0` (B, carried·H: h, then the LSTM's
/// c); differentiable in all three. Y's first H of each position is h_t; its carried states
/// follow ([`Recurrence::saved`]).
pub fn run(rec: Recurrence, p: &Tensor, w: &Tensor, s0: &Tensor) -> candle_core::Result<Tensor> {
    let (_, b, gh) = p.dims3()?;
    let h = gh / rec.gates();
    let w_rows = gh + rec.inner_bias_block().map_or(0, |_| 1);
    if gh != rec.gates() * h || w.dims() != [w_rows, h] || s0.dims() != [b, rec.carried() * h] {
        candle_core::bail!(
            "scan ({rec:?}): P is {:?}, W {:?}, s0 {:?}",
            p.dims(),
            w.dims(),
            s0.dims()
        );
    }
    p.contiguous()?
        .apply_op3(&w.contiguous()?, &s0.contiguous()?, Scan { rec })
}

/// The forward scan: (P, W, s0) → Y.
struct Scan {
    rec: Recurrence,
}

/// The backward scan: (G, Wᵀ, Y) → D. Never differentiated itself.
struct ScanBack {
    rec: Recurrence,
}

/// The f32 data of a contiguous CPU tensor argument.
fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(d), Some((a, b))) => Ok(&d[a..b]),
        _ => candle_core::bail!("scan takes contiguous f32 tensors"),
    }
}

impl candle_core::CustomOp3 for Scan {
    fn name(&self) -> &'static str {
        "elman-scan"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, w, s0) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let shape = out_shape(l1, self.rec.gates(), self.rec.saved());
        let mut y = vec![0f32; shape.elem_count()];
        scan::forward(self.rec, p, w, s0, &mut y, l3.dims()[0]);
        Ok((CpuStorage::F32(y), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let shape = out_shape(l1, self.rec.gates(), self.rec.saved());
        cuda::launch(self.rec, false, (s1, l1), (s2, l2), (s3, l3), shape)
    }

    fn bwd(
        &self,
        _p: &Tensor,
        w: &Tensor,
        s0: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (t_len, b, _) = y.dims3()?;
        let (g, h) = (self.rec.gates(), w.dim(1)?);
        // W without the GRU's inner bias row.
        let w = w.narrow(0, 0, g * h)?;
        let d = gy.contiguous()?.apply_op3_no_bwd(
            &w.t()?.contiguous()?,
            y,
            &ScanBack { rec: self.rec },
        )?;
        // D's first gates·H: the recurrent side, what the product with W saw.
        let rec_side = d.narrow(2, 0, g * h)?.contiguous()?;
        let dp = match self.rec {
            // The GRU's input side differs in the n block: dP_n, not dA_n.
            Recurrence::Gru => Tensor::cat(&[d.narrow(2, 0, 2 * h)?, d.narrow(2, 3 * h, h)?], 2)?,
            _ => rec_side.clone(),
        };
        // h_{t−1} for every t: s0's h, then Y's h at 0 … T−2.
        let h_prev = Tensor::cat(
            &[
                s0.narrow(1, 0, h)?.unsqueeze(0)?,
                y.narrow(0, 0, t_len - 1)?.narrow(2, 0, h)?,
            ],
            0,
        )?
        .contiguous()?;
        let dw = rec_side
            .reshape((t_len * b, g * h))?
            .t()?
            .matmul(&h_prev.reshape((t_len * b, h))?)?;
        let dh0 = rec_side.get(0)?.matmul(&w)?;
        let (dw, ds0) = match self.rec {
            Recurrence::Plain(_) => (dw, dh0),
            // c_{−1}'s gradient is D_0's last block.
            Recurrence::Lstm => (dw, Tensor::cat(&[dh0, d.get(0)?.narrow(1, g * h, h)?], 1)?),
            // b_hn's gradient is dA_n summed; h_{−1} also reached h_0 as z_0⊙h_{−1}.
            Recurrence::Gru => {
                let db = d.narrow(2, 2 * h, h)?.sum((0, 1))?.unsqueeze(0)?;
                let direct = d.get(0)?.narrow(1, 4 * h, h)?;
                (Tensor::cat(&[dw, db], 0)?, (dh0 + direct)?)
            }
        };
        Ok((Some(dp), Some(dw), Some(ds0)))
    }
}

/// (T, B, width·H) for an op whose first argument is (T, B, gates·H).
fn out_shape(l: &Layout, gates: usize, width: usize) -> Shape {
    let d = l.dims();
    Shape::from_dims(&[d[0], d[1], d[2] / gates * width])
}

impl candle_core::CustomOp3 for ScanBack {
    fn name(&self) -> &'static str {
        "elman-scan-back"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (gy, wt, y) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let shape = out_shape(l1, self.rec.saved(), self.rec.back());
        let mut d = vec![0f32; shape.elem_count()];
        scan::backward(self.rec, y, wt, gy, &mut d, l3.dims()[1]);
        Ok((CpuStorage::F32(d), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let shape = out_shape(l1, self.rec.saved(), self.rec.back());
        cuda::launch(self.rec, true, (s1, l1), (s2, l2), (s3, l3), shape)
    }
}

/// The CUDA bodies: one launch of `elman_scan`, `lstm_scan` or `gru_scan` (kernels/cuda/scan.cu)
/// per op.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::scan::{Plan, Recurrence, THREADS};
    use candle_core::cuda_backend::cudarc::driver::{
        sys::CUdevice_attribute, CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::{CudaStorage, Layout, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/scan.ptx"));

    fn err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
        candle_core::Error::Cuda(Box::new(e))
    }

    fn view<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("scan takes contiguous tensors");
        };
        Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
    }

    /// Forward: `x` = P, `w` = W, `y` = s0. Backward: `x` = G, `w` = Wᵀ, `y` = Y. The output is
    /// `shape` (Y forward, D backward).
    pub(super) fn launch(
        rec: Recurrence,
        backward: bool,
        x: (&CudaStorage, &Layout),
        w: (&CudaStorage, &Layout),
        y: (&CudaStorage, &Layout),
        shape: Shape,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.0.device.clone();
        let dims = x.1.dims();
        let (t_len, b) = (dims[0], dims[1]);
        // W is (gates·H [+ 1], H) forward, Wᵀ (H, gates·H) backward.
        let h = w.1.dims()[1].min(w.1.dims()[0]);
        let stream = dev.cuda_stream();
        let sms = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(err)?;
        let plan = Plan::new(sms as usize, h, rec.gates());
        let (input, m, third) = (view(x.0, x.1)?, view(w.0, w.1)?, view(y.0, y.1)?);
        let out: CudaSlice<f32> = dev.alloc_zeros(shape.elem_count())?;
        let sync: CudaSlice<u32> = dev.alloc_zeros(2)?;
        let (t_i, b_i, h_i) = (t_len as i32, b as i32, h as i32);
        let (rows, back) = (plan.rows as i32, backward as i32);
        let shared = (plan.shared_bytes > 0) as i32;
        let cfg = LaunchConfig {
            grid_dim: (plan.blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: plan.shared_bytes,
        };
        let code = rec.code();
        let func = match rec {
            Recurrence::Plain(_) => dev.get_or_load_custom_func("elman_scan", "elman_scan", PTX)?,
            Recurrence::Lstm => dev.get_or_load_custom_func("lstm_scan", "elman_scan", PTX)?,
            Recurrence::Gru => dev.get_or_load_custom_func("gru_scan", "elman_scan", PTX)?,
        };
        let mut args = func.builder();
        match rec {
            // elman_scan(in, m, h0, s, out, sync, T, B, H, rows, act, backward, use_shared):
            // forward h0 = s0 and s unread; backward no h0, s = Y.
            Recurrence::Plain(_) => {
                args.arg(&input)
                    .arg(&m)
                    .arg(&third)
                    .arg(&third)
                    .arg(&out)
                    .arg(&sync);
                args.arg(&t_i).arg(&b_i).arg(&h_i).arg(&rows).arg(&code);
            }
            // lstm_scan and gru_scan(in, m, s0, out, sync, T, B, H, rows, backward, use_shared):
            // s0 is the first state forward, Y backward.
            Recurrence::Lstm | Recurrence::Gru => {
                args.arg(&input).arg(&m).arg(&third).arg(&out).arg(&sync);
                args.arg(&t_i).arg(&b_i).arg(&h_i).arg(&rows);
            }
        }
        args.arg(&back).arg(&shared);
        // SAFETY: the arguments match the kernel's signature in scan.cu, every buffer has the
        // size kernels::scan documents for it (the op checked the shapes), and the grid never
        // exceeds the multiprocessors, so all blocks are resident for the grid barrier.
        unsafe { args.launch(cfg) }.map_err(err)?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}
