/*
 * Key names of the Flux transformer between Black Forest Labs' single file
 * (double_blocks.N.img_attn.qkv.weight, ...) and diffusers'
 * FluxTransformer2DModel (transformer_blocks.N.attn.to_q.weight, ...). The
 * correspondences are those of diffusers' convert_flux_transformer_
 * checkpoint_to_diffusers (single_file_utils.py), rebuilt as rules: a fused
 * BFL tensor is split by rows in fixed proportions (qkv 1:1:1, a single
 * block's linear1 1:1:1:4 into q, k, v and the MLP input), and the final
 * adaLN modulation holds (shift, scale) where diffusers holds (scale,
 * shift). Anything not named here is unmapped, an error.
 */
#include "model/diffusers_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct rule {
    const char *bfl;
    const char *diff[4];
    unsigned char parts[4];
    int n;     /* diffusers tensors it becomes */
    bool leaf; /* bfl and diff are prefixes followed by weight or bias */
    bool swap; /* halves swapped */
} rule;

static const rule global_rules[] = {
    {"img_in.", {"x_embedder."}, {1}, 1, true, false},
    {"txt_in.", {"context_embedder."}, {1}, 1, true, false},
    {"time_in.in_layer.", {"time_text_embed.timestep_embedder.linear_1."}, {1}, 1, true, false},
    {"time_in.out_layer.", {"time_text_embed.timestep_embedder.linear_2."}, {1}, 1, true, false},
    {"vector_in.in_layer.", {"time_text_embed.text_embedder.linear_1."}, {1}, 1, true, false},
    {"vector_in.out_layer.", {"time_text_embed.text_embedder.linear_2."}, {1}, 1, true, false},
    {"guidance_in.in_layer.", {"time_text_embed.guidance_embedder.linear_1."}, {1}, 1, true, false},
    {"guidance_in.out_layer.", {"time_text_embed.guidance_embedder.linear_2."}, {1}, 1, true, false},
    {"final_layer.linear.", {"proj_out."}, {1}, 1, true, false},
    {"final_layer.adaLN_modulation.1.", {"norm_out.linear."}, {1}, 1, true, true},
};

static const rule double_rules[] = {
    {"img_mod.lin.", {"norm1.linear."}, {1}, 1, true, false},
    {"txt_mod.lin.", {"norm1_context.linear."}, {1}, 1, true, false},
    {"img_attn.proj.", {"attn.to_out.0."}, {1}, 1, true, false},
    {"txt_attn.proj.", {"attn.to_add_out."}, {1}, 1, true, false},
    {"img_mlp.0.", {"ff.net.0.proj."}, {1}, 1, true, false},
    {"img_mlp.2.", {"ff.net.2."}, {1}, 1, true, false},
    {"txt_mlp.0.", {"ff_context.net.0.proj."}, {1}, 1, true, false},
    {"txt_mlp.2.", {"ff_context.net.2."}, {1}, 1, true, false},
    {"img_attn.norm.query_norm.scale", {"attn.norm_q.weight"}, {1}, 1, false, false},
    {"img_attn.norm.key_norm.scale", {"attn.norm_k.weight"}, {1}, 1, false, false},
    {"txt_attn.norm.query_norm.scale", {"attn.norm_added_q.weight"}, {1}, 1, false, false},
    {"txt_attn.norm.key_norm.scale", {"attn.norm_added_k.weight"}, {1}, 1, false, false},
    {"img_attn.qkv.", {"attn.to_q.", "attn.to_k.", "attn.to_v."}, {1, 1, 1}, 3, true, false},
    {"txt_attn.qkv.", {"attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj."}, {1, 1, 1}, 3, true, false},
};

static const rule single_rules[] = {
    {"modulation.lin.", {"norm.linear."}, {1}, 1, true, false},
    {"norm.query_norm.scale", {"attn.norm_q.weight"}, {1}, 1, false, false},
    {"norm.key_norm.scale", {"attn.norm_k.weight"}, {1}, 1, false, false},
    {"linear2.", {"proj_out."}, {1}, 1, true, false},
    {"linear1.", {"attn.to_q.", "attn.to_k.", "attn.to_v.", "proj_mlp."}, {1, 1, 1, 4}, 4, true, false},
};

static bool is_leaf(const char *s, size_t n)
{
    return (n == 6 && memcmp(s, "weight", 6) == 0) || (n == 4 && memcmp(s, "bias", 4) == 0);
}

