//! Stage 1b — the token file: a corpus's ids written once, in the narrowest integer width its
//! vocabulary allows, and read back through a memory map. Training on a text of any size then
//! holds none of it in private memory: the pages are the file's, and the kernel drops and reloads
//! them as it needs.
//!
//! A file is a 4 KiB header (magic, version, then JSON: what it holds, the key it was written
//! for, and the XXH3-128 checksum of its ids) followed by the ids, little-endian. It is written to a
//! temporary file and renamed into place, so a reader sees a whole file or none; its ids are
//! checksummed again on every open, so a damaged file is found, never trusted. [`Tokens`] is the view training
//! reads: the mapped file, or ids held in memory for a text too small to be worth a file.

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ELMANTOK";
const VERSION: u32 = 1;
/// The ids start here: a page boundary, so the mapped ids are aligned for any width.
const HEADER_BYTES: usize = 4096;
/// What [`open`] says of a file that is not there.
pub const MISSING: &str = "not built yet";

/// How many bytes each id takes in a token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Width {
    U8,
    U16,
    U32,
}

impl Width {
    /// The narrowest width that holds every id of a vocabulary of `n` tokens.
    pub fn for_vocab(n: usize) -> Width {
        match n {
            0..=0x100 => Width::U8,
            0x101..=0x1_0000 => Width::U16,
            _ => Width::U32,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Width::U8 => 1,
            Width::U16 => 2,
            Width::U32 => 4,
        }
    }
}

/// What a token file holds besides its ids: the split and the character counts training reports
/// with, and the key and hash that tell a good file from a stale or damaged one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// What the ids were made from (a hash of the text and the vocabulary: see `corpus::load`).
    pub key: String,
    pub width: Width,
    pub tokens: u64,
    /// Where the validation ids start, and the characters of text before that point and in all.
    pub cut: u64,
    pub cut_chars: u64,
    pub chars: u64,
    /// XXH3-128 of the ids as stored, hex.
    pub ids_xxh3: String,
}

/// Token ids training reads: a token file mapped into memory, or ids held in memory.
pub struct Tokens {
    store: Store,
}

enum Store {
    Owned(Vec<u32>),
    Mapped { map: memmap2::Mmap, width: Width },
}

impl Tokens {
    pub fn owned(ids: Vec<u32>) -> Tokens {
        Tokens {
            store: Store::Owned(ids),
        }
    }

    /// Whether the ids are read from a file (not held in memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    pub fn len(&self) -> usize {
        match &self.store {
            Store::Owned(v) => v.len(),
            Store::Mapped { map, width } => (map.len() - HEADER_BYTES) / width.bytes(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `i` (panics past the end, as a slice does).
    #[inline]
    pub fn at(&self, i: usize) -> u32 {
        match &self.store {
            Store::Owned(v) => v[i],
            Store::Mapped { map, width } => {
                let ids = &map[HEADER_BYTES..];
                match width {
                    Width::U8 => u32::from(ids[i]),
                    Width::U16 => u32::from(u16::from_le_bytes([ids[2 * i], ids[2 * i + 1]])),
                    Width::U32 => {
                        let b = &ids[4 * i..4 * i + 4];
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    }
                }
            }
        }
    }

    /// The ids in `range`, copied out.
    pub fn to_vec(&self, range: Range<usize>) -> Vec<u32> {
        match &self.store {
            Store::Owned(v) => v[range].to_vec(),
            Store::Mapped { .. } => range.map(|i| self.at(i)).collect(),
        }
    }

    /// How many times `id` occurs in `range` (a pass over a mapped file at memory speed: the
    /// ids compared as stored).
    pub fn count(&self, range: Range<usize>, id: u32) -> usize {
        match &self.store {
            Store::Owned(v) => v[range].iter().filter(|&&x| x == id).count(),
            Store::Mapped { map, width } => {
                let w = width.bytes();
                let ids = &map[HEADER_BYTES + range.start * w..HEADER_BYTES + range.end * w];
                match width {
                    Width::U8 => ids.iter().filter(|&&x| u32::from(x) == id).count(),
                    Width::U16 => ids
                        .chunks_exact(2)
                        .filter(|c| u32::from(u16::from_le_bytes([c[0], c[1]])) == id)
                        .count(),
                    Width::U32 => ids
                        .chunks_exact(4)
                        .filter(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) == id)
                        .count(),
                }
            }
        }
    }
}

/// Read access to a run of token ids by position: what cutting a training window needs, from ids
/// in memory or a mapped file alike.
pub trait TokenSource {
    fn len(&self) -> usize;
    fn at(&self, i: usize) -> u32;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TokenSource for [u32] {
    fn len(&self) -> usize {
        <[u32]>::len(self)
    }
    #[inline]
    fn at(&self, i: usize) -> u32 {
        self[i]
    }
}

/// The first `len` ids of some [`Tokens`] (the training part of a corpus).
#[derive(Clone, Copy)]
pub struct Prefix<'a> {
    pub tokens: &'a Tokens,
    pub len: usize,
}

impl TokenSource for Prefix<'_> {
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn at(&self, i: usize) -> u32 {
        debug_assert!(i < self.len);
        self.tokens.at(i)
    }
}

