#!/usr/bin/env python3
"""Seed inputs for the checkpoint fuzz targets, generated at run time
(never committed): python3 fuzz/seeds.py TARGET DIR.

fuzz_pickle: pickle streams (protocols 0-5) of the shapes checkpoints hold,
  plus torch's own pickles, each behind a mode byte (see fuzz_pickle.c).
fuzz_ckpt: small torch.save checkpoints, zip and legacy, and raw pickles,
  behind a mode byte (see fuzz_ckpt.c); TorchScript archives, a tar
  checkpoint, numpy arrays in pickles.
fuzz_tscode: the code/ files of TorchScript archives, behind a chunking
  seed byte.
fuzz_index: index.json texts (see fuzz_index.c), good and broken.
fuzz_gguf: small GGUF files (several tensor types, an array, an
  orig_shape record).
fuzz_sdnames: SD/SDXL/Flux tensor names behind a selector byte (see
  fuzz_sdnames.c), both layouts.
Uses Debian's python3-torch when importable; plain pickles otherwise."""
import collections
import io
import os
import pickle
import sys

target, out = sys.argv[1], sys.argv[2]
if target == "fuzz_gguf":
    import struct
    os.makedirs(out, exist_ok=True)

    def gstr(t):
        b = t.encode()
        return struct.pack("<Q", len(b)) + b

    # (name, ggml type, dims in ggml order, bytes per block, elements per block)
    specs = [("w.f32", 0, [32, 2], 4, 1), ("w.f16", 1, [64], 2, 1), ("w.q8", 8, [64, 2], 34, 32),
             ("w.q4", 2, [32], 18, 32), ("w.q4k", 12, [256], 144, 256), ("w.bf16", 30, [16], 2, 1)]
    for k in range(1, len(specs) + 1):
        kv = gstr("general.architecture") + struct.pack("<I", 8) + gstr("flux")
        kv += gstr("general.alignment") + struct.pack("<II", 4, 32)
        kv += gstr("comfy.gguf.orig_shape.w.f32") + struct.pack("<IIQ", 9, 5, 2) + struct.pack("<ii", 2, 32)
        infos, data = b"", b""
        for name, typ, ne, bb, be in specs[:k]:
            n = 1
            for d in ne:
                n *= d
            infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            infos += struct.pack("<IQ", typ, len(data))
            blob = bytes((i * 37 + typ) % 251 for i in range(n // be * bb))
            data += blob + b"\0" * (-len(blob) % 32)
        head = b"GGUF" + struct.pack("<IQQ", 3, k, 3) + kv + infos
        head += b"\0" * (-len(head) % 32)
        with open(os.path.join(out, "seed-gguf-%d" % k), "wb") as f:
            f.write(head + data)
    sys.exit(0)
if target == "fuzz_index":
    import json
    os.makedirs(out, exist_ok=True)
    wm = {"a": "m-1.safetensors", "b.weight": "m-1.safetensors", "c": "m-2.safetensors",
          "d": "m-3.safetensors", "e": "m-3.safetensors"}
    seeds = [
        {"metadata": {"total_size": 40}, "weight_map": wm},
        {"metadata": {"total_size": 41, "total_parameters": 10}, "weight_map": wm},
        {"weight_map": dict(wm, d="../m-3.safetensors")},
        {"weight_map": dict(wm, z="m-2.safetensors")},
        {"weight_map": {"a": "m-1.safetensors"}},
        {"metadata": {"x": [1, {"y": None}]}, "other": "\u00e9", "weight_map": {}},
    ]
    for i, s in enumerate(seeds):
        for indent in (None, 2):
            with open(os.path.join(out, "seed-index-%d-%s" % (i, indent)), "w") as f:
                f.write(json.dumps(s, indent=indent, sort_keys=True))
    sys.exit(0)
if target == "fuzz_sdnames":
    os.makedirs(out, exist_ok=True)
    # selector: kind = b % 5, layout = b // 5 % 3, from-diffusers when b // 15 is odd
    seeds = [(0, "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"), (5, "label_emb.0.0.weight"),
             (10, "output_blocks.2.1.conv.bias"), (15, "up_blocks.0.upsamplers.0.conv.weight"),
             (1, "encoder.mid.attn_1.q.weight"), (16, "decoder.mid_block.attentions.0.query.weight"),
             (2, "text_model.encoder.layers.11.mlp.fc2.bias"), (3, "transformer.resblocks.3.attn.in_proj_weight"),
             (3, "text_projection"), (18, "text_model.encoder.layers.0.self_attn.q_proj.bias"),
             (4, "double_blocks.18.txt_attn.qkv.weight"), (4, "single_blocks.2.linear1.bias"),
             (4, "final_layer.adaLN_modulation.1.weight"), (19, "single_transformer_blocks.7.proj_mlp.weight"),
             (19, "transformer_blocks.3.attn.add_k_proj.bias")]
    for i, (sel, name) in enumerate(seeds):
        with open(os.path.join(out, "seed-names-%d" % i), "wb") as f:
            f.write(bytes([sel]) + name.encode())
    sys.exit(0)
if target not in ("fuzz_pickle", "fuzz_ckpt", "fuzz_tscode"):
    sys.exit(0)
os.makedirs(out, exist_ok=True)
n = 0


def emit(data, modes):
    global n
    for m in modes:
        with open(os.path.join(out, "seed-%s-%03d-%d" % (target, n, m)), "wb") as f:
            f.write(bytes([m]) + data)
    n += 1


plain = [
    {"a": [1, -2, 3.5, "x", b"y", (None, True, False)], "big": 2 ** 70, "neg": -(2 ** 70)},
    collections.OrderedDict([("k", 1), ("u", "\u00e9\u20ac")]),
    [list(range(20)), {"nested": {"deeper": [[[]]]}}, set([1, 2]), frozenset([3])],
    {"epoch": 3, "global_step": 1000, "lr": 1e-4, "name": "model"},
]
for obj in plain:
    for proto in range(0, 6):
        emit(pickle.dumps(obj, protocol=proto), (0, 1, 3) if target == "fuzz_pickle" else (1,))

try:
    import numpy as np
except Exception:
    np = None
if np is not None and target == "fuzz_pickle":
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "F": np.asfortranarray(np.eye(3)),
              "be": np.arange(3, dtype=">i2"), "o": np.array([1, None], dtype=object), "e": np.zeros((0, 2))}
    for proto in (2, 4, 5):
        emit(pickle.dumps(arrays, protocol=proto), (0, 1, 3))

try:
    import torch
except Exception:
    torch = None

if torch is not None:
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()
    sd["w"] = torch.randn(3, 4, generator=g)
    sd["b"] = torch.randn(4, generator=g).half()
    sd["t"] = torch.randn(4, 3, generator=g).t()  # a non-contiguous view
    sd["i"] = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    sd["s"] = torch.tensor(1.5, dtype=torch.bfloat16)
    sd["shared"] = sd["w"][1]  # shares the storage of w
    variants = [sd, {"state_dict": sd, "epoch": 1}, {"model": {"a": sd["w"]}, "step": 2}]
    for obj in variants:
        for zipped in (True, False):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=zipped)
            data = buf.getvalue()
            if target == "fuzz_ckpt":
                emit(data, (0, 1, 2))
            elif not zipped:
                emit(data[:4096], (1, 5))  # the legacy stream starts with pickles
        for proto in (2, 4):
            if target == "fuzz_pickle":
                # a state dict's pickle, as the zip's data.pkl holds it
                buf = io.BytesIO()
                torch.save(obj, buf, pickle_protocol=proto)
                import zipfile
                with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
                    for name in z.namelist():
                        if name.endswith("data.pkl"):
                            emit(z.read(name), (1, 5, 7))


