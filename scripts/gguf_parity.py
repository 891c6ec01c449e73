#!/usr/bin/env python3
"""Parity of `regrpo model import` with transformers' own GGUF loader, on a real checkpoint.

  bash scripts/fetch_smollm2.sh
  python3 scripts/gguf_parity.py [--gguf FILE] [--regrpo BIN] [--work DIR]

1. `regrpo model import FILE --out WORK/imported` (f32).
2. Token ids: our tokenizer.json (the `tokenizers` library, the same Rust crate regrpo uses)
   against transformers' tokenizer loaded with `gguf_file=`, on a set of strings and the chat
   template's renders. Reported: equal or the first difference.
3. Logits: `regrpo model logits` against transformers' model loaded with `gguf_file=` (both
   dequantize the same blocks to f32), on a few prompts; max |difference| reported, target 1e-3.
4. Export: transformers loads WORK/imported (what regrpo wrote) and greedy-generates; regrpo's
   greedy tokens (argmax of `regrpo model logits`, one token at a time) must be the same.

Needs torch, transformers, accelerate, gguf, safetensors, numpy (pip); exits 1 when a check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GGUF = Path.home() / ".cache/regrpo/models/SmolLM2-135M-Instruct.Q4_1.gguf"

STRINGS = [
    "The capital of France is",
    "Hello, world! 12345 + 678 = 13023",
    "  leading spaces\tand\ttabs\nnew lines\n\n",
    "def f(x):\n    return x ** 2  # squares",
    "ReGRPO: ErrorType=ArgInvalid; Evidence=\"file 'a.txt' not found\"; FixPlan=list the folder",
    "émigré naïve café — “quotes” 日本語 🙂",
    "<|im_start|>user\nhi<|im_end|>",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "system", "content": "You call tools."},
        {"role": "user", "content": "Read notes.txt"},
        {"role": "assistant", "content": "Action: read_file(path=\"notes.txt\")"},
    ],
]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Tools fail when"]


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, default=Path(os.environ.get("REGRPO_SMOLLM2_GGUF", DEFAULT_GGUF)))
    ap.add_argument("--regrpo", default=os.environ.get("REGRPO_BIN", "regrpo"))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--new-tokens", type=int, default=12)
    a = ap.parse_args()
    if not a.gguf.exists():
        print(f"skipped: {a.gguf} is absent (run scripts/fetch_smollm2.sh)")
        return 0

    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = a.work or Path(tempfile.mkdtemp(prefix="gguf-parity-"))
    imported = work / "imported"
    run([a.regrpo, "model", "import", str(a.gguf), "--out", str(imported)])
    failures = []

    # 2. Token ids.
    ours = Tokenizer.from_file(str(imported / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(str(a.gguf.parent), gguf_file=a.gguf.name)
    texts = list(STRINGS) + [theirs.apply_chat_template(c, tokenize=False) for c in CHATS]
    equal = 0
    for t in texts:
        x = ours.encode(t, add_special_tokens=False).ids
        y = theirs.encode(t, add_special_tokens=False)
        if x == y:
            equal += 1
        else:
            i = next((k for k in range(min(len(x), len(y))) if x[k] != y[k]), min(len(x), len(y)))
            failures.append(f"token ids differ on {t!r} at {i}: ours {x[i:i + 4]} vs transformers {y[i:i + 4]}")
    print(f"token ids: {equal}/{len(texts)} strings equal (incl. {len(CHATS)} chat-template renders)")

    # 3. Logits against transformers' GGUF loader.
    model = AutoModelForCausalLM.from_pretrained(str(a.gguf.parent), gguf_file=a.gguf.name, dtype=torch.float32)
    model.eval()

    def our_logits(model_dir, ids):
        inp, out = work / "ids.safetensors", work / "ours.safetensors"
        save_file({"input_ids": np.array([ids], dtype=np.int64)}, str(inp))
        run([a.regrpo, "model", "logits", str(model_dir), "--input", str(inp), "--out", str(out)])
        return load_file(str(out))["logits"][0]

    worst = 0.0
    for p in PROMPTS:
        ids = theirs.encode(p, add_special_tokens=False)
        with torch.no_grad():
            want = model(torch.tensor([ids])).logits[0].numpy()
        got = our_logits(imported, ids)
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        print(f"logits {p!r}: {len(ids)} tokens, max |ours - transformers| = {diff:.2e}")
    if worst > 1e-3:
        failures.append(f"logits differ by {worst:.2e} (> 1e-3)")

    # 4. transformers on the folder regrpo wrote, greedy, against regrpo's greedy tokens.
    reloaded = AutoModelForCausalLM.from_pretrained(str(imported), dtype=torch.float32)
    reloaded.eval()
    ids = theirs.encode(PROMPTS[0], add_special_tokens=False)
    with torch.no_grad():
        gen = reloaded.generate(torch.tensor([ids]), max_new_tokens=a.new_tokens, do_sample=False)[0].tolist()
    theirs_new = gen[len(ids):]
    ours_ids = list(ids)
    for _ in range(a.new_tokens):
        ours_ids.append(int(our_logits(imported, ours_ids)[-1].argmax()))
    ours_new = ours_ids[len(ids):]
    same = theirs_new == ours_new
    print(f"greedy {a.new_tokens} tokens: transformers on regrpo's folder {theirs.decode(theirs_new)!r}; "
          f"regrpo {theirs.decode(ours_new)!r}: {'same' if same else 'DIFFERENT'}")
    if not same:
        failures.append(f"greedy tokens differ: {theirs_new} vs {ours_new}")

    report = {"gguf": str(a.gguf), "token_strings": len(texts), "token_strings_equal": equal,
              "max_abs_logit_diff": worst, "greedy_same": same, "failures": failures}
    (work / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {work / 'parity.json'}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
