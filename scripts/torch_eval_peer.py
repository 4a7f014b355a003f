#!/usr/bin/env python3
"""PyTorch peer for `elman bench`'s scoring and GEMM lines (the shared peer has no such modes).

Uses the model class of ../shared/bench/torch_charrnn.py unchanged, and times:
  eval  — the no-grad forward pass (nn.RNN, or with --cell nn.LSTM / nn.GRU, + Linear + log-softmax NLL)
          over 64 streams × windows of 64,
          random tokens from a vocabulary of 65, hidden state carried, like `elman bench`'s scoring line;
  gemm  — fp32 2048³ matrix products (MKL), the machine's GEMM rate.
One JSON line per result, like the shared peer.
"""
import argparse, json, sys, time
from pathlib import Path

import torch

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here.parent.parent / "shared" / "bench"))
import torch_charrnn as peer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["eval", "gemm"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--bptt", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cell", default="rnn", choices=["rnn", "lstm", "gru"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "gemm":
        x, y = torch.randn(2048, 2048), torch.randn(2048, 2048)
        x @ y
        n, t = 0, time.time()
        while time.time() - t < a.seconds:
            x @ y
            n += 1
        print(json.dumps({"peer": "pytorch", "mode": "gemm", "threads": a.threads,
                          "gflops": 2 * 2048 ** 3 * n / (time.time() - t) / 1e9}))
        return
    vocab = 65
    model = peer.ElmanLM(vocab, a.hidden, "tanh", a.cell)
    model.eval()
    data = torch.randint(0, vocab, (a.streams, a.bptt + 1))  # batch-first, as the peer
    h = model.zero_state(a.streams)
    with torch.no_grad():
        def window():
            nonlocal h
            out, h = model(data[:, :-1], h)
            return torch.nn.functional.cross_entropy(out.reshape(-1, vocab), data[:, 1:].reshape(-1))
        window()
        n, t = 0, time.time()
        while time.time() - t < a.seconds:
            window()
            n += a.bptt * a.streams
    print(json.dumps({"peer": "pytorch", "mode": "eval", "cell": a.cell, "hidden": a.hidden, "streams": a.streams,
                      "threads": a.threads, "tokens_per_s": n / (time.time() - t)}))


if __name__ == "__main__":
    main()
