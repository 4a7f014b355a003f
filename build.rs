//! The build script does nothing for the default (CPU) build. With `--features cuda` it compiles
//! elman's own CUDA kernel (`src/kernels/cuda/scan.cu`) to PTX with `nvcc`, for
//! `src/runtime/scan.rs` to embed; `scripts/build-cuda.sh` provides nvcc.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo::rerun-if-changed=src/kernels/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let src = "src/kernels/cuda/scan.cu";
    let status = std::process::Command::new("nvcc")
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg(src)
        .arg("-o")
        .arg(out.join("scan.ptx"))
        .status()
        .unwrap_or_else(|e| {
            panic!("the cuda feature needs nvcc on PATH ({e}): build with scripts/build-cuda.sh")
        });
    assert!(status.success(), "nvcc failed on {src}");
}
