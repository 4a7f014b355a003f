#!/usr/bin/env python3
"""The PyTorch peers' training, with a learning curve elman can plot beside its own.

Runs the training loop of ../shared/bench/torch_charrnn.py quality (character level, its model class, its
defaults: nn.Embedding(V, H) + nn.RNN(tanh) + Linear, H=256, B=64, T=64, Adam 2e-3, clip 5) or, with --word,
the one of scripts/torch_wordlm.py (WikiText-2: each line split on spaces plus <eos>, B=32), for a wall-clock
budget, and every budget/--evals seconds scores the validation text exactly: one stream, batch 1, the state
carried through the whole text (what `elman eval` computes). The clock stops while it scores, so the peer's
budget is all training. Each evaluation is one line of OUT/metrics.jsonl with the fields of elman's own
(step, epoch, tokens_seen, train_loss, val_loss, val_bpc, tokens_per_s, lr, wall_time_s), so
`elman plot OUT checkpoints/mine` overlays the two. Prints one JSON line: tokens trained, the last and the
best validation loss.

  python3 scripts/torch_curve.py --corpus ../shared/corpora/tinyshakespeare.txt --seconds 180 --out runs/torch-ts
  python3 scripts/torch_curve.py --word ../shared/corpora/wikitext-2 --seconds 180 --out runs/torch-wt2

Character level: validation = the last 10% of the file (the peer's split). Word level: wiki.valid.tokens.
Installs nothing: needs `python3 -m pip install torch`.
"""
import argparse, json, math, os, sys, time
from pathlib import Path

import torch
import torch.nn.functional as F

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent.parent / "shared" / "bench"))
sys.path.insert(0, str(here))
import torch_charrnn as peer  # noqa: E402


def char_data(path):
    text = open(path, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    split = int(len(ids) * 0.9)
    return ids[:split], ids[split:], len(chars), 1.0


def word_data(folder):
    import torch_wordlm as wordlm
    stoi = {}
    train = wordlm.tokenize(os.path.join(folder, "wiki.train.tokens"), stoi)
    valid = wordlm.tokenize(os.path.join(folder, "wiki.valid.tokens"), stoi)
    wordlm.tokenize(os.path.join(folder, "wiki.test.tokens"), stoi)
    return train, valid, len(stoi), None


@torch.no_grad()
def exact_loss(model, ids, chunk=256):
    """Mean nats per predicted token over `ids` as one stream from a zero state."""
    model.eval()
    h = model.zero_state(1)
    total, count = 0.0, 0
    for pos in range(0, len(ids) - 1, chunk):
        x = ids[pos:pos + chunk + 1]
        logits, h = model(x[:-1].unsqueeze(0), h)
        total += F.cross_entropy(logits[0], x[1:], reduction="sum").item()
        count += len(x) - 1
    model.train()
    return total / count


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="a UTF-8 text, trained at character level")
    src.add_argument("--word", metavar="DIR", help="a WikiText folder, trained at word level")
    p.add_argument("--out", required=True, help="folder for metrics.jsonl")
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, help="default 64 (char) / 32 (word), the peers' own")
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--cell", default="rnn", choices=["rnn", "lstm", "gru"])
    p.add_argument("--evals", type=int, default=20, help="evaluations over the budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    train, val, vocab, _ = char_data(a.corpus) if a.corpus else word_data(a.word)
    batch = a.batch or (64 if a.corpus else 32)
    data = peer.batchify(train, batch)
    torch.manual_seed(a.seed)
    model = peer.ElmanLM(vocab, a.hidden, "tanh", a.cell)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "metrics.jsonl"), "w")
    h, pos, tokens, steps, epoch = model.zero_state(batch), 0, 0, 0, 1
    trained, next_eval, run_loss, run_n = 0.0, a.seconds / a.evals, 0.0, 0
    best = math.inf
    last = None
    while True:
        t0 = time.perf_counter()
        while trained + (time.perf_counter() - t0) < min(next_eval, a.seconds):
            if pos + a.bptt + 1 > data.shape[1]:
                pos, h, epoch = 0, model.zero_state(batch), epoch + 1
            loss, h = peer.train_step(model, opt, data, pos, a.bptt, h, vocab)
            run_loss, run_n = run_loss + loss, run_n + 1
            pos += a.bptt
            tokens += batch * a.bptt
            steps += 1
        trained += time.perf_counter() - t0
        last = exact_loss(model, val)
        best = min(best, last)
        log.write(json.dumps(dict(step=steps, epoch=epoch, tokens_seen=tokens, train_loss=run_loss / max(run_n, 1),
                                  val_loss=last, val_bpc=last / math.log(2), tokens_per_s=tokens / trained,
                                  lr=a.lr, wall_time_s=trained)) + "\n")
        log.flush()
        run_loss, run_n = 0.0, 0
        if trained >= a.seconds:
            break
        next_eval += a.seconds / a.evals
    print(json.dumps(dict(peer="pytorch", torch=torch.__version__, cell=a.cell, level="char" if a.corpus else "word",
                          corpus=a.corpus or a.word, hidden=a.hidden, batch=batch, bptt=a.bptt, lr=a.lr,
                          threads=torch.get_num_threads(), seconds=round(trained, 1), tokens_trained=tokens,
                          tokens_per_s=round(tokens / trained), val_loss=round(last, 4), best_val_loss=round(best, 4),
                          best_val_bpc=round(best / math.log(2), 4), best_val_ppl=round(math.exp(best), 2))))


if __name__ == "__main__":
    main()