/* "<digits>." at s: its length, or 0. */
static size_t number_dot(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && k < 4 && s[k] >= '0' && s[k] <= '9')
        k++;
    if (k == 0 || k >= n || s[k] != '.' || (k > 1 && s[0] == '0'))
        return 0;
    return k + 1;
}

/* Does the rule side `pat` match s? *leaf_at gets the weight/bias part. */
static bool match(const rule *r, const char *pat, const char *s, size_t n, const char **leaf, size_t *ln)
{
    size_t pl = strlen(pat);
    if (!r->leaf) {
        *leaf = s + n;
        *ln = 0;
        return n == pl && memcmp(s, pat, pl) == 0;
    }
    if (n <= pl || memcmp(s, pat, pl) != 0 || !is_leaf(s + pl, n - pl))
        return false;
    *leaf = s + pl;
    *ln = n - pl;
    return true;
}

static int emit(st_sd_group *g, int k, const char *block, size_t bl, const char *pat, const char *leaf,
                size_t ln)
{
    int w = snprintf(g->names[k], sizeof g->names[k], "%.*s%s%.*s", (int)bl, block, pat, (int)ln, leaf);
    return w < 0 || (size_t)w >= sizeof g->names[k] ? ST_E_NOT_FOUND : ST_OK;
}

/* in_block / out_block: the block prefix on the side read / written. */
static int apply(bool to_diff, const rule *rules, size_t nr, const char *in_block, size_t ibl,
                 const char *out_block, size_t obl, const char *s, size_t n, st_sd_group *g)
{
    for (size_t i = 0; i < nr; i++) {
        const rule *r = &rules[i];
        const char *leaf;
        size_t ln;
        g->n = r->n;
        g->swap = r->swap;
        memcpy(g->parts, r->parts, sizeof g->parts);
        if (to_diff) {
            if (!match(r, r->bfl, s, n, &leaf, &ln))
                continue;
            for (int k = 0; k < r->n; k++)
                if (emit(g, k, out_block, obl, r->diff[k], leaf, ln))
                    return ST_E_NOT_FOUND;
            return ST_OK;
        }
        for (int k = 0; k < r->n; k++) {
            if (!match(r, r->diff[k], s, n, &leaf, &ln))
                continue;
            /* names[0] the BFL name; names[1..n] every diffusers part, in order */
            g->part_index = k;
            if (emit(g, 0, out_block, obl, r->bfl, leaf, ln))
                return ST_E_NOT_FOUND;
            for (int q = 0; q < r->n; q++)
                if (emit(g, q + 1, in_block, ibl, r->diff[q], leaf, ln))
                    return ST_E_NOT_FOUND;
            return k == 0 ? ST_OK : ST_SD_PART;
        }
    }
    return ST_E_NOT_FOUND;
}

int st_flux_map(bool to_diff, const char *s, size_t n, st_sd_group *g)
{
    memset(g, 0, sizeof *g);
    const char *from_d = to_diff ? "double_blocks." : "transformer_blocks.";
    const char *to_d = to_diff ? "transformer_blocks." : "double_blocks.";
    const char *from_s = to_diff ? "single_blocks." : "single_transformer_blocks.";
    const char *to_s = to_diff ? "single_transformer_blocks." : "single_blocks.";
    for (int b = 0; b < 2; b++) {
        const char *from = b ? from_s : from_d, *to = b ? to_s : to_d;
        size_t fl = strlen(from);
        if (n <= fl || memcmp(s, from, fl) != 0)
            continue;
        size_t d = number_dot(s + fl, n - fl);
        if (!d)
            return ST_E_NOT_FOUND;
        char ob[64];
        int obl = snprintf(ob, sizeof ob, "%s%.*s", to, (int)d, s + fl);
        if (obl < 0 || (size_t)obl >= sizeof ob)
            return ST_E_NOT_FOUND;
        const rule *rs = b ? single_rules : double_rules;
        size_t nr = b ? sizeof single_rules / sizeof single_rules[0] : sizeof double_rules / sizeof double_rules[0];
        return apply(to_diff, rs, nr, s, fl + d, ob, (size_t)obl, s + fl + d, n - fl - d, g);
    }
    return apply(to_diff, global_rules, sizeof global_rules / sizeof global_rules[0], "", 0, "", 0, s, n, g);
}
