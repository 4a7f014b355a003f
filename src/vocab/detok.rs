//! Decoding for people: word-level tokens glued back into text the way it is usually written
//! (punctuation against the word before it, brackets and quotes against what they enclose, no
//! spaces inside Chinese), one piece at a time as tokens are drawn.

use super::{is_cjk, is_han, Level, Segmenter, Vocab};

/// How a word-level token meets its neighbours in decoded text (`words` and `jieba` cut
/// punctuation off the words it touched, so decoding has to glue it back on).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Glue {
    /// Words, numbers, symbols: a space on either side.
    Word,
    /// `, . ; : ! ? ) ] } ” » % …`: no space before.
    Close,
    /// `( [ { “ ‘ « ¿ ¡`: no space after.
    Open,
    /// Hyphens, dashes and `/` (`well-known`, `and/or`): no space on either side.
    Join,
    /// `'` and `’`: after a word an apostrophe (`I'll`, `don't`, `o'er`), a closing quote
    /// (`boys' toys`, `'no' he`) or the start of an elision (`and 'tis`), told apart by the word
    /// that follows (`CONTRACTIONS`, `ELISIONS`); elsewhere an opening quote or elision, which
    /// holds on to the word after it.
    Apostrophe,
    /// `"`: opening or closing by its parity on the line.
    Quote,
}

/// The glue of a token that starts or ends with `c` (punctuation is always a token of its own
/// at the `words` and `jieba` levels, so a token's edge character tells what it is; a prompt's
/// last word is read the same way).
fn glue_of(c: char) -> Glue {
    match c {
        ',' | '.' | ';' | ':' | '!' | '?' | ')' | ']' | '}' | '%' | '”' | '»' | '…' => {
            Glue::Close
        }
        '(' | '[' | '{' | '“' | '‘' | '«' | '¿' | '¡' => Glue::Open,
        '-' | '‐' | '‑' | '–' | '—' | '/' => Glue::Join,
        '\'' | '’' => Glue::Apostrophe,
        '"' => Glue::Quote,
        _ => Glue::Word,
    }
}

/// What follows an apostrophe inside a word (`it's`, `don't`, `I'd`, `I'm`, `we'll`, `you're`,
/// `I've`, `thou'rt`, `o'er`, `e'en`, `o'clock`, `wouldst`, …): after a word, an apostrophe
/// followed by anything else is a closing quote, and a space follows it. From the contractions of
/// tiny Shakespeare and War and Peace, which these cover to ~99%.
const CONTRACTIONS: &[&str] = &[
    "s", "t", "d", "m", "ll", "re", "ve", "st", "rt", "er", "en", "ld", "n", "dst", "ldst", "clock",
];

/// Words written with an apostrophe in front and a space before it (`and 'tis`, `take 'em`):
/// after a word, an apostrophe followed by one of these goes with the word after it. From tiny
/// Shakespeare, where they are ~90% of the apostrophes that follow a space (none of them ever
/// follows a letter).
const ELISIONS: &[&str] = &[
    "tis", "twas", "twere", "twill", "twould", "twixt", "tween", "gainst", "em", "fore", "scape",
    "mongst", "zounds", "sblood", "neath", "bout",
];

/// The glue of a whole token: a single punctuation character's, else a word's.
fn glue_of_token(tok: &str) -> Glue {
    let mut cs = tok.chars();
    match (cs.next(), cs.next()) {
        (Some(c), None) => glue_of(c),
        _ => Glue::Word,
    }
}

impl Vocab {
    /// Turns ids back into text. Exact for the char level; for the word level, words are spaced
    /// and punctuation glued to them as text is usually written (see `Detokenizer`), and `<eos>`
    /// becomes a newline.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self.level {
            Level::Char => ids.iter().map(|&i| self.token(i)).collect(),
            Level::Word => {
                let mut d = Detokenizer::new("");
                let mut text: String = ids.iter().map(|&i| d.piece(self, i)).collect();
                text.push_str(&d.finish(self));
                text
            }
        }
    }
}

/// Turns ids into text one token at a time, for streaming output; agrees with [`Vocab::decode`]
/// (word level: words spaced as they are written, punctuation glued to them, no spaces inside
/// Chinese, `<eos>` as a line break).
pub struct Detokenizer {
    /// The text shown so far ends here (its last word, or empty at a line start).
    last: String,
    /// The text shown so far ends in whitespace (a prompt typed with a trailing space).
    spaced: bool,
    /// An odd number of `"` on the current line: the next one closes.
    quote_open: bool,
    /// The text shown so far ends in an apostrophe glued to the word before it.
    apostrophe_after_word: bool,
    /// An apostrophe not written yet: whether it is glued to what came before (`boys'`, `I'll`,
    /// `friends,'`) or opens the next word (`and 'tis`, `, 'twas`) depends on the next token.
    held: Option<u32>,
    /// A single quote opened on this line and not closed yet.
    single_open: bool,
}

