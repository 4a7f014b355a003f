//! Stage 1b — the vocabulary: text ⇄ token ids.
//!
//! Two levels:
//! - `char`: one token per Unicode scalar value. Encoding is a plain hash-map lookup done here (fast,
//!   and exactly reversible: `decode(encode(s)) == s` for any `s` whose characters are all known).
//! - `word`: words and punctuation, split by the HF `tokenizers` pre-tokenizers; a newline becomes the
//!   `<eos>` token as in WikiText-style language models. Not reversible: spaces are dropped, and decoding
//!   puts them back where text usually has them (between words, not before `,` or inside Chinese).
//!
//! Either way the vocabulary is saved as a standard HF `tokenizer.json` (WordLevel model) that the
//! Python `tokenizers` package loads and that gives the same ids as this module; the tests check it.
//!
//! Ids are assigned: special tokens first, then by descending frequency, ties broken by the token's
//! string order. The same order `tokenizers`' `WordLevelTrainer` uses, so both levels agree.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::normalizers::NFC;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{SplitDelimiterBehavior, Tokenizer};
use unicode_normalization::UnicodeNormalization;

pub mod detok;
mod hf;
mod json;
pub use crate::words::{is_han, segment_han, Segmenter, EOS, HAN_PATTERN, UNK};
use hf::{same_cut, special, word_tokenizer_skeleton};

/// Matches exactly one Unicode scalar value, newlines included, in both regex engines that read
/// `tokenizer.json` (fancy-regex here, Oniguruma in Python).
const ONE_CHAR_PATTERN: &str = r"[\s\S]";
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// One token per Unicode character (exactly reversible).
    Char,
    /// Words and punctuation; newline becomes <eos>.
    Word,
}

impl Level {
    /// What its tokens are called: "characters" or "words".
    pub fn plural(self) -> &'static str {
        match self {
            Level::Char => "characters",
            Level::Word => "words",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Char => "char",
            Level::Word => "word",
        })
    }
}

/// How to build a vocabulary from a corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VocabOptions {
    pub level: Level,
    /// Apply Unicode NFC normalisation before tokenising.
    pub nfc: bool,
    /// Total vocabulary size cap, special tokens included.
    pub max_vocab: Option<usize>,
    /// Tokens seen fewer times than this become `<unk>`.
    pub min_count: u64,
    /// Word level: how text is cut into words.
    pub segmenter: Segmenter,
    /// The defaults' rule for a large vocabulary: when `min_count` is 1 and the text has more
    /// distinct tokens than this, the tokens it holds only once become `<unk>` (min count 2), so
    /// that `<unk>` is trained and the model can read text with tokens it never saw.
    #[serde(default)]
    pub rare_to_unk_above: Option<usize>,
    /// Reading a text with an existing char vocabulary (fine-tuning): add the characters it lacks
    /// ([`Vocab::grown_by`]) instead of reading them as `<unk>` or refusing them.
    #[serde(default)]
    pub grow: bool,
}

impl VocabOptions {
    /// The min count a text of `distinct` tokens, `once` of them seen only once, is built with.
    pub fn min_count_for(&self, distinct: usize, once: usize) -> u64 {
        match self.rare_to_unk_above {
            Some(n) if self.min_count <= 1 && distinct > n && once > 0 => 2,
            _ => self.min_count,
        }
    }
}

impl Default for VocabOptions {
    fn default() -> Self {
        VocabOptions {
            level: Level::Char,
            nfc: false,
            max_vocab: None,
            min_count: 1,
            segmenter: Segmenter::Auto,
            rare_to_unk_above: None,
            grow: false,
        }
    }
}

/// A token and the characters `start..end` of the text it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub id: u32,
    pub start: usize,
    pub end: usize,
}

/// A char-level vocabulary's ids by character: the Basic Multilingual Plane in a table, the rest
/// in a map. A hash per character held encoding a corpus to ~60 MB/s; the table, 256 KiB, makes it
/// a load.
#[derive(Debug, Clone, Default)]
struct CharIndex {
    bmp: Vec<u32>,
    beyond: HashMap<char, u32>,
}

