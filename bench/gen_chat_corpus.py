#!/usr/bin/env python3
"""Writes an OpenAI chat JSONL corpus of about SIZE_MB megabytes with distinct records.

Usage: python3 bench/gen_chat_corpus.py OUT SIZE_MB
"""
import json
import random
import sys

out, size_mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
words = "the of and a to in is you that it he was for on are as with his they at be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part".split()
tools = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate an expression.",
          "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}},
         {"type": "function", "function": {"name": "search_text", "description": "Search documents.",
          "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}}, "required": ["query"]}}}]
target = size_mb * 1_000_000
written = 0
i = 0
with open(out, "w") as f:
    while written < target:
        q = " ".join(rng.choices(words, k=rng.randint(20, 120)))
        obs = " ".join(rng.choices(words, k=rng.randint(50, 300)))
        rec = {"id": f"c{i}", "tools": tools, "messages": [
            {"role": "system", "content": "You are a helpful assistant that uses tools."},
            {"role": "user", "content": f"Question {i}: {q}?"},
            {"role": "assistant", "content": "Let me search.", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "search_text", "arguments": json.dumps({"query": q[:60], "top_k": 3})}}]},
            {"role": "tool", "tool_call_id": "t1", "content": obs},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t2", "type": "function", "function": {"name": "calculator", "arguments": json.dumps({"expression": f"{i} * {rng.randint(2, 99)}"})}}]},
            {"role": "tool", "tool_call_id": "t2", "content": str(i * 7)},
            {"role": "assistant", "content": f"The answer is {i * 7}."}]}
        line = json.dumps(rec) + "\n"
        f.write(line)
        written += len(line)
        i += 1
print(f"wrote {i} records, {written / 1e6:.0f} MB to {out}")
