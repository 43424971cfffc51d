/* Which GGUF type each tensor of an image model gets, in one step: the
 * rules of city96's ComfyUI-GGUF tools/convert.py (architecture detection,
 * prefix stripping, ignored keys, the F32 fallback for 1-D, small and
 * high-precision tensors, the SD1/SDXL reshape to rows of 256) followed by
 * those its patched llama-quantize applies (tools/lcpp.patch: the generic
 * "quantize only 2-D weights" rules, the per-architecture exclusions, and
 * img_tensor_get_type's bumps for attention v, fused qkv and ffn down, with
 * the F16 fallback for rows that do not fill a block). Facts from those
 * files; the code is ours. */
#include "gguf/gguf_internal.h"

#include <string.h>

static bool has(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

/* ---- architectures (convert.py's ModelTemplate classes, in its order) ---- */

typedef struct arch_rule {
    const char *arch;
    bool shape_fix;
    const char *const *detect[4];  /* each a NULL-ended list: all must exist */
    const char *banned;            /* present: a diffusers layout, refused   */
    const char *const *hiprec;     /* substrings kept in F32                 */
    const char *const *ignore;     /* substrings left out                    */
    const char *const *no_quant;   /* lcpp.patch: substrings never quantized */
    const char *const *no_quant_eq;/* lcpp.patch: exact names never quantized */
} arch_rule;

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static const arch_rule rules[] = {
    {"flux", false,
     {L("transformer_blocks.0.attn.norm_added_k.weight"), L("double_blocks.0.img_attn.proj.weight")},
     "transformer_blocks.0.attn.norm_added_k.weight", NULL, NULL,
     L("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."), NULL},
    {"sd3", false,
     {L("transformer_blocks.0.attn.add_q_proj.weight"), L("joint_blocks.0.x_block.attn.qkv.weight")},
     "transformer_blocks.0.attn.add_q_proj.weight", NULL, NULL,
     L("final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.", "y_embedder.",
       "x_embedder."),
     L("proj_out.weight", "pos_embed")},
    {"aura", false,
     {L("double_layers.3.modX.1.weight"),
      L("joint_transformer_blocks.3.ff_context.out_projection.weight")},
     "joint_transformer_blocks.3.ff_context.out_projection.weight", NULL, NULL,
     L("t_embedder.", "init_x_linear."),
     L("modF.1.weight", "cond_seq_linear.weight", "final_linear.weight", "positional_encoding",
       "register_tokens")},
    {"hidream", false,
     {L("caption_projection.0.linear.weight",
        "double_stream_blocks.0.block.ff_i.shared_experts.w3.weight")},
     NULL, L(".ff_i.gate.weight", "img_emb.emb_pos"), NULL,
     L("p_embedder.", "t_embedder.", "x_embedder.", "final_layer.", ".ff_i.gate.weight",
       "caption_projection."),
     NULL},
    {"cosmos", false,
     {L("blocks.0.mlp.layer1.weight", "blocks.0.adaln_modulation_cross_attn.1.weight")}, NULL,
     L("pos_embedder"), L("_extra_state", "accum_"),
     L("p_embedder.", "t_embedder.", "t_embedding_norm.", "x_embedder.", "pos_embedder.",
       "final_layer."),
     NULL},
    {"ltxv", false,
     {L("adaln_single.emb.timestep_embedder.linear_2.weight", "transformer_blocks.27.scale_shift_table",
        "caption_projection.linear_2.weight")},
     NULL, L("scale_shift_table"), NULL,
     L("adaln_single.", "caption_projection.", "patchify_proj.", "proj_out.", "scale_shift_table"),
     NULL},
    {"hyvid", false,
     {L("double_blocks.0.img_attn_proj.weight",
        "txt_in.individual_token_refiner.blocks.1.self_attn_qkv.weight")},
     NULL, NULL, NULL,
     L("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."), NULL},
    {"wan", false,
     {L("blocks.0.self_attn.norm_q.weight", "text_embedding.2.weight", "head.modulation")}, NULL,
     L(".modulation"), NULL,
     L("modulation.", "patch_embedding.", "text_embedding.", "time_projection.", "time_embedding.",
       "img_emb.", "head."),
     NULL},
    {"sdxl", true,
     {L("down_blocks.0.downsamplers.0.conv.weight", "add_embedding.linear_1.weight"),
      L("input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "output_blocks.2.2.conv.weight",
        "output_blocks.5.2.conv.weight"),
      L("label_emb.0.0.weight")},
     NULL, NULL, NULL,
     L("class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.",
       "conv_in.", "conv_out."),
     L("input_blocks.0.0.weight", "out.2.weight")},
    {"sd1", true,
     {L("down_blocks.0.downsamplers.0.conv.weight"),
      L("input_blocks.3.0.op.weight", "input_blocks.6.0.op.weight", "input_blocks.9.0.op.weight",
        "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight",
        "output_blocks.8.2.conv.weight")},
     NULL, NULL, NULL,
     L("class_embedding.", "time_embedding.", "add_embedding.", "time_embed.", "label_emb.",
       "conv_in.", "conv_out."),
     L("input_blocks.0.0.weight", "out.2.weight")},
    {"lumina2", false, {L("cap_embedder.1.weight", "context_refiner.0.attention.qkv.weight")}, NULL,
     NULL, NULL,
     L("t_embedder.", "x_embedder.", "final_layer.", "cap_embedder.", "context_refiner.",
       "noise_refiner."),
     NULL},
};
#define NRULES (sizeof rules / sizeof rules[0])

const char *st_gguf_arch_at(size_t i)
{
    return i < NRULES ? rules[i].arch : NULL;
}

static const arch_rule *rule_named(const char *arch)
{
    for (size_t i = 0; i < NRULES; i++)
        if (strcmp(rules[i].arch, arch) == 0)
            return &rules[i];
    return NULL;
}

static bool in_list(const char *name, const char *const *list, bool exact)
{
    for (size_t i = 0; list && list[i]; i++)
        if (exact ? strcmp(name, list[i]) == 0 : has(name, list[i]))
            return true;
    return false;
}

int st_gguf_detect_arch(const gg_names *names, const char *forced, const char **arch,
                        st_error *err)
{
    if (forced) {
        const arch_rule *r = rule_named(forced);
        if (!r)
            return st_fail(err, ST_E_ARG, ST_NO_OFFSET,
                           "unknown architecture '%s' (flux, sd3, aura, hidream, cosmos, ltxv, "
                           "hyvid, wan, sdxl, sd1, lumina2)",
                           forced);
        *arch = r->arch;
        return ST_OK;
    }
    for (size_t i = 0; i < NRULES; i++) {
        const arch_rule *r = &rules[i];
        for (size_t d = 0; d < 4 && r->detect[d]; d++) {
            bool all = true;
            for (size_t k = 0; all && r->detect[d][k]; k++)
                all = names->has(names->ctx, r->detect[d][k]);
            if (!all)
                continue;
            if (r->banned && names->has(names->ctx, r->banned))
                return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                               "this %s model is in diffusers layout (it has %s); GGUF image "
                               "models use the original layout: convert it to a single file "
                               "first (convert DIR OUT --to single-file)",
                               r->arch, r->banned);
            *arch = r->arch;
            return ST_OK;
        }
    }
    return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                   "unknown model architecture: not one of city96's convert.py (flux, sd3, aura, "
                   "hidream, cosmos, ltxv, hyvid, wan, sdxl, sd1, lumina2); --arch names it");
}

