//! The frame every thread of a fused window shares: the parameters by role ([`Params`], read in
//! place from the tensors), one thread's buffers ([`Work`]), what every thread reads ([`Shared`]),
//! layer 0's input table, and running a window over the threads with the reduce of their
//! gradients in thread order ([`execute`]). `window.rs` and `decoder.rs` are one thread's part.

use crate::cell::{Cell, LayerBuf};
use crate::config::{ModelConfig, Param, ParamLayout};
use crate::kernels::gemm::mm;
use crate::kernels::packed::PackedB;
use crate::stochastic::{Dropout, EmbedDrop, Sample};

/// The parameters as flat row-major slices, in layout order, found by role.
pub struct Params<'a> {
    layout: ParamLayout,
    flat: Vec<&'a [f32]>,
}

impl<'a> Params<'a> {
    /// `flat` holds every parameter of `cfg` in layout order ([`ModelConfig::layout`]). Panics if
    /// a length disagrees with the layout.
    pub fn new(cfg: &ModelConfig, flat: Vec<&'a [f32]>) -> Params<'a> {
        let layout = cfg.layout();
        assert_eq!(flat.len(), layout.len(), "one slice per parameter");
        for ((n, s), (p, _)) in layout.sizes().zip(&flat).zip(layout.iter()) {
            assert_eq!(
                s.len(),
                n,
                "parameter {p:?} has {} values, not {n}",
                s.len()
            );
        }
        Params { layout, flat }
    }

    /// The values of `p`.
    pub fn get(&self, p: Param) -> &'a [f32] {
        self.flat[self.layout.index(p)]
    }
}

/// Runs `f` on the tensors' data as `Params` (read where they lie: [`crate::runtime::read_f32`]).
pub fn with_params<R>(
    cfg: &ModelConfig,
    tensors: &[&candle_core::Tensor],
    f: impl FnOnce(&Params) -> R,
) -> candle_core::Result<R> {
    crate::runtime::read_f32(tensors, |flat| f(&Params::new(cfg, flat)))
}

/// One thread's buffers, sized once for its share of the streams.
pub(super) struct Work {
    /// First stream and number of streams.
    pub(super) s0: usize,
    pub(super) b: usize,
    /// Per layer: its states S_{−1}, S_0 … S_{T−1} (each b×H) and the cell's own per-step values.
    pub(super) layers: Vec<LayerBuf>,
    /// T·b × V: logits, then dO.
    pub(super) logits: Vec<f32>,
    /// T·b × H: dS of the current layer (turned into dP in place by a one-gate cell).
    pub(super) dh: Vec<f32>,
    /// T·b × H: dS for the layer below.
    pub(super) dx: Vec<f32>,
    /// Gated cells: T·b × G, the gradient with respect to the pre-activations (and, where the
    /// recurrent side's differs, its own), and the cell's backward scratch.
    pub(super) d_pre: Vec<f32>,
    pub(super) d_rec: Vec<f32>,
    pub(super) bwd_scratch: Vec<f32>,
    /// Layer 0's dU, compact: a row of G (dUᵀ) per distinct token this share read in the window,
    /// `in_ids[j]` (ascending) the token of row j; `execute` scatters them into the summed gradient. Only the
    /// columns of tokens read are non-zero, and a full G × V buffer per thread was tens of MB
    /// at the word level, cleared and summed every step.
    pub(super) in_ids: Vec<u32>,
    pub(super) du_rows: Vec<f32>,
    /// With an input embedding: the embeddings of `in_ids` (n × E), and the embedding's gradient
    /// rows for them (n × E), which `reduce` scatters like `du_rows`.
    pub(super) e_rows: Vec<f32>,
    pub(super) de_rows: Vec<f32>,
    /// Sampled softmax: the decoder's gradient rows, compact the same way: the K samples (in
    /// `Sample::ids` order), then this share's targets that are not among them.
    pub(super) out_ids: Vec<u32>,
    pub(super) dv_rows: Vec<f32>,
    /// Token → its row in `du_rows` / `dv_rows` (`u32::MAX` when none; reset every window).
    pub(super) in_row: Vec<u32>,
    pub(super) out_row: Vec<u32>,
    /// Gradients in layout order; layer 0's U (`in_ids`/`du_rows`) and, with the sampled
    /// softmax, the decoder weights (`out_ids`/`dv_rows`) are held compact instead.
    pub(super) grads: Vec<Vec<f32>>,
    /// Dropout (training only; empty without it): per layer, T·b × H masks (0 or 1/(1 − p)) and
    /// the masked outputs that go up to the next layer or the decoder.
    pub(super) masks: Vec<Vec<f32>>,
    pub(super) dropped: Vec<Vec<f32>>,
    pub(super) loss: f64,
}

