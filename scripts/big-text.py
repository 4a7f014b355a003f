#!/usr/bin/env python3
"""Writes a big UTF-8 text for the big-text benchmark (docs/benchmarks.md): the corpora in
../shared/corpora (English and Chinese) again and again, each round with its lines in another
order (seeded), so that no round repeats the one before and the text is not one file copied.

    scripts/big-text.py OUT.txt GB [CORPORA_DIR]
"""
import os
import random
import sys

out, gb = sys.argv[1], float(sys.argv[2])
src = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpora")
names = ["tinyshakespeare.txt", "war_and_peace_en.txt", "xiyouji_zh.txt", "sanguoyanyi_zh.txt", "tang300_zh.txt"]
lines = []
for n in names:
    with open(os.path.join(src, n), encoding="utf-8") as f:
        lines.extend(l for l in f.read().split("\n") if l.strip())
target = int(gb * 1e9)
rng = random.Random(31)
written = 0
with open(out, "wb") as f:
    while written < target:
        rng.shuffle(lines)
        block = "\n".join(lines) + "\n"
        data = block.encode("utf-8")
        data = data[: target - written]
        # Never end inside a character.
        while data and (data[-1] & 0xC0) == 0x80:
            data = data[:-1]
        if data and data[-1] >= 0xC0:
            data = data[:-1]
        f.write(data)
        written += len(data)
        if len(data) < len(block.encode("utf-8")):
            break
print(f"{out}: {written / 1e9:.2f} GB")