impl CharIndex {
    const NONE: u32 = u32::MAX;

    fn insert(&mut self, c: char, id: u32) {
        let i = c as usize;
        if i < 0x1_0000 {
            if self.bmp.is_empty() {
                self.bmp = vec![Self::NONE; 0x1_0000];
            }
            self.bmp[i] = id;
        } else {
            self.beyond.insert(c, id);
        }
    }

    #[inline]
    fn get(&self, c: char) -> Option<u32> {
        match self.bmp.get(c as usize) {
            Some(&id) => (id != Self::NONE).then_some(id),
            None if (c as usize) < 0x1_0000 => None,
            None => self.beyond.get(&c).copied(),
        }
    }
}

/// A fixed vocabulary: id → token string and back.
#[derive(Debug, Clone)]
pub struct Vocab {
    pub level: Level,
    pub nfc: bool,
    tokens: Vec<String>,
    index: HashMap<String, u32>,
    /// For the char level: the same index keyed by `char` (the hot path of encoding).
    char_index: CharIndex,
    pub unk: Option<u32>,
    pub eos: Option<u32>,
    /// How many distinct tokens of the training text became `<unk>` (left out by `--max-vocab` or
    /// `--min-count`): what ranking divides p(<unk>) by to score one specific unknown token.
    /// `None` when not known (a `tokenizer.json` alone, or a checkpoint from before it was kept).
    pub unknown_types: Option<u64>,
    /// The min count the vocabulary was built with (what [`VocabOptions::min_count_for`] chose);
    /// 1 for one read from a file.
    pub min_count: u64,
    /// Word level: how words are cut (never `Auto` once built).
    pub segmenter: Segmenter,
    /// Word level only: the HF tokenizer that does the splitting.
    hf: Option<Tokenizer>,
    /// Word level: `hf` cuts text as `words::for_each_word` does (its normaliser, pre-tokenizers
    /// and special tokens are those `word_tokenizer_skeleton` makes, without NFC), so corpora
    /// can be cut the fast way. A `tokenizer.json` from elsewhere keeps its own path.
    native_cut: bool,
}

impl Vocab {
    /// Builds the vocabulary of `text`.
    pub fn build(text: &str, opts: &VocabOptions) -> Result<Vocab> {
        if let Some(m) = opts.max_vocab {
            if m < 2 {
                bail!("--max-vocab {m} is too small: a language model needs at least 2 tokens");
            }
            if m > crate::config::MAX_VOCAB {
                bail!(
                    "--max-vocab {m} is larger than elman's limit of {} tokens",
                    crate::config::MAX_VOCAB
                );
            }
        }
        match opts.level {
            Level::Char => Self::build_char(text, opts),
            Level::Word => Self::build_word(text, opts),
        }
    }

    fn build_char(text: &str, opts: &VocabOptions) -> Result<Vocab> {
        let mut counts: HashMap<char, u64> = HashMap::new();
        let mut count = |c: char| *counts.entry(c).or_insert(0) += 1;
        if opts.nfc {
            text.nfc().for_each(&mut count);
        } else {
            text.chars().for_each(&mut count);
        }
        Self::from_char_counts(counts, opts)
    }

