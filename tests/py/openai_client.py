"""The official `openai` Python package against a running `elman serve` (tests/serve.rs starts it):
every call a client script makes — models.list, completions.create (plain, n, stop, logprobs,
streaming) and chat.completions.create (plain, streaming) — checked against the server's own raw
HTTP answers for the same seeds.

    python3 tests/py/openai_client.py BASE_URL API_KEY MODEL PROMPT
"""
import json
import sys
import urllib.request

import openai

base, key, model, prompt = sys.argv[1:5]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key)


def raw(path, body):
    req = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def check(what, got, want):
    assert got == want, f"{what}: {got!r} != {want!r}"


# models.list
ids = [m.id for m in client.models.list()]
check("models", ids, [model])

# completions: plain, n, stop, logprobs
body = dict(model=model, prompt=prompt, max_tokens=30, temperature=0.9, seed=11)
c = client.completions.create(**body)
want = raw("/v1/completions", body)
check("text", c.choices[0].text, want["choices"][0]["text"])
check("finish", c.choices[0].finish_reason, "length")
check("usage", (c.usage.prompt_tokens, c.usage.completion_tokens), (len(prompt), 30))

c = client.completions.create(**body, n=3)
check("n", [x.index for x in c.choices], [0, 1, 2])
check("n text", c.choices[0].text, want["choices"][0]["text"])

text = want["choices"][0]["text"]
stop = text[10:12]
c = client.completions.create(**body, stop=[stop])
check("stop", c.choices[0].text, text[: text.index(stop)])
check("stop reason", c.choices[0].finish_reason, "stop")

c = client.completions.create(model=model, prompt=prompt, max_tokens=4, temperature=0, logprobs=3)
lp = c.choices[0].logprobs
check("logprob tokens", "".join(lp.tokens), c.choices[0].text)
check("logprob offsets", lp.text_offset, [0, 1, 2, 3])
assert all(len(t) == 3 for t in lp.top_logprobs), lp.top_logprobs
assert all(max(t.values()) == lp.token_logprobs[i] for i, t in enumerate(lp.top_logprobs)), lp

# completions, streamed
pieces, reasons = [], []
for chunk in client.completions.create(**body, stream=True):
    pieces.append(chunk.choices[0].text)
    reasons.append(chunk.choices[0].finish_reason)
check("streamed", "".join(pieces), text)
check("streamed reason", reasons[-1], "length")

# chat: plain and streamed
messages = [{"role": "user", "content": prompt}]
chat = client.chat.completions.create(model=model, messages=messages, max_tokens=20, seed=3)
want = raw("/v1/completions", dict(model=model, prompt=prompt + "\n", max_tokens=20, seed=3))
check("chat", chat.choices[0].message.content, want["choices"][0]["text"])
check("chat role", chat.choices[0].message.role, "assistant")
deltas = []
for chunk in client.chat.completions.create(
    model=model, messages=messages, max_tokens=20, seed=3, stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        deltas.append(chunk.choices[0].delta.content)
check("chat streamed", "".join(deltas), chat.choices[0].message.content)

# A mistake comes back as the client's own exception, with OpenAI's fields.
try:
    client.completions.create(model="nope", prompt="a")
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    check("404 code", e.body.get("code") if isinstance(e.body, dict) else None, "model_not_found")
try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass
print("ok")
