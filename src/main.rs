//! The `elman` command line: parses the arguments (`cli/`, the only module that knows clap) and
//! runs one function per subcommand, each a few calls into the library and the printing of what
//! they return.

use anyhow::Result;
use elman::cli::{
    prompt_text, BenchCmd, Command, CompleteCmd, DemoCmd, EvalCmd, GradflowCmd, HeatmapCmd,
    InfoCmd, PlotCmd, RankCmd, ReplCmd, SampleCmd, ServeCmd, TrainCmd,
};
use elman::generate::{self, Until};
use elman::infer::StreamModel;
use elman::runtime::{DeviceKind, Runtime};
use elman::{checkpoint, demo, eval, info, repl, report, train};
use rand::SeedableRng;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// `print!` to standard output as a fallible write: a closed pipe (`elman … | head`) becomes an
/// error `main` recognises and ends on quietly, where `print!` would panic.
macro_rules! out {
    ($($t:tt)*) => {
        write!(std::io::stdout().lock(), $($t)*)?
    };
}

macro_rules! outln {
    ($($t:tt)*) => {
        writeln!(std::io::stdout().lock(), $($t)*)?
    };
}

/// Whether `e` comes from writing into a closed pipe: the reader has all it wanted, so elman
/// stops quietly and successfully, as `cat`, `git` and ripgrep do.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = elman::cli::parse();
    if cli.threads == Some(0) {
        elman::note!("error: --threads must be at least 1");
        return ExitCode::from(2);
    }
    // candle (validation scoring, the reference path) sizes its thread pool from this variable; at
    // elman's matrix sizes one thread was measured faster than two. Set before any maths runs.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    // Only training windows run on a GPU: other commands are not slowed by opening one.
    let device = match (&cli.cmd, cli.device) {
        (Command::Train(_) | Command::Bench(_), d) => d,
        (_, DeviceKind::Cpu) => DeviceKind::Cpu,
        (_, DeviceKind::Cuda) => {
            elman::note!("note: --device cuda runs training windows (train, bench); this command runs on the CPU");
            DeviceKind::Cpu
        }
    };
    match Runtime::new(device, cli.threads).and_then(|rt| run(cli.cmd, &rt)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, no backtrace (candle attaches one to its errors
            // when RUST_BACKTRACE is set).
            let msg = e
                .chain()
                .map(|c| match c.downcast_ref::<candle_core::Error>() {
                    Some(ce) => elman::runtime::without_backtrace(ce),
                    None => c.to_string(),
                })
                .collect::<Vec<_>>()
                .join(": ")
                .replace('\n', " ");
            elman::note!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Command, rt: &Runtime) -> Result<ExitCode> {
    match cmd {
        Command::Train(c) => train_cmd(*c, rt),
        Command::Eval(c) => eval_cmd(c, rt),
        Command::Gradflow(c) => gradflow_cmd(c, rt),
        Command::Plot(c) => plot_cmd(c),
        Command::Heatmap(c) => heatmap_cmd(c, rt),
        Command::Info(c) => info_cmd(c, rt),
        Command::Sample(c) => sample_cmd(c, rt),
        Command::Complete(c) => complete_cmd(c, rt),
        Command::Rank(c) => rank_cmd(c, rt),
        Command::Repl(c) => repl_cmd(c, rt),
        Command::Demo(c) => demo_cmd(c),
        Command::Bench(c) => bench_cmd(c, rt),
        Command::Serve(c) => serve_cmd(c, rt),
    }
}

fn train_cmd(c: TrainCmd, rt: &Runtime) -> Result<ExitCode> {
    train::install_ctrlc_handler();
    let quiet = c.quiet;
    let o = train::train(&c.into_args(), rt)?;
    if let Some(note) = &o.note {
        elman::note!("{note}");
        return Ok(ExitCode::SUCCESS);
    }
    if !quiet {
        let best = match (o.best_val_loss, o.best_val_bpc) {
            (Some(l), Some(b)) => format!("best validation {l:.4} nats/token, {b:.4} bpc"),
            _ => "no evaluation yet".into(),
        };
        let why = match o.stopped.as_str() {
            "interrupted" => "interrupted".to_string(),
            other => format!("stopped by --{other}"),
        };
        // An interrupted run is finished by the same command whatever its budget was.
        let then = if o.stopped == "interrupted" {
            format!(
                "; finish the run with: elman train --resume {}",
                shell_word(&o.dir.display().to_string())
            )
        } else {
            String::new()
        };
        elman::note!(
            "{why} at step {}; {best}; checkpoint saved in {}{then}",
            o.step,
            o.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_cmd(c: EvalCmd, rt: &Runtime) -> Result<ExitCode> {
    if c.streams == 0 {
        anyhow::bail!("--streams must be at least 1");
    }
    let loaded = checkpoint::load(&c.model, &rt.device)?;
    let r = eval::eval_files(&loaded, &c.files, c.streams, rt.threads, c.quiet || c.json)?;
    if c.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", report::eval_table(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// A model loaded and a prompt read into its state: where sample, complete and rank start.
struct Prompted {
    loaded: checkpoint::Loaded,
    net: StreamModel,
    state: elman::infer::State,
}

/// Loads `model`, encodes `prompt` (its warnings printed), and runs the model over it.
fn prompted(model: &std::path::Path, prompt: &str, rt: &Runtime) -> Result<Prompted> {
    let loaded = checkpoint::load(model, &rt.device)?;
    let net = StreamModel::new(&loaded.model)?;
    let ids = generate::encode_prompt(&loaded.vocab, prompt, "--prompt")?;
    for w in &ids.warnings {
        elman::note!("warning: {w}");
    }
    let state = generate::warm_up(&net, &loaded.vocab, &ids.ids)?;
    Ok(Prompted { loaded, net, state })
}

fn sample_cmd(c: SampleCmd, rt: &Runtime) -> Result<ExitCode> {
    let prompt_str = prompt_text(c.prompt, &c.prompt_file)?;
    let opts = c.sampling.options()?;
    let seed = c.sampling.seed();
    let Prompted {
        loaded,
        net,
        state: start,
    } = prompted(&c.model, &prompt_str, rt)?;
    let vocab = &loaded.vocab;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    repl::CANCEL.store(false, Ordering::SeqCst);
    let _ = ctrlc::set_handler(|| repl::CANCEL.store(true, Ordering::SeqCst));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut samples = Vec::new();
    for i in 0..c.count {
        // Streamed as drawn; with --json only collected.
        let mut sink = std::io::sink();
        let to: &mut dyn Write = if c.json { &mut sink } else { &mut out };
        if i > 0 {
            write!(to, "\n---\n")?;
        }
        write!(to, "{prompt_str}")?;
        let mut st = start.clone();
        samples.push(generate::stream(
            &net,
            vocab,
            &mut st,
            &prompt_str,
            c.length,
            &opts,
            &mut rng,
            Until::Length,
            &repl::CANCEL,
            to,
        )?);
        if repl::CANCEL.load(Ordering::SeqCst) {
            break;
        }
    }
    if c.json {
        let v = serde_json::json!({
            "model": loaded.dir.display().to_string(),
            "prompt": prompt_str,
            "seed": seed,
            "length": c.length,
            "temperature": opts.temperature,
            "top_k": opts.top_k,
            "top_p": opts.top_p,
            "samples": samples,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out)?;
    }
    if repl::CANCEL.load(Ordering::SeqCst) {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

fn complete_cmd(c: CompleteCmd, rt: &Runtime) -> Result<ExitCode> {
    let prompt_str = prompt_text(c.prompt.prompt, &c.prompt.prompt_file)?;
    let Prompted {
        loaded,
        net,
        state: st,
    } = prompted(&c.model, &prompt_str, rt)?;
    let vocab = &loaded.vocab;
    if let Some(w) = c.beam {
        if w == 0 || c.max_tokens == 0 {
            anyhow::bail!("--beam and --max-tokens must be at least 1");
        }
        let beams = generate::beam_search(&net, vocab, &st, w, c.max_tokens);
        if c.json {
            let v = serde_json::json!({"prompt": prompt_str, "beam": w, "continuations": beams});
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!("{}", report::beam_table(&prompt_str, &beams));
        }
    } else {
        let next = generate::top_next(&net, vocab, &st, c.top.max(1));
        if c.json {
            let v = serde_json::json!({"prompt": prompt_str, "next": next});
            outln!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            out!("{}", report::next_table(&prompt_str, &next));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rank_cmd(c: RankCmd, rt: &Runtime) -> Result<ExitCode> {
    let prompt_str = prompt_text(c.prompt.prompt.clone(), &c.prompt.prompt_file)?;
    let cands = c.candidates()?;
    let Prompted {
        loaded,
        net,
        state: st,
    } = prompted(&c.model, &prompt_str, rt)?;
    let vocab = &loaded.vocab;
    let ranked = generate::rank(&net, vocab, &st, &cands, c.by)?;
    for w in ranked.iter().flat_map(|r| &r.warnings) {
        elman::note!("warning: {w}");
    }
    if c.json {
        let v = serde_json::json!({"prompt": prompt_str, "sorted_by": c.by, "candidates": ranked});
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        out!("{}", report::rank_table(&prompt_str, &ranked, c.by, vocab));
    }
    Ok(ExitCode::SUCCESS)
}

fn repl_cmd(c: ReplCmd, rt: &Runtime) -> Result<ExitCode> {
    let opts = c.sampling.options()?;
    let loaded = checkpoint::load(&c.model, &rt.device)?;
    let net = StreamModel::new(&loaded.model)?;
    let settings = repl::Settings {
        sample: opts,
        length: c.length,
        seed: c.sampling.seed(),
        next: 5,
    };
    repl::run(&net, &loaded.vocab, settings)?;
    Ok(ExitCode::SUCCESS)
}

fn demo_cmd(c: DemoCmd) -> Result<ExitCode> {
    train::install_ctrlc_handler();
    let args = demo::DemoArgs {
        corpus: c.corpus,
        out: c.out,
        steps: c.steps,
        reuse: c.reuse,
        quiet: c.quiet,
    };
    demo::run(&args, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

fn bench_cmd(c: BenchCmd, rt: &Runtime) -> Result<ExitCode> {
    let args = c.to_args(rt)?;
    let quiet = c.json;
    let r = elman::bench::run(&args, |what| {
        if !quiet {
            elman::note!("measuring {what} …");
        }
    })?;
    if c.json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        out!("{}", elman::bench::render(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn gradflow_cmd(c: GradflowCmd, rt: &Runtime) -> Result<ExitCode> {
    let (req, out, json) = c.into_request()?;
    let r = elman::gradflow::run(&req, rt)?;
    let name = r.text.join(", ");
    let svg = elman::plot::svg(&elman::gradflow::chart(&r.curves, &name))?;
    checkpoint::write_atomic(&out, svg.as_bytes())?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        outln!(
            "mean ‖∂loss(t)/∂s(t−k)‖ over {} positions of {name} ({} tokens)",
            r.curves.first().map_or(0, |c| c.positions),
            r.tokens
        );
        out!("{}", elman::gradflow::table(&r.curves));
        outln!("chart written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn plot_cmd(c: PlotCmd) -> Result<ExitCode> {
    let runs = elman::plot::read_runs(&c.runs)?;
    let chart = elman::plot::compare_chart(&runs, c.x, c.validation_only, c.y_max);
    let svg = elman::plot::svg(&chart)?;
    checkpoint::write_atomic(&c.out, svg.as_bytes())?;
    outln!("chart written to {}", c.out.display());
    Ok(ExitCode::SUCCESS)
}

fn heatmap_cmd(c: HeatmapCmd, rt: &Runtime) -> Result<ExitCode> {
    if c.max_tokens < 2 {
        anyhow::bail!("--max-tokens must be at least 2");
    }
    let loaded = checkpoint::load(&c.model, &rt.device)?;
    let net = StreamModel::new(&loaded.model)?;
    let corpus = elman::corpus::Corpus::read(&c.files)?;
    let text_name = corpus
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let opts = elman::heatmap::Options {
        unit: c.unit,
        layer: c.layer,
        top: c.top,
        max_tokens: c.max_tokens,
        cell_state: c.cell_state,
        quiet: c.quiet || c.json,
    };
    opts.check(&net)?;
    let model_name = loaded.dir.display().to_string();
    let h = elman::heatmap::analyse(
        &net,
        &loaded.vocab,
        &corpus.text,
        opts,
        &model_name,
        &text_name,
    )
    .map_err(|e| {
        elman::corpus::unknown_char_error(&corpus.files, &loaded.vocab)
            .unwrap_or_else(|| anyhow::anyhow!("{text_name}: {e}"))
    })?;
    checkpoint::write_atomic(&c.out, elman::heatmap::page(&h)?.as_bytes())?;
    if c.json {
        let v = serde_json::json!({
            "out": c.out.display().to_string(),
            "tokens": h.tokens.len(),
            "predicted": h.predicted,
            "nats_per_token": h.nats_per_token,
            "bits_per_char": h.bits_per_char,
            "truncated": h.truncated,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if h.truncated {
            elman::note!(
                "note: the page shows the first {} tokens of the text (--max-tokens)",
                h.tokens.len()
            );
        }
        outln!(
            "{} tokens, {:.4} nats/token, {:.4} bits/char; page written to {}",
            h.tokens.len(),
            h.nats_per_token,
            h.bits_per_char,
            c.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn info_cmd(c: InfoCmd, rt: &Runtime) -> Result<ExitCode> {
    let i = info::info(&c.model, rt)?;
    if c.json {
        outln!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        out!("{}", info::render(&i));
    }
    // A damaged checkpoint is shown as far as it can be, and still fails.
    match i.problem {
        Some(problem) => Err(anyhow::anyhow!(problem)),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn serve_cmd(c: ServeCmd, rt: &Runtime) -> Result<ExitCode> {
    let args = elman::serve::ServeArgs {
        models: c.model,
        host: c.host,
        port: c.port,
        api_key: c
            .api_key
            .or_else(|| std::env::var("ELMAN_API_KEY").ok())
            .filter(|k| !k.is_empty()),
        insecure: c.insecure,
        watch: c.watch,
    };
    elman::serve::run(&args, rt)?;
    Ok(ExitCode::SUCCESS)
}

/// `word` as one shell word: as it is when it holds nothing the shell reads specially, else in
/// single quotes (a quote inside written as '\'').
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "/._-+,:@%=".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
