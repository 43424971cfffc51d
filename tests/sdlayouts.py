"""Realistic Stable Diffusion tensor layouts for tests: the key names and
shapes of the real models (LDM/SGM UNets, MMDiT, Flux, VAEs, CLIP, T5,
LoRA / LyCORIS / PEFT adapters, embeddings, ControlNets), generated from the
architectures' published hyper-parameters, and a writer for sparse
safetensors files (header written, data left as a hole of zeros).

Not a test itself (no *_test.py name); imported by identify_test.py.
"""
import json
import os
import struct

DTYPE_SIZE = {"F16": 2, "BF16": 2, "F32": 4, "F8_E4M3": 1, "I64": 8}


class Layout:
    def __init__(self):
        self.tensors = {}  # name -> (dtype, shape), insertion order
        self.metadata = None
        self.data = {}  # name -> bytes to write (else zeros)

    def add(self, name, shape, dtype="F16"):
        assert name not in self.tensors, name
        self.tensors[name] = (dtype, list(shape))

    def merge(self, other):
        for k, v in other.tensors.items():
            self.add(k, v[1], v[0])
        self.data.update(other.data)
        return self

    def params(self, prefix=""):
        n = 0
        for k, (_, shape) in self.tensors.items():
            if k.startswith(prefix):
                p = 1
                for d in shape:
                    p *= d
                n += p
        return n

    def write(self, path):
        header = {}
        if self.metadata is not None:
            header["__metadata__"] = self.metadata
        off = 0
        spans = {}
        for name, (dtype, shape) in self.tensors.items():
            n = DTYPE_SIZE[dtype]
            for d in shape:
                n *= d
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
            spans[name] = off
            off += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name, blob in self.data.items():
                f.seek(8 + len(raw) + spans[name])
                f.write(blob)
            f.truncate(8 + len(raw) + off)  # sparse: the rest reads as zeros


# ---- UNets (LDM / SGM naming, as in the original checkpoints) ----

def _res(L, p, cin, cout, temb):
    L.add(p + "in_layers.0.weight", [cin]); L.add(p + "in_layers.0.bias", [cin])
    L.add(p + "in_layers.2.weight", [cout, cin, 3, 3]); L.add(p + "in_layers.2.bias", [cout])
    L.add(p + "emb_layers.1.weight", [cout, temb]); L.add(p + "emb_layers.1.bias", [cout])
    L.add(p + "out_layers.0.weight", [cout]); L.add(p + "out_layers.0.bias", [cout])
    L.add(p + "out_layers.3.weight", [cout, cout, 3, 3]); L.add(p + "out_layers.3.bias", [cout])
    if cin != cout:
        L.add(p + "skip_connection.weight", [cout, cin, 1, 1]); L.add(p + "skip_connection.bias", [cout])


def _transformer(L, p, ch, depth, context, linear):
    L.add(p + "norm.weight", [ch]); L.add(p + "norm.bias", [ch])
    proj = [ch, ch] if linear else [ch, ch, 1, 1]
    L.add(p + "proj_in.weight", proj); L.add(p + "proj_in.bias", [ch])
    for d in range(depth):
        b = p + "transformer_blocks.%d." % d
        for a in ("attn1", "attn2"):
            kv = context if a == "attn2" else ch
            L.add(b + a + ".to_q.weight", [ch, ch])
            L.add(b + a + ".to_k.weight", [ch, kv])
            L.add(b + a + ".to_v.weight", [ch, kv])
            L.add(b + a + ".to_out.0.weight", [ch, ch]); L.add(b + a + ".to_out.0.bias", [ch])
        L.add(b + "ff.net.0.proj.weight", [ch * 8, ch]); L.add(b + "ff.net.0.proj.bias", [ch * 8])
        L.add(b + "ff.net.2.weight", [ch, ch * 4]); L.add(b + "ff.net.2.bias", [ch])
        for n in ("norm1", "norm2", "norm3"):
            L.add(b + n + ".weight", [ch]); L.add(b + n + ".bias", [ch])
    L.add(p + "proj_out.weight", proj); L.add(p + "proj_out.bias", [ch])