    /// The char-level vocabulary from character counts (what a streamed first pass collects).
    pub fn from_char_counts(counts: HashMap<char, u64>, opts: &VocabOptions) -> Result<Vocab> {
        if let Some(m) = opts.max_vocab {
            if !(2..=crate::config::MAX_VOCAB).contains(&m) {
                bail!(
                    "--max-vocab {m} is out of range 2..={}",
                    crate::config::MAX_VOCAB
                );
            }
        }
        let mut ordered: Vec<(String, u64)> = counts
            .into_iter()
            .map(|(c, n)| (c.to_string(), n))
            .collect();
        ordered.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let distinct = ordered.len();
        let min_count = opts.min_count_for(distinct, ordered.iter().filter(|e| e.1 == 1).count());
        let kept: Vec<String> = ordered
            .into_iter()
            .filter(|(_, n)| *n >= min_count)
            .map(|(s, _)| s)
            .collect();
        let mut tokens = Vec::new();
        let needs_unk = kept.len() < distinct || opts.max_vocab.is_some_and(|m| kept.len() > m);
        if needs_unk {
            tokens.push(UNK.to_string());
        }
        let room = opts.max_vocab.unwrap_or(usize::MAX) - tokens.len();
        tokens.extend(kept.into_iter().take(room));
        if tokens.len() < 2 {
            bail!(
                "the corpus has only {} distinct character(s) after --min-count/--max-vocab: nothing to learn",
                tokens.len()
            );
        }
        let known = tokens.len() - usize::from(needs_unk);
        let mut v = Self::from_tokens(Level::Char, opts.nfc, tokens, None, Segmenter::Words)?;
        v.unknown_types = Some((distinct - known) as u64);
        v.min_count = min_count;
        Ok(v)
    }

    fn build_word(text: &str, opts: &VocabOptions) -> Result<Vocab> {
        let segmenter = opts.segmenter.resolve(text.chars().any(is_han));
        Self::build_word_lines(lines_with_newlines(text), opts, segmenter)
    }

