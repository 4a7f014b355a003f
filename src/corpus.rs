//! Stage 1a — the corpus: one or more UTF-8 text files (or folders of them) read into one string,
//! checked, hashed and split into training and validation text.
//!
//! Every way a file can be unusable ends here with one line that names the file and says what to
//! do, never later as a panic deep inside training.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

/// Largest corpus elman reads (token ids are 32-bit, and the text must fit in memory).
pub const MAX_CORPUS_BYTES: u64 = 4 << 30;

/// Files with these extensions are picked up when a folder is given.
const TEXT_EXTENSIONS: &[&str] = &["txt", "md", "text", "tokens", "raw"];

/// The text of a corpus and where it came from.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// A short name for the corpus (the first file's stem or the folder's name).
    pub name: String,
    pub files: Vec<PathBuf>,
    pub text: String,
    /// SHA-256 of the concatenated bytes, hex.
    pub sha256: String,
}

impl Corpus {
    /// Reads every path (a file, or a folder whose text files are read in name order) into memory.
    pub fn read(paths: &[PathBuf]) -> Result<Corpus> {
        let (name, files, total) = resolve(paths)?;
        let mut text = String::with_capacity(total as usize);
        let sha256 = stream(&files, |chunk| {
            text.push_str(chunk);
            Ok(())
        })?;
        if text.trim().is_empty() {
            bail!(
                "{}: the corpus is empty (no text to learn from)",
                describe(&files)
            );
        }
        Ok(Corpus {
            name,
            files,
            text,
            sha256,
        })
    }

    /// Splits off the last `val_fraction` of the characters: `(train, validation)`, the convention of
    /// the reference corpora's README.
    pub fn split(&self, val_fraction: f64) -> (&str, &str) {
        split_text(&self.text, val_fraction)
    }
}

/// The split used by training and by tests: the last `val_fraction` of characters is validation.
pub fn split_text(text: &str, val_fraction: f64) -> (&str, &str) {
    let nchars = text.chars().count();
    let val_chars = ((nchars as f64) * val_fraction).round() as usize;
    let cut_char = nchars - val_chars.min(nchars);
    let cut = text
        .char_indices()
        .nth(cut_char)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    text.split_at(cut)
}