def ldm_unet(P="model.diffusion_model.", mc=320, mult=(1, 2, 4, 4), nres=2, tdepth=(1, 1, 1, 0),
             mid=1, context=768, adm=None, in_ch=4, linear=False, outputs=True, control=False):
    L = Layout()
    temb = mc * 4
    L.add(P + "time_embed.0.weight", [temb, mc]); L.add(P + "time_embed.0.bias", [temb])
    L.add(P + "time_embed.2.weight", [temb, temb]); L.add(P + "time_embed.2.bias", [temb])
    if adm:
        L.add(P + "label_emb.0.0.weight", [temb, adm]); L.add(P + "label_emb.0.0.bias", [temb])
        L.add(P + "label_emb.0.2.weight", [temb, temb]); L.add(P + "label_emb.0.2.bias", [temb])
    if control:
        hint = [16, 16, 32, 32, 96, 96, 256]
        cin = 3
        for i, c in enumerate(hint):
            L.add(P + "input_hint_block.%d.weight" % (2 * i), [c, cin, 3, 3])
            L.add(P + "input_hint_block.%d.bias" % (2 * i), [c])
            cin = c
        L.add(P + "input_hint_block.14.weight", [mc, cin, 3, 3])
    L.add(P + "input_blocks.0.0.weight", [mc, in_ch, 3, 3]); L.add(P + "input_blocks.0.0.bias", [mc])
    idx, ch, chans = 1, mc, [mc]
    for level, m in enumerate(mult):
        for _ in range(nres):
            _res(L, P + "input_blocks.%d.0." % idx, ch, m * mc, temb)
            ch = m * mc
            if tdepth[level]:
                _transformer(L, P + "input_blocks.%d.1." % idx, ch, tdepth[level], context, linear)
            chans.append(ch); idx += 1
        if level != len(mult) - 1:
            L.add(P + "input_blocks.%d.0.op.weight" % idx, [ch, ch, 3, 3])
            L.add(P + "input_blocks.%d.0.op.bias" % idx, [ch])
            chans.append(ch); idx += 1
    if control:
        for i, c in enumerate(chans):
            L.add(P + "zero_convs.%d.0.weight" % i, [c, c, 1, 1]); L.add(P + "zero_convs.%d.0.bias" % i, [c])
    _res(L, P + "middle_block.0.", ch, ch, temb)
    if mid:
        _transformer(L, P + "middle_block.1.", ch, mid, context, linear)
    _res(L, P + "middle_block.2.", ch, ch, temb)
    if control:
        L.add(P + "middle_block_out.0.weight", [ch, ch, 1, 1]); L.add(P + "middle_block_out.0.bias", [ch])
        return L
    if not outputs:
        return L
    idx = 0
    for level in reversed(range(len(mult))):
        m = mult[level]
        for r in range(nres + 1):
            skip = chans.pop()
            _res(L, P + "output_blocks.%d.0." % idx, ch + skip, m * mc, temb)
            ch = m * mc
            sub = 1
            if tdepth[level]:
                _transformer(L, P + "output_blocks.%d.1." % idx, ch, tdepth[level], context, linear)
                sub = 2
            if level and r == nres:
                L.add(P + "output_blocks.%d.%d.conv.weight" % (idx, sub), [ch, ch, 3, 3])
                L.add(P + "output_blocks.%d.%d.conv.bias" % (idx, sub), [ch])
            idx += 1
    L.add(P + "out.0.weight", [mc]); L.add(P + "out.0.bias", [mc])
    L.add(P + "out.2.weight", [4, mc, 3, 3]); L.add(P + "out.2.bias", [4])
    return L


