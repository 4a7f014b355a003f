//! Stage 1a — the corpus: one or more UTF-8 text files (or folders of them) read into one string,
//! checked, hashed and split into training and validation text.
//!
//! Every way a file can be unusable ends here with one line that names the file and says what to
//! do, never later as a panic deep inside training.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

use crate::vocab::{Level, Vocab, VocabOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest corpus elman reads (token ids and positions are 32-bit; `gradflow` and `heatmap` hold
/// their text in memory).
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
}

/// The split used by training: the last `val_fraction` of the characters is validation, the
/// convention of the reference corpora's README. With `nfc` the cut moves forward past any
/// character NFC would compose with the ones before it (an accent, a Hangul vowel), so neither
/// side holds a fragment the vocabulary never saw.
pub fn split_text(text: &str, val_fraction: f64, nfc: bool) -> (&str, &str) {
    let nchars = text.chars().count();
    let val_chars = ((nchars as f64) * val_fraction).round() as usize;
    let cut_char = nchars - val_chars.min(nchars);
    let cut = text
        .char_indices()
        .nth(cut_char)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    text.split_at(if nfc { nfc_safe_cut(text, cut) } else { cut })
}

/// The first byte index `j ≥ i` (a character boundary) where normalising `s[..j]` and `s[j..]`
/// apart gives what normalising `s` does. NFC never reaches across a newline, so only the line
/// holding `i` is looked at.
pub fn nfc_safe_cut(s: &str, i: usize) -> usize {
    use unicode_normalization::UnicodeNormalization;
    let start = s[..i].rfind('\n').map_or(0, |k| k + 1);
    let end = s[i..].find('\n').map_or(s.len(), |k| i + k);
    let line = &s[start..end];
    let whole: String = line.nfc().collect();
    let mut j = i;
    while j < end {
        let (a, b) = line.split_at(j - start);
        if a.nfc().chain(b.nfc()).eq(whole.chars()) {
            break;
        }
        j += s[j..].chars().next().map_or(1, char::len_utf8);
    }
    j
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

/// Where [`stream_lines`] may cut the text between two blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cuts {
    /// Anywhere between characters (char-level tokens, no normalisation).
    Anywhere,
    /// After a newline; in a line longer than [`LONG_LINE`], after its last whitespace so far.
    /// Word-level tokens never span whitespace, and NFC never composes across it.
    Lines,
}

impl Cuts {
    /// Where text for `vocab` may be cut: anywhere only for plain char-level tokens.
    pub fn for_vocab(vocab: &Vocab) -> Cuts {
        if vocab.level == Level::Char && !vocab.nfc {
            Cuts::Anywhere
        } else {
            Cuts::Lines
        }
    }
}

/// A line longer than this is cut at whitespace by [`stream_lines`] (1 MiB).
pub const LONG_LINE: usize = 1 << 20;

/// [`stream`], handing `f` blocks that end where `cuts` allows: with [`Cuts::Lines`], blocks of
/// whole lines (each with its `\n`) — a last line without a newline on its own, a long line in
/// pieces that end in whitespace. Files are joined as [`Corpus::read`] joins them (no newline
/// added), so a file that does not end in one continues its last line into the next file. Such
/// blocks are what word-level tokenising (line by line) and NFC normalisation need to give
/// exactly the result they give on the whole text. Memory: one read plus a long line's pieces
/// (the whole line only if it has no whitespace at all).
pub fn stream_lines(
    files: &[PathBuf],
    cuts: Cuts,
    mut f: impl FnMut(&str) -> Result<()>,
) -> Result<String> {
    if cuts == Cuts::Anywhere {
        return stream(files, f);
    }
    // The unfinished line, and where its last whitespace so far ends (each piece is searched once).
    let mut carry = String::new();
    let mut space_end: Option<usize> = None;
    let last_space = |s: &str| {
        s.char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8())
    };
    let sha256 = stream(files, |chunk| {
        let rest = match chunk.rfind('\n') {
            Some(last) => {
                let (whole, rest) = chunk.split_at(last + 1);
                if carry.is_empty() {
                    f(whole)?;
                } else {
                    carry.push_str(whole);
                    f(&carry)?;
                    carry.clear();
                }
                space_end = None;
                rest
            }
            None => chunk,
        };
        if let Some(e) = last_space(rest) {
            space_end = Some(carry.len() + e);
        }
        carry.push_str(rest);
        if carry.len() > LONG_LINE {
            if let Some(e) = space_end.take() {
                f(&carry[..e])?;
                carry.drain(..e);
            }
        }
        Ok(())
    })?;
    if !carry.is_empty() {
        f(&carry)?;
    }
    Ok(sha256)
}

