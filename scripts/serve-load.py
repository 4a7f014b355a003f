#!/usr/bin/env python3
"""Load on `elman serve` (docs/benchmarks.md, "elman serve under load"): CLIENTS threads for SECONDS,
each looping over a mix of requests on its own keep-alive connection — /v1/completions (plain and
streamed, seeded), /api/next and /api/sample — and timing each to its last byte. A request fails
on any status but 200, a transport error, a stream without `data: [DONE]`, or a mixed-up model:
the seeded completions must give one text per `system_fingerprint` (the weights that answered).

    scripts/serve-load.py BASE_URL SECONDS CLIENTS
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

base, seconds, clients = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
url = urllib.parse.urlparse(base)
PROMPT = "天空飞过一只"
KINDS = {
    "v1/completions": ("/v1/completions", {"prompt": PROMPT, "max_tokens": 20, "seed": 42}),
    "v1/completions stream": (
        "/v1/completions",
        {"prompt": PROMPT, "max_tokens": 20, "seed": 42, "stream": True},
    ),
    "api/next": ("/api/next", {"prompt": PROMPT, "top": 5}),
    "api/sample": ("/api/sample", {"prompt": PROMPT, "length": 20, "seed": 1}),
}
lock = threading.Lock()
latency = {k: [] for k in KINDS}
failures = []
texts = {}  # fingerprint -> set of texts for the seeded completion


def one(conn, kind):
    path, body = KINDS[kind]
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read().decode()
    dt = time.perf_counter() - t0
    if r.status != 200:
        raise RuntimeError(f"{kind}: {r.status} {data[:200]}")
    if kind.startswith("v1/completions"):
        if kind.endswith("stream"):
            events = [l[5:].strip() for l in data.split("\n") if l.startswith("data:")]
            if events[-1] != "[DONE]":
                raise RuntimeError(f"{kind}: no [DONE]")
            chunks = [json.loads(e) for e in events[:-1]]
            fp = {c["system_fingerprint"] for c in chunks}
            if len(fp) != 1:
                raise RuntimeError(f"{kind}: one stream from several models {fp}")
            fp = fp.pop()
            text = "".join(c["choices"][0]["text"] for c in chunks)
        else:
            j = json.loads(data)
            fp, text = j["system_fingerprint"], j["choices"][0]["text"]
        with lock:
            texts.setdefault(fp, set()).add(text)
    return dt


def client(i):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    kinds = list(KINDS)
    n = i
    end = time.time() + seconds
    while time.time() < end:
        kind = kinds[n % len(kinds)]
        n += 1
        try:
            dt = one(conn, kind)
            with lock:
                latency[kind].append(dt)
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            with lock:
                failures.append(f"{kind}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)


threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
t0 = time.time()
for t in threads:
    t.start()
for t in threads:
    t.join()
wall = time.time() - t0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")


total = sum(len(v) for v in latency.values())
print(f"{clients} clients, {wall:.1f} s: {total} requests answered ({total / wall:.0f}/s), {len(failures)} failed")
print("| request | count | p50 ms | p90 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|")
for k, v in latency.items():
    print(f"| {k} | {len(v)} | {pct(v, 50):.0f} | {pct(v, 90):.0f} | {pct(v, 99):.0f} | {max(v) * 1000 if v else float('nan'):.0f} |")
print("models that answered the seeded completion:", {fp: len(t) for fp, t in texts.items()})
mixed = {fp: t for fp, t in texts.items() if len(t) != 1}
for f in failures[:5]:
    print("failed:", f)
if failures or mixed:
    print("FAIL: failed requests or a fingerprint with several texts:", list(mixed))
    sys.exit(1)