/// What every thread reads in a sampled-softmax step.
pub(super) struct Sampled<'a> {
    pub(super) sample: &'a Sample,
    pub(super) dec_s: &'a [f32],
    pub(super) bias_s: &'a [f32],
    pub(super) slot: &'a [u32],
}

/// Layer 0's input term for each token of `tokens`: the token's column of W_ih (one-hot input), or
/// its embedding times W_ihᵀ (one small product for all of them), times the token's embedding
/// dropout factor (`drop`; training only), plus the input `bias`; token x's row goes to row
/// `row_of(x)` of `table` (G floats a row). `scratch` holds the embeddings and their products
/// meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) fn input_table(
    cfg: &ModelConfig,
    params: &Params,
    tokens: &[u32],
    bias: &[f32],
    drop: Option<&EmbedDrop>,
    table: &mut [f32],
    scratch: &mut Vec<f32>,
    row_of: impl Fn(u32) -> usize,
) {
    let g = bias.len();
    let v = cfg.vocab_size;
    let w_ih = params.get(Param::WeightIh(0));
    // ×1.0 is exact: without embedding dropout the table is what it always was.
    let keep = |x: u32| drop.map_or(1.0, |d| d.keep(x));
    match cfg.embed {
        None => {
            // Uᵀ rows of the tokens read: a strided gather of their columns, not a transpose of
            // all V (which dominates at word level).
            for &x in tokens {
                let (r, k) = (row_of(x), keep(x));
                let row = &mut table[r * g..(r + 1) * g];
                for (i, (o, b)) in row.iter_mut().zip(bias).enumerate() {
                    *o = w_ih[i * v + x as usize] * k + b;
                }
            }
        }
        Some(e) => {
            let n = tokens.len();
            let emb = params.get(Param::Embedding);
            scratch.clear();
            scratch.resize(n * (e + g), 0.0);
            let (rows, prod) = scratch.split_at_mut(n * e);
            for (j, &x) in tokens.iter().enumerate() {
                let x = x as usize;
                rows[j * e..(j + 1) * e].copy_from_slice(&emb[x * e..(x + 1) * e]);
            }
            // (n × E) · W_ihᵀ (E × G); W_ih is G × E row-major.
            mm(n, g, e, prod, (g, 1), false, rows, (e, 1), w_ih, (1, e));
            for (j, &x) in tokens.iter().enumerate() {
                let (r, k) = (row_of(x), keep(x));
                let row = &mut table[r * g..(r + 1) * g];
                for ((o, p), b) in row.iter_mut().zip(&prod[j * g..(j + 1) * g]).zip(bias) {
                    *o = p * k + b;
                }
            }
        }
    }
}

/// What every thread of a window reads.
pub(super) struct Shared<'a> {
    pub(super) cfg: ModelConfig,
    pub(super) cell: &'static dyn Cell,
    pub(super) layout: &'a ParamLayout,
    pub(super) batch: usize,
    /// Steps in this window (≤ the buffers' size).
    pub(super) bptt: usize,
    pub(super) backward: bool,
    pub(super) params: &'a Params<'a>,
    pub(super) u0_t: &'a [f32],
    pub(super) bias: &'a [Vec<f32>],
    pub(super) w_fwd: &'a [PackedB],
    pub(super) w_bwd: &'a [PackedB],
    pub(super) dec_fwd: &'a PackedB,
    pub(super) inputs: &'a [u32],
    pub(super) targets: &'a [u32],
    pub(super) sampled: Option<Sampled<'a>>,
    pub(super) helpers: usize,
    pub(super) column_parts: usize,
    /// Training with dropout on the layers' outputs (`stochastic::Dropout`).
    pub(super) dropout: Option<Dropout>,
    /// Training with embedding dropout: layer 0's input rows and their gradients are scaled.
    pub(super) embed_drop: Option<EmbedDrop>,
}

