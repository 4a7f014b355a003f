//! Scoring on the fused path: the weights prepared once per `eval::score` call and shared by every
//! group of streams, and the forward-only window each group runs.

use super::decoder::dot_columns;
use super::frame::{execute, input_table, Params, Shared};
use super::FusedWindow;
use crate::config::{ModelConfig, Param};
use crate::kernels::packed::PackedB;

impl FusedWindow {
    /// Forward only over `t_len ≤ bptt` steps, with weights prepared once in `weights` (`params`
    /// are the slices they were made from): the summed −ln p of the targets (nats), no gradients.
    /// `inputs` are rows of `weights`' input table (`ScoreWeights::to_rows`), `targets` token ids.
    /// `scratch` holds the decoder's logits during the call (grown as needed and handed back, so a
    /// thread scoring many groups in turn keeps one set: `SCORE_BLOCK` × V floats per helper, 13
    /// MB at a 33k-word vocabulary). What each of `eval::score`'s groups of streams runs.
    #[allow(clippy::too_many_arguments)]
    pub fn score_with(
        &mut self,
        weights: &ScoreWeights,
        params: &Params,
        inputs: &[u32],
        targets: &[u32],
        state: &mut [Vec<f32>],
        t_len: usize,
        scratch: &mut Vec<Vec<f32>>,
    ) -> f64 {
        assert!(t_len <= self.bptt);
        assert_eq!(inputs.len(), t_len * self.batch);
        assert_eq!(targets.len(), t_len * self.batch);
        let shared = Shared {
            cfg: self.config,
            cell: self.cell,
            layout: &self.layout,
            batch: self.batch,
            bptt: t_len,
            backward: false,
            params,
            u0_t: &weights.u0_t,
            bias: &weights.bias,
            w_fwd: &weights.w_fwd,
            w_bwd: &[],
            dec_fwd: &weights.dec_fwd,
            inputs,
            targets,
            helpers: self.helpers,
            column_parts: self.column_parts,
            // Scoring runs the plain model.
            dropout: None,
            embed_drop: None,
            sampled: None,
        };
        scratch.resize_with(self.works.len(), Vec::new);
        for (w, s) in self.works.iter_mut().zip(scratch.iter_mut()) {
            std::mem::swap(&mut w.logits, s);
        }
        let loss = execute(&mut self.works, &mut self.grads, &shared, state);
        for (w, s) in self.works.iter_mut().zip(scratch.iter_mut()) {
            std::mem::swap(&mut w.logits, s);
        }
        loss
    }
}

/// The weights as scoring reads them, prepared once per `eval::score` call and shared read-only
/// by every group of streams it runs (one copy whatever the number of groups).
pub struct ScoreWeights {
    /// Layer 0's input term (U x + the input bias) of each token the scored text holds, one row of
    /// G per token in the order of `row`: at word level a text reads a fraction of the
    /// vocabulary, and a table of all V rows would be one more copy of U.
    u0_t: Vec<f32>,
    /// Token id → its row in `u0_t` (`u32::MAX` for a token the text does not hold).
    row: Vec<u32>,
    /// The input bias per layer (`Cell::input_bias`).
    bias: Vec<Vec<f32>>,
    /// Per layer, Wᵀ packed for the recurrence.
    w_fwd: Vec<PackedB>,
    /// The decoder as Vᵀ (H × V), packed but for its last `dot_columns(V)` columns: its product
    /// runs on the recurrence's kernel (the `gemm` crate's took ~1.4× as long per FLOP at V = 65).
    dec_fwd: PackedB,
}

impl ScoreWeights {
    /// The weights for scoring `ids` (every id must be below the vocabulary size).
    pub fn new(params: &Params, config: ModelConfig, ids: &[u32]) -> ScoreWeights {
        let (v, h) = (config.vocab_size, config.hidden);
        let cell = config.cell();
        let g = cell.gates() * h;
        let bias: Vec<Vec<f32>> = (0..config.layers)
            .map(|l| {
                let (bi, bh) = (params.get(Param::BiasIh(l)), params.get(Param::BiasHh(l)));
                let mut out = vec![0.0; g];
                cell.input_bias(bi, bh, &mut out);
                out
            })
            .collect();
        // The tokens the text holds, in id order (so that neighbouring rows of the table come
        // from neighbouring columns of U).
        let mut row = vec![u32::MAX; v];
        for &x in ids {
            row[x as usize] = 0;
        }
        let held: Vec<usize> = (0..v).filter(|&x| row[x] == 0).collect();
        for (r, &x) in held.iter().enumerate() {
            row[x] = r as u32;
        }
        let mut u0_t = vec![0.0; held.len() * g];
        if config.embed.is_none() {
            // Their columns of U, transposed in tiles of 32 × 32 so that neither side is walked
            // with a stride through all of it (U is G × V: a word-level vocabulary makes it tens
            // of MB).
            let u0 = params.get(Param::WeightIh(0));
            for i0 in (0..g).step_by(32) {
                for r0 in (0..held.len()).step_by(32) {
                    for i in i0..(i0 + 32).min(g) {
                        for (r, &x) in held.iter().enumerate().skip(r0).take(32) {
                            u0_t[r * g + i] = u0[i * v + x] + bias[0][i];
                        }
                    }
                }
            }
        } else {
            // Their embeddings through W_ih, as training builds its table.
            let held32: Vec<u32> = held.iter().map(|&x| x as u32).collect();
            let mut scratch = Vec::new();
            input_table(
                &config,
                params,
                &held32,
                &bias[0],
                None,
                &mut u0_t,
                &mut scratch,
                |x| row[x as usize] as usize,
            );
        }
        let w_fwd = (0..config.layers)
            .map(|l| {
                let mut w = PackedB::default();
                w.pack(params.get(Param::WeightHh(l)), h, g, (1, h));
                w
            })
            .collect();
        let mut dec_fwd = PackedB::default();
        dec_fwd.pack(
            params.get(Param::DecoderWeight),
            h,
            v - dot_columns(v),
            (1, h),
        );
        ScoreWeights {
            u0_t,
            row,
            bias,
            w_fwd,
            dec_fwd,
        }
    }

    /// Turns a window's input ids into their rows of the input table, in place (what
    /// `FusedWindow::score_with` reads). Panics on a token the text given to `new` did not hold.
    pub fn to_rows(&self, inputs: &mut [u32]) {
        for x in inputs {
            let r = self.row[*x as usize];
            assert!(r != u32::MAX, "token {x} is not in the scored text");
            *x = r;
        }
    }
}
