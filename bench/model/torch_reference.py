#!/usr/bin/python3
"""The benchmark's reference: the same Qwen3-style decoder written the usual way in PyTorch
(separate q/k/v/gate/up projections, repeat_kv, as in transformers' modeling code), timing the best of
STEPS training steps (forward + backward, loss = mean token cross-entropy).

Usage: torch_reference.py VOCAB HIDDEN INTER LAYERS HEADS KV_HEADS HEAD_DIM BATCH SEQ STEPS THREADS [DEVICE DTYPE]
DEVICE cuda with DTYPE bfloat16 runs under torch.autocast with scaled_dot_product_attention, as
transformers does on GPUs; the default (cpu float32) is the eager attention above.
Prints one JSON line: {"tokens_per_s": ..., "seconds_per_step": ..., "loss": ...}.
"""
import contextlib
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

(vocab, hidden, inter, layers, heads, kv_heads, head_dim, batch, seq, steps, threads) = map(int, sys.argv[1:12])
device = sys.argv[12] if len(sys.argv) > 12 else "cpu"
dtype = getattr(torch, sys.argv[13]) if len(sys.argv) > 13 else torch.float32
use_sdpa = device != "cpu" and hasattr(F, "scaled_dot_product_attention")
torch.set_num_threads(threads)
torch.manual_seed(0)


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = torch.nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = torch.nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = torch.nn.Linear(heads * head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_norm = RMSNorm(head_dim)
        self.gate_proj = torch.nn.Linear(hidden, inter, bias=False)
        self.up_proj = torch.nn.Linear(hidden, inter, bias=False)
        self.down_proj = torch.nn.Linear(inter, hidden, bias=False)
        self.input_layernorm = RMSNorm(hidden)
        self.post_attention_layernorm = RMSNorm(hidden)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_norm(self.q_proj(h).view(b, t, heads, head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(h).view(b, t, kv_heads, head_dim)).transpose(1, 2)
        v = self.v_proj(h).view(b, t, kv_heads, head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = heads // kv_heads
        k = k[:, :, None].expand(b, kv_heads, rep, t, head_dim).reshape(b, heads, t, head_dim)
        v = v[:, :, None].expand(b, kv_heads, rep, t, head_dim).reshape(b, heads, t, head_dim)
        if use_sdpa:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            attn = probs @ v
        attn = attn.transpose(1, 2).reshape(b, t, heads * head_dim)
        x = x + self.o_proj(attn)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(vocab, hidden)
        self.layers = torch.nn.ModuleList(Layer() for _ in range(layers))
        self.norm = RMSNorm(hidden)
        inv = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv)

    def forward(self, ids):
        b, t = ids.shape
        pos = torch.arange(t, device=ids.device).float()
        freqs = pos[:, None] * self.inv_freq[None]
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = None if use_sdpa else torch.full((t, t), float("-inf")).triu(1)
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x) @ self.embed_tokens.weight.t()


model = Model()
for p in model.parameters():
    if p.dim() > 1:
        torch.nn.init.normal_(p, std=0.02)
model.to(device)
ids = torch.randint(vocab, (batch, seq)).to(device)


def step():
    # No autocast context at all in fp32: LibTorch 1.13's CPU autocast rejects float32 even when disabled.
    autocast = torch.autocast(device_type=device, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with autocast:
        logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), ids[:, 1:].reshape(-1))
    model.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item()  # .item() waits for the GPU, so the timing below is complete


step()  # warm-up
# The best step: on a shared machine the minimum is the least disturbed measurement.
best = float("inf")
for _ in range(steps):
    start = time.perf_counter()
    loss = step()
    best = min(best, time.perf_counter() - start)
profile = os.environ.get("DISTIL_PROFILE")  # model_bench --profile: a Chrome trace of 5 steps
if profile:
    with torch.autograd.profiler.profile() as prof:
        for _ in range(5):
            step()
    prof.export_chrome_trace(profile)
print(json.dumps({"tokens_per_s": batch * seq / best, "seconds_per_step": best, "loss": loss}))
