#!/usr/bin/env python3
"""A regrpo LoRA adapter loads in `peft` and computes what regrpo's merged export computes.

  regrpo train sft DATA -s v1 --model models/smollm2 --out runs/smol-lora --lora-rank 8 ...
  python3 scripts/peft_check.py --base models/smollm2 --run runs/smol-lora [--regrpo BIN]

1. `peft.PeftModel.from_pretrained(base, RUN/adapter)` loads the adapter: every tensor of
   adapter_model.safetensors is in the PEFT model's state, unchanged, and it changes the logits.
2. The PEFT model (adapters unmerged) against `regrpo model logits RUN/model` (regrpo's export,
   adapters merged): max |difference| on a few prompts, target 1e-3.
3. `merge_and_unload()` against transformers loading RUN/model, and `regrpo model merge` of the
   base and the adapter against RUN/model.

Needs torch, transformers, peft, safetensors, numpy (pip); exits 1 when a check fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = ["The capital of France is", "Reflection: the file was not found", "Action: read_file(path="]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="the base model folder the run started from")
    ap.add_argument("--run", type=Path, required=True, help="a LoRA run folder (adapter/ and model/)")
    ap.add_argument("--regrpo", default=os.environ.get("REGRPO_BIN", "regrpo"))
    a = ap.parse_args()

    import numpy as np
    import torch
    from peft import PeftModel
    from safetensors.numpy import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, merged = a.run / "adapter", a.run / "model"
    work = Path(tempfile.mkdtemp(prefix="peft-check-"))
    tok = AutoTokenizer.from_pretrained(str(a.base))
    failures = []

    def load(path):
        m = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        return m.eval()

    def ours(model_dir, ids):
        inp, out = work / "ids.safetensors", work / "ours.safetensors"
        save_file({"input_ids": np.array([ids], dtype=np.int64)}, str(inp))
        subprocess.run([a.regrpo, "model", "logits", str(model_dir), "--input", str(inp), "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return load_file(str(out))["logits"][0]

    def logits(model, ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].numpy()

    # 1. peft loads every adapter tensor as written.
    base = load(a.base)
    base_logits = [logits(base, tok.encode(p, add_special_tokens=False)) for p in PROMPTS]
    peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
    written = load_file(str(adapter / "adapter_model.safetensors"))
    state = {k.replace(".default", ""): v.detach().numpy() for k, v in peft_model.state_dict().items() if "lora_" in k}
    missing = [k for k in written if k not in state]
    unequal = [k for k in written if k in state and not np.array_equal(state[k], written[k])]
    extra = [k for k in state if k not in written]
    print(f"peft loaded {len(written) - len(missing)}/{len(written)} adapter tensors "
          f"({len(unequal)} differ from the file, {len(extra)} not in it)")
    if missing or unequal or extra:
        failures.append(f"adapter tensors: missing {missing[:3]}, unequal {unequal[:3]}, extra {extra[:3]}")

    # 2. PEFT (unmerged) vs regrpo's merged export.
    worst, moved = 0.0, 0.0
    for p, b in zip(PROMPTS, base_logits):
        ids = tok.encode(p, add_special_tokens=False)
        want = logits(peft_model, ids)
        got = ours(merged, ids)
        diff = float(np.abs(got - want).max())
        worst, moved = max(worst, diff), max(moved, float(np.abs(want - b).max()))
        print(f"logits {p!r}: max |regrpo merged - peft| = {diff:.2e}")
    print(f"the adapter moves the base's logits by up to {moved:.3f}")
    if worst > 1e-3:
        failures.append(f"regrpo's merged export and peft differ by {worst:.2e} (> 1e-3)")
    if moved < 1e-4:
        failures.append("the adapter does not change the logits (was it trained?)")

    # 3. peft's merge vs transformers on regrpo's export; `regrpo model merge` vs the export.
    merged_peft = peft_model.merge_and_unload()
    exported = load(merged)
    ids = tok.encode(PROMPTS[0], add_special_tokens=False)
    d_peft = float(np.abs(logits(merged_peft, ids) - logits(exported, ids)).max())
    print(f"peft merge_and_unload vs transformers on regrpo's export: {d_peft:.2e}")
    subprocess.run([a.regrpo, "model", "merge", str(a.base), "--adapter", str(adapter), "--out", str(work / "m")],
                   check=True, stdout=subprocess.DEVNULL)
    d_merge = float(np.abs(ours(work / "m", ids) - ours(merged, ids)).max())
    print(f"regrpo model merge (base + adapter) vs the run's export: {d_merge:.2e}")
    for name, d in [("peft merge_and_unload", d_peft), ("regrpo model merge", d_merge)]:
        if d > 1e-3:
            failures.append(f"{name} differs by {d:.2e} (> 1e-3)")

    report = {"run": str(a.run), "adapter_tensors": len(written), "max_abs_diff_vs_peft": worst,
              "adapter_effect": moved, "peft_merge_diff": d_peft, "regrpo_merge_diff": d_merge,
              "failures": failures}
    (work / "peft_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {work / 'peft_check.json'}")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