def sd1_unet(P="model.diffusion_model.", in_ch=4):
    return ldm_unet(P, 320, (1, 2, 4, 4), 2, (1, 1, 1, 0), 1, 768, None, in_ch, False)


def sd2_unet(P="model.diffusion_model.", in_ch=4):
    return ldm_unet(P, 320, (1, 2, 4, 4), 2, (1, 1, 1, 0), 1, 1024, None, in_ch, True)


def sdxl_unet(P="model.diffusion_model.", in_ch=4):
    return ldm_unet(P, 320, (1, 2, 4), 2, (0, 2, 10), 10, 2048, 2816, in_ch, True)


def refiner_unet(P="model.diffusion_model."):
    return ldm_unet(P, 384, (1, 2, 4, 4), 2, (0, 4, 4, 0), 4, 1280, 2560, 4, True)


# ---- VAE (LDM naming) ----

def vae(P="first_stage_model.", z=4):
    L = Layout()
    ch = [128, 256, 512, 512]
    L.add(P + "encoder.conv_in.weight", [128, 3, 3, 3]); L.add(P + "encoder.conv_in.bias", [128])
    cin = 128
    for i, c in enumerate(ch):
        for b in range(2):
            p = P + "encoder.down.%d.block.%d." % (i, b)
            L.add(p + "norm1.weight", [cin]); L.add(p + "conv1.weight", [c, cin, 3, 3])
            L.add(p + "norm2.weight", [c]); L.add(p + "conv2.weight", [c, c, 3, 3])
            if cin != c:
                L.add(p + "nin_shortcut.weight", [c, cin, 1, 1])
            cin = c
        if i != 3:
            L.add(P + "encoder.down.%d.downsample.conv.weight" % i, [c, c, 3, 3])
    for m in ("mid.block_1", "mid.block_2"):
        L.add(P + "encoder.%s.conv1.weight" % m, [512, 512, 3, 3])
        L.add(P + "decoder.%s.conv1.weight" % m, [512, 512, 3, 3])
    for q in ("q", "k", "v", "proj_out"):
        L.add(P + "encoder.mid.attn_1.%s.weight" % q, [512, 512, 1, 1])
        L.add(P + "decoder.mid.attn_1.%s.weight" % q, [512, 512, 1, 1])
    L.add(P + "encoder.norm_out.weight", [512])
    L.add(P + "encoder.conv_out.weight", [2 * z, 512, 3, 3]); L.add(P + "encoder.conv_out.bias", [2 * z])
    L.add(P + "decoder.conv_in.weight", [512, z, 3, 3]); L.add(P + "decoder.conv_in.bias", [512])
    cin = 512
    for i, c in reversed(list(enumerate(ch))):
        for b in range(3):
            p = P + "decoder.up.%d.block.%d." % (i, b)
            L.add(p + "conv1.weight", [c, cin, 3, 3]); L.add(p + "conv2.weight", [c, c, 3, 3])
            if cin != c:
                L.add(p + "nin_shortcut.weight", [c, cin, 1, 1])
            cin = c
        if i:
            L.add(P + "decoder.up.%d.upsample.conv.weight" % i, [c, c, 3, 3])
    L.add(P + "decoder.norm_out.weight", [128])
    L.add(P + "decoder.conv_out.weight", [3, 128, 3, 3]); L.add(P + "decoder.conv_out.bias", [3])
    if z == 4:
        L.add(P + "quant_conv.weight", [8, 8, 1, 1]); L.add(P + "post_quant_conv.weight", [4, 4, 1, 1])
    return L


# ---- text encoders ----

