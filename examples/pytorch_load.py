#!/usr/bin/env python3
"""Load an elman checkpoint into PyTorch's own nn.RNN / nn.LSTM / nn.GRU + nn.Linear and check it gives the same numbers.

    python3 -m pip install torch safetensors tokenizers jieba
    python3 examples/pytorch_load.py checkpoints/elman-demo corpora/elman-demo.txt --elman target/release/elman

The weights load with `load_state_dict(strict=True)`: elman stores them under PyTorch's names and layouts
(rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0, ..., decoder.weight, decoder.bias; for an
LSTM weight_ih_l0 is (4H, vocab) with the gates i, f, g, o stacked, for a GRU (3H, vocab) with r, z, n).
The input is one-hot, as in the book (nn.RNN(input_size=vocab), and the same for nn.LSTM and nn.GRU). The script scores the text with PyTorch and,
with --elman, runs `elman eval --json` on the same text and compares nats per token (they agree to float
rounding). A sigmoid model (the book's σ, which nn.RNN does not offer) is run with an explicit loop over the
same weights.
"""
import argparse
import re
import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer


class RecurrentLM(torch.nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, activation: str, cell: str = "elman",
                 embed=None, tied: bool = False):
        super().__init__()
        self.activation = activation
        # With --embed the input is nn.Embedding(vocab, E) (`encoder.weight`); without, one-hot.
        self.encoder = torch.nn.Embedding(vocab, embed) if embed else None
        inp = embed or vocab
        if cell == "lstm":
            self.rnn = torch.nn.LSTM(inp, hidden, layers)
        elif cell == "gru":
            self.rnn = torch.nn.GRU(inp, hidden, layers)
        else:
            # nn.RNN has tanh and relu; sigmoid models keep the same parameter names and use forward_loop.
            self.rnn = torch.nn.RNN(inp, hidden, layers, nonlinearity="relu" if activation == "relu" else "tanh")
        self.decoder = torch.nn.Linear(hidden, vocab)
        if tied:
            # word_language_model's --tied: one tensor, listed under both names.
            self.decoder.weight = self.encoder.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder(ids).unsqueeze(1)  # (T, 1, E)
        else:
            x = torch.nn.functional.one_hot(ids, self.decoder.out_features).float().unsqueeze(1)  # (T, 1, V)
        if self.activation == "sigmoid":
            return self.forward_loop(x)
        out, _ = self.rnn(x)  # s(-1) = 0
        return self.decoder(out.squeeze(1))

    def forward_loop(self, x: torch.Tensor) -> torch.Tensor:
        inp = x.squeeze(1)
        for k in range(self.rnn.num_layers):
            w_ih, w_hh = getattr(self.rnn, f"weight_ih_l{k}"), getattr(self.rnn, f"weight_hh_l{k}")
            b = getattr(self.rnn, f"bias_ih_l{k}") + getattr(self.rnn, f"bias_hh_l{k}")
            s, outs = torch.zeros(w_hh.shape[0]), []
            for t in range(inp.shape[0]):
                s = torch.sigmoid(w_ih @ inp[t] + w_hh @ s + b)
                outs.append(s)
            inp = torch.stack(outs)
        return self.decoder(inp)


# Runs of Han characters: what elman's `jieba` segmenter cuts into words (vocab.rs `is_han`).
HAN = re.compile("[\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\U00020000-\U0002A6DF"
                 "\U0002A700-\U0002EBEF\U00030000-\U0003134F]+")


def presegment(line: str, segmenter: str) -> str:
    """A `jieba` checkpoint's tokenizer.json expects Chinese already cut into words, separated by spaces."""
    if segmenter != "jieba":
        return line
    try:
        import jieba
    except ImportError:
        sys.exit("this checkpoint cuts Chinese into words with jieba: python3 -m pip install jieba")
    jieba.setLogLevel(60)
    return HAN.sub(lambda m: " " + " ".join(jieba.cut(m.group(0), HMM=True)) + " ", line)


def encode(tok: Tokenizer, text: str, vocab: dict) -> list:
    if vocab["level"] == "char":
        return tok.encode(text, add_special_tokens=False).ids
    seg = vocab.get("segmenter", "words")
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [i for line in lines for i in tok.encode(presegment(line, seg), add_special_tokens=False).ids]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("text", type=Path, help="a UTF-8 file to score")
    ap.add_argument("--elman", help="path to the elman binary, to compare with `elman eval`")
    ap.add_argument("--max-chars", type=int, default=20000, help="score only the first N characters")
    args = ap.parse_args()

    cfg = json.loads((args.checkpoint / "config.json").read_text())
    m = cfg["model"]
    cell = m.get("cell", "elman")
    model = RecurrentLM(m["vocab_size"], m["hidden"], m["layers"], m["activation"], cell,
                       m.get("embed"), m.get("tied", False))
    model.load_state_dict(load_file(str(args.checkpoint / "model.safetensors")), strict=True)
    model.eval()
    tok = Tokenizer.from_file(str(args.checkpoint / "tokenizer.json"))

    text = args.text.read_text(encoding="utf-8")[: args.max_chars]
    ids = torch.tensor(encode(tok, text, cfg["vocab"]))
    with torch.no_grad():
        logits = model(ids)
        nats = torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:]).item()
    module = {"lstm": "nn.LSTM", "gru": "nn.GRU"}.get(cell, f"nn.RNN ({m['activation']})")
    print(f"PyTorch {module} ({m['layers']}×{m['hidden']}, vocab {m['vocab_size']}): "
          f"{len(ids)} tokens, {nats:.6f} nats/token")
    print("first logits:", [round(x, 5) for x in logits[0, :5].tolist()])

    if args.elman:
        sample = Path(args.checkpoint) / ".pytorch_check.txt"
        sample.write_text(text, encoding="utf-8")
        try:
            out = subprocess.run([args.elman, "eval", "--model", str(args.checkpoint), str(sample), "--json"],
                                 check=True, capture_output=True, text=True).stdout
        finally:
            sample.unlink()
        theirs = json.loads(out)["nats_per_token"]
        diff = abs(theirs - nats)
        print(f"elman eval:     {theirs:.6f} nats/token  (difference {diff:.2e})")
        if diff > 1e-4 * max(1.0, abs(nats)):
            print("MISMATCH", file=sys.stderr)
            return 1
        print("match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
