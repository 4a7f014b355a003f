//! Stage 1a — the corpus: one or more UTF-8 text files (or folders of them) read into one string,
//! checked, hashed and split into training and validation text.
//!
//! Every way a file can be unusable ends here with one line that names the file and says what to
//! do, never later as a panic deep inside training.

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

use crate::tokens::{self, Header, TokenWriter, Tokens, Width};
use crate::vocab::{Level, Vocab, VocabOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest text the commands that hold it (or its ids) in memory read: `eval`, `gradflow`,
/// `heatmap`. Training streams a text of any size.
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
        let (name, files, total) = resolve_in_memory(paths)?;
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

/// [`resolve`], for a command that holds the text or its ids in memory: refuses more than
/// [`MAX_CORPUS_BYTES`].
pub fn resolve_in_memory(paths: &[PathBuf]) -> Result<(String, Vec<PathBuf>, u64)> {
    let r = resolve(paths)?;
    if r.2 > MAX_CORPUS_BYTES {
        bail!(
            "{}: the text is larger than {} GiB, more than this command holds in memory (only `elman train` streams a text of any size); give it a part",
            describe(&r.1),
            MAX_CORPUS_BYTES >> 30
        );
    }
    Ok(r)
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
///
/// The reading, hashing and checking run on a thread of their own, a few pieces ahead of `f`,
/// so that a pass over a big text costs what the slower of the two sides costs, not their sum.
pub fn stream(files: &[PathBuf], mut f: impl FnMut(&str) -> Result<()>) -> Result<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(2);
    std::thread::scope(|sc| {
        let reader = std::thread::Builder::new().name("elman-read".into());
        let reader = reader.spawn_scoped(sc, move || {
            read_checked(files, |piece| {
                // The consumer stopped (its own error says why): stop reading.
                tx.send(piece.to_string())
                    .map_err(|_| anyhow::anyhow!("stopped"))
            })
        });
        let reader = reader.map_err(|e| anyhow::anyhow!("cannot start a reading thread: {e}"))?;
        let mut out = Ok(());
        for piece in rx.iter() {
            out = f(&piece);
            if out.is_err() {
                break;
            }
        }
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("{}: reading failed", describe(files)))?;
        // The consumer's error first: the reader only stopped because of it.
        out?;
        read
    })
}