    /// The word-level vocabulary of a text given line by line (each line with its newline), as a
    /// streamed reader hands it over; `segmenter` already resolved.
    pub fn build_word_lines<I, S>(
        lines: I,
        opts: &VocabOptions,
        segmenter: Segmenter,
    ) -> Result<Vocab>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        if segmenter == Segmenter::Auto {
            bail!("the word segmenter must be resolved before the vocabulary is made");
        }
        if opts.nfc {
            return Self::build_word_lines_reference(lines, opts, segmenter);
        }
        // Count the words `words::for_each_word` cuts (the tokenizer's own cut, written out), then
        // order them as `tokenizers`' `WordLevelTrainer` does: by descending count, ties by the
        // word's bytes; specials first, rare words dropped, the rest capped.
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut count = |w: &str| {
            if w != UNK && w != EOS {
                match counts.get_mut(w) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(w.to_string(), 1);
                    }
                }
            }
        };
        for line in lines {
            crate::words::for_each_word(line.as_ref(), segmenter, &mut count);
        }
        let distinct = counts.len();
        let min_count = opts.min_count_for(distinct, counts.values().filter(|&&n| n == 1).count());
        let mut ordered: Vec<(String, u64)> = counts
            .into_iter()
            .filter(|&(_, n)| n >= min_count)
            .collect();
        ordered.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut tokens = vec![UNK.to_string(), EOS.to_string()];
        tokens.extend(ordered.into_iter().map(|(w, _)| w));
        if let Some(m) = opts.max_vocab {
            tokens.truncate(m.max(2));
        }
        if tokens.len() < 3 {
            bail!("the corpus has no words to learn from");
        }
        let known = tokens.len() - 2;
        let mut v = Self::from_tokens(Level::Word, opts.nfc, tokens, None, segmenter)?;
        v.unknown_types = Some((distinct - known) as u64);
        v.min_count = min_count;
        Ok(v)
    }

    /// [`Vocab::build_word_lines`] through `tokenizers`' own trainer: the reference the written-out
    /// cut is tested against, and the path of NFC vocabularies.
    #[doc(hidden)]
    pub fn build_word_lines_reference<I, S>(
        lines: I,
        opts: &VocabOptions,
        segmenter: Segmenter,
    ) -> Result<Vocab>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        if segmenter == Segmenter::Auto {
            bail!("the word segmenter must be resolved before the vocabulary is made");
        }
        // Count with the tokenizer's own pipeline (normaliser, pre-tokenizers) via its trainer, so
        // the words counted are exactly the words the tokenizer will later look up.
        let mut tok = word_tokenizer_skeleton(opts.nfc, WordLevel::default(), segmenter)?;
        let trainer = WordLevelTrainer::builder()
            .min_frequency(opts.min_count)
            .vocab_size(opts.max_vocab.map_or(usize::MAX, |m| m.saturating_add(2)))
            .show_progress(false)
            .special_tokens(vec![special(UNK), special(EOS)])
            .build()
            .map_err(|e| anyhow!("building the word vocabulary: {e}"))?;
        let mut trainer = tokenizers::models::TrainerWrapper::WordLevelTrainer(trainer);
        if segmenter == Segmenter::Jieba {
            tok.train(&mut trainer, lines.map(|l| segment_han(l.as_ref()).0))
        } else {
            tok.train(&mut trainer, lines)
        }
        .map_err(|e| anyhow!("building the word vocabulary: {e}"))?;
        // The trainer also counts `<eos>`/`<unk>` as words (they are splits of their own), which
        // leaves a hole in its ids: renumber, specials first, then its frequency order.
        let mut by_id: Vec<(String, u32)> = tok.get_vocab(false).into_iter().collect();
        by_id.sort_by_key(|(_, id)| *id);
        let mut tokens = vec![UNK.to_string(), EOS.to_string()];
        tokens.extend(
            by_id
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| t != UNK && t != EOS),
        );
        if let Some(m) = opts.max_vocab {
            tokens.truncate(m.max(2));
        }
        if tokens.len() < 3 {
            bail!("the corpus has no words to learn from");
        }
        Self::from_tokens(Level::Word, opts.nfc, tokens, None, segmenter)
    }

    /// A char-level vocabulary grown by the characters of `counts` (a text's) it lacks, each seen
    /// at least the vocabulary's min count (rarer ones are left to `<unk>` where there is one),
    /// most frequent first; the vocabulary as it is when there are none.
    pub fn grown_by(&self, counts: impl IntoIterator<Item = (char, u64)>) -> Result<Vocab> {
        let least = if self.unk.is_some() {
            self.min_count.max(1)
        } else {
            1
        };
        let mut new: HashMap<char, u64> = HashMap::new();
        for (c, n) in counts {
            if self.char_id(c).is_none() {
                *new.entry(c).or_insert(0) += n;
            }
        }
        let mut new: Vec<(char, u64)> = new.into_iter().filter(|&(_, n)| n >= least).collect();
        if new.is_empty() {
            return Ok(self.clone());
        }
        new.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let chars: Vec<char> = new.iter().map(|&(c, _)| c).collect();
        self.with_chars(&chars)
    }

    /// A char-level vocabulary grown by `new` characters, given ids after the existing ones (whose
    /// ids do not move); what it knows of `<unk>` is kept.
    pub fn with_chars(&self, new: &[char]) -> Result<Vocab> {
        if self.level != Level::Char {
            bail!("only a character vocabulary grows by characters");
        }
        let mut tokens = self.tokens.clone();
        tokens.extend(new.iter().map(|c| c.to_string()));
        let mut v = Self::from_tokens(Level::Char, self.nfc, tokens, None, self.segmenter)?;
        v.unknown_types = self.unknown_types;
        v.min_count = self.min_count;
        Ok(v)
    }

    /// Builds a vocabulary from its ordered token list (id = position).
    fn from_tokens(
        level: Level,
        nfc: bool,
        tokens: Vec<String>,
        hf: Option<Tokenizer>,
        segmenter: Segmenter,
    ) -> Result<Vocab> {
        if level == Level::Word && segmenter == Segmenter::Auto {
            bail!("the word segmenter must be resolved before the vocabulary is made");
        }
        let mut index = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if index.insert(t.clone(), i as u32).is_some() {
                bail!("duplicate token {t:?} in the vocabulary");
            }
        }
        let mut char_index = CharIndex::default();
        if level == Level::Char {
            for (i, t) in tokens.iter().enumerate() {
                let mut cs = t.chars();
                match (cs.next(), cs.next()) {
                    (Some(c), None) => {
                        char_index.insert(c, i as u32);
                    }
                    _ if t == UNK => {}
                    _ => bail!("char-level vocabulary holds a multi-character token {t:?}"),
                }
            }
        }
        let unk = index.get(UNK).copied();
        let eos = index.get(EOS).copied();
        let (hf, native_cut) = match (level, hf) {
            (Level::Word, Some(t)) => {
                // Only the pipeline is compared, so the skeleton needs no vocabulary.
                let ours = word_tokenizer_skeleton(nfc, WordLevel::default(), segmenter)?;
                let same = same_cut(&t, &ours);
                (Some(t), same && !nfc && unk.is_some())
            }
            (Level::Word, None) => {
                let model = WordLevel::builder()
                    .vocab(index.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unk_token(UNK.to_string())
                    .build()
                    .map_err(|e| anyhow!("word vocabulary: {e}"))?;
                let tok = word_tokenizer_skeleton(nfc, model, segmenter)?;
                (Some(tok), !nfc && unk.is_some())
            }
            (Level::Char, _) => (None, false),
        };
        Ok(Vocab {
            level,
            nfc,
            tokens,
            index,
            char_index,
            unk,
            eos,
            unknown_types: None,
            min_count: 1,
            segmenter,
            hf,
            native_cut,
        })
    }

    /// Whether corpora are cut by `words.rs` rather than through the tokenizer (see `native_cut`).
    #[doc(hidden)]
    pub fn cuts_natively(&self) -> bool {
        self.native_cut
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn token(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// A character-level vocabulary's id for `c` (`None` at the word level).
    pub fn char_id(&self, c: char) -> Option<u32> {
        self.char_index.get(c)
    }

    /// Encodes `text`, mapping unknown tokens to `<unk>`. Fails (naming the token and its character
    /// position) only when the vocabulary has no `<unk>`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_reporting(text, |_, _| {})
    }

    /// The ids of a large text, as [`Vocab::encode`] gives them, for reading corpora: at the word
    /// level without the character offsets `encode` tracks to report unknown words, through the
    /// written-out cut of `words.rs` (NFC vocabularies: the tokenizer, its lines as one batch).
    pub fn encode_bulk(&self, text: &str) -> Result<Vec<u32>> {
        if self.level == Level::Char {
            if !self.nfc {
                // The hot loop of encoding a corpus; a character the vocabulary lacks without
                // <unk> goes the long way, which names it.
                let mut ids = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match self.char_index.get(c).or(self.unk) {
                        Some(id) => ids.push(id),
                        None => return self.encode(text),
                    }
                }
                return Ok(ids);
            }
            return self.encode(text);
        }
        if self.native_cut && self.unk.is_some() {
            return self.encode_scoring(text, |_| {});
        }
        self.encode_bulk_reference(text)
    }

    /// [`Vocab::encode_bulk`] through the tokenizer (the reference, and the path of NFC
    /// vocabularies).
    #[doc(hidden)]
    pub fn encode_bulk_reference(&self, text: &str) -> Result<Vec<u32>> {
        let hf = self.hf.as_ref().expect("word vocabulary has a tokenizer");
        let segmented: Vec<String>;
        let lines: Vec<&str> = if self.segmenter == Segmenter::Jieba {
            segmented = lines_with_newlines(text)
                .map(|l| segment_han(l).0)
                .collect();
            segmented.iter().map(String::as_str).collect()
        } else {
            lines_with_newlines(text).collect()
        };
        // In groups of lines: each line's `Encoding` holds its tokens as strings, ~100 bytes per
        // token, so a whole 1 MiB block at once would cost ~20 MB.
        let mut ids = Vec::new();
        for group in lines.chunks(1024) {
            let encodings = hf
                .encode_batch_fast(group.to_vec(), false)
                .map_err(|e| anyhow!("tokenizing: {e}"))?;
            for e in &encodings {
                ids.extend_from_slice(e.get_ids());
            }
        }
        Ok(ids)
    }

    /// Encodes `text` for scoring it: an unknown token becomes `<unk>`, or is left out when the
    /// vocabulary has none (the char level; a word vocabulary always has one), and is reported
    /// to `on_unknown` either way.
    pub fn encode_scoring(&self, text: &str, mut on_unknown: impl FnMut(&str)) -> Result<Vec<u32>> {
        match self.level {
            Level::Char => {
                let mut ids = Vec::with_capacity(text.len());
                let mut push = |c: char| match self.char_index.get(c) {
                    Some(id) => ids.push(id),
                    None => {
                        on_unknown(c.encode_utf8(&mut [0; 4]));
                        if let Some(u) = self.unk {
                            ids.push(u);
                        }
                    }
                };
                if self.nfc {
                    text.nfc().for_each(&mut push);
                } else {
                    text.chars().for_each(&mut push);
                }
                Ok(ids)
            }
            Level::Word => match (self.native_cut, self.unk) {
                (true, Some(unk)) => {
                    let mut ids = Vec::with_capacity(text.len() / 4);
                    let mut push = |w: &str| match self.index.get(w) {
                        Some(&id) => ids.push(id),
                        None => {
                            on_unknown(w);
                            ids.push(unk);
                        }
                    };
                    for line in lines_with_newlines(text) {
                        crate::words::for_each_word(line, self.segmenter, &mut push);
                    }
                    Ok(ids)
                }
                _ => self.encode_reporting(text, |tok, _| on_unknown(tok)),
            },
        }
    }

    /// Encodes `text`; every unknown token that becomes `<unk>` is reported to
    /// `on_unknown(token, char_position)` (1-based, as people count). Without an `<unk>` in the vocabulary the first unknown
    /// token is an error.
    pub fn encode_reporting(
        &self,
        text: &str,
        mut on_unknown: impl FnMut(&str, usize),
    ) -> Result<Vec<u32>> {
        let missing = |tok: &str, pos: usize| {
            anyhow!(
                "{} at character {pos} is not in the model's vocabulary (and the model has no {UNK} token)",
                describe_token(tok)
            )
        };
        match self.level {
            Level::Char => {
                let mut ids = Vec::with_capacity(text.len());
                let mut push = |(i, c): (usize, char)| -> Result<()> {
                    let pos = i + 1;
                    match self.char_index.get(c) {
                        Some(id) => ids.push(id),
                        None => {
                            let tok = c.encode_utf8(&mut [0; 4]).to_string();
                            let u = self.unk.ok_or_else(|| missing(&tok, pos))?;
                            on_unknown(&tok, pos);
                            ids.push(u);
                        }
                    }
                    Ok(())
                };
                if self.nfc {
                    text.nfc().enumerate().try_for_each(&mut push)?;
                } else {
                    text.chars().enumerate().try_for_each(&mut push)?;
                }
                Ok(ids)
            }
            Level::Word => {
                let mut ids = Vec::new();
                let mut line_start = 0usize; // in characters
                for line in lines_with_newlines(text) {
                    let spans = self.line_spans(line)?;
                    if let Some(u) = self.unk {
                        let chars: Vec<char> = line.chars().collect();
                        for sp in spans.iter().filter(|sp| sp.id == u) {
                            let word: String = chars[sp.start..sp.end].iter().collect();
                            if word != UNK {
                                on_unknown(&word, line_start + sp.start + 1);
                            }
                        }
                        line_start += chars.len();
                    }
                    ids.extend(spans.iter().map(|sp| sp.id));
                }
                Ok(ids)
            }
        }
    }

    /// Word level: the tokens of one line (its newline included) with their character ranges in
    /// the line. jieba's cut is applied first, as spaces between the words of each run of Chinese
    /// characters; the HF tokenizer does the rest.
    fn line_spans(&self, line: &str) -> Result<Vec<Span>> {
        let hf = self.hf.as_ref().expect("word vocabulary has a tokenizer");
        let n = line.chars().count();
        let (input, origin) = if self.segmenter == Segmenter::Jieba {
            let (seg, origin) = segment_han(line);
            (std::borrow::Cow::Owned(seg), Some(origin))
        } else {
            (std::borrow::Cow::Borrowed(line), None)
        };
        let enc = hf
            .encode_char_offsets(input.as_ref(), false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        // Offsets in the segmented line back to the original line.
        let back = |i: usize, end: bool| -> usize {
            match &origin {
                None => i.min(n),
                Some(o) if end => {
                    if i == 0 {
                        0
                    } else {
                        o.get(i - 1).map_or(n, |&j| j + 1)
                    }
                }
                Some(o) => o.get(i).copied().unwrap_or(n),
            }
        };
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(&id, &(a, b))| Span {
                id,
                start: back(a, false),
                end: back(b, true).max(back(a, false)),
            })
            .collect())
    }

    /// Encodes `text` and says where each token came from: returns the text the spans index (`text`
    /// itself, or its NFC form when the vocabulary normalises characters) and, per token, its id and
    /// its character range there (`<eos>` covers the line break). Unknown tokens become `<unk>` as
    /// in [`Vocab::encode`].
    pub fn encode_spans(&self, text: &str) -> Result<(String, Vec<Span>)> {
        match self.level {
            Level::Char => {
                let shown: String = if self.nfc {
                    text.nfc().collect()
                } else {
                    text.to_string()
                };
                let ids = self.encode(&shown)?;
                let spans = ids
                    .into_iter()
                    .enumerate()
                    .map(|(i, id)| Span {
                        id,
                        start: i,
                        end: i + 1,
                    })
                    .collect();
                Ok((shown, spans))
            }
            Level::Word => {
                let mut spans = Vec::new();
                let mut line_start = 0usize;
                for line in lines_with_newlines(text) {
                    spans.extend(self.line_spans(line)?.into_iter().map(|sp| Span {
                        id: sp.id,
                        start: line_start + sp.start,
                        end: line_start + sp.end,
                    }));
                    line_start += line.chars().count();
                }
                Ok((text.to_string(), spans))
            }
        }
    }
}

