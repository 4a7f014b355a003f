//! `elman info`: what a checkpoint holds, for people (`render`) and scripts (`--json`).

use crate::checkpoint::{self, Config, Metric};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub dir: String,
    pub parameters: usize,
    pub config: Config,
    pub evaluations: usize,
    pub first: Option<Metric>,
    pub last: Option<Metric>,
    /// What is wrong with the checkpoint beyond its `config.json` (a damaged `model.safetensors`,
    /// a tokenizer that disagrees): `info` shows the rest and says this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

pub fn info(dir: &Path, rt: &crate::runtime::Runtime) -> Result<Info> {
    let dir = checkpoint::resolve_dir(dir);
    // A full load checks weights and vocabulary against the config, so `info` also vets a file;
    // when only the config can be read, that is shown, with what is wrong.
    let (config, problem) = match checkpoint::load(&dir, &rt.device) {
        Ok(loaded) => (loaded.config, None),
        Err(e) => match checkpoint::read_config(&dir) {
            Ok(config) if config.model.validate().is_ok() => (config, Some(e.to_string())),
            _ => return Err(e),
        },
    };
    let metrics = checkpoint::read_metrics(&dir).unwrap_or_default();
    Ok(Info {
        dir: dir.display().to_string(),
        parameters: config.model.num_params(),
        config,
        evaluations: metrics.len(),
        first: metrics.first().cloned(),
        last: metrics.last().cloned(),
        problem,
    })
}

pub fn render(i: &Info) -> String {
    let c = &i.config;
    let t = &c.training;
    let p = &c.progress;
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut s = String::new();
    s += &format!("checkpoint   {}\n", i.dir);
    s += &format!(
        "vocabulary   {} tokens, {} level{}{}{}\n",
        c.vocab.size,
        c.vocab.level,
        if c.vocab.level == crate::vocab::Level::Word {
            format!(" ({} segmenter)", c.vocab.segmenter)
        } else {
            String::new()
        },
        if c.vocab.nfc { ", NFC" } else { "" },
        if c.vocab.unk.is_some() {
            ", has <unk>"
        } else {
            ""
        }
    );
    s += &format!(
        "model        {}{}, {} layer(s) × {} hidden{}, {} parameters (loads into torch {}{})\n",
        c.model
            .embed
            .map_or("one-hot input → ".to_string(), |e| format!(
                "embedding {e} → "
            )),
        c.model.cell.long_label(c.model.activation),
        c.model.layers,
        c.model.hidden,
        if c.model.tied {
            ", decoder tied to the embedding"
        } else {
            ""
        },
        i.parameters,
        if c.model.embed.is_some() {
            "nn.Embedding + "
        } else {
            ""
        },
        c.model.cell.torch_module()
    );
    s += &format!(
        "training     {} lr {} (now {:.3e}){}, clip {}, batch {} × bptt {}, seed {}, eval every {} steps{}\n",
        // Under the linear schedule the rate in force is the last evaluation's (the progress
        // record keeps the base rate the schedule scales).
        t.optimizer, t.lr, match (&i.last, t.anneal) { (Some(m), true) => m.lr, _ => p.lr },
        match (t.anneal, t.plateau) {
            (true, false) => ", falling linearly to 0 over the budget".to_string(),
            (true, true) => format!(", falling linearly to 0 over the budget and ×{} after {} bad eval(s)", t.lr_decay, t.patience),
            (false, true) => format!(", ×{} after {} bad eval(s)", t.lr_decay, t.patience),
            (false, false) => String::new(),
        },
        t.clip, t.batch, t.bptt, t.seed, t.eval_every,
        t.softmax_samples.map_or(String::new(), |k| format!(", sampled softmax K={k}"))
            + &t.regularisers()
    );
    s += &format!(
        "corpus       {}{} ({} chars, {} train / {} val tokens, sha256 {}…)\n",
        c.corpus.name,
        if c.corpus.val_files.is_empty() {
            String::new()
        } else {
            format!(", validation {}", c.corpus.val_files.join(", "))
        },
        c.corpus.chars,
        c.corpus.train_tokens,
        c.corpus.val_tokens,
        &c.corpus.sha256[..c.corpus.sha256.len().min(12)]
    );
    s += &format!(
        "progress     step {}, epoch {}, {} tokens seen, {:.0} s of training{}\n",
        p.step,
        p.epoch,
        p.tokens_seen,
        p.train_seconds,
        p.stopped
            .as_ref()
            .map_or(String::new(), |r| format!(", last stop: {r}"))
    );
    s += &format!(
        "best         val loss {} nats/token, {} bpc at step {} (model.safetensors)\n",
        opt(p.best_val_loss),
        opt(p.best_val_bpc),
        p.best_step.map_or("-".into(), |x| x.to_string())
    );
    if let (Some(f), Some(l)) = (&i.first, &i.last) {
        s += &format!(
            "history      {} evaluations: val bpc {:.4} at step {} → {:.4} at step {}\n",
            i.evaluations, f.val_bpc, f.step, l.val_bpc, l.step
        );
    }
    if let Some(problem) = &i.problem {
        s += &format!("problem      {problem} (what is above is from config.json)\n");
    }
    s
}