def clip_hf(P="", width=768, layers=12, projection=False):
    L = Layout()
    t = P + "text_model."
    L.add(t + "embeddings.token_embedding.weight", [49408, width])
    L.add(t + "embeddings.position_embedding.weight", [77, width])
    for i in range(layers):
        p = t + "encoder.layers.%d." % i
        for q in ("q", "k", "v", "out"):
            L.add(p + "self_attn.%s_proj.weight" % q, [width, width])
            L.add(p + "self_attn.%s_proj.bias" % q, [width])
        L.add(p + "layer_norm1.weight", [width]); L.add(p + "layer_norm2.weight", [width])
        L.add(p + "mlp.fc1.weight", [width * 4, width]); L.add(p + "mlp.fc2.weight", [width, width * 4])
    L.add(t + "final_layer_norm.weight", [width]); L.add(t + "final_layer_norm.bias", [width])
    if projection:
        L.add(P + "text_projection.weight", [width, width])
    return L


def open_clip(P, width=1024, layers=24):
    L = Layout()
    L.add(P + "token_embedding.weight", [49408, width])
    L.add(P + "positional_embedding", [77, width])
    for i in range(layers):
        p = P + "transformer.resblocks.%d." % i
        L.add(p + "attn.in_proj_weight", [3 * width, width]); L.add(p + "attn.in_proj_bias", [3 * width])
        L.add(p + "attn.out_proj.weight", [width, width])
        L.add(p + "ln_1.weight", [width]); L.add(p + "ln_2.weight", [width])
        L.add(p + "mlp.c_fc.weight", [4 * width, width]); L.add(p + "mlp.c_proj.weight", [width, 4 * width])
    L.add(P + "ln_final.weight", [width]); L.add(P + "ln_final.bias", [width])
    L.add(P + "text_projection", [width, width])
    return L


def t5xxl(P="", blocks=24):
    L = Layout()
    L.add(P + "shared.weight", [32128, 4096])
    for i in range(blocks):
        p = P + "encoder.block.%d.layer." % i
        for q in ("q", "k", "v", "o"):
            L.add(p + "0.SelfAttention.%s.weight" % q, [4096, 4096])
        if i == 0:
            L.add(p + "0.SelfAttention.relative_attention_bias.weight", [32, 64])
        L.add(p + "0.layer_norm.weight", [4096])
        L.add(p + "1.DenseReluDense.wi_0.weight", [10240, 4096])
        L.add(p + "1.DenseReluDense.wi_1.weight", [10240, 4096])
        L.add(p + "1.DenseReluDense.wo.weight", [4096, 10240])
        L.add(p + "1.layer_norm.weight", [4096])
    L.add(P + "encoder.final_layer_norm.weight", [4096])
    return L


# ---- DiTs ----

def mmdit(P="model.diffusion_model.", depth=24):
    L = Layout()
    h = 64 * depth
    L.add(P + "x_embedder.proj.weight", [h, 16, 2, 2]); L.add(P + "x_embedder.proj.bias", [h])
    L.add(P + "pos_embed", [1, 36864, h])
    L.add(P + "t_embedder.mlp.0.weight", [h, 256]); L.add(P + "t_embedder.mlp.2.weight", [h, h])
    L.add(P + "y_embedder.mlp.0.weight", [h, 2048]); L.add(P + "y_embedder.mlp.2.weight", [h, h])
    L.add(P + "context_embedder.weight", [h, 4096])
    for i in range(depth):
        for blk in ("context_block", "x_block"):
            p = P + "joint_blocks.%d.%s." % (i, blk)
            L.add(p + "attn.qkv.weight", [3 * h, h]); L.add(p + "attn.qkv.bias", [3 * h])
            if not (blk == "context_block" and i == depth - 1):
                L.add(p + "attn.proj.weight", [h, h])
                L.add(p + "mlp.fc1.weight", [4 * h, h]); L.add(p + "mlp.fc2.weight", [h, 4 * h])
            L.add(p + "adaLN_modulation.1.weight", [6 * h if blk == "x_block" or i != depth - 1 else 2 * h, h])
    L.add(P + "final_layer.linear.weight", [64, h])
    L.add(P + "final_layer.adaLN_modulation.1.weight", [2 * h, h])
    return L