/// Runs one window on the works (one thread each, the first on the caller's), sums the
/// gradients in thread order and hands back each layer's last state. Returns the summed loss.
pub(super) fn execute(
    works: &mut [Work],
    grads: &mut [Vec<f32>],
    shared: &Shared,
    state: &mut [Vec<f32>],
) -> f64 {
    let (h, t_len) = (shared.cfg.hidden, shared.bptt);
    assert_eq!(
        state.len(),
        shared.cfg.layers * shared.cell.carried(),
        "the carried state is every layer's h (and an LSTM's c)"
    );
    let state_ref: &[Vec<f32>] = state;
    if works.len() == 1 {
        works[0].run(shared, state_ref);
    } else {
        // The first share on this thread, the others on the persistent team (threads spawned
        // per window can start on this core and wait there).
        crate::kernels::columns::team(works.len() - 1).in_place_scope(|sc| {
            let mut it = works.iter_mut();
            let first = it.next().expect("one work");
            for w in it {
                let sh = shared;
                sc.spawn(move |_| w.run(sh, state_ref));
            }
            first.run(shared, state_ref);
        });
    }
    if shared.backward {
        reduce(works, grads, shared);
    }
    // Hand back the last state: each layer's h, then (LSTM) each layer's c.
    let layers = shared.cfg.layers;
    let mut loss = 0.0;
    for w in works.iter() {
        loss += w.loss;
        for (i, st) in state.iter_mut().enumerate() {
            let buf = &w.layers[i % layers];
            let from = if i < layers { &buf.states } else { &buf.cells };
            let last = &from[t_len * w.b * h..(t_len + 1) * w.b * h];
            st[w.s0 * h..(w.s0 + w.b) * h].copy_from_slice(last);
        }
    }
    loss
}

/// Sums the threads' gradients in thread order (element by element the same sums as adding whole
/// buffers), then scatters the compact ones: layer 0's U (one-hot input) or the embedding's rows,
/// and with the sampled softmax the decoder's rows.
pub(super) fn reduce(works: &[Work], grads: &mut [Vec<f32>], sh: &Shared) {
    let h = sh.cfg.hidden;
    let v = sh.cfg.vocab_size;
    let dec = sh.layout.index(Param::DecoderWeight);
    let sampled = sh.sampled.is_some();
    for (gi, g) in grads.iter_mut().enumerate() {
        // Under the sampled softmax the decoder's dense per-thread gradients are not written.
        if works[0].grads[gi].is_empty() || (gi == dec && sampled) {
            g.fill(0.0);
        } else {
            g.copy_from_slice(&works[0].grads[gi]);
            for w in &works[1..] {
                g.iter_mut().zip(&w.grads[gi]).for_each(|(a, b)| *a += b);
            }
        }
    }
    if sampled {
        // The decoder's weights (V × H) under the sampled softmax: each thread's rows.
        let g = &mut grads[dec];
        for w in works.iter() {
            for (j, &id) in w.out_ids.iter().enumerate() {
                let id = id as usize;
                g[id * h..(id + 1) * h]
                    .iter_mut()
                    .zip(&w.dv_rows[j * h..(j + 1) * h])
                    .for_each(|(a, b)| *a += b);
            }
        }
    }
    match sh.cfg.embed {
        None => {
            // Layer 0's U (G × V): each thread's compact columns. Row by row of U, so that the
            // writes run forward through memory (a token's column is G floats V apart).
            let g = &mut grads[sh.layout.index(Param::WeightIh(0))];
            let width = g.len() / v;
            for w in works.iter() {
                for (i, row) in g.chunks_exact_mut(v).enumerate() {
                    for (r, &x) in w.in_ids.iter().enumerate() {
                        row[x as usize] += w.du_rows[r * width + i];
                    }
                }
            }
        }
        Some(e) => {
            // The embedding (V × E): each thread's rows.
            let g = &mut grads[sh.layout.index(Param::Embedding)];
            for w in works.iter() {
                for (r, &x) in w.in_ids.iter().enumerate() {
                    let x = x as usize;
                    g[x * e..(x + 1) * e]
                        .iter_mut()
                        .zip(&w.de_rows[r * e..(r + 1) * e])
                        .for_each(|(a, b)| *a += b);
                }
            }
        }
    }
}