/// Chinese text or punctuation, which is written without spaces between words.
fn is_cjk(c: char) -> bool {
    is_han(c) || matches!(c as u32, 0x3000..=0x303F | 0xFF00..=0xFFEF)
}

/// Splits text after every newline, keeping it: word-level tokenising works line by line.
fn lines_with_newlines(text: &str) -> impl Iterator<Item = &str> + Send {
    text.split_inclusive('\n')
}

/// A printable description of a token for error messages: control and invisible characters are
/// shown as their code point.
pub fn describe_token(tok: &str) -> String {
    let visible = tok
        .chars()
        .all(|c| !c.is_control() && !c.is_whitespace() && c != '\u{feff}');
    let cps: Vec<String> = tok.chars().map(|c| format!("U+{:04X}", c as u32)).collect();
    if visible && cps.len() > 1 {
        format!("{tok:?}")
    } else if visible {
        format!("{tok:?} ({})", cps.join(" "))
    } else {
        format!("character {}", cps.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ids_follow_frequency_then_string_order() {
        let v = Vocab::build("abbccc", &VocabOptions::default()).unwrap();
        assert_eq!(v.tokens(), &["c", "b", "a"]);
        assert_eq!(v.unk, None);
    }

    #[test]
    fn char_max_vocab_adds_unk() {
        let opts = VocabOptions {
            max_vocab: Some(3),
            ..Default::default()
        };
        assert_eq!(
            Vocab::build("abbccc", &opts).unwrap().len(),
            3,
            "all fit: no <unk>"
        );
        let v = Vocab::build("abbcccd", &opts).unwrap();
        assert_eq!(v.tokens(), &[UNK, "c", "b"]);
        assert_eq!(v.encode("abc").unwrap(), vec![0, 2, 1]);
    }

    #[test]
    fn word_level_newline_is_eos() {
        let opts = VocabOptions {
            level: Level::Word,
            ..Default::default()
        };
        let v = Vocab::build("the cat sat.\nthe dog sat.\n", &opts).unwrap();
        let ids = v.encode("the cat sat.\n").unwrap();
        let toks: Vec<&str> = ids.iter().map(|&i| v.token(i)).collect();
        assert_eq!(toks, ["the", "cat", "sat", ".", EOS]);
        assert_eq!(v.decode(&ids), "the cat sat.\n");
    }
}
