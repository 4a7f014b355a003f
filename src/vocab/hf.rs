//! The vocabulary as a standard Hugging Face `tokenizer.json` (a WordLevel model with the
//! normalisers and pre-tokenizers of its level), written with every checkpoint and read back on
//! load: the Python `tokenizers` package gives the same ids as elman.

use super::*;

impl Vocab {
    /// The standard HF `tokenizer.json` text for this vocabulary.
    pub fn to_tokenizer_json(&self) -> Result<String> {
        let tok = match &self.hf {
            Some(t) => t.clone(),
            None => {
                let model = WordLevel::builder()
                    .vocab(self.index.iter().map(|(k, v)| (k.clone(), *v)).collect())
                    .unk_token(UNK.to_string())
                    .build()
                    .map_err(|e| anyhow!("char vocabulary: {e}"))?;
                let mut t = Tokenizer::new(model);
                if self.nfc {
                    t.with_normalizer(Some(NFC))
                        .map_err(|e| anyhow!("normalizer: {e}"))?;
                }
                let split = Split::new(
                    SplitPattern::Regex(ONE_CHAR_PATTERN.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| anyhow!("char pre-tokenizer: {e}"))?;
                t.with_pre_tokenizer(Some(split));
                t.with_decoder(Some(Fuse::new()));
                t
            }
        };
        tok.to_string(true)
            .map_err(|e| anyhow!("serialising tokenizer.json: {e}"))
    }

    /// Reads a `tokenizer.json` written by [`Vocab::to_tokenizer_json`].
    pub fn from_tokenizer_json(
        path: &Path,
        level: Level,
        nfc: bool,
        segmenter: Segmenter,
    ) -> Result<Vocab> {
        // tokenizers 0.23 panics (rather than erring) on some malformed sections, e.g. a
        // `decoder` without a valid type: contain that here so a damaged file is an error.
        let tok = without_panics(|| Tokenizer::from_file(path))
            .ok_or_else(|| anyhow!("malformed"))
            .and_then(|r| r.map_err(|e| anyhow!("{e}")))
            .map_err(|e| {
                anyhow!(
                    "{}: not a readable tokenizer.json ({e}); the checkpoint is damaged",
                    path.display()
                )
            })?;
        let v = tok.get_vocab(false);
        let n = v.len();
        let mut tokens = vec![None; n];
        for (t, id) in v {
            let slot = tokens
                .get_mut(id as usize)
                .ok_or_else(|| anyhow!("{}: token ids are not 0..{n}", path.display()))?;
            *slot = Some(t);
        }
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| anyhow!("{}: token id {i} is missing", path.display())))
            .collect::<Result<_>>()?;
        let hf = (level == Level::Word).then_some(tok);
        let segmenter = match (level, segmenter) {
            (Level::Char, _) | (_, Segmenter::Auto) => Segmenter::Words,
            (_, s) => s,
        };
        Self::from_tokens(level, nfc, tokens, hf, segmenter)
            .with_context(|| path.display().to_string())
    }
}

/// Whether two word-level tokenizers cut text alike: the same normaliser, pre-tokenizers and
/// added tokens (the vocabulary aside, and not serialised).
pub(super) fn same_cut(a: &Tokenizer, b: &Tokenizer) -> bool {
    let pipeline = |t: &Tokenizer| {
        let added: std::collections::BTreeMap<u32, AddedToken> =
            t.get_added_tokens_decoder().into_iter().collect();
        serde_json::to_value((t.get_normalizer(), t.get_pre_tokenizer(), added)).ok()
    };
    matches!((pipeline(a), pipeline(b)), (Some(x), Some(y)) if x == y)
}

/// Runs `f`, turning a panic into `None` without printing the panic message.
pub(super) fn without_panics<T>(f: impl FnOnce() -> T) -> Option<T> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    r.ok()
}

/// `<unk>`/`<eos>` are special and matched after normalisation, so a newline that the normaliser
/// turned into `<eos>` (and a literal `<unk>` in WikiText) become single tokens.
pub(super) fn special(s: &str) -> AddedToken {
    AddedToken::from(s, true).normalized(true)
}

/// The word-level pipeline: newline → ` <eos> `, split on whitespace, isolate punctuation and Han
/// characters.
pub(super) fn word_tokenizer_skeleton(
    nfc: bool,
    model: WordLevel,
    segmenter: Segmenter,
) -> Result<Tokenizer> {
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if nfc {
        norms.push(NFC.into());
    }
    let r = |p: &str, c: &str| Replace::new(p, c).map_err(|e| anyhow!("normalizer: {e}"));
    norms.push(r("\r\n", "\n")?.into());
    norms.push(r("\n", " <eos> ")?.into());
    let han = Split::new(
        SplitPattern::Regex(HAN_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("pre-tokenizer: {e}"))?;
    // jieba's words arrive separated by spaces (see `segment_han`): no Han split for them.
    let pre: Vec<PreTokenizerWrapper> = match segmenter {
        Segmenter::Spaces => vec![WhitespaceSplit.into()],
        Segmenter::Jieba => vec![
            WhitespaceSplit.into(),
            Punctuation::new(SplitDelimiterBehavior::Isolated).into(),
        ],
        Segmenter::Words | Segmenter::Auto => vec![
            WhitespaceSplit.into(),
            Punctuation::new(SplitDelimiterBehavior::Isolated).into(),
            han.into(),
        ],
    };
    let mut t = Tokenizer::new(model);
    t.with_normalizer(Some(NormSeq::new(norms)))
        .map_err(|e| anyhow!("normalizer: {e}"))?;
    t.with_pre_tokenizer(Some(PreSeq::new(pre)));
    t.add_special_tokens([special(UNK), special(EOS)])
        .map_err(|e| anyhow!("special tokens: {e}"))?;
    Ok(t)
}