impl Detokenizer {
    /// `after` is the text already shown (the prompt).
    pub fn new(after: &str) -> Self {
        let line = after.rsplit('\n').next().unwrap_or("");
        let last = line.split_whitespace().next_back().unwrap_or("");
        let mut rev = last.chars().rev();
        let apostrophe_after_word = match (rev.next(), rev.next()) {
            (Some(a), Some(w)) => glue_of(a) == Glue::Apostrophe && ends_a_word(w),
            _ => false,
        };
        Detokenizer {
            last: last.to_string(),
            spaced: line.ends_with(char::is_whitespace),
            quote_open: line.matches('"').count() % 2 == 1,
            apostrophe_after_word,
            held: None,
            single_open: single_quote_open(line),
        }
    }

    /// The text of token `id`, given everything before it. May be empty, and the text of the token
    /// before it may come with the next one: an apostrophe right after a word waits for the word
    /// after it (see `held`). Call [`Detokenizer::finish`] once the last token is in.
    pub fn piece(&mut self, vocab: &Vocab, id: u32) -> String {
        let tok = vocab.token(id);
        let eos = Some(id) == vocab.eos;
        let mut out = String::new();
        if let Some(ap) = self.held.take() {
            out.push_str(&self.release(vocab, vocab.token(ap), (!eos).then_some(tok)));
        } else if vocab.level == Level::Word
            && vocab.segmenter != Segmenter::Spaces
            && glue_of_token(tok) == Glue::Apostrophe
        {
            self.held = Some(id);
            return out;
        }
        out.push_str(&self.emit(vocab, tok, eos));
        out
    }

    /// What is still held back once generation stops (an apostrophe after the last token).
    pub fn finish(&mut self, vocab: &Vocab) -> String {
        match self.held.take() {
            Some(ap) => self.release(vocab, vocab.token(ap), None),
            None => String::new(),
        }
    }

    /// Writes the held apostrophe `ap`, now that the token after it is known (`next`; none at a
    /// line's or the text's end). Glued to what came before when it follows a word (`boys'`,
    /// `I'll`, `'no' he`) or closes an open single quote after `, . ; : ! ?` (`'Come,' quoth he`);
    /// otherwise it opens the next word (`'Tis`, `and 'tis`, `, 'twas`, `he said, 'no'`), and
    /// opens a quotation when that word is not an elision.
    fn release(&mut self, vocab: &Vocab, ap: &str, next: Option<&str>) -> String {
        let prev = self.last.chars().next_back().filter(|_| !self.spaced);
        let after_word = prev.is_some_and(ends_a_word);
        let after_part = prev.is_some_and(ends_a_sentence_part);
        let next_lower = next.map(str::to_lowercase);
        let elision = next_lower.as_deref().is_some_and(|w| ELISIONS.contains(&w));
        if !elision && (after_word || (after_part && self.single_open)) {
            // Glued to what came before; the word after it is glued only if it is a contraction
            // (`space_before`), and anything else closes a quotation.
            if !next_lower
                .as_deref()
                .is_some_and(|w| CONTRACTIONS.contains(&w))
            {
                self.single_open = false;
            }
            self.last.clear();
            self.last.push_str(ap);
            self.apostrophe_after_word = true;
            self.spaced = false;
            return ap.to_string();
        }
        let mut out = String::new();
        if after_word || after_part {
            // A space, then the apostrophe as at a line start: it holds on to the word after it.
            out.push(' ');
            self.last.clear();
        }
        if !elision && next.is_some_and(|w| w.starts_with(char::is_alphanumeric)) {
            self.single_open = true;
        }
        out.push_str(&self.emit(vocab, ap, false));
        out
    }

