//! The CUDA scan kernels (`src/kernels/cuda/scan.cu`) run on the CPU: compiled by g++ against a
//! small emulation of what they use of CUDA (`tests/emu/cuda_host.h`: one OS thread per CUDA
//! thread, warps' shuffles and the block barrier as real barriers, atomics as atomics), with the
//! launch arithmetic of `kernels::scan::Plan`, and held to the plain loops of `kernels::scan`
//! forward and backward, for every recurrence, with W's rows in shared memory or read from
//! global memory. What this cannot show is speed, or a fault of the GPU's own memory model; what
//! it does show is that every index, every reduction and the grid barrier compute what the
//! reference computes. Needs g++ with C++20 (every machine of this project's kind has it).

use elman::kernels::math::Nonlinearity;
use elman::kernels::scan::{backward, forward, Plan, Recurrence};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The emulated kernels, compiled once.
fn binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cu = std::fs::read_to_string(root.join("src/kernels/cuda/scan.cu")).unwrap();
        // Dynamic shared memory becomes the emulated block's, the volatile generation word an
        // atomic read: the only two lines the host compiler cannot take as they are.
        let shared = "extern __shared__ float m_rows[];";
        let gen = "volatile unsigned int *gen = sync + 1;";
        assert_eq!(
            cu.matches(shared).count(),
            1,
            "scan.cu's kernels changed shape"
        );
        assert_eq!(
            cu.matches(gen).count(),
            1,
            "scan.cu's barrier changed shape"
        );
        let host = cu
            .replace(shared, "#define m_rows (emu_shared())")
            .replace(gen, "EmuAtomicPtr gen = sync + 1;");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scan-emulated");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("scan_host.cpp");
        std::fs::write(
            &src,
            format!("#include \"cuda_host.h\"\n{host}\n#include \"main.cpp\"\n"),
        )
        .unwrap();
        let bin = dir.join("scan_emu");
        let out = Command::new("g++")
            .args(["-std=c++20", "-O1", "-pthread", "-I"])
            .arg(root.join("tests/emu"))
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("g++ (C++20) runs the CUDA kernels on the CPU for this test");
        assert!(
            out.status.success(),
            "g++ failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
}

/// One launch: the kernel for `rec`, `plan`'s grid, `threads` per block.
#[allow(clippy::too_many_arguments)]
fn launch(
    rec: Recurrence,
    back: bool,
    (t, b, h): (usize, usize, usize),
    plan: Plan,
    threads: usize,
    use_shared: bool,
    arrays: [&[f32]; 4],
    out_len: usize,
) -> Vec<f32> {
    let kind = match rec {
        Recurrence::Plain(_) => 0,
        Recurrence::Lstm => 1,
        Recurrence::Gru => 2,
    };
    let shared = if use_shared {
        plan.rows as usize * rec.gates() * h
    } else {
        0
    };
    let act = rec.code().min(2);
    let mut input: Vec<u8> = Vec::new();
    let header = [
        kind,
        t as i32,
        b as i32,
        h as i32,
        plan.rows as i32,
        plan.blocks as i32,
        threads as i32,
        shared as i32,
        act,
        back as i32,
        arrays[0].len() as i32,
        arrays[1].len() as i32,
        arrays[2].len() as i32,
        arrays[3].len() as i32,
        out_len as i32,
    ];
    header.iter().for_each(|x| input.extend(x.to_le_bytes()));
    for a in arrays {
        a.iter().for_each(|x| input.extend(x.to_le_bytes()));
    }
    let mut child = Command::new(binary())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the emulated kernel failed");
    assert_eq!(out.stdout.len(), 4 * out_len);
    out.stdout
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 2e-5 * (1.0 + b.abs()),
            "{what}: element {i}: kernel {a} vs loops {b}"
        );
    }
}

/// Forward and backward of `rec` at (T, B, H) on a GPU of `sms` multiprocessors.
fn check(rec: Recurrence, (t, b, h): (usize, usize, usize), sms: usize, threads: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(41 + h as u64);
    let mut draw = |n: usize, scale: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    };
    let (g, k, nb, c) = (rec.gates(), rec.saved(), rec.back(), rec.carried());
    let inner = rec.inner_bias_block().map_or(0, |_| h);
    let p = draw(t * b * g * h, 1.0);
    let w = draw(g * h * h + inner, 0.6);
    let s0 = draw(b * c * h, 0.8);
    let gy = draw(t * b * k * h, 1.0);
    let mut y = vec![0f32; t * b * k * h];
    forward(rec, &p, &w, &s0, &mut y, b);
    // Wᵀ of W's gate rows, (H, gates·H).
    let wt: Vec<f32> = (0..h)
        .flat_map(|col| (0..g * h).map(move |row| (row, col)))
        .map(|(row, col)| w[row * h + col])
        .collect();
    let mut d = vec![0f32; t * b * nb * h];
    backward(rec, &y, &wt, &gy, &mut d, b);
    let plan = Plan::new(sms, h, g);
    for use_shared in [true, false] {
        let what = format!("{rec:?} T={t} B={b} H={h} {sms} SMs shared={use_shared}");
        // elman_scan reads h0 as its third argument and S as its fourth.
        let fwd: [&[f32]; 4] = match rec {
            Recurrence::Plain(_) => [&p, &w, &s0, &s0],
            _ => [&p, &w, &s0, &[]],
        };
        let got = launch(
            rec,
            false,
            (t, b, h),
            plan,
            threads,
            use_shared,
            fwd,
            y.len(),
        );
        close(&format!("{what} forward"), &got, &y);
        let bwd: [&[f32]; 4] = match rec {
            Recurrence::Plain(_) => [&gy, &wt, &y, &y],
            _ => [&gy, &wt, &y, &[]],
        };
        let got = launch(
            rec,
            true,
            (t, b, h),
            plan,
            threads,
            use_shared,
            bwd,
            d.len(),
        );
        close(&format!("{what} backward"), &got, &d);
    }
}

#[test]
fn the_cuda_scan_kernels_compute_what_the_loops_compute() {
    let recs = [
        Recurrence::Plain(Nonlinearity::Tanh),
        Recurrence::Plain(Nonlinearity::Sigmoid),
        Recurrence::Plain(Nonlinearity::Relu),
        Recurrence::Lstm,
        Recurrence::Gru,
    ];
    for rec in recs {
        // H not a multiple of the warp: lanes past H; 3 blocks, the last owning fewer units;
        // 2 warps sharing the items.
        check(rec, (5, 3, 20), 3, 64);
        // More blocks than units allow a full row each: one or two units a block, 14 blocks.
        check(rec, (4, 2, 40), 16, 32);
    }
}
