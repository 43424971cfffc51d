#!/usr/bin/env python3
"""Writes examples/sample.safetensors: a tiny Stable Diffusion LoRA look-alike.

Kohya-style tensor names (lora_unet_..., lora_te_...), F16 up/down matrices,
F32 alpha scalars and ss_* training metadata, like the LoRA files people
share, only a few KB. Uses the Python standard library only, and writes the
canonical layout (tensors by descending dtype then name, compact JSON,
"__metadata__" first, header padded with spaces to a multiple of 8), so
`safetensors convert` reproduces it byte for byte.

    python3 examples/make_sample.py [OUT]
"""
import json
import struct
import sys

RANK = 4
# (module name, input features, output features)
MODULES = [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 32, 32),
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k", 32, 32),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_v", 48, 32),
    ("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_2", 64, 32),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 24, 24),
]
# F32 < F16 in the canonical order: dtype ranks F32 = 17, F16 = 13.
DTYPE_RANK = {"F16": 13, "F32": 17}


def lcg(seed):
    """Deterministic pseudo-random values in [-0.5, 0.5) (no `random`
    module, so the bytes never depend on the Python version)."""
    state = seed
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield ((state >> 33) / float(1 << 31)) - 0.5


def tensors():
    out = []
    for i, (name, fin, fout) in enumerate(MODULES):
        gen = lcg(i + 1)
        down = [next(gen) * 0.1 for _ in range(RANK * fin)]
        up = [next(gen) * 0.01 for _ in range(fout * RANK)]
        out.append((name + ".lora_down.weight", "F16", [RANK, fin],
                    struct.pack("<%de" % len(down), *down)))
        out.append((name + ".lora_up.weight", "F16", [fout, RANK],
                    struct.pack("<%de" % len(up), *up)))
        out.append((name + ".alpha", "F32", [], struct.pack("<f", float(RANK))))
    return out


METADATA = {
    "ss_base_model_version": "sd_v1",
    "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
    "ss_network_module": "networks.lora",
    "ss_network_dim": str(RANK),
    "ss_network_alpha": str(float(RANK)),
    "ss_output_name": "sample_lora",
    "ss_learning_rate": "0.0001",
    "ss_num_epochs": "10",
    "ss_resolution": "(512, 512)",
    "ss_training_comment": "tiny example file made by examples/make_sample.py",
    "ss_tag_frequency": json.dumps({
        "10_sample": {"1girl": 40, "solo": 38, "smile": 25, "looking at viewer": 22,
                      "long hair": 20, "outdoors": 15, "blue sky": 12, "cloud": 11,
                      "day": 10, "standing": 9, "upper body": 8, "short sleeves": 6,
                      "holding": 5, "flower": 4, "tree": 3}}),
}


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "examples/sample.safetensors"
    items = sorted(tensors(), key=lambda t: (-DTYPE_RANK[t[1]], t[0].encode()))
    header = "{" + '"__metadata__":' + json.dumps(
        dict(sorted(METADATA.items())), separators=(",", ":"), ensure_ascii=False)
    offset = 0
    for name, dtype, shape, data in items:
        entry = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        header += "," + json.dumps(name) + ":" + json.dumps(entry, separators=(",", ":"))
        offset += len(data)
    header += "}"
    raw = header.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, _, data in items:
            f.write(data)


if __name__ == "__main__":
    main()