/// Writes a token file: ids go out as they are pushed, into a temporary file beside `path`
/// that [`TokenWriter::finish`] renames into place. Dropped unfinished, it removes the temporary
/// file.
pub struct TokenWriter {
    out: Out,
    tmp: PathBuf,
    path: PathBuf,
    width: Width,
    hasher: xxhash_rust::xxh3::Xxh3,
    tokens: u64,
    buf: Vec<u8>,
    done: bool,
}

impl TokenWriter {
    pub fn create(path: &Path, width: Width) -> Result<TokenWriter> {
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let out = Out::create(&tmp).map_err(|e| write_error(path, &e))?;
        Ok(TokenWriter {
            out,
            tmp,
            path: path.to_path_buf(),
            width,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            tokens: 0,
            buf: Vec::new(),
            done: false,
        })
    }

    /// Ids written so far.
    pub fn len(&self) -> u64 {
        self.tokens
    }

    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    pub fn push(&mut self, ids: &[u32]) -> Result<()> {
        self.buf.clear();
        match self.width {
            Width::U8 => self.buf.extend(ids.iter().map(|&i| i as u8)),
            Width::U16 => {
                for &i in ids {
                    self.buf.extend_from_slice(&(i as u16).to_le_bytes());
                }
            }
            Width::U32 => {
                for &i in ids {
                    self.buf.extend_from_slice(&i.to_le_bytes());
                }
            }
        }
        self.hasher.update(&self.buf);
        self.out
            .write(&self.buf)
            .map_err(|e| write_error(&self.path, &e))?;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Writes the header (`header.tokens`, `width` and `ids_xxh3` are filled in here) and renames
    /// the file into place. Not synced to disk before the rename (seconds for gigabytes): a crash
    /// that leaves the file half written leaves ids that fail their checksum, and the next open
    /// builds it again.
    pub fn finish(mut self, mut header: Header) -> Result<Header> {
        header.width = self.width;
        header.tokens = self.tokens;
        header.ids_xxh3 = format!("{:032x}", self.hasher.digest128());
        let head = encode_header(&header)?;
        let path = self.path.clone();
        self.out.finish(&head).map_err(|e| write_error(&path, &e))?;
        fs::rename(&self.tmp, &path).map_err(|e| write_error(&path, &e))?;
        self.done = true;
        Ok(header)
    }

    /// [`TokenWriter::finish`], then the file mapped for reading (its ids not checksummed again:
    /// that was done as they were written).
    pub fn finish_mapped(self, header: Header) -> Result<Tokens> {
        let path = self.path.clone();
        let header = self.finish(header)?;
        map_checked(&path, &header.key, false)?
            .map(|(t, _)| t)
            .map_err(|why| anyhow!("{}: the token file just written is {why}", path.display()))
    }
}

impl Drop for TokenWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Where a token file's bytes go: straight to the disk where the file system allows it
/// (`O_DIRECT`, whole 4 KiB blocks from aligned buffers), so that writing gigabytes neither
/// copies them into the page cache nor pushes the text being read out of it (on a 10 GB text that
/// copy was half the encoding thread's time); plain writes elsewhere (tmpfs has no `O_DIRECT`).
/// Blocks are written by a thread of their own while the next one fills, since a direct write
/// waits for the disk. The ids start after the header's block; the header is written last.
struct Out {
    /// The block being filled, and how much of its aligned run is.
    block: Vec<u8>,
    filled: usize,
    /// Where that block goes in the file.
    offset: u64,
    full: Option<std::sync::mpsc::SyncSender<(Vec<u8>, usize, u64)>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
    writer: Option<std::thread::JoinHandle<std::io::Result<fs::File>>>,
}

impl Out {
    const BLOCK: usize = 8 << 20;

