//! The word-level pipeline as a standard Hugging Face tokenizer (a WordLevel model with the
//! normalisers and pre-tokenizers of its segmenter): what `tokenizer.json` holds, so the Python
//! `tokenizers` package gives the same ids as elman. `json.rs` writes and reads the file.

use crate::words::{Segmenter, EOS, HAN_PATTERN, UNK};
use anyhow::{anyhow, Result};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::{Replace, Sequence as NormSeq, NFC};
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{
    AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

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