def flux(P="model.diffusion_model.", guidance=True, img_in=64, double=19, single=38, dtype="BF16"):
    L = Layout()
    h = 3072

    def a(n, s):
        L.add(P + n, s, dtype)
    a("img_in.weight", [h, img_in]); a("img_in.bias", [h])
    a("time_in.in_layer.weight", [h, 256]); a("time_in.out_layer.weight", [h, h])
    a("vector_in.in_layer.weight", [h, 768]); a("vector_in.out_layer.weight", [h, h])
    if guidance:
        a("guidance_in.in_layer.weight", [h, 256]); a("guidance_in.out_layer.weight", [h, h])
    a("txt_in.weight", [h, 4096]); a("txt_in.bias", [h])
    for i in range(double):
        p = "double_blocks.%d." % i
        for s in ("img", "txt"):
            a(p + s + "_attn.qkv.weight", [3 * h, h]); a(p + s + "_attn.proj.weight", [h, h])
            a(p + s + "_attn.norm.key_norm.scale", [128]); a(p + s + "_attn.norm.query_norm.scale", [128])
            a(p + s + "_mlp.0.weight", [4 * h, h]); a(p + s + "_mlp.2.weight", [h, 4 * h])
            a(p + s + "_mod.lin.weight", [6 * h, h])
    for i in range(single):
        p = "single_blocks.%d." % i
        a(p + "linear1.weight", [3 * h + 4 * h, h]); a(p + "linear2.weight", [h, h + 4 * h])
        a(p + "norm.key_norm.scale", [128]); a(p + "norm.query_norm.scale", [128])
        a(p + "modulation.lin.weight", [3 * h, h])
    a("final_layer.linear.weight", [64, h]); a("final_layer.adaLN_modulation.1.weight", [2 * h, h])
    return L


def cascade_c():
    L = Layout()
    L.add("clip_txt_mapper.weight", [2048, 1280]); L.add("clip_txt_pooled_mapper.weight", [2048, 1280])
    L.add("clip_img_mapper.weight", [2048, 768]); L.add("embedding.1.weight", [2048, 16, 1, 1])
    for i in range(4):
        L.add("down_blocks.0.%d.channelwise.0.weight" % i, [8192, 2048])
    L.add("clf.1.weight", [64, 2048, 1, 1])
    return L


def cascade_b():
    L = Layout()
    L.add("clip_mapper.weight", [5120, 1280]); L.add("embedding.1.weight", [320, 16, 1, 1])
    L.add("down_blocks.1.0.channelwise.0.weight", [2560, 640])
    L.add("clf.1.weight", [16, 320, 1, 1])
    return L


def cascade_a():
    L = Layout()
    L.add("in_block.1.weight", [384, 12, 1, 1]); L.add("vquantizer.codebook.weight", [8192, 4])
    L.add("down_blocks.0.0.weight", [384, 384, 3, 3])
    return L


# ---- diffusers layouts ----

def diffusers_sdxl_unet():
    L = Layout()
    L.add("conv_in.weight", [320, 4, 3, 3]); L.add("conv_in.bias", [320])
    L.add("time_embedding.linear_1.weight", [1280, 320]); L.add("time_embedding.linear_2.weight", [1280, 1280])
    L.add("add_embedding.linear_1.weight", [1280, 2816]); L.add("add_embedding.linear_2.weight", [1280, 1280])
    L.add("down_blocks.0.resnets.0.conv1.weight", [320, 320, 3, 3])
    for blk, ch, n in ((1, 640, 2), (2, 1280, 10)):
        for t in range(n):
            p = "down_blocks.%d.attentions.0.transformer_blocks.%d." % (blk, t)
            L.add(p + "attn2.to_k.weight", [ch, 2048]); L.add(p + "attn2.to_v.weight", [ch, 2048])
            L.add(p + "attn1.to_q.weight", [ch, ch])
    L.add("conv_out.weight", [4, 320, 3, 3])
    return L


