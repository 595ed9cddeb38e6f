#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

    python3 fuzz/seeds.py

Needs the two real models (`cargo xtask fetch-models`) and builds the transformer's
`tiny_model` example for the tiny random-weight models. The seeds are:

- gguf_parse: the first 4, 16 and 64 KiB of each real model, each real model's metadata
  with its arrays cut to 64 elements and no tensors, two small models, and hostile headers
  (huge counts and lengths, bad types, overlapping tensors, odd alignments);
- model_load: a one-block tiny model of every family (Q4_0 weights, 64 tokens), a minimal
  llama, and that llama with hostile hyperparameters (block count 0xFFFFFFFF, context length
  0xFFFFFFFF, zero heads, odd rotary widths, NaN norms and bases, unknown RoPE scaling, ...);
- tokenizer, chat_template, serve_request: small texts, token ids, conversations,
  templates and request bodies in the layout each target reads (see its header comment).
"""

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
VARIANTS = ["llama3", "mistral", "mixtral", "qwen2", "qwen3", "qwen3moe", "phi3",
            "phi3-long", "gemma2"]

# GGUF value types: id -> struct format of a scalar (None: string or array).
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
# ggml tensor types.
F32_TYPE, Q8_0_TYPE = 0, 8
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def models_dir():
    home = os.environ.get("FERROLM_HOME")
    if home:
        return Path(home) / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "ferrolm" / "models"


class Gguf:
    """The parts of a GGUF file as raw byte strings, so they can be edited and reassembled."""

    def __init__(self, data):
        self.version = struct.unpack_from("<I", data, 4)[0]
        n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
        pos = 24
        self.kv = []  # (key, type, raw value bytes)
        for _ in range(n_kv):
            key, pos = read_string(data, pos)
            ty = struct.unpack_from("<I", data, pos)[0]
            end = skip_value(data, pos + 4, ty)
            self.kv.append((key, ty, data[pos + 4:end]))
            pos = end
        self.tensors = []  # [name, dims, type, offset]
        for _ in range(n_tensors):
            name, pos = read_string(data, pos)
            n_dims = struct.unpack_from("<I", data, pos)[0]
            dims = list(struct.unpack_from(f"<{n_dims}Q", data, pos + 4))
            pos += 4 + 8 * n_dims
            ty, offset = struct.unpack_from("<IQ", data, pos)
            pos += 12
            self.tensors.append([name, dims, ty, offset])
        self.alignment = 32
        for key, ty, raw in self.kv:
            if key == "general.alignment":
                self.alignment = struct.unpack(SCALAR[ty], raw)[0]
        self.data = data[align(pos, self.alignment):]

    def get(self, key):
        return next((raw for k, _, raw in self.kv if k == key), None)

    def set(self, key, ty, raw):
        """Sets or adds `key`."""
        for i, (k, _, _) in enumerate(self.kv):
            if k == key:
                self.kv[i] = (key, ty, raw)
                return self
        self.kv.append((key, ty, raw))
        return self

    def drop(self, key):
        self.kv = [e for e in self.kv if e[0] != key]
        return self

    def arch(self):
        raw = self.get("general.architecture")
        return raw[8:].decode()

    def tensor(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def bytes(self):
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv))
        for key, ty, raw in self.kv:
            out += string(key) + struct.pack("<I", ty) + raw
        for name, dims, ty, offset in self.tensors:
            out += string(name) + struct.pack("<I", len(dims))
            out += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ty, offset)
        out += b"\0" * (align(len(out), self.alignment) - len(out))
        return bytes(out + self.data)

    def copy(self):
        other = Gguf.__new__(Gguf)
        other.__dict__.update(self.__dict__)
        other.kv = list(self.kv)
        other.tensors = [list(t) for t in self.tensors]
        return other


def align(n, a):
    return (n + a - 1) // a * a if a else n


def string(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def read_string(data, pos):
    n = struct.unpack_from("<Q", data, pos)[0]
    return data[pos + 8:pos + 8 + n].decode(), pos + 8 + n


def skip_value(data, pos, ty):
    if ty in SCALAR:
        return pos + struct.calcsize(SCALAR[ty])
    if ty == STRING:
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
    elem, n = struct.unpack_from("<IQ", data, pos)
    pos += 12
    for _ in range(n):
        pos = skip_value(data, pos, elem)
    return pos


def cut_arrays(raw, ty, keep):
    """An array value cut to its first `keep` elements."""
    if ty != ARRAY:
        return raw
    elem, n = struct.unpack_from("<IQ", raw, 0)
    pos = 12
    for _ in range(min(n, keep)):
        pos = skip_value(raw, pos, elem)
    return struct.pack("<IQ", elem, min(n, keep)) + raw[12:pos]


def cut_layers(g, n_layer):
    """`g` with only its first `n_layer` blocks, the tensor data packed again."""
    g = g.copy()
    ends = sorted(t[3] for t in g.tensors)[1:] + [len(g.data)]
    size = {start: end - start for start, end in zip(sorted(t[3] for t in g.tensors), ends)}
    kept, data = [], bytearray()
    for name, dims, ty, offset in g.tensors:
        if name.startswith("blk.") and int(name.split(".")[1]) >= n_layer:
            continue
        kept.append([name, dims, ty, len(data)])
        data += g.data[offset:offset + size[offset]]
    g.tensors, g.data = kept, bytes(data)
    a = g.arch()
    g.set(f"{a}.block_count", *u32(n_layer))
    pattern = g.get(f"{a}.attention.sliding_window_pattern")
    if pattern is not None and struct.unpack_from("<I", pattern)[0] == ARRAY:
        g.set(f"{a}.attention.sliding_window_pattern", ARRAY,
              cut_arrays(pattern, ARRAY, n_layer))
    return g


def q8_0(rows, cols, seed):
    """A Q8_0 matrix of `rows` rows of `cols` (a multiple of 32) small pseudo-random weights."""
    out, x = bytearray(), seed
    for _ in range(rows * cols // 32):
        out += struct.pack("<e", 0.01)
        for _ in range(32):
            x = (x * 1103515245 + 12345) % (1 << 31)
            out += struct.pack("<b", (x >> 16) % 255 - 127)
    return bytes(out)


def minimal_llama():
    """The smallest llama ferrolm runs: one block, width 32, two heads sharing one KV head,
    32 tokens, Q8_0 matrices (7 KiB)."""
    g = Gguf.__new__(Gguf)
    g.version, g.alignment = 3, 32
    g.kv = [("general.architecture", *text("llama")),
            ("llama.context_length", *u32(64)),
            ("llama.embedding_length", *u32(32)),
            ("llama.block_count", *u32(1)),
            ("llama.feed_forward_length", *u32(32)),
            ("llama.attention.head_count", *u32(2)),
            ("llama.attention.head_count_kv", *u32(1)),
            ("llama.attention.layer_norm_rms_epsilon", *f32(1e-5)),
            ("llama.rope.freq_base", *f32(10000.0)),
            ("tokenizer.ggml.model", *text("no_vocab"))]
    shapes = [("token_embd.weight", 32, 32), ("blk.0.attn_norm.weight", 32, None),
              ("blk.0.attn_q.weight", 32, 32), ("blk.0.attn_k.weight", 16, 32),
              ("blk.0.attn_v.weight", 16, 32), ("blk.0.attn_output.weight", 32, 32),
              ("blk.0.ffn_norm.weight", 32, None), ("blk.0.ffn_gate.weight", 32, 32),
              ("blk.0.ffn_up.weight", 32, 32), ("blk.0.ffn_down.weight", 32, 32),
              ("output_norm.weight", 32, None), ("output.weight", 32, 32)]
    g.tensors, data = [], bytearray()
    for i, (name, rows, cols) in enumerate(shapes):
        if cols is None:
            g.tensors.append([name, [rows], F32_TYPE, len(data)])
            data += struct.pack(f"<{rows}f", *[1.0] * rows)
        else:
            g.tensors.append([name, [cols, rows], Q8_0_TYPE, len(data)])
            data += q8_0(rows, cols, i + 1)
        data += b"\0" * (align(len(data), 32) - len(data))
    g.data = bytes(data)
    return g


def u32(v):
    return (U32, struct.pack("<I", v))


def f32(v):
    return (F32, struct.pack("<f", v))


def text(s):
    return (STRING, string(s))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def tiny_models(tmp):
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferrolm-transformer",
                    "--example", "tiny_model"], cwd=ROOT, check=True)
    exe = ROOT / "target" / "release" / "examples" / "tiny_model"
    models = {}
    for v in VARIANTS:
        out = tmp / f"{v}.gguf"
        subprocess.run([exe, v, out, "--vocab", "64", "--type", "Q4_0"], check=True,
                       stdout=subprocess.DEVNULL)
        models[v] = out.read_bytes()
    return models


def gguf_seeds(real, tiny):
    for name, data in real.items():
        for kib in (4, 16, 64):
            write("gguf_parse", f"{name}_head_{kib}k.gguf", data[:kib * 1024])
        g = Gguf(data)
        g.kv = [(k, ty, cut_arrays(raw, ty, 64)) for k, ty, raw in g.kv]
        g.tensors, g.data = [], b""
        write("gguf_parse", f"{name}_metadata.gguf", g.bytes())
    write("gguf_parse", "minimal_llama.gguf", minimal_llama().bytes())
    write("gguf_parse", "tiny_qwen2.gguf", cut_layers(Gguf(tiny["qwen2"]), 1).bytes())

    header = Gguf(tiny["llama3"])
    header.tensors.sort(key=lambda t: t[3])
    header.data = header.data[:header.tensors[3][3]]
    header.tensors = header.tensors[:3]
    write("gguf_parse", "three_tensors.gguf", header.bytes())
    small = header.bytes()

    def patched(offset, fmt, value):
        b = bytearray(small)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    write("gguf_parse", "n_tensors_huge.gguf", patched(8, "<Q", 1 << 62))
    write("gguf_parse", "n_kv_huge.gguf", patched(16, "<Q", 0xFFFF_FFFF_FFFF))
    write("gguf_parse", "version_1.gguf", patched(4, "<I", 1))
    write("gguf_parse", "big_endian.gguf", patched(4, "<I", 3 << 24))
    first_key_len = struct.unpack_from("<Q", small, 24)[0]
    write("gguf_parse", "key_len_huge.gguf", patched(24, "<Q", 1 << 63))
    write("gguf_parse", "value_type_bad.gguf", patched(32 + first_key_len, "<I", 13))

    for name, edit in [
        ("alignment_0", lambda g: g.set("general.alignment", *u32(0))),
        ("alignment_3", lambda g: g.set("general.alignment", *u32(3))),
        ("alignment_u64_huge", lambda g: g.set("general.alignment", U64,
                                               struct.pack("<Q", 1 << 63))),
        ("array_of_arrays", lambda g: g.set("t.nested", ARRAY, struct.pack("<IQ", ARRAY, 2)
                                            + struct.pack("<IQ", U8, 2) + b"\1\2"
                                            + struct.pack("<IQ", STRING, 1) + string("é"))),
        ("array_count_huge", lambda g: g.set("t.huge", ARRAY,
                                             struct.pack("<IQ", U64, 1 << 60))),
        ("string_invalid_utf8", lambda g: g.set("t.bad", STRING, string(b"\xff\xfe"))),
        ("duplicate_key", lambda g: g.kv.append(g.kv[0])),
    ]:
        g = header.copy()
        edit(g)
        write("gguf_parse", f"{name}.gguf", g.bytes())
    # Found by fuzzing: no tensors, so the reader accepts any power-of-two alignment, and
    # the writer used to pad the rewritten file to it.
    g = header.copy()
    g.tensors, g.data = [], b""
    g.set("general.alignment", U64, struct.pack("<Q", 1 << 63))
    write("gguf_parse", "no_tensors_alignment_2p63.gguf", g.bytes())
    for name, edit in [
        ("tensor_dims_huge", lambda t: t[0].__setitem__(1, [1 << 32, 1 << 32])),
        ("tensor_dims_zero", lambda t: t[0].__setitem__(1, [0, 64])),
        ("tensor_dims_five", lambda t: t[0].__setitem__(1, [64, 1, 1, 1, 1])),
        ("tensor_type_unknown", lambda t: t[0].__setitem__(2, 99)),
        ("tensor_row_not_blocks", lambda t: t[0].__setitem__(1, [33, 64])),
        ("tensor_offset_misaligned", lambda t: t[1].__setitem__(3, 1)),
        ("tensor_offset_past_end", lambda t: t[1].__setitem__(3, 1 << 40)),
        ("tensor_offset_overflow", lambda t: t[1].__setitem__(3, (1 << 64) - 32)),
        ("tensors_overlap", lambda t: t[1].__setitem__(3, 0)),
        ("tensor_name_duplicate", lambda t: t[1].__setitem__(0, t[0][0])),
    ]:
        g = header.copy()
        edit(g.tensors)
        write("gguf_parse", f"{name}.gguf", g.bytes())


def model_seeds(tiny):
    for v, data in tiny.items():
        layers = 2 if v == "gemma2" else 1
        write("model_load", f"tiny_{v}.gguf", cut_layers(Gguf(data), layers).bytes())
    llama = minimal_llama()
    write("model_load", "minimal_llama.gguf", llama.bytes())
    a = llama.arch()
    hostile = [
        ("block_count_u32_max", f"{a}.block_count", u32(0xFFFF_FFFF)),
        ("block_count_1e8", f"{a}.block_count", u32(100_000_000)),
        ("block_count_0", f"{a}.block_count", u32(0)),
        ("context_length_u32_max", f"{a}.context_length", u32(0xFFFF_FFFF)),
        ("context_length_0", f"{a}.context_length", u32(0)),
        ("embedding_length_u32_max", f"{a}.embedding_length", u32(0xFFFF_FFFF)),
        ("feed_forward_length_u32_max", f"{a}.feed_forward_length", u32(0xFFFF_FFFF)),
        ("head_count_0", f"{a}.attention.head_count", u32(0)),
        ("head_count_u32_max", f"{a}.attention.head_count", u32(0xFFFF_FFFF)),
        ("head_count_kv_u32_max", f"{a}.attention.head_count_kv", u32(0xFFFF_FFFF)),
        ("key_length_u32_max", f"{a}.attention.key_length", u32(0xFFFF_FFFF)),
        ("rope_dimension_odd", f"{a}.rope.dimension_count", u32(3)),
        ("rope_freq_base_nan", f"{a}.rope.freq_base", f32(float("nan"))),
        ("rope_freq_base_0", f"{a}.rope.freq_base", f32(0.0)),
        ("rms_eps_nan", f"{a}.attention.layer_norm_rms_epsilon", f32(float("nan"))),
        ("rope_scaling_unknown", f"{a}.rope.scaling.type", text("ntk")),
        ("rope_scaling_yarn_factor_inf", f"{a}.rope.scaling.factor", f32(float("inf"))),
        ("block_count_string", f"{a}.block_count", text("2")),
        ("architecture_unknown", "general.architecture", text("bert")),
    ]
    for name, key, (ty, raw) in hostile:
        g = llama.copy().set(key, ty, raw)
        if name == "rope_scaling_yarn_factor_inf":
            g.set(f"{a}.rope.scaling.type", *text("yarn"))
        write("model_load", f"{name}.gguf", g.bytes())
    g = llama.copy()
    g.tensors = [t for t in g.tensors if t[0] != "token_embd.weight"]
    write("model_load", "no_token_embd.gguf", g.bytes())
    g = llama.copy()
    embd = g.tensor("token_embd.weight")
    embd[1] = [64, 16]
    write("model_load", "token_embd_reshaped.gguf", g.bytes())

    gemma = cut_layers(Gguf(tiny["gemma2"]), 2)
    a = gemma.arch()
    for name, key, (ty, raw) in [
        ("gemma2_sliding_window_0", f"{a}.attention.sliding_window", u32(0)),
        ("gemma2_sliding_window_u32_max", f"{a}.attention.sliding_window", u32(0xFFFF_FFFF)),
        ("gemma2_softcap_nan", f"{a}.attn_logit_softcapping", f32(float("nan"))),
        ("gemma2_swa_pattern_short", f"{a}.attention.sliding_window_pattern",
         (ARRAY, struct.pack("<IQ", BOOL, 1) + b"\1")),
        ("gemma2_swa_pattern_0", f"{a}.attention.sliding_window_pattern", u32(0)),
    ]:
        write("model_load", f"{name}.gguf", gemma.copy().set(key, ty, raw).bytes())
    mixtral = cut_layers(Gguf(tiny["mixtral"]), 1)
    a = mixtral.arch()
    for name, key, (ty, raw) in [
        ("mixtral_expert_count_u32_max", f"{a}.expert_count", u32(0xFFFF_FFFF)),
        ("mixtral_expert_used_0", f"{a}.expert_used_count", u32(0)),
        ("mixtral_expert_used_9", f"{a}.expert_used_count", u32(9)),
    ]:
        write("model_load", f"{name}.gguf", mixtral.copy().set(key, ty, raw).bytes())


TEXTS = [
    "Hello, world!",
    "The capital of France is",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "numbers 1234567890 3.14159 1e-9 0x1F",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "日本語のテキストと中文文本",
    "emoji 👩‍💻🦀🏳️‍🌈 and combining e\u0301",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask>",
    "<|endoftext|><s></s><0xFF>",
    "\u2581\u2581space\u2581markers",
    "Ġ Ċ ĉ byte-level look-alikes",
    "don't we'll they're I'M YOU'D",
    "a" * 300,
    " " * 100,
    "\u0000\u0001\u001f\u007f\u0085\u00a0\u2028\ufeff",
]


def tokenizer_seeds():
    for i, t in enumerate(TEXTS):
        for vocab in (0, 1):
            write("tokenizer", f"encode_{vocab}_{i:02}", bytes([vocab]) + t.encode())
    write("tokenizer", "encode_0_invalid_utf8", b"\0abc\xff\xfe\xc3\x28\xe2\x82 end")
    write("tokenizer", "encode_1_invalid_utf8", b"\1abc\xff\xfe\xc3\x28\xe2\x82 end")
    ids = {
        "smollm2": [1, 9690, 198, 2, 0, 216, 256, 49151, 49152, 49155],
        "gemma3": [2, 106, 1645, 107, 1, 493, 236743, 262143, 262144, 262147],
    }
    for vocab, (name, seq) in enumerate(ids.items()):
        write("tokenizer", f"decode_{name}", bytes([2 | vocab]) + struct.pack(f"<{len(seq)}I", *seq))
    # A character split over byte tokens (<0xE2> <0x82> <0xAC> in Gemma 3), then cut short.
    gemma_bytes = [0xE2 + 238, 0x82 + 238, 0xAC + 238, 0xE2 + 238, 0x41 + 238]
    write("tokenizer", "decode_gemma3_bytes", bytes([3]) + struct.pack("<5I", *gemma_bytes))
    write("tokenizer", "decode_out_of_range", bytes([2]) + struct.pack("<3I", 0xFFFF_FFFF, 0x8000_0000, 7))


FIELD, ROLE = "\u001e", "\u001f"

CONVERSATIONS = [
    ["system" + ROLE + "Be brief.", "user" + ROLE + "Hi", "assistant" + ROLE + "Hello!",
     "user" + ROLE + "2+2?"],
    ["user" + ROLE + "only one message"],
    ["tool" + ROLE + "{\"x\": 1}", "user" + ROLE + ""],
    ["system" + ROLE + "  spaces  ", "system" + ROLE + "twice"],
    ["assistant" + ROLE + "starts with the model"],
    ["user" + ROLE + "<|im_end|><end_of_turn>{{ raise_exception('x') }}{% if %}"],
    [],
]

TEMPLATES = [
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}",
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('no system') }}{% endif %}{{ m['content'] | trim | upper }}"
    "{% endfor %}{{ eos_token }}",
    "{%- set ns = namespace(n=0) -%}{%- for m in messages -%}{%- set ns.n = ns.n + 1 -%}"
    "{{ loop.index }}/{{ messages | length }} {{ m.content[:10] }}{%- endfor -%}{{ ns.n }}",
    "{{ strftime_now('%d %b %Y') }}{{ messages[0].content.split(' ') | join('|') }}",
    "{% macro r(n) %}{% if n > 0 %}{{ r(n - 1) }}{% endif %}{{ n }}{% endmacro %}{{ r(20) }}",
    "{{ messages | tojson }}{{ (messages | map(attribute='role') | list) }}",
    "{% for i in range(50) %}{{ i }}{% endfor %}{{ 'ab' * 3 }}",
    "{{ messages[-1]['content'].replace('a', 'b').startswith('x') }}",
    "{% if messages[0] is defined %}{{ messages[0].nothing.deeper }}{% endif %}",
    "{{ undefined_function() }}",
    "{% for %}",
]


def chat_seeds():
    for source in range(5):
        for i, conv in enumerate(CONVERSATIONS):
            write("chat_template", f"source_{source}_{i}",
                  bytes([source, i & 1]) + FIELD.join(conv).encode())
    for i, template in enumerate(TEMPLATES):
        conv = CONVERSATIONS[i % len(CONVERSATIONS)]
        write("chat_template", f"arbitrary_{i:02}",
              bytes([5, 1]) + FIELD.join([template] + conv).encode())


BODIES = [
    (0, '{"model":"m","messages":[{"role":"user","content":"hi"}]}'),
    (0, '{"model":"m","messages":[{"role":"developer","content":"be brief"},'
        '{"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],'
        '"max_completion_tokens":7,"max_tokens":99,"temperature":0,"top_p":0.5,"top_k":3,'
        '"min_p":0.1,"seed":-1,"stop":["a","b"],"presence_penalty":1.5,"frequency_penalty":-0.5,'
        '"logprobs":true,"top_logprobs":2,"n":1,"stream":true,'
        '"stream_options":{"include_usage":true},"x_metrics":true,"logit_bias":{"42":-100},'
        '"user":"ignored"}'),
    (2, '{"model":"m","messages":[{"role":"system","content":"x"},{"role":"assistant"},'
        '{"role":"user","content":"The capital of France is"}],"stop":"is","temperature":2}'),
    (4, '{"model":"m","messages":[{"role":"tool","content":"x"}],"tools":[{}]}'),
    (0, '{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}'),
    (0, '{"model":"m","messages":[]}'),
    (0, '{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":0,'
        '"top_k":-1,"top_p":0,"logit_bias":{"x":1}}'),
    (0, '{"model":"m","messages":[{"role":"user","content":"hi"}],'
        '"max_tokens":18446744073709551615,"seed":18446744073709551615,"top_k":1e300}'),
    (1, '{"model":"m","prompt":"Once upon a time","max_tokens":16,"logprobs":5,'
        '"stop":["\\n","The","\u00e9t\u00e9"],"echo":false,"best_of":1,"suffix":""}'),
    (3, '{"model":"m","prompt":[1,2,3,49151],"max_tokens":1}'),
    (5, '{"model":"m","prompt":[[9690,198]],"temperature":0}'),
    (1, '{"model":"m","prompt":["a","b"]}'),
    (1, '{"model":"m","prompt":[49152, -1, 4294967296]}'),
    (1, '{"model":"m","prompt":"x","echo":true,"n":2,"best_of":3}'),
    (7, '{"model":"m","prompt":"' + "word " * 40 + '","stop":["word word"]}'),
    (0, '[1,2,3]'),
    (0, '{"model":'),
    (0, '{"model":null,"messages":null,"stream_options":[]}'),
    (1, '{"model":"m","prompt":"hi","frequency_penalty":-2,"presence_penalty":2,'
        '"min_p":1,"top_p":1,"temperature":0.0001,"logit_bias":{"0":100,"1":-100}}'),
]


def serve_seeds():
    for i, (select, body) in enumerate(BODIES):
        write("serve_request", f"body_{i:02}", bytes([select]) + body.encode())


def main():
    real = {}
    for name, file in (("smollm2", SMOLLM2), ("gemma3", GEMMA3)):
        path = models_dir() / file
        if not path.is_file():
            sys.exit(f"{path} is missing: run `cargo xtask fetch-models`")
        real[name] = path.read_bytes()
    for target in ("gguf_parse", "model_load", "tokenizer", "chat_template", "serve_request"):
        shutil.rmtree(CORPUS / target, ignore_errors=True)
    tmp = ROOT / "fuzz" / "target" / "seeds"
    tmp.mkdir(parents=True, exist_ok=True)
    tiny = tiny_models(tmp)
    gguf_seeds(real, tiny)
    model_seeds(tiny)
    tokenizer_seeds()
    chat_seeds()
    serve_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = list((CORPUS / target).iterdir())
        size = sum(f.stat().st_size for f in files)
        print(f"{target}: {len(files)} files, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
