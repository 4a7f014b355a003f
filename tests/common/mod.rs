//! Helpers shared by the binary-level tests.
#![allow(dead_code)] // each test file uses its own subset

use assert_cmd::Command;
use std::path::Path;

/// The `elman` binary, run in `dir` with one thread (and backtraces on, to prove none is printed).
pub fn elman(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("elman").unwrap();
    c.current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .arg("--threads")
        .arg("1");
    c
}

/// Runs and checks: exit code 1, one `error:` line on stderr (warnings aside) containing every
/// `needle`, and no panic.
pub fn fails_with(cmd: &mut Command, needles: &[&str]) {
    let out = cmd
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("warning:")).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

/// Runs, expects success, parses stdout as JSON.
pub fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
