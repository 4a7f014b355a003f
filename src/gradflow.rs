//! Looking inside — how far back the gradient reaches (the chapter's last section).
//!
//! For a position t of real text, the loss there is L(t) = −log p(x(t+1) | s(t)). Back-propagation
//! through time carries ∂L(t)/∂s(t) back one step at a time:
//!
//! ```text
//! δ(0) = Vᵀ (softmax(o(t)) − onehot(x(t+1)))
//! δ(k) = Wᵀ (σ′(a(t−k+1)) ⊙ δ(k−1))          = ∂L(t)/∂s(t−k)
//! ```
//!
//! so ‖δ(k)‖ ≤ ‖δ(0)‖ · (‖W‖₂ · sup σ′)^k. For the book's sigmoid sup σ′ = 1/4: when ‖W‖₂ ≤ 1 the
//! gradient that reaches k steps back shrinks at least as fast as (1/4)^k. [`measure`] computes
//! ‖δ(k)‖ exactly (the same equations as training, in f64) and averages it over many positions.
//!
//! With several layers the curve is the top layer's state, whose only paths to L(t) are its own
//! recurrence and the decoder, so the recursion above is exact for it too.

use crate::cell::Activation;
use crate::cell::{CellKind, StateGrad, StepRecord};
use crate::infer::StreamModel;
use anyhow::{bail, Result};
use serde::Serialize;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Largest k (steps back).
    pub max_k: usize,
    /// Positions t averaged over, spread evenly over the text.
    pub positions: usize,
}

/// A kind of fresh model to measure: an Elman network with a nonlinearity, or a gated cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kind {
    pub cell: CellKind,
    pub activation: Activation,
}

impl Kind {
    pub fn name(&self) -> String {
        self.cell.short_label(self.activation)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    /// `sigmoid`, `tanh`, `relu` (Elman networks), `elman` (tanh), `lstm`, `gru`.
    fn from_str(s: &str) -> Result<Kind, String> {
        let elman = |activation| Kind {
            cell: CellKind::Elman,
            activation,
        };
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "sigmoid" => elman(Activation::Sigmoid),
            "tanh" | "elman" => elman(Activation::Tanh),
            "relu" => elman(Activation::Relu),
            "lstm" => Kind {
                cell: CellKind::Lstm,
                activation: Activation::Tanh,
            },
            "gru" => Kind {
                cell: CellKind::Gru,
                activation: Activation::Tanh,
            },
            other => {
                return Err(format!(
                    "{other:?}: expected sigmoid, tanh, relu, elman, lstm or gru"
                ))
            }
        })
    }
}

/// One measured curve.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub label: String,
    pub cell: CellKind,
    pub activation: Activation,
    pub hidden: usize,
    /// ‖W‖₂ of the top layer's recurrent weight (its largest singular value).
    pub w_spectral_norm: f64,
    /// How many positions were averaged.
    pub positions: usize,
    /// mean over positions of ‖∂L(t)/∂s(t−k)‖₂, for k = 0..=max_k.
    pub mean_norm: Vec<f64>,
    /// The guaranteed bound mean_norm[0] · (‖W‖₂ · sup σ′)^k (infinite where the cell has none).
    pub bound: Vec<f64>,
    /// What `relative` divides by: mean_norm[0].
    pub norm0: f64,
    /// An LSTM's cell-state curve: ‖∂L(t)/∂c(t−k)‖ with h(t−k) held apart (the gradient that
    /// travels along c), and at k = 0, where c(t) reaches L(t) only through h(t), what it gets
    /// from there. No bound applies to it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cell_state: bool,
}

impl Curve {
    /// Whether the chapter's bound applies with the book's sup σ′ = 1/4 (a sigmoid Elman cell):
    /// its chart draws the bound and (1/4)^k.
    pub fn has_books_bound(&self) -> bool {
        self.cell.sup_slope(self.activation) == Some(0.25)
    }

    /// mean_norm[k] / norm0.
    pub fn relative(&self) -> Vec<f64> {
        let n0 = self.norm0;
        self.mean_norm
            .iter()
            .map(|&x| if n0 > 0.0 { x / n0 } else { 0.0 })
            .collect()
    }
}

