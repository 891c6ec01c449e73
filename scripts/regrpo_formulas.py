#!/usr/bin/env python3
"""Reference values of the ReGRPO formulas on fixed numbers, for the Rust parity test.

  python3 scripts/regrpo_formulas.py > trainer/tests/fixtures/regrpo_formulas.json

The formulas follow the ReGRPO reference (showlab/ReGRPO, regrpo/rl/core.py, MIT), restated here
in plain Python (no torch) so the fixture can be regenerated anywhere:

  R_i      = lambda_exec * success_i - eta * C_i + lambda_val * V_i,   C_i = reflection_tokens_i / 100
  A_i      = R_i - mean(R)                                   (plain)
           = (R_i - mean(R)) / (std_pop(R) + 1e-8)           (normalize)
           = clip(A_i, -c, c)                                (clip_range c, after normalizing)
  A_i^loo  = R_i - mean(R_j, j != i)
  KL_k1    = sum_t (lp_t - ref_t)
  KL_k3    = sum_t (exp(lp_t - ref_t) - (lp_t - ref_t) - 1)
  loss     = -mean_i(A_i * sum_t lp_it) + beta * mean_i(KL_i)   (KL k1, as the reference's loss uses)
  with length_normalize, sum_t lp and KL are divided by the number of scored tokens.
"""
import json
import math
import random

rng = random.Random(20261126)
SCALE = 100.0


def reward(success, reflection_tokens, v, lambda_exec=1.0, eta=0.1, lambda_val=0.0):
    return lambda_exec * float(success) - eta * (reflection_tokens / SCALE) + lambda_val * float(v)


def variance(rs):
    m = sum(rs) / len(rs)
    return sum((r - m) ** 2 for r in rs) / len(rs)


def advantage(rs, normalize=False, clip=None):
    m = sum(rs) / len(rs)
    a = [r - m for r in rs]
    if normalize:
        s = math.sqrt(variance(rs))
        a = [x / (s + 1e-8) for x in a]
    if clip is not None:
        a = [max(-clip, min(clip, x)) for x in a]
    return a


def loo(rs):
    t = sum(rs)
    return [r - (t - r) / (len(rs) - 1) for r in rs]


def kl(lp, ref, est, norm):
    d = [a - b for a, b in zip(lp, ref)]
    k = sum(d) if est == "k1" else sum(math.exp(x) - x - 1.0 for x in d)
    return k / max(len(lp), 1) if norm else k


def loss(groups_lp, groups_ref, adv, beta, norm):
    terms, kls = [], []
    for lp, ref, a in zip(groups_lp, groups_ref, adv):
        s = sum(lp) / max(len(lp), 1) if norm else sum(lp)
        terms.append(a * s)
        kls.append(kl(lp, ref, "k1", norm))
    return -sum(terms) / len(terms) + beta * sum(kls) / len(kls)


cases = []
for case in range(6):
    g = 5
    rollouts = []
    for _ in range(g):
        n_refl = rng.choice([0, 0, 12, 30, 57])
        n_act = rng.randint(3, 9)
        lp = [-rng.uniform(0.01, 3.0) for _ in range(n_refl + n_act)]
        ref = [x + rng.uniform(-0.3, 0.3) for x in lp]
        rollouts.append({"success": rng.random() < 0.5, "reflection_tokens": n_refl, "verifier": rng.random(), "logprobs": lp, "ref_logprobs": ref})
    params = {"lambda_exec": 1.0, "eta": 0.1 if case % 2 == 0 else 0.25, "lambda_val": 0.0 if case < 3 else 0.5, "beta": 0.04, "clip": 1.5}
    rs = [reward(r["success"], r["reflection_tokens"], r["verifier"], params["lambda_exec"], params["eta"], params["lambda_val"]) for r in rollouts]
    lps = [r["logprobs"] for r in rollouts]
    refs = [r["ref_logprobs"] for r in rollouts]
    plain = advantage(rs)
    cases.append({
        "params": params,
        "rollouts": rollouts,
        "rewards": rs,
        "advantage_plain": plain,
        "advantage_normalized": advantage(rs, normalize=True),
        "advantage_clipped": advantage(rs, normalize=True, clip=params["clip"]),
        "advantage_loo": loo(rs),
        "variance": variance(rs),
        "kl_k1": [kl(a, b, "k1", False) for a, b in zip(lps, refs)],
        "kl_k3": [kl(a, b, "k3", False) for a, b in zip(lps, refs)],
        "kl_k3_norm": [kl(a, b, "k3", True) for a, b in zip(lps, refs)],
        "loss": loss(lps, refs, plain, params["beta"], False),
        "loss_length_normalized": loss(lps, refs, plain, params["beta"], True),
    })
print(json.dumps({"source": "scripts/regrpo_formulas.py", "cases": cases}, indent=1))
