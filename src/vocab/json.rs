//! A vocabulary as `tokenizer.json`, written with every checkpoint and read back on load.

use super::hf::without_panics;
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow!(
                "{}: not a readable tokenizer.json ({e}); the checkpoint is damaged",
                path.display()
            )
        })?;
        Self::from_tokenizer_text(&text, path, level, nfc, segmenter)
    }

    /// [`Vocab::from_tokenizer_json`] on the file's text; `path` names it in errors.
    pub fn from_tokenizer_text(
        text: &str,
        path: &Path,
        level: Level,
        nfc: bool,
        segmenter: Segmenter,
    ) -> Result<Vocab> {
        use std::str::FromStr;
        // tokenizers 0.23 panics (rather than erring) on some malformed sections, e.g. a
        // `decoder` without a valid type: contain that here so a damaged file is an error.
        let tok = without_panics(|| Tokenizer::from_str(text))
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