/// The reading side of [`stream`]: reads, hashes and checks `files`, handing `f` each valid
/// piece.
fn read_checked(files: &[PathBuf], mut f: impl FnMut(&str) -> Result<()>) -> Result<String> {
    use std::io::Read;
    const CHUNK: usize = 1 << 20;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK + 4];
    for path in files {
        let stamp = |m: &fs::Metadata| (m.len(), m.modified().ok());
        let before = fs::metadata(path).map_err(|e| file_error(path, &e))?;
        let mut file = fs::File::open(path).map_err(|e| file_error(path, &e))?;
        let (mut carry, mut offset, mut read_total) = (0usize, 0u64, 0u64);
        let mut first = true;
        loop {
            let n = file
                .read(&mut buf[carry..carry + CHUNK])
                .map_err(|e| file_error(path, &e))?;
            if n == 0 {
                if carry > 0 {
                    bail!(
                        "{}: invalid UTF-8 at byte offset {offset} (line {}): the file ends inside a character",
                        path.display(),
                        line_at(path, offset)
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
            let valid = match simdutf8::compat::from_utf8(data) {
                Ok(_) => data.len(),
                // An incomplete character at the end continues in the next read.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(e) => {
                    let at = e.valid_up_to();
                    bail!(
                        "{}: invalid UTF-8 at byte offset {} (line {}); elman reads UTF-8 text only",
                        path.display(),
                        offset + at as u64,
                        line_at(path, offset + at as u64)
                    );
                }
            };
            // Validated just above (again: the fast validator hands back no prefix).
            let text = simdutf8::basic::from_utf8(&data[..valid]).expect("validated UTF-8");
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

/// The line (from 1) that byte `offset` of `path` is on, counted only when an error needs it.
fn line_at(path: &Path, offset: u64) -> usize {
    use std::io::Read;
    let Ok(file) = fs::File::open(path) else {
        return 0;
    };
    let mut prefix = Vec::new();
    let _ = file.take(offset).read_to_end(&mut prefix);
    1 + prefix.iter().filter(|&&b| b == b'\n').count()
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
    scan_with(paths, nfc, true, &Reading::quiet())
}

/// [`scan`]; without `count` (the vocabulary is known) only the length and the hash.
fn scan_with(paths: &[PathBuf], nfc: bool, count: bool, pb: &Reading) -> Result<Scan> {
    use unicode_normalization::UnicodeNormalization;
    let (name, files, _) = resolve(paths)?;
    // The counts of the Basic Multilingual Plane in a table (a hash lookup per character would
    // cap this pass at ~100 MB/s), the rare characters beyond it in a map.
    let mut bmp = vec![0u64; 0x1_0000];
    let mut beyond = std::collections::HashMap::new();
    let mut tally = |c: char| match bmp.get_mut(c as usize) {
        Some(n) => *n += 1,
        None => *beyond.entry(c).or_insert(0u64) += 1,
    };
    // ASCII, most of most texts, in four tables taken in turn: a run of one character (spaces)
    // would otherwise wait on its own count at every byte.
    let mut ascii = [[0u64; 128]; 4];
    let (mut chars, mut blank) = (0usize, true);
    let cuts = if nfc { Cuts::Lines } else { Cuts::Anywhere };
    let sha256 = stream_lines(&files, cuts, |block| {
        pb.tick(block.len())?;
        chars += block.chars().count();
        // Stops at the first character that is not whitespace.
        blank = blank && block.chars().all(char::is_whitespace);
        match (count, nfc) {
            (false, _) => {}
            (true, false) => count_chars(block, &mut ascii, &mut tally),
            (true, true) => block.nfc().for_each(&mut tally),
        }
        Ok(())
    })?;
    for (c, n) in bmp.iter_mut().enumerate().take(128) {
        *n += ascii.iter().map(|t| t[c]).sum::<u64>();
    }
    let mut counts = beyond;
    counts.extend(
        bmp.iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .filter_map(|(c, &n)| Some((char::from_u32(c as u32)?, n))),
    );
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

/// Counts the characters of `text`: ASCII bytes into `ascii`, the others through `tally`.
fn count_chars(text: &str, ascii: &mut [[u64; 128]; 4], mut tally: impl FnMut(char)) {
    let mut rest = text;
    while !rest.is_empty() {
        let b = rest.as_bytes();
        let run = b.iter().position(|&x| x >= 0x80).unwrap_or(b.len());
        let mut quads = b[..run].chunks_exact(4);
        for q in &mut quads {
            for (k, &x) in q.iter().enumerate() {
                ascii[k][x as usize] += 1;
            }
        }
        for &x in quads.remainder() {
            ascii[0][x as usize] += 1;
        }
        rest = &rest[run..];
        // Then the run of other characters, up to the next ASCII byte.
        let other = rest.bytes().position(|x| x < 0x80).unwrap_or(rest.len());
        rest[..other].chars().for_each(&mut tally);
        rest = &rest[other..];
    }
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
/// corpus-sized allocation is the ids, 4 bytes per token.
pub fn encode_streamed(
    files: &[PathBuf],
    vocab: &Vocab,
    chars: usize,
    sha256: &str,
    cut_char: Option<usize>,
) -> Result<(Vec<u32>, (usize, usize))> {
    let mut sink = Sink::memory(vocab, chars);
    let cut = encode_into(files, vocab, sha256, cut_char, &Reading::quiet(), &mut sink)?;
    Ok((sink.into_ids(), cut))
}

/// Where encoded ids go: memory, or a token file being written.
enum Sink {
    Memory(Vec<u32>),
    File(Box<TokenWriter>),
}

impl Sink {
    /// Ids in memory, sized up front: a large allocation is mapped on its own, so growing past a
    /// guess remaps it instead of copying it and leaving the old copy in the heap (words run ~4–6
    /// characters with their space; a guess too high costs address space only, given back by
    /// `shrink_to_fit`).
    fn memory(vocab: &Vocab, chars: usize) -> Sink {
        Sink::Memory(Vec::with_capacity(match vocab.level {
            Level::Char => chars,
            Level::Word => chars / 4,
        }))
    }

    fn len(&self) -> usize {
        match self {
            Sink::Memory(v) => v.len(),
            Sink::File(w) => w.len() as usize,
        }
    }

    fn push(&mut self, ids: &[u32]) -> Result<()> {
        match self {
            Sink::Memory(v) => {
                v.extend_from_slice(ids);
                Ok(())
            }
            Sink::File(w) => w.push(ids),
        }
    }

    fn into_ids(self) -> Vec<u32> {
        match self {
            Sink::Memory(mut v) => {
                v.shrink_to_fit();
                v
            }
            Sink::File(..) => unreachable!("ids written to a file are read back by mapping it"),
        }
    }
}

/// [`encode_streamed`] into `sink`; returns the cut (or the ends) as tokens and characters.
fn encode_into(
    files: &[PathBuf],
    vocab: &Vocab,
    sha256: &str,
    cut_char: Option<usize>,
    pb: &Reading,
    sink: &mut Sink,
) -> Result<(usize, usize)> {
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
                sink.push(&vocab.encode_bulk(a)?)?;
                cut = Some((sink.len(), seen + a.chars().count()));
                sink.push(&vocab.encode_bulk(b)?)?;
            }
            _ => sink.push(&vocab.encode_bulk(block)?)?,
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
    Ok(cut.unwrap_or((sink.len(), seen)))
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
pub struct Loaded {
    pub name: String,
    pub files: Vec<PathBuf>,
    /// SHA-256 of the training files, `train+validation` with separate validation files.
    pub sha256: String,
    /// Characters in all the text read (training and validation).
    pub chars: usize,
    pub vocab: Vocab,
    /// Training ids, then validation ids: held in memory (4 bytes per token), or a token file
    /// mapped from the cache.
    pub tokens: Tokens,
    /// Where the validation ids start.
    pub cut: usize,
    /// Characters of the validation text (for bits per character).
    pub val_chars: usize,
    /// What the token cache did, in a line for the run to say (`None`: not cached).
    pub cache: Option<String>,
}

/// Where token files are kept, and whether every corpus gets one.
#[derive(Debug, Clone)]
pub struct CacheDir {
    pub dir: PathBuf,
    /// Cache even a text under [`CACHE_FROM`] (the folder was named).
    pub always: bool,
}

/// Texts from this size on (16 MiB) are encoded once into a token file and read through a memory
/// map; smaller ones are read in a second or less and held in memory.
pub const CACHE_FROM: u64 = 16 << 20;

impl CacheDir {
    /// `--cache-dir`, or else `$ELMAN_CACHE_DIR`, `$XDG_CACHE_HOME/elman`, `~/.cache/elman`.
    pub fn new(given: Option<&Path>) -> CacheDir {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = given
            .map(Path::to_path_buf)
            .or_else(|| var("ELMAN_CACHE_DIR"))
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("elman")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("elman")))
            .unwrap_or_else(|| PathBuf::from(".elman-cache"));
        CacheDir {
            dir,
            always: given.is_some(),
        }
    }

    /// A cache file's path from its key (`.tokens`, `.vocab`).
    fn path(&self, key: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{key}.{ext}"))
    }
}

/// A hash of `parts` (each ended by a NUL), hex: a cache file's name.
fn cache_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize())[..32].to_string()
}

/// A vocabulary as the cache keeps it: what a word-level text's counting pass would build again.
#[derive(Serialize, Deserialize)]
struct VocabEntry {
    tokenizer: String,
    level: Level,
    nfc: bool,
    segmenter: crate::vocab::Segmenter,
    unknown_types: Option<u64>,
    min_count: u64,
}

impl VocabEntry {
    fn of(v: &Vocab) -> Result<VocabEntry> {
        Ok(VocabEntry {
            tokenizer: v.to_tokenizer_json()?,
            level: v.level,
            nfc: v.nfc,
            segmenter: v.segmenter,
            unknown_types: v.unknown_types,
            min_count: v.min_count,
        })
    }

    /// The entry at `path`, `None` when missing or unreadable (then it is built again).
    fn read(path: &Path) -> Option<Vocab> {
        let e: VocabEntry = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let mut v =
            Vocab::from_tokenizer_text(&e.tokenizer, path, e.level, e.nfc, e.segmenter).ok()?;
        v.unknown_types = e.unknown_types;
        v.min_count = e.min_count;
        Some(v)
    }
}

/// The key of the token file for a text (its hashes), a vocabulary and a split: the same for a
/// fresh run and its `--resume`, which reads the vocabulary from the checkpoint.
fn tokens_key(shas: &[&str], vocab: &Vocab, split: &str) -> Result<String> {
    let json = vocab.to_tokenizer_json()?;
    let how = format!("{:?} {} {:?}", vocab.level, vocab.nfc, vocab.segmenter);
    Ok(cache_key(
        &[&["elman tokens 1"], shas, &[&json, &how, split]].concat(),
    ))
}

/// Reads a corpus for training without ever holding its text: pass 1 counts characters and
/// hashes, a word-level vocabulary adds a pass that counts words, and the last pass writes the
/// token ids. The validation text is `val_files`, or else the last `val_fraction` of the
/// characters ([`split_text`]'s convention). A new vocabulary is built from the training and
/// validation text together, as PyTorch's word_language_model builds its dictionary from every
/// split, so validation never meets a token the model cannot represent; `existing` is used as is,
/// or with `opts.grow` (a char vocabulary) grown by the characters it lacks, counted in pass 1.
/// The result is exactly what reading everything into memory and tokenising it would give.
///
/// With `cache` (a text of [`CACHE_FROM`] or more, or a named folder), the ids go to a token file
/// there, keyed by the text's hash and the vocabulary, and a later run over the same text and
/// settings (or its `--resume`) reads the text once (pass 1) and maps the file.
#[allow(clippy::too_many_arguments)]
pub fn load(
    files: &[PathBuf],
    val_files: &[PathBuf],
    opts: &VocabOptions,
    existing: Option<&Vocab>,
    val_fraction: f64,
    progress: bool,
    stop: Option<&AtomicBool>,
    cache: Option<&CacheDir>,
) -> Result<Loaded> {
    let bytes = resolve(files)?.2
        + if val_files.is_empty() {
            0
        } else {
            resolve(val_files)?.2
        };
    let pb = Reading {
        bar: reading_bar(bytes, progress),
        stop,
    };
    let started = std::time::Instant::now();
    // Pass 1: the hash, the length, and the characters' counts where a vocabulary is to be built
    // from them (of the normalised characters with NFC).
    // (A word-level vocabulary's counts say whether the text has Chinese: jieba or not.)
    let given = existing.filter(|_| !opts.grow);
    let count = given.is_none();
    let nfc = count && opts.nfc && opts.level == Level::Char;
    pb.pass("counting characters");
    let mut train = scan_with(files, nfc, count, &pb)?;
    let val = match val_files {
        [] => None,
        v => Some(scan_with(v, nfc, count, &pb)?),
    };
    let split = match val {
        None => format!("last {val_fraction:?}"),
        Some(_) => "files".to_string(),
    };
    let Some(cache) = cache.filter(|c| c.always || bytes >= CACHE_FROM) else {
        let vocab = vocab_of(&mut train, &val, opts, existing, &pb)?;
        let mut sink = Sink::memory(&vocab, train.chars + val.as_ref().map_or(0, |v| v.chars));
        let (cut, cut_char) = encode_all(&train, &val, &vocab, val_fraction, &pb, &mut sink)?;
        return Ok(loaded(
            train,
            val,
            vocab,
            Tokens::owned(sink.into_ids()),
            cut,
            cut_char,
        ));
    };
    if cache.dir.exists() && !cache.dir.is_dir() {
        bail!(
            "{}: not a folder, so the token cache cannot live there; give a folder with --cache-dir",
            cache.dir.display()
        );
    }
    fs::create_dir_all(&cache.dir).map_err(|e| {
        anyhow::anyhow!(
            "{}; the token cache's folder cannot be made there: give another with --cache-dir",
            file_error(&cache.dir, &e)
        )
    })?;
    let shas: Vec<String> = std::iter::once(&train)
        .chain(&val)
        .map(|s| s.sha256.clone())
        .collect();
    let shas: Vec<&str> = shas.iter().map(String::as_str).collect();
    // The vocabulary first (it names the token file): given, or kept from an earlier run (a
    // word-level one saves its counting pass), or built from the counts.
    let vocab = match given {
        Some(v) => v.clone(),
        None => {
            let base = existing.map(Vocab::to_tokenizer_json).transpose()?;
            let opts_json = serde_json::to_string(opts)?;
            let vocab_key = [
                &["elman vocab 1"],
                &shas[..],
                &[&opts_json, base.as_deref().unwrap_or(""), &split],
            ]
            .concat();
            let vocab_path = cache.path(&cache_key(&vocab_key), "vocab");
            match VocabEntry::read(&vocab_path) {
                Some(v) => v,
                None => {
                    let v = vocab_of(&mut train, &val, opts, existing, &pb)?;
                    // Only saves a pass next time: a failure to write it costs nothing else.
                    let _ = write_whole(&vocab_path, &serde_json::to_vec(&VocabEntry::of(&v)?)?);
                    v
                }
            }
        }
    };
    let key = tokens_key(&shas, &vocab, &split)?;
    let path = cache.path(&key, "tokens");
    let width = Width::for_vocab(vocab.len());
    pb.pass("checking the token cache");
    let stale = match tokens::open(&path, &key)? {
        Ok((tokens, h)) => {
            pb.bar.finish_and_clear();
            let note = format!(
                "token cache: reused {} ({}, {}; the text hashed and the file checked in {:.1}s)",
                path.display(),
                human_bytes(h.tokens * width.bytes() as u64),
                per_token(width),
                started.elapsed().as_secs_f64()
            );
            let (cut, cut_char) = (h.cut as usize, h.cut_chars as usize);
            return Ok(Loaded {
                cache: Some(note),
                ..loaded(train, val, vocab, tokens, cut, cut_char)
            });
        }
        Err(why) if why == tokens::MISSING => String::new(),
        Err(why) => format!("; the file there was {why}, so it was built again"),
    };
    let mut sink = Sink::File(Box::new(TokenWriter::create(&path, width)?));
    let (cut, cut_char) = encode_all(&train, &val, &vocab, val_fraction, &pb, &mut sink)?;
    let Sink::File(w) = sink else {
        unreachable!("a file sink stays one")
    };
    let chars = train.chars + val.as_ref().map_or(0, |v| v.chars);
    let tokens = w.finish_mapped(Header {
        key,
        width,
        tokens: 0,
        cut: cut as u64,
        cut_chars: cut_char as u64,
        chars: chars as u64,
        ids_xxh3: String::new(),
    })?;
    pb.bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let note = format!(
        "token cache: wrote {} ({}, {}) in {seconds:.1}s, reading the text at {:.0} MB/s{stale}",
        path.display(),
        human_bytes(tokens.len() as u64 * width.bytes() as u64),
        per_token(width),
        bytes as f64 / seconds.max(1e-9) / 1e6,
    );
    Ok(Loaded {
        cache: Some(note),
        ..loaded(train, val, vocab, tokens, cut, cut_char)
    })
}

/// The vocabulary `load` trains with: `existing` (grown by the counted characters with
/// `opts.grow`), or one built from the counts of pass 1, or from a pass that counts words.
fn vocab_of(
    train: &mut Scan,
    val: &Option<Scan>,
    opts: &VocabOptions,
    existing: Option<&Vocab>,
    pb: &Reading,
) -> Result<Vocab> {
    match (existing, opts.level) {
        (Some(v), Level::Char) if opts.grow => {
            let val_counts = val
                .iter()
                .flat_map(|v| v.counts.iter().map(|(&c, &n)| (c, n)));
            v.grown_by(train.counts.iter().map(|(&c, &n)| (c, n)).chain(val_counts))
        }
        (Some(v), _) => Ok(v.clone()),
        (None, Level::Char) => {
            let mut counts = std::mem::take(&mut train.counts);
            for (c, n) in val.iter().flat_map(|v| &v.counts) {
                *counts.entry(*c).or_insert(0) += n;
            }
            Vocab::from_char_counts(counts, opts)
        }
        (None, Level::Word) => {
            let han = train.has_han() || val.as_ref().is_some_and(Scan::has_han);
            let segmenter = opts.segmenter.resolve(han);
            pb.pass("counting words");
            with_lines(&train.files, &train.sha256, pb, |train_lines| match val {
                None => Vocab::build_word_lines(train_lines, opts, segmenter),
                Some(v) => with_lines(&v.files, &v.sha256, pb, |val_lines| {
                    Vocab::build_word_lines(train_lines.chain(val_lines), opts, segmenter)
                }),
            })
        }
    }
}

/// The last pass of [`load`]: the training text's ids then the validation text's into `sink`
/// (the split cut from the end of the training text without validation files). Returns where
/// the validation ids start, as a token index and in characters.
fn encode_all(
    train: &Scan,
    val: &Option<Scan>,
    vocab: &Vocab,
    val_fraction: f64,
    pb: &Reading,
    sink: &mut Sink,
) -> Result<(usize, usize)> {
    pb.pass("encoding");
    match val {
        None => {
            let val_chars = ((train.chars as f64) * val_fraction).round() as usize;
            let cut_char = train.chars - val_chars.min(train.chars);
            encode_into(&train.files, vocab, &train.sha256, Some(cut_char), pb, sink)
        }
        Some(val) => {
            encode_into(&train.files, vocab, &train.sha256, None, pb, sink)?;
            let cut = sink.len();
            encode_into(&val.files, vocab, &val.sha256, None, pb, sink)?;
            Ok((cut, train.chars))
        }
    }
}

/// What [`load`] returns, from its passes' results.
fn loaded(
    train: Scan,
    val: Option<Scan>,
    vocab: Vocab,
    tokens: Tokens,
    cut: usize,
    cut_char: usize,
) -> Loaded {
    let chars = train.chars + val.as_ref().map_or(0, |v| v.chars);
    let sha256 = match &val {
        None => train.sha256,
        Some(v) => format!("{}+{}", train.sha256, v.sha256),
    };
    Loaded {
        name: train.name,
        files: train.files,
        sha256,
        chars,
        vocab,
        tokens,
        cut,
        val_chars: chars - cut_char,
        cache: None,
    }
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// `1 byte per token`, `2 bytes per token`.
fn per_token(w: Width) -> String {
    match w.bytes() {
        1 => "1 byte per token".to_string(),
        n => format!("{n} bytes per token"),
    }
}

/// `1.9 GB`, `340 MB`, `12 kB`.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        x if x >= 1e9 => format!("{:.1} GB", x / 1e9),
        x if x >= 1e6 => format!("{:.0} MB", x / 1e6),
        x => format!("{:.0} kB", (x / 1e3).max(1.0)),
    }
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

    /// A new pass: the bar from 0 again, saying what it does.
    fn pass(&self, what: &str) {
        self.bar.set_position(0);
        self.bar.set_message(what.to_string());
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
fn reading_bar(bytes: u64, progress: bool) -> ProgressBar {
    use std::io::IsTerminal;
    if !progress || bytes < 16 << 20 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "reading the corpus: {msg} [{bar:28.cyan/blue}] {bytes}/{total_bytes} ETA {eta}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb
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