if torch is not None and target in ("fuzz_ckpt", "fuzz_tscode"):
    import struct
    import tarfile
    import zipfile

    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.register_buffer("buf", torch.arange(3.0))

        def forward(self, x):
            # torch.not_a_call(x) in a comment
            return torch.relu(self.fc(x)) + self.buf.sum() + len("torch.nope(")

    try:
        mods = [torch.jit.script(Small()), torch.jit.trace(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh()),
                                                             torch.randn(1, 2))]
    except Exception:
        mods = []
    for m in mods:
        buf = io.BytesIO()
        torch.jit.save(m, buf)
        if target == "fuzz_ckpt":
            emit(buf.getvalue(), (0, 1))
        else:
            with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
                for name in z.namelist():
                    if name.endswith(".py"):
                        emit(z.read(name), (7, 200))
    if target == "fuzz_ckpt":
        import numpy as np
        for zipped in (True, False):
            buf = io.BytesIO()
            torch.save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "f": np.asfortranarray(np.eye(2)),
                        "o": np.array([1, None], dtype=object)}, buf, _use_new_zipfile_serialization=zipped)
            emit(buf.getvalue(), (0, 1))
        # a tar checkpoint (torch < 0.4), written from the format
        s = io.BytesIO()
        pickle.dump(1, s, protocol=2)
        pickle.dump((1, "cpu", torch.FloatStorage), s, protocol=2)
        s.write(struct.pack("<q", 4) + struct.pack("<4f", 1, 2, 3, 4))
        pickle.dump([(2, 1, 1, 2)], s, protocol=2)
        t = io.BytesIO()
        pickle.dump(1, t, protocol=2)
        pickle.dump((5, 1, torch.FloatTensor), t, protocol=2)
        t.write(struct.pack("<ii2q2qq", 2, 0, 2, 2, 2, 1, 0))

        class K:
            pass

        m = io.BytesIO()
        pk = pickle.Pickler(m, protocol=2)
        pk.persistent_id = lambda o: "5" if isinstance(o, K) else None
        pk.dump({"w": K()})
        tb = io.BytesIO()
        with tarfile.open(fileobj=tb, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in (("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
                               ("pickle", m.getvalue()), ("tensors", t.getvalue()), ("storages", s.getvalue())):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        emit(tb.getvalue(), (0, 1, 2))