    fn create(path: &Path) -> std::io::Result<Out> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags: i32| {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(flags)
                .open(path)
        };
        let mut file = open(libc::O_DIRECT).or_else(|_| open(0))?;
        // The header's block, zero for now; a file system that takes the flag but not the writes
        // gets plain writes.
        let zeros = Self::new_block();
        if write_aligned(&file, &zeros, HEADER_BYTES, 0).is_err() {
            file = open(0)?;
        }
        let (full, jobs) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize, u64)>(1);
        let (give_back, empty) = std::sync::mpsc::channel();
        give_back.send(zeros).expect("the receiver is here");
        let writer = std::thread::Builder::new()
            .name("elman-write".into())
            .spawn(move || {
                for (block, len, at) in jobs {
                    write_aligned(&file, &block, len, at)?;
                    // The filling side may be gone (an error): nothing to give back to.
                    let _ = give_back.send(block);
                }
                Ok(file)
            })?;
        Ok(Out {
            block: Self::new_block(),
            filled: 0,
            offset: HEADER_BYTES as u64,
            full: Some(full),
            empty,
            writer: Some(writer),
        })
    }

    /// A buffer with room for an aligned run of [`Out::BLOCK`] bytes.
    fn new_block() -> Vec<u8> {
        vec![0u8; Self::BLOCK + HEADER_BYTES]
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(Self::BLOCK - self.filled);
            let at = aligned_start(&self.block) + self.filled;
            self.block[at..at + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == Self::BLOCK {
                self.send(Self::BLOCK)?;
            }
        }
        Ok(())
    }

    /// Hands the block (its first `len` bytes) to the writing thread and takes an empty one.
    fn send(&mut self, len: usize) -> std::io::Result<()> {
        let next = self.empty.recv().map_err(|_| self.writer_error())?;
        let block = std::mem::replace(&mut self.block, next);
        let full = self.full.as_ref().expect("open until finished");
        full.send((block, len, self.offset))
            .map_err(|_| self.writer_error())?;
        self.offset += len as u64;
        self.filled = 0;
        Ok(())
    }

    /// The writing thread stopped: its error.
    fn writer_error(&mut self) -> std::io::Error {
        self.full = None;
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => e,
            _ => std::io::Error::other("the writing thread stopped"),
        }
    }

    /// The last, partial block (padded to whole 4 KiB blocks, then the file cut to its length),
    /// then `head` over the header's block.
    fn finish(&mut self, head: &[u8]) -> std::io::Result<()> {
        let end = self.offset + self.filled as u64;
        let padded = self.filled.div_ceil(HEADER_BYTES) * HEADER_BYTES;
        let at = aligned_start(&self.block);
        self.block[at + self.filled..at + padded].fill(0);
        self.send(padded)?;
        self.full = None;
        let file = match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
            _ => return Err(std::io::Error::other("the writing thread stopped")),
        };
        file.set_len(end)?;
        let at = aligned_start(&self.block);
        self.block[at..at + HEADER_BYTES].copy_from_slice(head);
        write_aligned(&file, &self.block, HEADER_BYTES, 0)
    }
}

/// Where the 4 KiB-aligned run of a block starts.
fn aligned_start(block: &[u8]) -> usize {
    block.as_ptr().align_offset(HEADER_BYTES)
}

/// Writes the first `len` bytes of `block`'s aligned run at `at`.
fn write_aligned(file: &fs::File, block: &[u8], len: usize, at: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let start = aligned_start(block);
    file.write_all_at(&block[start..start + len], at)
}

fn write_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENOSPC) => "the disk is full; free some space, or give".to_string(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
            "no permission to write there; give".to_string()
        }
        _ => format!("{e}; give"),
    };
    anyhow!(
        "{}: cannot write the token cache ({why} another folder with --cache-dir)",
        path.display()
    )
}

fn read_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow!(
        "{}: cannot read the token cache ({e}); delete the file, or give another folder with --cache-dir",
        path.display()
    )
}

