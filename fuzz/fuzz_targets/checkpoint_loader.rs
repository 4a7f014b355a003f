//! The checkpoint loader on arbitrary files: the input is split into config.json, tokenizer.json
//! and model.safetensors (at the first two 0xFF bytes); loading must return Ok or Err, never
//! panic, hang or allocate without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let config = parts.next().unwrap_or_default();
    let tokenizer = parts.next().unwrap_or_default();
    let model = parts.next().unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), model).unwrap();
    let _ = elman::checkpoint::load(dir.path(), &candle_core::Device::Cpu);
});