def diffusers_flux(guidance=True):
    L = Layout()
    L.add("x_embedder.weight", [3072, 64], "BF16")
    L.add("context_embedder.weight", [3072, 4096], "BF16")
    L.add("time_text_embed.timestep_embedder.linear_1.weight", [3072, 256], "BF16")
    if guidance:
        L.add("time_text_embed.guidance_embedder.linear_1.weight", [3072, 256], "BF16")
    for i in range(2):
        for q in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            L.add("transformer_blocks.%d.attn.%s.weight" % (i, q), [3072, 3072], "BF16")
        for q in ("to_q", "to_k", "to_v"):
            L.add("single_transformer_blocks.%d.attn.%s.weight" % (i, q), [3072, 3072], "BF16")
    L.add("proj_out.weight", [64, 3072], "BF16")
    return L


# ---- adapters ----

def kohya_lora(modules, rank=8, dtype="F16"):
    """modules: [(kohya module name, in, out)]"""
    L = Layout()
    for m, i, o in modules:
        L.add(m + ".alpha", [], dtype)
        L.add(m + ".lora_down.weight", [rank, i], dtype)
        L.add(m + ".lora_up.weight", [o, rank], dtype)
    return L


def sd1_lora_modules(context=768, te=768, te_prefix="lora_te_"):
    mods = []
    for blk, ch in ((0, 320), (1, 640), (2, 1280)):
        for a in range(2):
            p = "lora_unet_down_blocks_%d_attentions_%d_transformer_blocks_0_" % (blk, a)
            mods += [(p + "attn1_to_q", ch, ch), (p + "attn2_to_k", context, ch),
                     (p + "attn2_to_v", context, ch), (p + "ff_net_2", 4 * ch, ch)]
    for i in range(12):
        p = te_prefix + "text_model_encoder_layers_%d_" % i
        mods += [(p + "self_attn_q_proj", te, te), (p + "mlp_fc1", te, 4 * te)]
    return mods


def sdxl_lora_modules(unet=True, te=True):
    mods = []
    if unet:
        for blk, ch, n in ((4, 640, 2), (7, 1280, 10)):
            for t in range(n):
                p = "lora_unet_input_blocks_%d_1_transformer_blocks_%d_" % (blk, t)
                mods += [(p + "attn1_to_q", ch, ch), (p + "attn2_to_k", 2048, ch), (p + "attn2_to_v", 2048, ch)]
    if te:
        for i in range(12):
            mods.append(("lora_te1_text_model_encoder_layers_%d_self_attn_q_proj" % i, 768, 768))
        for i in range(32):
            mods.append(("lora_te2_text_model_encoder_layers_%d_self_attn_q_proj" % i, 1280, 1280))
    return mods


def loha(modules, rank=8):
    L = Layout()
    for m, i, o in modules:
        L.add(m + ".alpha", [])
        L.add(m + ".hada_w1_a", [o, rank]); L.add(m + ".hada_w1_b", [rank, i])
        L.add(m + ".hada_w2_a", [o, rank]); L.add(m + ".hada_w2_b", [rank, i])
    return L


def lokr(modules, f=4):
    L = Layout()
    for m, i, o in modules:
        L.add(m + ".alpha", [])
        L.add(m + ".lokr_w1", [f, f]); L.add(m + ".lokr_w2", [o // f, i // f])
    return L


def peft_lora(modules, rank=16, dtype="BF16"):
    L = Layout()
    for m, i, o in modules:
        L.add(m + ".lora_A.weight", [rank, i], dtype)
        L.add(m + ".lora_B.weight", [o, rank], dtype)
    return L


def diffusers_old_lora(modules, rank=4):
    L = Layout()
    for m, i, o in modules:
        L.add(m + "_lora.down.weight", [rank, i])
        L.add(m + "_lora.up.weight", [o, rank])
    return L