/// The largest singular value of a row-major n×n matrix, by power iteration on AᵀA (in f64).
pub fn spectral_norm(a: &[f32], n: usize) -> f64 {
    spectral_norm_of(a, n, n)
}

/// The largest singular value of a row-major m×n matrix (a gated cell's stacked W_hh).
pub fn spectral_norm_of(a: &[f32], m: usize, n: usize) -> f64 {
    let mut v: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64 * 0.1).collect();
    let mut sigma = 0.0;
    for _ in 0..300 {
        // u = A v, w = Aᵀ u
        let u: Vec<f64> = (0..m)
            .map(|i| (0..n).map(|j| a[i * n + j] as f64 * v[j]).sum())
            .collect();
        let mut w = vec![0f64; n];
        for i in 0..m {
            for j in 0..n {
                w[j] += a[i * n + j] as f64 * u[i];
            }
        }
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        let next = norm.sqrt();
        v = w.into_iter().map(|x| x / norm).collect();
        if (next - sigma).abs() <= 1e-12 * next {
            sigma = next;
            break;
        }
        sigma = next;
    }
    sigma
}

/// Measures ‖∂L(t)/∂s(t−k)‖ for k = 0..=max_k, averaged over `positions` positions t spread
/// evenly over `tokens` (each t has at least max_k tokens of history before it), by the cell's own
/// backward step ([`crate::cell::StreamCell::backward`]). An LSTM gives a second curve, ‖∂L(t)/∂c(t−k)‖ for
/// its cell state (with h(t−k) held apart: the gradient that travels along c).
pub fn measure(
    net: &StreamModel,
    tokens: &[u32],
    opts: Options,
    label: &str,
) -> Result<Vec<Curve>> {
    measure_reporting(net, tokens, opts, label, &|_| {})
}

