#!/usr/bin/env python3
"""Plain numpy forward pass for the llama and gemma3 architectures.

A development tool: it pins down the exact math (RoPE variant, norms,
scalings, attention windows) against the golden llama.cpp outputs in
fixtures/golden before the Rust code is trusted. Weights are dequantized
to float64, activations stay float64, so its logits are the "exact" ones.

Usage:
  reference_forward.py MODEL.gguf --ids 504,3575,282 [--greedy N] [--top 10]
  reference_forward.py MODEL.gguf --golden fixtures/golden/smollm2.json
"""
import argparse
import json
import math

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(key)
        return default
    v = f.parts[f.data[0]]
    if f.types[0].name == "STRING":
        return bytes(v).decode()
    return v.tolist()[0]


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        self.arch = field(r, "general.architecture")
        a = self.arch
        self.n_layer = field(r, f"{a}.block_count")
        self.d = field(r, f"{a}.embedding_length")
        self.n_head = field(r, f"{a}.attention.head_count")
        self.n_kv = field(r, f"{a}.attention.head_count_kv")
        self.head_dim = field(r, f"{a}.attention.key_length", self.d // self.n_head)
        self.eps = field(r, f"{a}.attention.layer_norm_rms_epsilon")
        self.rope_base = field(r, f"{a}.rope.freq_base")
        if a == "gemma3":
            self.swa = field(r, f"{a}.attention.sliding_window")
            self.rope_base_local = 10000.0
        self.t = {t.name: t for t in r.tensors}
        self.cache = {}

    def w(self, name):
        if name not in self.cache:
            t = self.t[name]
            x = dequantize(t.data, t.tensor_type).astype(np.float64)
            rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
            self.cache[name] = x.reshape(rows, int(t.shape[0])) if rows > 1 else x.reshape(-1)
        return self.cache[name]

    def is_global(self, il):
        return self.arch != "gemma3" or (il + 1) % 6 == 0


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_normal(x, pos, base):
    # x: (T, H, hd); rotate adjacent pairs (2i, 2i+1)
    hd = x.shape[-1]
    inv = base ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rope_neox(x, pos, base):
    # rotate halves: (i, i + hd/2)
    hd = x.shape[-1]
    h = hd // 2
    inv = base ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., :h], x[..., h:]
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(m, ids):
    """Logits (T, vocab) for the whole sequence, causal, from position 0."""
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    emb = m.w("token_embd.weight")
    x = emb[np.array(ids)].copy()
    if m.arch == "gemma3":
        x *= math.sqrt(m.d)
    hd, nh, nkv = m.head_dim, m.n_head, m.n_kv
    grp = nh // nkv
    for il in range(m.n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, m.w(p + "attn_norm.weight"), m.eps)
        q = (h @ m.w(p + "attn_q.weight").T).reshape(T, nh, hd)
        k = (h @ m.w(p + "attn_k.weight").T).reshape(T, nkv, hd)
        v = (h @ m.w(p + "attn_v.weight").T).reshape(T, nkv, hd)
        mask = np.tril(np.ones((T, T), dtype=bool))
        if m.arch == "gemma3":
            q = rmsnorm(q, m.w(p + "attn_q_norm.weight"), m.eps)
            k = rmsnorm(k, m.w(p + "attn_k_norm.weight"), m.eps)
            base = m.rope_base if m.is_global(il) else m.rope_base_local
            q, k = rope_neox(q, pos, base), rope_neox(k, pos, base)
            if not m.is_global(il):
                i = np.arange(T)
                mask &= (i[:, None] - i[None, :]) < m.swa
        else:
            q, k = rope_normal(q, pos, m.rope_base), rope_normal(k, pos, m.rope_base)
        scale = 1.0 / math.sqrt(hd)
        att_out = np.empty((T, nh, hd))
        for hh in range(nh):
            kv = hh // grp
            sc = (q[:, hh, :] @ k[:, kv, :].T) * scale
            sc = np.where(mask, sc, -np.inf)
            sc = np.exp(sc - sc.max(axis=1, keepdims=True))
            sc /= sc.sum(axis=1, keepdims=True)
            att_out[:, hh, :] = sc @ v[:, kv, :]
        o = att_out.reshape(T, nh * hd) @ m.w(p + "attn_output.weight").T
        if m.arch == "gemma3":
            o = rmsnorm(o, m.w(p + "post_attention_norm.weight"), m.eps)
        x = x + o
        h = rmsnorm(x, m.w(p + "ffn_norm.weight"), m.eps)
        g = h @ m.w(p + "ffn_gate.weight").T
        u = h @ m.w(p + "ffn_up.weight").T
        if m.arch == "gemma3":
            a = gelu_tanh(g) * u
        else:
            a = g / (1.0 + np.exp(-g)) * u
        f = a @ m.w(p + "ffn_down.weight").T
        if m.arch == "gemma3":
            f = rmsnorm(f, m.w(p + "post_ffw_norm.weight"), m.eps)
        x = x + f
    x = rmsnorm(x, m.w("output_norm.weight"), m.eps)
    out = m.w("output.weight") if "output.weight" in m.t else emb
    return x @ out.T


def greedy(m, prompt_ids, n, eos):
    ids = list(prompt_ids)
    out = []
    for _ in range(n):
        logits = forward(m, ids)[-1]
        t = int(np.argmax(logits))
        out.append(t)
        if t in eos:
            break
        ids.append(t)
    return out


def check_golden(m, path, max_greedy):
    g = json.load(open(path))
    for case in g["logits_top10"]:
        logits = forward(m, case["ids"])
        ref_key = "exact_top10" if "exact_top10" in case else "positions"
        worst = 0.0
        for p in case[ref_key]:
            for tid, val in p["top"]:
                worst = max(worst, abs(logits[p["pos"], tid] - val))
            ours = list(np.argsort(-logits[p["pos"]])[:10])
            same = ours[0] == p["top"][0][0]
        print(f"logits {case['ids'][:8]}.. vs {ref_key}: max |d| = {worst:.4f}, last argmax same: {same}")
    for case in g["greedy"]:
        n = min(case["n"], max_greedy)
        got = greedy(m, case["prompt_ids"], n, {2} if m.arch == "llama" else {1, 106})
        exp = case["ids"][:n]
        first = next((i for i, (a, b) in enumerate(zip(got, exp)) if a != b), None)
        print(f"greedy {case['prompt'][:30]!r}: {'match' if first is None else 'diverge at ' + str(first)} ({len(got)} tokens)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ids")
    ap.add_argument("--greedy", type=int, default=0)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--golden")
    ap.add_argument("--max-greedy", type=int, default=16)
    a = ap.parse_args()
    m = Model(a.model)
    if a.golden:
        check_golden(m, a.golden, a.max_greedy)
        return
    ids = [int(s) for s in a.ids.split(",")]
    logits = forward(m, ids)
    for pos in range(len(ids)):
        top = np.argsort(-logits[pos])[: a.top]
        print(pos, [(int(t), round(float(logits[pos, t]), 4)) for t in top])
    if a.greedy:
        print("greedy", greedy(m, ids, a.greedy, set()))


if __name__ == "__main__":
    main()