fn collect_text_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| file_error(dir, &e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_text_files(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| TEXT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// The files behind `paths` (folders expanded), checked to be regular files within the size cap,
/// with the corpus name and their total size.
pub fn resolve(paths: &[PathBuf]) -> Result<(String, Vec<PathBuf>, u64)> {
    if paths.is_empty() {
        bail!("no corpus given: name one or more text files, e.g. `elman train corpora/elman-demo.txt`");
    }
    let mut files = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|e| file_error(p, &e))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            collect_text_files(p, &mut found)?;
            if found.is_empty() {
                bail!(
                    "{}: the folder holds no text files (looked for .{} files)",
                    p.display(),
                    TEXT_EXTENSIONS.join(", .")
                );
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut total = 0u64;
    for f in &files {
        let meta = fs::metadata(f).map_err(|e| file_error(f, &e))?;
        if !meta.is_file() {
            bail!(
                "{}: not a regular file (a device, pipe or socket); give a text file",
                f.display()
            );
        }
        total += meta.len();
        if total > MAX_CORPUS_BYTES {
            bail!(
                "{}: the corpus is larger than {} GiB, more than elman can hold; split it or train on a part",
                f.display(),
                MAX_CORPUS_BYTES >> 30
            );
        }
    }
    let first = &paths[0];
    let name = first
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .or_else(|| {
            let abs = first.canonicalize().ok()?;
            Some(abs.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "corpus".to_string());
    Ok((sanitize_name(&name), files, total))
}

fn describe(files: &[PathBuf]) -> String {
    if files.len() == 1 {
        files[0].display().to_string()
    } else {
        format!("{} files", files.len())
    }
}

/// Reads `files` in order, 1 MiB at a time, and hands `f` the text in pieces that never split a
/// character. Checks on the way, with one message a user can act on: UTF-16 byte-order marks,
/// invalid UTF-8 (byte offset and line), NUL bytes (binary files), and a file that changes while
/// it is read. A UTF-8 byte-order mark is dropped. Returns the SHA-256 of all the bytes, hex.
///
/// Memory stays bounded whatever the corpus size: callers decide what to keep.
pub fn stream(files: &[PathBuf], mut f: impl FnMut(&str) -> Result<()>) -> Result<String> {
    use std::io::Read;
    const CHUNK: usize = 1 << 20;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK + 4];
    for path in files {
        let stamp = |m: &fs::Metadata| (m.len(), m.modified().ok());
        let before = fs::metadata(path).map_err(|e| file_error(path, &e))?;
        let mut file = fs::File::open(path).map_err(|e| file_error(path, &e))?;
        let (mut carry, mut offset, mut line, mut read_total) = (0usize, 0u64, 1usize, 0u64);
        let mut first = true;
        loop {
            let n = file
                .read(&mut buf[carry..carry + CHUNK])
                .map_err(|e| file_error(path, &e))?;
            if n == 0 {
                if carry > 0 {
                    bail!(
                        "{}: invalid UTF-8 at byte offset {offset} (line {line}): the file ends inside a character",
                        path.display()
                    );
                }
                break;
            }
            hasher.update(&buf[carry..carry + n]);
            read_total += n as u64;
            let data = &buf[..carry + n];
            if first && (data.starts_with(&[0xFF, 0xFE]) || data.starts_with(&[0xFE, 0xFF])) {
                bail!(
                    "{}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); convert it to UTF-8, e.g. `iconv -f UTF-16 -t UTF-8`",
                    path.display()
                );
            }
            let valid = match std::str::from_utf8(data) {
                Ok(_) => data.len(),
                // An incomplete character at the end continues in the next read.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(e) => {
                    let at = e.valid_up_to();
                    let l = line + data[..at].iter().filter(|&&b| b == b'\n').count();
                    bail!(
                        "{}: invalid UTF-8 at byte offset {} (line {l}); elman reads UTF-8 text only",
                        path.display(),
                        offset + at as u64
                    );
                }
            };
            // Validated just above.
            let text = std::str::from_utf8(&data[..valid]).expect("validated UTF-8");
            if let Some(at) = text.find('\0') {
                bail!(
                    "{}: looks like a binary file (NUL byte at byte offset {}); give a text file",
                    path.display(),
                    offset + at as u64
                );
            }
            let body = if first {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            first = false;
            f(body)?;
            line += text.bytes().filter(|&b| b == b'\n').count();
            offset += valid as u64;
            let rest = data.len() - valid;
            buf.copy_within(valid..valid + rest, 0);
            carry = rest;
        }
        let after = fs::metadata(path).map_err(|e| {
            anyhow::anyhow!(
                "{}: the file disappeared while it was being read ({e})",
                path.display()
            )
        })?;
        if stamp(&before) != stamp(&after) || read_total != after.len() {
            bail!(
                "{}: the file changed while it was being read; try again once it is complete",
                path.display()
            );
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// What a first pass over a char-level corpus learns without keeping the text.
#[derive(Debug, Clone)]
pub struct Scan {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub sha256: String,
    pub chars: usize,
    pub counts: std::collections::HashMap<char, u64>,
}

/// Pass 1 of streamed reading: character counts, length and hash.
pub fn scan(paths: &[PathBuf]) -> Result<Scan> {
    let (name, files, _) = resolve(paths)?;
    let mut counts = std::collections::HashMap::new();
    let mut chars = 0usize;
    let mut blank = true;
    let sha256 = stream(&files, |chunk| {
        for c in chunk.chars() {
            *counts.entry(c).or_insert(0u64) += 1;
            chars += 1;
            blank &= c.is_whitespace();
        }
        Ok(())
    })?;
    if blank {
        bail!(
            "{}: the corpus is empty (no text to learn from)",
            describe(&files)
        );
    }
    Ok(Scan {
        name,
        files,
        sha256,
        chars,
        counts,
    })
}

/// Pass 2: the token ids of the whole corpus (char level, no normalisation), checking that the
/// files still hash to `sha256`. The only corpus-sized allocation: 4 bytes per character.
pub fn encode_streamed(
    files: &[PathBuf],
    vocab: &crate::vocab::Vocab,
    chars: usize,
    sha256: &str,
) -> Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(chars);
    let sha = stream(files, |chunk| {
        ids.extend(vocab.encode(chunk)?);
        Ok(())
    })?;
    if sha != sha256 {
        bail!(
            "{}: the corpus changed between two reads; try again once it is complete",
            describe(files)
        );
    }
    Ok(ids)
}

/// One line for any I/O error on `path`.
pub fn file_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    use std::io::ErrorKind::*;
    let what = match e.kind() {
        NotFound => "no such file or folder".to_string(),
        PermissionDenied => "permission denied".to_string(),
        IsADirectory => "is a folder, not a file".to_string(),
        _ => e.to_string(),
    };
    anyhow::anyhow!("{}: {what}", path.display())
}

/// A name safe to use as a folder name.
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('.').to_string();
    if s.is_empty() {
        "corpus".into()
    } else {
        s
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_by_characters() {
        let (a, b) = split_text("天空飞过一只小鸟ab", 0.2);
        assert_eq!(a, "天空飞过一只小鸟");
        assert_eq!(b, "ab");
    }
}
