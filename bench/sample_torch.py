"""transformers twin of examples/sample_bench.rs: the same model folder, prompt and settings.

`generate(do_sample=True, temperature=1, top_p=0.95, top_k=0, num_return_sequences=G)` with
exactly `--new` new tokens per completion (min_new_tokens = max_new_tokens), KV cache on, f32,
every core. Prints one JSON line: completions/s and generated tokens/s (median of `--runs`).

    python bench/sample_torch.py --model DIR [--group 8 --prompt 256 --new 64 --runs 3]
"""

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    for name, default in [("group", 8), ("prompt", 256), ("new", 64), ("runs", 3)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--backend", default=None, help="ignored (our side's flag)")
    a = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(i * 37 + 11) % vocab for i in range(a.prompt)]])
    torch.manual_seed(0)
    times = []
    with torch.no_grad():
        for _ in range(a.runs):
            t0 = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                 top_p=0.95, top_k=0, max_new_tokens=a.new, min_new_tokens=a.new,
                                 num_return_sequences=a.group, use_cache=True, pad_token_id=0)
            times.append(time.perf_counter() - t0)
            assert out.shape == (a.group, a.prompt + a.new), out.shape
    s = statistics.median(times)
    print(json.dumps({
        "system": f"transformers generate, pytorch {torch.__version__} ({torch.get_num_threads()} threads)",
        "model": a.model, "params": None,
        "group": a.group, "prompt": a.prompt, "new": a.new, "runs": a.runs,
        "seconds": s,
        "completions_per_s": a.group / s,
        "tokens_per_s": a.group * a.new / s,
    }))


if __name__ == "__main__":
    main()