/// [`measure`], telling `progress` of every token read.
pub fn measure_reporting(
    net: &StreamModel,
    tokens: &[u32],
    opts: Options,
    label: &str,
    progress: &dyn Fn(u64),
) -> Result<Vec<Curve>> {
    let cfg = net.config;
    let (h, k_max) = (cfg.hidden, opts.max_k);
    if opts.positions == 0 {
        bail!("--positions must be at least 1");
    }
    if tokens.len() < k_max + 2 {
        bail!(
            "the text has {} tokens; measuring {k_max} steps back needs at least {}",
            tokens.len(),
            k_max + 2
        );
    }
    // Positions t ∈ [max_k, len − 2], evenly spaced.
    let first = k_max;
    let last = tokens.len() - 2;
    let count = opts.positions.min(last - first + 1);
    let chosen: Vec<usize> = (0..count)
        .map(|i| {
            if count == 1 {
                last
            } else {
                first + i * (last - first) / (count - 1)
            }
        })
        .collect();

    let top = cfg.layers - 1;
    let cell = net.cell();
    let weights = net.layer(top);
    let dec = net.decoder_weight();
    let w_norm = spectral_norm_of(&weights.w_hh, cell.gates() * h, h);

    // A ring of what the last max_k + 2 steps of the top layer left (step t back to t−max_k−1:
    // the backward step through τ reads τ − 1's record too).
    let ring_len = k_max + 2;
    let mut ring = vec![StepRecord::default(); ring_len];
    let (mut sums, mut sums_c) = (vec![0f64; k_max + 1], vec![0f64; k_max + 1]);
    let mut state = net.zero_state();
    let mut next = chosen.iter().peekable();
    let mut d = StateGrad::new(cell.gates(), cell.carried(), h);
    for (t, &x) in tokens.iter().enumerate().take(last + 1) {
        net.step(&mut state, x);
        progress(1);
        let r = &mut ring[t % ring_len];
        r.h.clone_from(&state.h[top]);
        r.c.clone_from(&state.c[top]);
        r.gates.clear();
        r.gates.extend_from_slice(state.gates());
        if next.peek() != Some(&&t) {
            continue;
        }
        next.next();
        // δ(0) = Vᵀ (p − onehot(target)); nothing reaches c(t) but through h(t).
        let lp = net.log_probs(&state);
        let target = tokens[t + 1] as usize;
        d.h.iter_mut().for_each(|v| *v = 0.0);
        d.c.iter_mut().for_each(|v| *v = 0.0);
        for (v, &l) in lp.iter().enumerate() {
            let g = l.exp() - if v == target { 1.0 } else { 0.0 };
            if g == 0.0 {
                continue;
            }
            let row = &dec[v * h..(v + 1) * h];
            for (dv, &r) in d.h.iter_mut().zip(row) {
                *dv += g * r as f64;
            }
        }
        sums[0] += norm(&d.h);
        // The cell state at k = 0: what c(t) gets through h(t), the only way it reaches L(t).
        let mut entry = d.clone();
        cell.stream()
            .carried_from_output(&ring[t % ring_len], &mut entry);
        sums_c[0] += norm(&entry.c);
        for k in 1..=k_max {
            // Back through the step that made s(t−k+1), by the cell's own backward equations.
            let after = &ring[(t + ring_len - (k - 1)) % ring_len];
            let before = &ring[(t + ring_len - k) % ring_len];
            cell.stream().backward(weights, after, before, &mut d);
            sums[k] += norm(&d.h);
            sums_c[k] += norm(&d.c);
        }
    }
    let mean_norm: Vec<f64> = sums.iter().map(|s| s / count as f64).collect();
    // The cell's guaranteed shrink per step, where it has one (none: the bound stays infinite).
    let rate = cell.gradient_bound_rate(w_norm).unwrap_or(f64::INFINITY);
    let bound = (0..=k_max)
        .map(|k| mean_norm[0] * rate.powi(k as i32))
        .collect();
    let curve = Curve {
        label: label.to_string(),
        cell: cell.kind(),
        activation: cfg.activation,
        hidden: h,
        w_spectral_norm: w_norm,
        positions: count,
        norm0: mean_norm[0],
        mean_norm,
        bound,
        cell_state: false,
    };
    let mut curves = vec![curve.clone()];
    if cell.carried() > 1 {
        let mean_c: Vec<f64> = sums_c.iter().map(|s| s / count as f64).collect();
        curves.push(Curve {
            label: format!("{label}, cell state c"),
            norm0: mean_c[0],
            mean_norm: mean_c,
            cell_state: true,
            bound: vec![f64::INFINITY; k_max + 1],
            ..curve
        });
    }
    Ok(curves)
}

/// [`measure`] with a progress bar (on a terminal, unless `req.quiet`).
fn measured(net: &StreamModel, tokens: &[u32], req: &Request, label: &str) -> Result<Vec<Curve>> {
    let read = tokens.len().saturating_sub(1) as u64;
    let bar = crate::progress::Bar::new(read, &format!("gradflow {label}"), req.quiet);
    let curves = measure_reporting(net, tokens, req.options, label, &|n| bar.inc(n));
    bar.finish();
    curves
}