/* ---- the file type (llama.cpp's llama_ftype) ---- */

static const struct {
    const char *name;
    int ftype;
    int base; /* ggml type the quantizable tensors get before the bumps */
} ftypes[] = {
    {"f32", ST_GGUF_FTYPE_F32, ST_GGML_F32},       {"f16", ST_GGUF_FTYPE_F16, ST_GGML_F16},
    {"bf16", ST_GGUF_FTYPE_BF16, ST_GGML_BF16},    {"q8_0", ST_GGUF_FTYPE_Q8_0, ST_GGML_Q8_0},
    {"q5_1", ST_GGUF_FTYPE_Q5_1, ST_GGML_Q5_1},    {"q5_0", ST_GGUF_FTYPE_Q5_0, ST_GGML_Q5_0},
    {"q4_1", ST_GGUF_FTYPE_Q4_1, ST_GGML_Q4_1},    {"q4_0", ST_GGUF_FTYPE_Q4_0, ST_GGML_Q4_0},
    {"q6_k", ST_GGUF_FTYPE_Q6_K, ST_GGML_Q6_K},    {"q5_k_m", ST_GGUF_FTYPE_Q5_K_M, ST_GGML_Q5_K},
    {"q5_k_s", ST_GGUF_FTYPE_Q5_K_S, ST_GGML_Q5_K}, {"q4_k_m", ST_GGUF_FTYPE_Q4_K_M, ST_GGML_Q4_K},
    {"q4_k_s", ST_GGUF_FTYPE_Q4_K_S, ST_GGML_Q4_K}, {"q3_k_l", ST_GGUF_FTYPE_Q3_K_L, ST_GGML_Q3_K},
    {"q3_k_m", ST_GGUF_FTYPE_Q3_K_M, ST_GGML_Q3_K}, {"q3_k_s", ST_GGUF_FTYPE_Q3_K_S, ST_GGML_Q3_K},
    {"q2_k", ST_GGUF_FTYPE_Q2_K, ST_GGML_Q2_K},
    /* llama-quantize's aliases: a bare k-quant is its _M mix */
    {"q5_k", ST_GGUF_FTYPE_Q5_K_M, ST_GGML_Q5_K},   {"q4_k", ST_GGUF_FTYPE_Q4_K_M, ST_GGML_Q4_K},
    {"q3_k", ST_GGUF_FTYPE_Q3_K_M, ST_GGML_Q3_K},
};
#define NFTYPES (sizeof ftypes / sizeof ftypes[0])

