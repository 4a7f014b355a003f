"""PyTorch word-level peer for elman on WikiText-2: the model and loop of ../shared/bench/torch_charrnn.py
(nn.Embedding + nn.RNN(tanh) + nn.Linear, full softmax, Adam, clip_grad_norm_(5), truncated BPTT over B
parallel streams with the state carried), on words the way pytorch/examples word_language_model reads them:
each line split on spaces plus <eos>, one dictionary over train, valid and test.

  python3 scripts/torch_wordlm.py --data ../shared/corpora/wikitext-2 --seconds 300 --hidden 256

Trains for a wall-clock budget, then reports validation and test perplexity as one stream each (batch 1,
state carried through the whole file: the exact likelihood, as `elman eval` computes it). One JSON line.
Installs nothing: needs `python3 -m pip install torch`.
"""
import argparse, json, math, os, time
import torch, torch.nn as nn, torch.nn.functional as F


class ElmanLM(nn.Module):
    def __init__(self, vocab, hidden):
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden)
        self.rnn = nn.RNN(hidden, hidden, nonlinearity="tanh", batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x, h):
        y, h = self.rnn(self.encoder(x), h.unsqueeze(0))
        return self.decoder(y), h.squeeze(0)


def tokenize(path, stoi):
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            for w in line.split() + ["<eos>"]:
                if w not in stoi:
                    stoi[w] = len(stoi)
                ids.append(stoi[w])
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def perplexity(model, ids, hidden, chunk=256):
    model.eval()
    h = torch.zeros(1, hidden)
    total, count = 0.0, 0
    for pos in range(0, len(ids) - 1, chunk):
        x = ids[pos:pos + chunk + 1]
        inp, tgt = x[:-1].unsqueeze(0), x[1:]
        logits, h = model(inp, h)
        total += F.cross_entropy(logits[0], tgt, reduction="sum").item()
        count += len(tgt)
    model.train()
    return math.exp(total / count), total / count


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    stoi = {}
    train = tokenize(os.path.join(a.data, "wiki.train.tokens"), stoi)
    valid = tokenize(os.path.join(a.data, "wiki.valid.tokens"), stoi)
    test = tokenize(os.path.join(a.data, "wiki.test.tokens"), stoi)
    vocab = len(stoi)
    n = len(train) // a.batch
    data = train[: n * a.batch].view(a.batch, n)
    model = ElmanLM(vocab, a.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    h, pos, tokens, t0 = torch.zeros(a.batch, a.hidden), 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        if pos + a.bptt + 1 > data.shape[1]:
            pos, h = 0, torch.zeros(a.batch, a.hidden)
        x, y = data[:, pos:pos + a.bptt], data[:, pos + 1:pos + 1 + a.bptt]
        logits, h = model(x, h)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        h = h.detach()
        pos += a.bptt
        tokens += a.batch * a.bptt
    elapsed = time.perf_counter() - t0
    val_ppl, val_nats = perplexity(model, valid, a.hidden)
    test_ppl, test_nats = perplexity(model, test, a.hidden)
    print(json.dumps(dict(peer="pytorch", torch=torch.__version__, hidden=a.hidden, batch=a.batch, bptt=a.bptt,
                          vocab=vocab, threads=torch.get_num_threads(), seconds=round(elapsed, 1),
                          tokens_trained=tokens, tokens_per_s=round(tokens / elapsed),
                          val_ppl=round(val_ppl, 2), test_ppl=round(test_ppl, 2),
                          val_nats=round(val_nats, 4), test_nats=round(test_nats, 4))))


if __name__ == "__main__":
    main()