/// 1, 0.133, 2.30e-3: a ratio readable at a glance.
fn ratio(x: f64) -> String {
    if x == 1.0 {
        "1".into()
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The table printed by `elman gradflow`: for each k, each curve's mean norm and its ratio to k = 0.
pub fn table(curves: &[Curve]) -> String {
    use crate::report::{pad, pad_left};
    let mut out = String::new();
    let ks = curves.first().map_or(0, |c| c.mean_norm.len());
    let col = curves
        .iter()
        .map(|c| unicode_width::UnicodeWidthStr::width(c.label.as_str()))
        .max()
        .unwrap_or(0)
        .max(20);
    out.push_str(&pad_left("k", 4));
    for c in curves {
        out.push_str("  ");
        out.push_str(&pad(&c.label, col));
    }
    out.push('\n');
    out.push_str(&pad_left("", 4));
    for _ in curves {
        out.push_str("  ");
        out.push_str(&pad("‖∂L/∂s‖   × of k=0", col));
    }
    out.push('\n');
    for k in 0..ks {
        if k > 10 && k % 5 != 0 && k + 1 != ks {
            continue;
        }
        out.push_str(&pad_left(&k.to_string(), 4));
        for c in curves {
            let rel = c.relative()[k];
            out.push_str("  ");
            out.push_str(&pad(
                &format!("{:<9.3e} {:<9}", c.mean_norm[k], ratio(rel)),
                col,
            ));
        }
        out.push('\n');
    }
    for c in curves.iter().filter(|c| !c.cell_state) {
        let Some(slope) = c.cell.sup_slope(c.activation) else {
            out.push_str(&format!(
                "{}: no such bound; {}\n",
                c.label,
                c.cell.gradient_path().unwrap_or_default()
            ));
            continue;
        };
        let rate = c.w_spectral_norm * slope;
        out.push_str(&format!(
            "{}: ‖W‖₂ = {:.3}, sup σ′ = {}, so ‖∂L/∂s(t−k)‖ ≤ ‖∂L/∂s(t)‖ · {:.3}^k{}\n",
            c.label,
            c.w_spectral_norm,
            if slope == 0.25 { "1/4" } else { "1" },
            rate,
            if rate < 1.0 {
                " (vanishes)"
            } else {
                " (no guarantee of vanishing)"
            }
        ));
    }
    out
}

/// The gradient-flow chart: one curve per measurement (log scale), each sigmoid curve with its
/// guaranteed bound, and the book's (1/4)^k for reference.
pub fn chart(curves: &[Curve], text_name: &str) -> crate::plot::Chart {
    use crate::plot::{Chart, Series};
    let mut series = Vec::new();
    for (i, c) in curves.iter().enumerate() {
        series.push(Series {
            label: c.label.clone(),
            points: c
                .mean_norm
                .iter()
                .enumerate()
                .map(|(k, &v)| (k as f64, v))
                .collect(),
            dashed: false,
            color: i,
        });
        if c.has_books_bound() {
            series.push(Series {
                label: format!("bound ‖δ0‖·(‖W‖/4)^k, ‖W‖ = {:.2}", c.w_spectral_norm),
                points: c
                    .bound
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| (k as f64, v))
                    .collect(),
                dashed: true,
                color: i,
            });
        }
    }
    if let Some(c) = curves.iter().find(|c| c.has_books_bound()) {
        series.push(Series {
            label: "(1/4)^k, the book".into(),
            points: (0..c.mean_norm.len())
                .map(|k| (k as f64, c.mean_norm[0] * 0.25f64.powi(k as i32)))
                .collect(),
            dashed: true,
            color: 6,
        });
    }
    Chart {
        title: format!("gradient reaching k steps back, mean over positions of {text_name}"),
        x_label: "k (steps back)".into(),
        y_label: "‖∂loss(t)/∂s(t−k)‖".into(),
        log_y: true,
        x_is_count: false,
        series,
    }
}

/// What `elman gradflow` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// A trained checkpoint to measure (and whose vocabulary fresh models share).
    pub model: Option<std::path::PathBuf>,
    /// The text positions come from [default: the model's training files, or the bundled corpus].
    pub text: Vec<std::path::PathBuf>,
    /// Fresh (untrained) models to measure, one per kind.
    pub fresh: Vec<Kind>,
    /// Fresh models' hidden size [default: the model's, or 256].
    pub hidden: Option<usize>,
    pub seed: u64,
    /// Rescale fresh models' recurrent weight to this spectral norm.
    pub w_norm: Option<f64>,
    pub options: Options,
    /// At most this many tokens of the text are read through.
    pub max_tokens: usize,
    /// No progress bar.
    pub quiet: bool,
}

/// The measured curves and what they were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub text: Vec<String>,
    pub tokens: usize,
    pub curves: Vec<Curve>,
}