int st_gguf_ftype_from_name(const char *name, int *ftype)
{
    if (!name || !ftype)
        return ST_E_ARG;
    for (size_t i = 0; i < NFTYPES; i++) {
        const char *a = ftypes[i].name, *b = name;
        while (*a && *b && (*a == *b || (*a >= 'a' && *a <= 'z' && *a - 32 == *b)))
            a++, b++;
        if (!*a && !*b) {
            *ftype = ftypes[i].ftype;
            return ST_OK;
        }
    }
    return ST_E_NOT_FOUND;
}

const char *st_gguf_ftype_name(int ftype)
{
    for (size_t i = 0; i < NFTYPES; i++)
        if (ftypes[i].ftype == ftype)
            return ftypes[i].name;
    return NULL;
}

int st_gguf_ftype_base(int ftype)
{
    for (size_t i = 0; i < NFTYPES; i++)
        if (ftypes[i].ftype == ftype)
            return ftypes[i].base;
    return -1;
}

/* ---- one tensor ---- */

bool st_gguf_ignored(const char *arch, const char *name)
{
    const arch_rule *r = rule_named(arch);
    return r && in_list(name, r->ignore, false);
}

bool st_gguf_shape_fix(const char *arch)
{
    const arch_rule *r = rule_named(arch);
    return r && r->shape_fix;
}

/* ggml_n_dims: dimensions up to the last of more than one element, in
 * ggml's order (ne[0] is the last of ours), at least 1. */
static uint32_t ggml_n_dims(const uint64_t *ne, uint32_t n)
{
    for (uint32_t i = n; i-- > 1;)
        if (ne[i] > 1)
            return i + 1;
    return 1;
}