fn encode_header(h: &Header) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(h)?;
    let mut head = Vec::with_capacity(HEADER_BYTES);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(json.len() as u32).to_le_bytes());
    head.extend_from_slice(&json);
    if head.len() > HEADER_BYTES {
        bail!("token file header too long ({} bytes)", head.len());
    }
    head.resize(HEADER_BYTES, 0);
    Ok(head)
}

/// Opens the token file at `path` written for `key`: `Ok(Err(why))` when it is missing, stale
/// (another key or version), cut short or damaged (its ids fail their checksum), so the
/// caller rebuilds it; `Err` only when it cannot be read at all.
pub fn open(path: &Path, key: &str) -> Result<Checked> {
    map_checked(path, key, true)
}

type Checked = std::result::Result<(Tokens, Header), String>;

/// [`open`], checking the ids' checksum only with `verify`.
fn map_checked(path: &Path, key: &str, verify: bool) -> Result<Checked> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err(MISSING.into())),
        Err(e) => return Err(read_error(path, &e)),
    };
    let len = file.metadata().map_err(|e| read_error(path, &e))?.len() as usize;
    if len < HEADER_BYTES {
        return Ok(Err("cut short".into()));
    }
    // SAFETY: a token file is only ever replaced by a rename, never written in place, so the
    // mapped pages do not change under us; its ids are checked against their checksum below.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| read_error(path, &e))?;
    let head = &map[..HEADER_BYTES];
    if &head[..8] != MAGIC {
        return Ok(Err("not a token file".into()));
    }
    if u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) != VERSION {
        return Ok(Err("written by another version of elman".into()));
    }
    let n = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
    let Some(header) = head
        .get(16..16 + n)
        .and_then(|j| serde_json::from_slice::<Header>(j).ok())
    else {
        return Ok(Err("damaged (its header cannot be read)".into()));
    };
    if header.key != key {
        return Ok(Err("made for another text or vocabulary".into()));
    }
    if (len - HEADER_BYTES) as u64 != header.tokens * header.width.bytes() as u64
        || header.cut > header.tokens
    {
        return Ok(Err(
            "of another length than its header says (cut short, or added to)".into(),
        ));
    }
    let ids = &map[HEADER_BYTES..];
    if verify && format!("{:032x}", xxhash_rust::xxh3::xxh3_128(ids)) != header.ids_xxh3 {
        return Ok(Err("damaged (its ids do not match their checksum)".into()));
    }
    let width = header.width;
    Ok(Ok((
        Tokens {
            store: Store::Mapped { map, width },
        },
        header,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the tests write: a temporary folder, and one on tmpfs too where the machine has one
    /// (a file system without `O_DIRECT`: the plain writes).
    fn folders() -> Vec<tempfile::TempDir> {
        let mut v = vec![tempfile::tempdir().unwrap()];
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            v.push(shm);
        }
        v
    }

    #[test]
    fn every_width_round_trips() {
        for dir in folders() {
            round_trips(dir.path());
        }
    }

    fn round_trips(dir: &Path) {
        for (width, max) in [
            (Width::U8, 255u32),
            (Width::U16, 65535),
            (Width::U32, 1 << 20),
        ] {
            let path = dir.join("t.tokens");
            // More than one 8 MiB block, and a last one cut short.
            let ids: Vec<u32> = (0..5_000_000u64)
                .map(|i| ((i * 7919) % (u64::from(max) + 1)) as u32)
                .collect();
            let mut w = TokenWriter::create(&path, width).unwrap();
            for part in ids.chunks(777_777) {
                w.push(part).unwrap();
            }
            let header = Header {
                key: "k".into(),
                width,
                tokens: 0,
                cut: 900,
                cut_chars: 900,
                chars: 5_000_000,
                ids_xxh3: String::new(),
            };
            let written = w.finish(header).unwrap();
            let (t, h) = open(&path, "k").unwrap().unwrap();
            assert_eq!(h, written);
            assert_eq!(t.to_vec(0..t.len()), ids);
            let want = ids[100..900].iter().filter(|&&x| x == ids[500]).count();
            assert_eq!(t.count(100..900, ids[500]), want);
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1, "only the file");
            assert_eq!(
                open(&path, "other").unwrap().err().unwrap(),
                "made for another text or vocabulary"
            );
        }
    }
}
