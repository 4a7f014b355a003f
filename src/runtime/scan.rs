//! The plain recurrence over a whole window as one candle op with its own backward, so that a
//! graph built on it runs T steps as one kernel launch (a GPU's persistent kernel) instead of T
//! small products. Each op has its CPU body (the plain loops of `kernels::scan`, the reference)
//! and its CUDA body (`kernels/cuda/scan.cu`) side by side, as candle's own ops do.
//!
//! ```text
//! S = scan(P, M, h0)             S_t = σ(P_t + S_{t−1}·Mᵀ)          (T, B, H)
//! backward, given G = ∂L/∂S:     D = scan_back(G, Mᵀ, S)            D_t = σ′(S_t) ⊙ (G_t + D_{t+1}·M)
//!                                ∂L/∂P = D    ∂L/∂M = Σ_t D_tᵀ·S_{t−1}    ∂L/∂h0 = D_0·M
//! ```
//!
//! The two sums over the window are single large products (cuBLAS on a GPU).

use crate::kernels::math::Nonlinearity;
use crate::kernels::scan;
use candle_core::{CpuStorage, Layout, Shape, Tensor};

/// S (T, B, H) of the plain recurrence σ(P_t + S_{t−1}·Mᵀ) from `p` (T, B, H), `m` (H, H) and
/// `h0` (B, H); differentiable in all three.
pub fn plain(
    p: &Tensor,
    m: &Tensor,
    h0: &Tensor,
    act: Nonlinearity,
) -> candle_core::Result<Tensor> {
    let (_, b, h) = p.dims3()?;
    if m.dims() != [h, h] || h0.dims() != [b, h] {
        candle_core::bail!(
            "scan: P is {:?}, M {:?}, h0 {:?}",
            p.dims(),
            m.dims(),
            h0.dims()
        );
    }
    p.contiguous()?
        .apply_op3(&m.contiguous()?, &h0.contiguous()?, Scan { act })
}

/// The forward scan: (P, M, h0) → S.
struct Scan {
    act: Nonlinearity,
}

/// The backward scan: (G, Mᵀ, S) → D. Never differentiated itself.
struct ScanBack {
    act: Nonlinearity,
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
        let (p, m, h0) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let b = l3.dims()[0];
        let mut s = vec![0f32; p.len()];
        scan::forward(self.act, p, m, h0, &mut s, b);
        Ok((CpuStorage::F32(s), l1.shape().clone()))
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
        cuda::launch(self.act, false, (s1, l1), (s2, l2), (s3, l3), None)
    }

    fn bwd(
        &self,
        _p: &Tensor,
        m: &Tensor,
        h0: &Tensor,
        s: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (t_len, b, h) = s.dims3()?;
        let d = g.contiguous()?.apply_op3_no_bwd(
            &m.t()?.contiguous()?,
            s,
            &ScanBack { act: self.act },
        )?;
        // S_{t−1} for every t: h0, then S_0 … S_{T−2}.
        let prev = Tensor::cat(&[h0.unsqueeze(0)?, s.narrow(0, 0, t_len - 1)?], 0)?;
        let flat = |x: &Tensor| x.reshape((t_len * b, h));
        let dm = flat(&d)?.t()?.matmul(&flat(&prev)?)?;
        let dh0 = d.get(0)?.matmul(m)?;
        Ok((Some(d), Some(dm), Some(dh0)))
    }
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
        let (g, mt, s) = (cpu_f32(s1, l1)?, cpu_f32(s2, l2)?, cpu_f32(s3, l3)?);
        let b = l3.dims()[1];
        let mut d = vec![0f32; g.len()];
        scan::backward(self.act, s, mt, g, &mut d, b);
        Ok((CpuStorage::F32(d), l1.shape().clone()))
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
        // The kernel's arguments are (in, M or Mᵀ, h0, S): backward has no h0 and reads S.
        cuda::launch(self.act, true, (s1, l1), (s2, l2), (s3, l3), Some((s3, l3)))
    }
}

/// The CUDA bodies: one launch of `elman_scan` (kernels/cuda/scan.cu) per op.
#[cfg(feature = "cuda")]
mod cuda {
    use crate::kernels::math::Nonlinearity;
    use crate::kernels::scan::{act_code, Plan, THREADS};
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

    /// Forward: `x` = P, `w` = M, `y` = h0, `states` None. Backward: `x` = G, `w` = Mᵀ, `y` = S,
    /// `states` = S. The output has `x`'s shape.
    pub(super) fn launch(
        act: Nonlinearity,
        backward: bool,
        x: (&CudaStorage, &Layout),
        w: (&CudaStorage, &Layout),
        y: (&CudaStorage, &Layout),
        states: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.0.device.clone();
        let dims = x.1.dims();
        let (t_len, b, h) = (dims[0], dims[1], dims[2]);
        let stream = dev.cuda_stream();
        let sms = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(err)?;
        let plan = Plan::new(sms as usize, h);
        let input = view(x.0, x.1)?;
        let m = view(w.0, w.1)?;
        let (h0, s) = match states {
            // Backward: no first state; the states S are read for σ′.
            Some(st) => (view(st.0, st.1)?, view(st.0, st.1)?),
            // Forward: S is not read; pass h0 in its place.
            None => (view(y.0, y.1)?, view(y.0, y.1)?),
        };
        let out: CudaSlice<f32> = dev.alloc_zeros(t_len * b * h)?;
        let sync: CudaSlice<u32> = dev.alloc_zeros(2)?;
        let func = dev.get_or_load_custom_func("elman_scan", "elman_scan", PTX)?;
        let (t_i, b_i, h_i) = (t_len as i32, b as i32, h as i32);
        let (rows, code, back) = (plan.rows as i32, act_code(act), backward as i32);
        let shared = (plan.shared_bytes > 0) as i32;
        let cfg = LaunchConfig {
            grid_dim: (plan.blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: plan.shared_bytes,
        };
        let mut args = func.builder();
        args.arg(&input)
            .arg(&m)
            .arg(&h0)
            .arg(&s)
            .arg(&out)
            .arg(&sync)
            .arg(&t_i)
            .arg(&b_i)
            .arg(&h_i)
            .arg(&rows)
            .arg(&code)
            .arg(&back)
            .arg(&shared);
        // SAFETY: the arguments match elman_scan's signature in scan.cu, every buffer holds
        // T·B·H (h0 B·H, read only forward; M H·H) f32, and the grid never exceeds the
        // multiprocessors, so all blocks are resident for the grid barrier.
        unsafe { args.launch(cfg) }.map_err(err)?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            Shape::from_dims(&[t_len, b, h]),
        ))
    }
}