/// What a first pass over a corpus learns without keeping the text.
#[derive(Debug, Clone)]
pub struct Scan {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub sha256: String,
    /// Characters as written (before any normalisation): what the validation split counts.
    pub chars: usize,
    /// How often each character occurs (after NFC normalisation when the scan was asked for it).
    pub counts: std::collections::HashMap<char, u64>,
}

impl Scan {
    /// Whether the text has Chinese characters (what `--segmenter auto` decides on).
    pub fn has_han(&self) -> bool {
        self.counts.keys().any(|&c| crate::vocab::is_han(c))
    }
}

/// Pass 1 of streamed reading: character counts (of the NFC form with `nfc`), length and hash.
pub fn scan(paths: &[PathBuf], nfc: bool) -> Result<Scan> {
    scan_with(paths, nfc, &Reading::quiet())
}

fn scan_with(paths: &[PathBuf], nfc: bool, pb: &Reading) -> Result<Scan> {
    use unicode_normalization::UnicodeNormalization;
    let (name, files, _) = resolve(paths)?;
    let mut counts = std::collections::HashMap::new();
    let mut chars = 0usize;
    let mut blank = true;
    let mut count = |c: char| *counts.entry(c).or_insert(0u64) += 1;
    let cuts = if nfc { Cuts::Lines } else { Cuts::Anywhere };
    let sha256 = stream_lines(&files, cuts, |block| {
        pb.tick(block.len())?;
        for c in block.chars() {
            chars += 1;
            blank &= c.is_whitespace();
            if !nfc {
                count(c);
            }
        }
        if nfc {
            block.nfc().for_each(&mut count);
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

/// The lines of `files`, read on a thread of their own, as an iterator for `consume` (what the
/// word-level vocabulary counter takes). The channel between them is bounded, so memory stays a
/// few blocks whatever the corpus size. Checks that the files still hash to `sha256`.
fn with_lines<R>(
    files: &[PathBuf],
    sha256: &str,
    pb: &Reading,
    consume: impl FnOnce(std::sync::mpsc::IntoIter<String>) -> Result<R>,
) -> Result<R> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(4096);
    std::thread::scope(|sc| {
        let reader = sc.spawn(move || {
            stream_lines(files, Cuts::Lines, |block| {
                pb.tick(block.len())?;
                for line in block.split_inclusive('\n') {
                    // The consumer stopped early: it reports its own error.
                    if tx.send(line.to_string()).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })
        });
        let out = consume(rx.into_iter());
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("{}: reading failed", describe(files)))?;
        // A read error (or Ctrl-C) first: it explains whatever the consumer made of a cut text.
        let read = read?;
        let out = out?;
        if read != sha256 {
            bail!(
                "{}: the corpus changed between two reads; try again once it is complete",
                describe(files)
            );
        }
        Ok(out)
    })
}

/// Pass 2: the token ids of the whole corpus, checking that the files still hash to `sha256`.
/// With `cut_char`, the text is cut there (a character index, moved as [`split_text`] moves it for
/// an NFC vocabulary) and the two sides are encoded apart, exactly as the in-memory split would
/// be; also returned: where the second side starts, as an index into the ids and in characters
/// (the ends without a cut). Text is encoded a block of whole lines at a time: the only
/// corpus-sized allocation is the ids, 4 bytes per token (`chars` sizes it at the char level).
pub fn encode_streamed(
    files: &[PathBuf],
    vocab: &Vocab,
    chars: usize,
    sha256: &str,
    cut_char: Option<usize>,
) -> Result<(Vec<u32>, (usize, usize))> {
    encode_streamed_with(files, vocab, chars, sha256, cut_char, &Reading::quiet())
}

fn encode_streamed_with(
    files: &[PathBuf],
    vocab: &Vocab,
    chars: usize,
    sha256: &str,
    cut_char: Option<usize>,
    pb: &Reading,
) -> Result<(Vec<u32>, (usize, usize))> {
    // Sized up front: a large allocation is mapped on its own, so growing past a guess remaps it
    // instead of copying it and leaving the old copy in the heap (words run ~4–6 characters with
    // their space; a guess too high costs address space only, given back by `shrink_to_fit`).
    let mut ids = Vec::with_capacity(match vocab.level {
        Level::Char => chars,
        Level::Word => chars / 4,
    });
    let (mut seen, mut cut) = (0usize, None);
    let read = stream_lines(files, Cuts::for_vocab(vocab), |block| {
        pb.tick(block.len())?;
        let n = block.chars().count();
        match cut_char {
            Some(at) if cut.is_none() && seen + n >= at => {
                let mut i = block
                    .char_indices()
                    .nth(at - seen)
                    .map_or(block.len(), |(i, _)| i);
                if vocab.nfc {
                    i = nfc_safe_cut(block, i);
                }
                let (a, b) = block.split_at(i);
                ids.extend(vocab.encode_bulk(a)?);
                cut = Some((ids.len(), seen + a.chars().count()));
                ids.extend(vocab.encode_bulk(b)?);
            }
            _ => ids.extend(vocab.encode_bulk(block)?),
        }
        seen += n;
        Ok(())
    });
    let sha = read.map_err(|e| unknown_char_error(files, vocab).unwrap_or(e))?;
    if sha != sha256 {
        bail!(
            "{}: the corpus changed between two reads; try again once it is complete",
            describe(files)
        );
    }
    ids.shrink_to_fit();
    let cut = cut.unwrap_or((ids.len(), seen));
    Ok((ids, cut))
}

/// The error for the first character of `files` that `vocab` cannot encode — only a char-level
/// vocabulary without `<unk>` has such characters — naming its file, line and column (encoding
/// in blocks only knows a position inside the block). `None` when there is none.
pub fn unknown_char_error(files: &[PathBuf], vocab: &Vocab) -> Option<anyhow::Error> {
    use unicode_normalization::UnicodeNormalization;
    if vocab.level != Level::Char || vocab.unk.is_some() {
        return None;
    }
    for file in files {
        let (mut line, mut found) = (1usize, None);
        // Stopped with an error once found; a read error leaves the original error to stand.
        let _ = stream_lines(std::slice::from_ref(file), Cuts::Lines, |block| {
            for l in block.split_inclusive('\n') {
                let chars: Box<dyn Iterator<Item = char>> = if vocab.nfc {
                    Box::new(l.nfc())
                } else {
                    Box::new(l.chars())
                };
                for (col, c) in chars.enumerate() {
                    if vocab.char_id(c).is_none() {
                        found = Some((line, col + 1, c));
                        bail!("found");
                    }
                }
                line += usize::from(l.ends_with('\n'));
            }
            Ok(())
        });
        if let Some((line, col, c)) = found {
            return Some(anyhow::anyhow!(
                "{}: line {line}, column {col}: {} is not in the model's vocabulary, and the model has no {} token to stand for it; remove or replace it (fine-tuning without --keep-vocab grows the vocabulary by it)",
                file.display(),
                crate::vocab::describe_token(c.encode_utf8(&mut [0; 4])),
                crate::vocab::UNK
            ));
        }
    }
    None
}

/// A corpus read for training: where it came from, its vocabulary and its token ids.
#[derive(Debug)]
pub struct Loaded {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// SHA-256 of the training files, `train+validation` with separate validation files.
    pub sha256: String,
    /// Characters in all the text read (training and validation).
    pub chars: usize,
    pub vocab: Vocab,
    /// Training ids, then validation ids: the only corpus-sized memory, 4 bytes per token.
    pub ids: Vec<u32>,
    /// Where the validation ids start.
    pub cut: usize,
    /// Characters of the validation text (for bits per character).
    pub val_chars: usize,
}

/// Reads a corpus for training without ever holding its text: pass 1 counts characters and
/// hashes, a word-level vocabulary adds a pass that counts words, and the last pass writes the
/// token ids. The validation text is `val_files`, or else the last `val_fraction` of the
/// characters ([`split_text`]'s convention). A new vocabulary is built from the training and
/// validation text together, as PyTorch's word_language_model builds its dictionary from every
/// split, so validation never meets a token the model cannot represent; `existing` is used as is,
/// or with `opts.grow` (a char vocabulary) grown by the characters it lacks, counted in pass 1.
/// The result is exactly what reading everything into memory and tokenising it would give.
pub fn load(
    files: &[PathBuf],
    val_files: &[PathBuf],
    opts: &VocabOptions,
    existing: Option<&Vocab>,
    val_fraction: f64,
    progress: bool,
    stop: Option<&AtomicBool>,
) -> Result<Loaded> {
    let pb = Reading {
        bar: reading_bar(files, val_files, progress)?,
        stop,
    };
    let pass = |what: &str| {
        pb.bar.set_position(0);
        pb.bar.set_message(what.to_string());
    };
    // Only a new or growing char-level vocabulary needs the counts of the normalised characters.
    let nfc_counts = (existing.is_none() || opts.grow) && opts.nfc && opts.level == Level::Char;
    pass("counting characters");
    let mut train = scan_with(files, nfc_counts, &pb)?;
    let val = if val_files.is_empty() {
        None
    } else {
        Some(scan_with(val_files, nfc_counts, &pb)?)
    };
    let vocab = match (existing, opts.level) {
        (Some(v), Level::Char) if opts.grow => {
            let val_counts = val
                .iter()
                .flat_map(|v| v.counts.iter().map(|(&c, &n)| (c, n)));
            v.grown_by(train.counts.iter().map(|(&c, &n)| (c, n)).chain(val_counts))?
        }
        (Some(v), _) => v.clone(),
        (None, Level::Char) => {
            let mut counts = std::mem::take(&mut train.counts);
            for (c, n) in val.iter().flat_map(|v| &v.counts) {
                *counts.entry(*c).or_insert(0) += n;
            }
            Vocab::from_char_counts(counts, opts)?
        }
        (None, Level::Word) => {
            let han = train.has_han() || val.as_ref().is_some_and(Scan::has_han);
            let segmenter = opts.segmenter.resolve(han);
            pass("counting words");
            with_lines(&train.files, &train.sha256, &pb, |train_lines| match &val {
                None => Vocab::build_word_lines(train_lines, opts, segmenter),
                Some(v) => with_lines(&v.files, &v.sha256, &pb, |val_lines| {
                    Vocab::build_word_lines(train_lines.chain(val_lines), opts, segmenter)
                }),
            })?
        }
    };
    pass("encoding");
    let Some(val) = val else {
        let val_chars = ((train.chars as f64) * val_fraction).round() as usize;
        let cut_char = train.chars - val_chars.min(train.chars);
        let (ids, (cut, cut_char)) = encode_streamed_with(
            &train.files,
            &vocab,
            train.chars,
            &train.sha256,
            Some(cut_char),
            &pb,
        )?;
        pb.bar.finish_and_clear();
        return Ok(Loaded {
            name: train.name,
            files: train.files,
            sha256: train.sha256,
            chars: train.chars,
            vocab,
            ids,
            cut,
            val_chars: train.chars - cut_char,
        });
    };
    let (mut ids, _) =
        encode_streamed_with(&train.files, &vocab, train.chars, &train.sha256, None, &pb)?;
    let cut = ids.len();
    let (val_ids, _) = encode_streamed_with(&val.files, &vocab, val.chars, &val.sha256, None, &pb)?;
    ids.extend(val_ids);
    pb.bar.finish_and_clear();
    Ok(Loaded {
        name: train.name,
        files: train.files,
        sha256: format!("{}+{}", train.sha256, val.sha256),
        chars: train.chars + val.chars,
        vocab,
        ids,
        cut,
        val_chars: val.chars,
    })
}

/// A reading pass's progress (a bar, maybe hidden) and the flag that stops it (Ctrl-C).
struct Reading<'a> {
    bar: ProgressBar,
    stop: Option<&'a AtomicBool>,
}

impl Reading<'_> {
    fn quiet() -> Reading<'static> {
        Reading {
            bar: ProgressBar::hidden(),
            stop: None,
        }
    }

    /// `bytes` more were read; an error once the stop flag is set.
    fn tick(&self, bytes: usize) -> Result<()> {
        self.bar.inc(bytes as u64);
        if self.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            self.bar.finish_and_clear();
            bail!("interrupted while reading the corpus; nothing was written");
        }
        Ok(())
    }
}

/// A progress bar for reading a corpus big enough to take a while (≥ 16 MiB), on a terminal only;
/// each pass runs it from 0 to the corpus size in bytes.
fn reading_bar(files: &[PathBuf], val_files: &[PathBuf], progress: bool) -> Result<ProgressBar> {
    use std::io::IsTerminal;
    let mut bytes = resolve(files)?.2;
    if !val_files.is_empty() {
        bytes += resolve(val_files)?.2;
    }
    if !progress || bytes < 16 << 20 || !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let pb = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "reading the corpus: {msg} [{bar:28.cyan/blue}] {bytes}/{total_bytes} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    Ok(pb)
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
        let (a, b) = split_text("天空飞过一只小鸟ab", 0.2, false);
        assert_eq!(a, "天空飞过一只小鸟");
        assert_eq!(b, "ab");
    }
}