int st_gguf_choose_type(gg_state *st, const char *arch, int ftype, const char *name,
                        st_dtype src, const uint64_t *ne, uint32_t n_dims, int *fallback)
{
    const arch_rule *r = rule_named(arch);
    uint64_t n = 1;
    for (uint32_t i = 0; i < n_dims; i++)
        n *= ne[i];
    *fallback = 0;

    /* convert.py: F16, or BF16 kept as BF16; F32 for 1-D, small and
     * high-precision tensors coming from F32 or BF16 */
    int type = src == ST_BF16 ? ST_GGML_BF16 : ST_GGML_F16;
    if (ftype == ST_GGUF_FTYPE_F32)
        type = ST_GGML_F32;
    if ((src == ST_F32 || src == ST_BF16) &&
        (n_dims == 1 || n <= ST_GGUF_QUANT_THRESHOLD || (r && in_list(name, r->hiprec, false))))
        type = ST_GGML_F32;
    int base = st_gguf_ftype_base(ftype);
    if (ftype == ST_GGUF_FTYPE_F32 || ftype == ST_GGUF_FTYPE_F16 || ftype == ST_GGUF_FTYPE_BF16) {
        if (ftype == ST_GGUF_FTYPE_BF16 && type == ST_GGML_F16)
            type = ST_GGML_BF16;
        return type;
    }

    /* llama-quantize: weights of 2 dimensions and more, not norms ... */
    bool quantize = ends_with(name, "weight") && ggml_n_dims(ne, n_dims) >= 2;
    quantize = quantize && !has(name, "_norm.weight") && !has(name, "attn_rel_b.weight");
    /* ... lcpp.patch: the image models' exclusions, and 2-D tensors only */
    if (r)
        quantize = quantize && !in_list(name, r->no_quant, false) &&
                   !in_list(name, r->no_quant_eq, true);
    quantize = quantize && ggml_n_dims(ne, n_dims) == 2;
    /* Small tensors stay as convert.py left them (F32, or F16 from F16)
     * even where llama-quantize would quantize a 2-D weight: a few hundred
     * elements gain nothing from blocks. */
    quantize = quantize && n > ST_GGUF_QUANT_THRESHOLD;
    if (!quantize)
        return type;

    int q = base;
    if (has(name, "attn_v.weight") || has(name, ".to_v.weight") || has(name, ".v.weight") ||
        has(name, ".attn.w1v.weight") || has(name, ".attn.w2v.weight") ||
        has(name, "_attn.v_proj.weight")) {
        if (ftype == ST_GGUF_FTYPE_Q2_K)
            q = ST_GGML_Q3_K;
        else if (ftype == ST_GGUF_FTYPE_Q3_K_M)
            q = st->i_attention_wv < 2 ? ST_GGML_Q5_K : ST_GGML_Q4_K;
        else if (ftype == ST_GGUF_FTYPE_Q3_K_L)
            q = ST_GGML_Q5_K;
        else if (ftype == ST_GGUF_FTYPE_Q4_K_M || ftype == ST_GGUF_FTYPE_Q5_K_M)
            q = ST_GGML_Q6_K;
        else if (ftype == ST_GGUF_FTYPE_Q4_K_S && st->i_attention_wv < 4)
            q = ST_GGML_Q5_K;
        st->i_attention_wv++;
    } else if (has(name, "attn_qkv.weight") || has(name, "attn.qkv.weight") ||
               has(name, "attention.qkv.weight")) {
        if (ftype == ST_GGUF_FTYPE_Q3_K_M || ftype == ST_GGUF_FTYPE_Q3_K_L)
            q = ST_GGML_Q4_K;
        else if (ftype == ST_GGUF_FTYPE_Q4_K_M)
            q = ST_GGML_Q5_K;
        else if (ftype == ST_GGUF_FTYPE_Q5_K_M)
            q = ST_GGML_Q6_K;
    } else if (has(name, "ffn_down") || (has(name, "experts.") && has(name, ".w2.weight")) ||
               has(name, ".ffn.2.weight") || has(name, ".ff.net.2.weight") ||
               has(name, ".mlp.layer2.weight") || has(name, ".adaln_modulation_mlp.2.weight") ||
               has(name, ".feed_forward.w2.weight")) {
        if (ftype == ST_GGUF_FTYPE_Q3_K_M)
            q = ST_GGML_Q4_K;
        else if (ftype == ST_GGUF_FTYPE_Q3_K_L || ftype == ST_GGUF_FTYPE_Q4_K_S)
            q = ST_GGML_Q5_K;
        else if (ftype == ST_GGUF_FTYPE_Q4_K_M || ftype == ST_GGUF_FTYPE_Q5_K_M)
            q = ST_GGML_Q6_K;
        else if (ftype == ST_GGUF_FTYPE_Q4_0)
            q = ST_GGML_Q4_1;
        else if (ftype == ST_GGUF_FTYPE_Q5_0)
            q = ST_GGML_Q5_1;
        st->i_ffn_down++;
    }
    /* A row that does not fill the type's blocks: F16, as the patch does for
     * the k-quants (and as ggml requires for every block type). */
    if (ne[0] % st_ggml_block_elements(q) != 0) {
        *fallback = 1;
        return ST_GGML_F16;
    }
    return q;
}
