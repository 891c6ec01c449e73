"""PyTorch twin of examples/sft_bench.rs: the same Qwen2 shape, batch and step on CPU.

transformers' Qwen2ForCausalLM (random init, default attention implementation), the same masked
next-token cross-entropy over every position, AdamW with the same hyper-parameters (PyTorch's
defaults, weight decay 0.01), global-norm clipping at 1.0. Prints one JSON line: steps/s (median
step), tokens/s, forward-only time and the f32 matmul throughput on the MLP's shape.

    python bench/sft_torch.py [--layers 4 --hidden 256 --seq 256 --batch 8 --vocab 8192 --steps 10 --warmup 2]
    python bench/sft_torch.py --preset smollm2-135m --seq 512 --batch 2   # LlamaForCausalLM, SmolLM2's shape
    python bench/sft_torch.py --preset smollm2-135m --seq 512 --batch 2 --lora 8   # peft LoRA on q_proj, v_proj
"""

import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in [("layers", 4), ("hidden", 256), ("seq", 256), ("batch", 8), ("vocab", 8192), ("steps", 10), ("warmup", 2)]:
        p.add_argument(f"--{name}", type=int, default=default)
    # SmolLM2-135M's config.json: a Llama of 30 layers, hidden 576, 9 heads, 3 KV heads.
    p.add_argument("--preset", choices=["smollm2-135m"], default=None)
    # LoRA of this rank through peft (q_proj, v_proj; alpha = 2 * rank), as `--lora` on our side.
    p.add_argument("--lora", type=int, default=None)
    p.add_argument("--backend", default=None, help="ignored (our side's flag)")
    a = p.parse_args()
    torch.manual_seed(0)
    heads = max(a.hidden // 64, 1)
    kv_heads = max(heads // 2, 1)
    inter = -(-(a.hidden * 11 // 4) // 32) * 32
    family, make = Qwen2Config, Qwen2ForCausalLM
    if a.preset == "smollm2-135m":
        a.layers, a.hidden, heads, kv_heads, inter, a.vocab = 30, 576, 9, 3, 1536, 49152
        family, make = LlamaConfig, LlamaForCausalLM
    cfg = family(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=inter,
        num_hidden_layers=a.layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max(a.seq, 2048),
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )
    model = make(cfg).float().train()
    if a.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g) for _ in range(4)]

    times = []
    loss = None
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        b = batches[step % len(batches)]
        ids, targets = b[:, :-1], b[:, 1:]
        logits = model(input_ids=ids).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        loss = -logp.gather(2, targets.unsqueeze(2)).squeeze(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[a.warmup:])

    model.eval()
    fwd = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            model(input_ids=batches[0][:, :-1]).logits
            fwd.append(time.perf_counter() - t0)

    m, k, n = a.batch * a.seq, a.hidden, inter
    x, w = torch.ones(m, k), torch.ones(k, n)
    mm = []
    for _ in range(5):
        t0 = time.perf_counter()
        x @ w
        mm.append(time.perf_counter() - t0)

    print(json.dumps({
        "system": f"pytorch {torch.__version__} ({torch.get_num_threads()} threads), transformers attn={model.config._attn_implementation}",
        "params": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n),
        "lora_rank": a.lora,
        "layers": a.layers, "hidden": a.hidden, "intermediate": inter, "heads": heads, "kv_heads": cfg.num_key_value_heads,
        "vocab": a.vocab, "seq": a.seq, "batch": a.batch,
        "steps_timed": a.steps,
        "step_s": step_s,
        "steps_per_s": 1.0 / step_s,
        "tokens_per_s": a.batch * a.seq / step_s,
        "forward_s": statistics.median(fwd),
        "matmul_gflops": 2.0 * m * k * n / statistics.median(mm) / 1e9,
        "final_loss": float(loss.detach()),
    }))


if __name__ == "__main__":
    main()
