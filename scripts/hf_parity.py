#!/usr/bin/env python3
"""Parity of our Burn Qwen2 with Hugging Face transformers.

  python3 scripts/hf_parity.py make           # writes trainer/tests/fixtures/tiny-qwen2/ and tiny-llama3/
  python3 scripts/hf_parity.py check MODEL_DIR IDS_AND_LOGITS.safetensors

`make` builds a tiny random Qwen2ForCausalLM (2 layers, hidden 64, 4 heads, 2 KV heads,
vocab 128, untied lm_head), saves config.json + model.safetensors, and expected.safetensors with
a fixed batch of token ids and the logits transformers computes. The Rust test
`trainer/tests/it` loads them and must match to 1e-4. It also builds tiny-llama3: a
LlamaForCausalLM (no biases, tied embeddings) whose rotary frequencies follow Llama 3.1's
`llama3` rope scaling, with thresholds set so that the tiny head size has a kept, an
interpolated and a slowed frequency; and tiny-qwen3: a Qwen3ForCausalLM (per-head q/k RMSNorm,
head_dim 32 beside a 64-wide model).

`check` loads MODEL_DIR (e.g. a model our trainer exported) with transformers, runs the ids in
the given file and compares with the logits stored there (written by
`regrpo model logits MODEL_DIR --out FILE`).

The script makes its own virtual environment (.venv-parity, or $PARITY_VENV) with torch and
transformers from PyPI the first time it runs.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PARITY_VENV", ROOT / ".venv-parity"))
FIXTURES = ROOT / "trainer" / "tests" / "fixtures"
FIXTURE = FIXTURES / "tiny-qwen2"


def ensure_venv():
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call([str(py), "-m", "pip", "install", "-q", "torch", "transformers", "safetensors", "numpy"])
    os.execv(str(py), [str(py), *sys.argv])


def make():
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        attn_implementation="eager",
    )
    model = Qwen2ForCausalLM(config).eval()
    # Random non-trivial norms and biases, so their loading is tested too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    FIXTURE.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(FIXTURE, safe_serialization=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 128, (2, 12), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float()
    save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()}, FIXTURE / "expected.safetensors")
    for extra in ["generation_config.json"]:
        (FIXTURE / extra).unlink(missing_ok=True)
    print(f"wrote {FIXTURE}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max():.3f}")


def make_llama3():
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(2)
    # head_dim 16, θ 10000: wavelengths 6.3, 19.9, 62.8, ... against thresholds 32/4 = 8 and
    # 32/1 = 32, so the first frequency is kept, the second interpolated, the rest divided by 8.
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rope_parameters=rope, rms_norm_eps=1e-5, tie_word_embeddings=True,
        attention_bias=False, attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    out = FIXTURES / "tiny-llama3"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 128, (2, 40), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float()
    save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()}, out / "expected.safetensors")
    (out / "generation_config.json").unlink(missing_ok=True)
    inv = model.model.rotary_emb.inv_freq.tolist()
    print(f"wrote {out}: logits {tuple(logits.shape)}, inv_freq {inv}")


def make_qwen3():
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(4)
    # head_dim 32 beside a 64-wide model with 4 heads: q_proj is [128, 64], o_proj [64, 128].
    config = Qwen3Config(
        vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
        attn_implementation="eager",
    )
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    out = FIXTURES / "tiny-qwen3"
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 128, (2, 12), generator=g)
    with torch.no_grad():
        logits = model(ids).logits.float()
    save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()}, out / "expected.safetensors")
    (out / "generation_config.json").unlink(missing_ok=True)
    print(f"wrote {out}: logits {tuple(logits.shape)}")


def check(model_dir, expected):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    data = load_file(expected)
    with torch.no_grad():
        logits = model(data["input_ids"]).logits.float()
    diff = (logits - data["logits"]).abs().max().item()
    print(f"transformers loaded {model_dir} ({sum(p.numel() for p in model.parameters())} parameters); "
          f"max |logits - ours| = {diff:.3e}")
    if diff > 1e-4:
        sys.exit(f"parity FAILED: {diff} > 1e-4")
    print("parity OK")


if __name__ == "__main__":
    ensure_venv()
    if len(sys.argv) >= 2 and sys.argv[1] == "make":
        make()
        make_llama3()
        make_qwen3()
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