/// Runs a [`Request`]: loads or creates the models, reads the text, measures every curve.
pub fn run(req: &Request, rt: &crate::runtime::Runtime) -> Result<Report> {
    use crate::checkpoint;
    use crate::config::ModelConfig;
    use crate::model::{init_params, GraphModel};
    use candle_core::DType;
    let dev = rt.device.clone();
    let loaded = match &req.model {
        Some(m) => Some(checkpoint::load(m, &dev)?),
        None => None,
    };
    let text_files: Vec<std::path::PathBuf> = if !req.text.is_empty() {
        req.text.clone()
    } else if let Some(l) = &loaded {
        let files: Vec<std::path::PathBuf> = l.config.corpus.files.iter().map(Into::into).collect();
        if files.is_empty() || !files.iter().all(|f| f.exists()) {
            bail!(
                "the files {} was trained on are not here; give a text with --text FILE",
                l.dir.display()
            );
        }
        files
    } else {
        let demo = std::path::PathBuf::from(crate::demo::DEMO_CORPUS);
        if !demo.exists() {
            bail!(
                "{}: not found; without --model, gradflow measures on the bundled corpus: give a text with --text FILE, or run from the repository's folder",
                demo.display()
            );
        }
        vec![demo]
    };
    let corpus = crate::corpus::Corpus::read(&text_files)?;
    let vocab = match &loaded {
        Some(l) => l.vocab.clone(),
        None => crate::vocab::Vocab::build(&corpus.text, &Default::default())?,
    };
    // Only the first --max-tokens tokens are measured: encode a prefix of whole lines, doubling
    // it until it yields enough tokens, instead of the whole file. Tokens and jieba's cuts never
    // span a line break, so the prefix encodes exactly as the start of the whole text does.
    let text = corpus.text.as_str();
    let mut chars = req.max_tokens.saturating_mul(2).max(1024);
    let mut tokens = loop {
        let cut = text
            .char_indices()
            .nth(chars)
            .map_or(text.len(), |(i, _)| i);
        let end = text[cut..].find('\n').map_or(text.len(), |j| cut + j + 1);
        let tokens = vocab.encode(&text[..end]).map_err(|e| {
            crate::corpus::unknown_char_error(&text_files, &vocab).unwrap_or_else(|| {
                let names: Vec<String> =
                    text_files.iter().map(|f| f.display().to_string()).collect();
                anyhow::anyhow!("{}: {e}", names.join(", "))
            })
        })?;
        if tokens.len() >= req.max_tokens || end == text.len() {
            break tokens;
        }
        chars = chars.saturating_mul(2);
    };
    drop(corpus);
    tokens.truncate(req.max_tokens);

    let mut curves = Vec::new();
    if let Some(l) = &loaded {
        let net = StreamModel::new(&l.model)?;
        let name = l
            .dir
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned());
        let mc = &l.config.model;
        let kind = Kind {
            cell: mc.cell,
            activation: mc.activation,
        };
        let label = format!("{name} ({}, trained)", kind.name());
        curves.extend(measured(&net, &tokens, req, &label)?);
    }
    let hidden = req
        .hidden
        .or(loaded.as_ref().map(|l| l.config.model.hidden))
        .unwrap_or(256);
    for &kind in &req.fresh {
        let cfg = ModelConfig {
            activation: kind.activation,
            cell: kind.cell,
            ..ModelConfig::new(vocab.len(), hidden)
        };
        let act = kind.name();
        let vm = init_params(&cfg, req.seed, DType::F32, &dev)?;
        let model = GraphModel::new(
            cfg,
            candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )?;
        let mut net = StreamModel::new(&model)?;
        let mut label = format!("{act} (fresh, H={hidden})");
        if let Some(target) = req.w_norm {
            if !(target.is_finite() && target >= 0.0) {
                bail!("--w-norm must be a non-negative number");
            }
            let gates = net.cell().gates();
            let now = spectral_norm_of(net.recurrent_weight(0), gates * hidden, hidden);
            net.scale_recurrent_weight(0, (target / now) as f32);
            label = format!("{act} (fresh, ‖W‖={target})");
        }
        curves.extend(measured(&net, &tokens, req, &label)?);
    }
    Ok(Report {
        text: text_files.iter().map(|f| f.display().to_string()).collect(),
        tokens: tokens.len(),
        curves,
    })
}
