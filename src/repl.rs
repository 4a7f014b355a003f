//! `elman repl`: an interactive session with a model.
//!
//! Each line typed is read into the running context (the hidden state carries over from line to
//! line, as in a conversation; `:reset` empties it), the most likely next tokens are shown, and a
//! completion streams out. Lines starting with `:` change settings. With a terminal, rustyline
//! gives line editing and history (Ctrl-C cancels a generation or the line, Ctrl-D exits); with
//! stdin piped, lines are read plainly, so sessions can be scripted and tested.

use crate::generate::{
    beam_search, encode_prompt, rank, split_candidates, stream, top_next, RankBy, SampleOptions,
    Until,
};
use crate::infer::{State, StreamModel};
use crate::report;
use crate::vocab::Vocab;
use anyhow::Result;
use rand::SeedableRng;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C while a generation runs.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

pub const HELP: &str = "\
type text to continue it; the context carries over from line to line
  :temp T     sampling temperature (0 = always the most likely token)
  :topk K     sample only from the K most likely tokens (0 = off)
  :topp P     sample only from the smallest set with probability P (1 = off)
  :len N      tokens to generate per line
  :seed S     restart the random generator with seed S
  :rank a,b,c rank candidate continuations of the context
  :beam W     the W most probable continuations (beam search, up to :len tokens, at most 40)
  :next K     show the K most likely next tokens (0 = off)
  :reset      forget the context (back to s = 0)
  :show       show the settings
  :help       this text
  :quit       leave (or Ctrl-D)";

/// The sampling settings as the repl's commands name them (for `SampleOptions::validate_as`).
const REPL_NAMES: [&str; 3] = [":temp", ":topk", ":topp"];

pub struct Settings {
    pub sample: SampleOptions,
    pub length: usize,
    pub seed: u64,
    pub next: usize,
}

struct Session<'a> {
    net: &'a StreamModel,
    vocab: &'a Vocab,
    settings: Settings,
    rng: rand::rngs::StdRng,
    /// The context's state; `None` before anything was typed (or after :reset).
    state: Option<State>,
    context_text: String,
}

impl<'a> Session<'a> {
    /// The end of the context, for table headings.
    fn context_tail(&self) -> String {
        let n = self.context_text.chars().count();
        if n <= 24 {
            return self.context_text.clone();
        }
        let tail: String = self.context_text.chars().skip(n - 24).collect();
        format!("…{tail}")
    }

    fn state(&self) -> Result<State> {
        match &self.state {
            Some(s) => Ok(s.clone()),
            None => crate::generate::warm_up(self.net, self.vocab, &[]),
        }
    }

    /// Handles one line; returns false to quit.
    fn line(&mut self, line: &str, out: &mut dyn Write) -> Result<bool> {
        if let Some(cmd) = line.trim_start().strip_prefix(':') {
            return self.command(cmd.trim(), out);
        }
        let p = match encode_prompt(self.vocab, line, "prompt") {
            Ok(p) => p,
            Err(e) => {
                writeln!(out, "error: {e:#}")?;
                return Ok(true);
            }
        };
        for w in &p.warnings {
            writeln!(out, "warning: {w}")?;
        }
        let mut state = match &self.state {
            Some(s) => s.clone(),
            None if p.ids.is_empty() => self.state()?,
            None => self.net.zero_state(),
        };
        self.net.feed(&mut state, &p.ids);
        self.context_text.push_str(line);
        if self.settings.next > 0 {
            let next = top_next(self.net, self.vocab, &state, self.settings.next);
            writeln!(out, "next: {}", report::next_line(&next))?;
        }
        write!(out, "{line}")?;
        CANCEL.store(false, Ordering::SeqCst);
        let opts = self.settings.sample;
        let text = stream(
            self.net,
            self.vocab,
            &mut state,
            &self.context_text,
            self.settings.length,
            &opts,
            &mut self.rng,
            Until::Length,
            &CANCEL,
            out,
        )?;
        if CANCEL.swap(false, Ordering::SeqCst) {
            write!(out, " [cancelled]")?;
        }
        writeln!(out)?;
        self.context_text.push_str(&text);
        self.state = Some(state);
        Ok(true)
    }