    /// Writes token `tok` (`eos`: it is the end-of-line token) and moves the state past it.
    fn emit(&mut self, vocab: &Vocab, tok: &str, eos: bool) -> String {
        let s = match vocab.level {
            Level::Char => tok.to_string(),
            Level::Word if eos => "\n".to_string(),
            Level::Word
                if self.last.is_empty() || self.spaced || !self.space_before(vocab, tok) =>
            {
                tok.to_string()
            }
            Level::Word => format!(" {tok}"),
        };
        if s.ends_with('\n') {
            self.last.clear();
            self.quote_open = false;
            self.single_open = false;
            self.apostrophe_after_word = false;
        } else {
            let glue = match vocab.level {
                Level::Word => glue_of_token(tok),
                Level::Char => Glue::Word,
            };
            if glue == Glue::Quote {
                self.quote_open = !self.quote_open;
            }
            self.apostrophe_after_word = glue == Glue::Apostrophe
                && !s.starts_with(' ')
                && self.last.chars().next_back().is_some_and(ends_a_word);
            // Reuse the buffer: `piece` runs once per generated token.
            self.last.clear();
            self.last.push_str(tok);
        }
        self.spaced = false;
        s
    }

    /// Whether word `next` is written with a space after the text shown so far (ending in word
    /// `self.last`). `spaces` models saw the spaces in their text: always. Otherwise Chinese is
    /// unspaced and glues to punctuation; elsewhere each side's `Glue` decides.
    fn space_before(&self, vocab: &Vocab, next: &str) -> bool {
        if vocab.segmenter == Segmenter::Spaces {
            return true;
        }
        let prev = self.last.as_str();
        let (a, b) = (prev.chars().next_back(), next.chars().next());
        let cjk = |c: Option<char>| c.is_some_and(is_cjk);
        let cjk_punct = |c: Option<char>| c.is_some_and(|c| is_cjk(c) && !is_han(c));
        let punct = |c: Option<char>| c.is_some_and(|c| !c.is_alphanumeric());
        // Chinese next to Chinese, Chinese punctuation next to anything, Chinese next to any
        // punctuation: no space. Between Chinese and a Latin word: a space, as people type
        // mixed text.
        if (cjk(a) && cjk(b))
            || cjk_punct(a)
            || cjk_punct(b)
            || (cjk(a) && punct(b))
            || (punct(a) && cjk(b))
        {
            return false;
        }
        let glue = |c: Option<char>| c.map_or(Glue::Word, glue_of);
        let no_space_after = match glue(a) {
            Glue::Open | Glue::Join => true,
            Glue::Apostrophe if self.apostrophe_after_word => {
                CONTRACTIONS.contains(&next.to_lowercase().as_str())
            }
            Glue::Apostrophe => b.is_some_and(char::is_alphanumeric),
            // `self.quote_open` already counts `prev`: an opening quote leaves it set.
            Glue::Quote => self.quote_open,
            Glue::Word | Glue::Close => false,
        };
        let no_space_before = match glue(b) {
            Glue::Close | Glue::Join => true,
            Glue::Apostrophe => a.is_some_and(ends_a_word),
            Glue::Quote => self.quote_open,
            Glue::Word | Glue::Open => false,
        };
        !(no_space_after || no_space_before)
    }
}

/// A word ends in `c`: an apostrophe right after it is glued to it (`I'll`, `boys'`) unless an
/// elision follows (`and 'tis`, see `Detokenizer::piece`).
fn ends_a_word(c: char) -> bool {
    c.is_alphanumeric()
}

/// Whether `line` (text already shown) leaves a single quote open, read as `Detokenizer::release`
/// writes them: an apostrophe between letters is inside a word, one before a letter that is not
/// an elision's opens, one after a letter or `, . ; : ! ?` closes.
fn single_quote_open(line: &str) -> bool {
    let cs: Vec<char> = line.chars().collect();
    let mut open = false;
    for (i, &c) in cs.iter().enumerate() {
        if glue_of(c) != Glue::Apostrophe {
            continue;
        }
        let before = i.checked_sub(1).map(|j| cs[j]);
        let after = cs.get(i + 1).copied();
        let word_after: String = cs[i + 1..]
            .iter()
            .take_while(|c| c.is_alphanumeric())
            .flat_map(|c| c.to_lowercase())
            .collect();
        let (b_word, a_word) = (
            before.is_some_and(ends_a_word),
            after.is_some_and(char::is_alphanumeric),
        );
        if b_word && a_word {
            continue;
        }
        if a_word && !ELISIONS.contains(&word_after.as_str()) {
            open = true;
        } else if b_word || before.is_some_and(ends_a_sentence_part) {
            open = false;
        }
    }
    open
}

/// Punctuation after which an apostrophe closes an open quotation (`'True, friends,' quoth he`);
/// otherwise it opens one (`he said, 'no'`) or an elision (`, 'tis`).
fn ends_a_sentence_part(c: char) -> bool {
    matches!(c, ',' | '.' | ';' | ':' | '!' | '?')
}