    fn command(&mut self, cmd: &str, out: &mut dyn Write) -> Result<bool> {
        let (name, arg) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let arg = arg.trim();
        let s = &mut self.settings;
        macro_rules! parse {
            ($t:ty, $what:literal) => {
                match arg.parse::<$t>() {
                    Ok(v) => v,
                    Err(_) => {
                        writeln!(out, "error: :{name} needs {} (got {:?})", $what, arg)?;
                        return Ok(true);
                    }
                }
            };
        }
        match name {
            "q" | "quit" | "exit" => return Ok(false),
            "help" | "h" | "?" => writeln!(out, "{HELP}")?,
            "temp" | "temperature" => {
                let t = parse!(f64, "a number ≥ 0");
                let o = SampleOptions {
                    temperature: t,
                    ..s.sample
                };
                if let Err(e) = o.validate_as(REPL_NAMES) {
                    writeln!(out, "error: {e}")?;
                } else {
                    s.sample = o;
                    writeln!(out, "temperature = {t}")?;
                }
            }
            "topk" => {
                let k = parse!(usize, "a whole number");
                s.sample.top_k = (k > 0).then_some(k);
                writeln!(out, "top-k = {}", if k > 0 { k.to_string() } else { "off".into() })?;
            }
            "topp" => {
                let p = parse!(f64, "a number in (0, 1]");
                let o = SampleOptions {
                    top_p: Some(p),
                    ..s.sample
                };
                if let Err(e) = o.validate_as(REPL_NAMES) {
                    writeln!(out, "error: {e}")?;
                } else {
                    s.sample.top_p = (p < 1.0).then_some(p);
                    writeln!(out, "top-p = {}", if p < 1.0 { p.to_string() } else { "off".into() })?;
                }
            }
            "len" | "length" => {
                let n = parse!(usize, "a whole number");
                s.length = n.min(100_000);
                writeln!(out, "length = {}", s.length)?;
            }
            "seed" => {
                let seed = parse!(u64, "a whole number");
                s.seed = seed;
                self.rng = rand::rngs::StdRng::seed_from_u64(seed);
                writeln!(out, "seed = {seed}")?;
            }
            "next" => {
                s.next = parse!(usize, "a whole number").min(100);
                writeln!(out, "next = {}", s.next)?;
            }
            "show" => writeln!(
                out,
                "temperature = {}, top-k = {}, top-p = {}, length = {}, seed = {}, next = {}, context = {} chars",
                s.sample.temperature,
                s.sample.top_k.map_or("off".into(), |k| k.to_string()),
                s.sample.top_p.map_or("off".into(), |p| p.to_string()),
                s.length,
                s.seed,
                s.next,
                self.context_text.chars().count()
            )?,
            "reset" => {
                self.state = None;
                self.context_text.clear();
                writeln!(out, "context cleared")?;
            }
            "rank" => {
                let cands = split_candidates(arg);
                if cands.is_empty() {
                    writeln!(out, "error: :rank needs candidates, comma-separated: :rank 小鸟,蜻蜓,人")?;
                    return Ok(true);
                }
                let st = self.state()?;
                match rank(self.net, self.vocab, &st, &cands, RankBy::Total) {
                    Ok(r) => {
                        let table = report::rank_table(&self.context_tail(), &r, RankBy::Total, self.vocab);
                        write!(out, "{table}")?
                    }
                    Err(e) => writeln!(out, "error: {e:#}")?,
                }
            }
            "beam" => {
                let w = if arg.is_empty() { 5 } else { parse!(usize, "a whole number") };
                let w = w.clamp(1, 50);
                let st = self.state()?;
                let beams = beam_search(self.net, self.vocab, &st, w, self.settings.length.clamp(1, 40));
                write!(out, "{}", report::beam_table(&self.context_tail(), &beams))?;
            }
            other => writeln!(out, "error: unknown command :{other} (try :help)")?,
        }
        Ok(true)
    }
}

/// Runs the session on stdin/stdout until :quit or end of input.
pub fn run(net: &StreamModel, vocab: &Vocab, settings: Settings) -> Result<()> {
    let mut session = Session {
        net,
        vocab,
        rng: rand::rngs::StdRng::seed_from_u64(settings.seed),
        settings,
        state: None,
        context_text: String::new(),
    };
    let _ = ctrlc::set_handler(|| CANCEL.store(true, Ordering::SeqCst));
    let stdout = std::io::stdout();
    if std::io::stdin().is_terminal() {
        let mut out = stdout.lock();
        writeln!(
            out,
            "elman repl: {} tokens ({}), type text to continue it, :help for commands, Ctrl-D to leave",
            vocab.len(),
            vocab.level
        )?;
        drop(out);
        let mut rl = rustyline::DefaultEditor::new()?;
        loop {
            match rl.readline("> ") {
                Ok(line) => {
                    let _ = rl.add_history_entry(line.as_str());
                    if !session.line(&line, &mut stdout.lock())? {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            }
        }
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| anyhow::anyhow!("reading standard input: {e}"))?;
            if !session.line(&line, &mut stdout.lock())? {
                break;
            }
        }
    }
    Ok(())
}
