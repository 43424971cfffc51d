/* Fuzz target: st_lora_bake and st_lora_resize on adapters built from the
 * input - kohya LoRA/LoCon, LoHa, LoKr and PEFT modules named after layers
 * of a tiny SD1-style model (and after none), with shapes from small
 * dimensions (0 included), ranks that do or do not fit, alphas that are
 * NaN, infinite, zero or negative, any float dtype, values from the input.
 * Checked: every call returns OK or an adapter/usage verdict (never NOMEM,
 * IO or a crash), nothing is left behind on failure, and an output that is
 * written opens and has the model's tensors. */
#include "fuzz_util.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const stems[] = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q",
    "lora_unet_down_blocks_0_resnets_0_conv1",
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    "lora_unet_nothing_here",
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
};
static const uint64_t dims[] = {0, 1, 2, 3, 4, 8, 9, 16, 72};

static char dir[64], model_path[128];

static void write_model(void)
{
    st_writer *w = st_writer_new();
    static float q[64], te[64], conv[8 * 8 * 9];
    uint64_t s2[2] = {8, 8}, s4[4] = {8, 8, 3, 3};
    for (int i = 0; i < 64; i++)
        q[i] = te[i] = (float)i / 64.0f;
    st_writer_add(w, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                  77, ST_F32, s2, 2, q, sizeof q, NULL);
    st_writer_add(w, "model.diffusion_model.input_blocks.1.0.in_layers.2.weight", 57, ST_F32, s4, 4,
                  conv, sizeof conv, NULL);
    st_writer_add(w, "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                  80, ST_F32, s2, 2, te, sizeof te, NULL);
    FUZZ_ASSERT(st_writer_write(w, model_path, NULL) == ST_OK);
    st_writer_free(w);
}

static void add(st_writer *w, fz *f, const char *stem, const char *suffix, uint32_t rank,
                const uint64_t *shape, void **keep, size_t *nkeep)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s", stem, suffix);
    static const st_dtype dts[] = {ST_F32, ST_F16, ST_BF16, ST_I64};
    st_dtype dt = dts[fz_below(f, 4)];
    uint64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= shape[i];
    size_t nb = (size_t)(n * st_dtype_bits(dt) / 8);
    unsigned char *p = malloc(nb ? nb : 1);
    for (size_t i = 0; i < nb; i++)
        p[i] = fz_byte(f);
    if (dt == ST_F32 && n == 1 && fz_below(f, 2)) {
        static const float specials[] = {NAN, INFINITY, 0.0f, -4.0f, 1e30f};
        memcpy(p, &specials[fz_below(f, 5)], 4);
    }
    keep[(*nkeep)++] = p;
    st_writer_add(w, name, strlen(name), dt, shape, rank, p, nb, NULL);
}

static void shape_of(fz *f, uint64_t *s, uint32_t *rank)
{
    *rank = fz_below(f, 4) ? 2 : 4;
    for (uint32_t i = 0; i < *rank; i++)
        s[i] = dims[fz_below(f, sizeof dims / sizeof dims[0])];
    if (*rank == 4 && fz_below(f, 2))
        s[2] = s[3] = fz_below(f, 2) ? 3 : 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_lora.XXXXXX");
        FUZZ_ASSERT(mkdtemp(dir));
        snprintf(model_path, sizeof model_path, "%s/model.safetensors", dir);
        write_model();
    }
    fz f;
    fz_init(&f, data, size);
    st_writer *w = st_writer_new();
    void *keep[64];
    size_t nkeep = 0;
    size_t nmods = 1 + fz_below(&f, 3);
    for (size_t m = 0; m < nmods && nkeep < 48; m++) {
        const char *stem = stems[fz_below(&f, sizeof stems / sizeof stems[0])];
        bool peft = strchr(stem, '.') != NULL;
        uint64_t s[4];
        uint32_t r;
        switch (peft ? 3 : fz_below(&f, 3)) {
        case 0: /* LoRA / LoCon */
            shape_of(&f, s, &r), add(w, &f, stem, ".lora_down.weight", r, s, keep, &nkeep);
            shape_of(&f, s, &r), add(w, &f, stem, ".lora_up.weight", r, s, keep, &nkeep);
            break;
        case 1: /* LoHa */
            for (int k = 0; k < 4; k++) {
                static const char *const sfx[] = {".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"};
                shape_of(&f, s, &r), add(w, &f, stem, sfx[k], r, s, keep, &nkeep);
            }
            break;
        case 2: /* LoKr */
            shape_of(&f, s, &r), add(w, &f, stem, ".lokr_w1", r, s, keep, &nkeep);
            shape_of(&f, s, &r), add(w, &f, stem, fz_below(&f, 2) ? ".lokr_w2" : ".lokr_w2_a", r, s,
                                     keep, &nkeep);
            if (fz_below(&f, 2))
                shape_of(&f, s, &r), add(w, &f, stem, ".lokr_w2_b", r, s, keep, &nkeep);
            break;
        default: /* PEFT */
            shape_of(&f, s, &r), add(w, &f, stem, ".lora_A.weight", r, s, keep, &nkeep);
            shape_of(&f, s, &r), add(w, &f, stem, ".lora_B.weight", r, s, keep, &nkeep);
            break;
        }
        if (fz_below(&f, 4))
            add(w, &f, stem, ".alpha", 0, s, keep, &nkeep);
    }
    char lora[128], out[128];
    snprintf(lora, sizeof lora, "%s/lora.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    int wrc = st_writer_write(w, lora, NULL);
    st_writer_free(w);
    for (size_t i = 0; i < nkeep; i++)
        free(keep[i]);
    if (wrc != ST_OK)
        return 0;

    st_lora_input in = {lora, (float)((int)fz_below(&f, 5) - 2) * 0.5f};
    st_lora_bake_options opt;
    st_lora_bake_defaults(&opt);
    opt.allow_unmatched = (int)fz_below(&f, 2);
    static const int dts[] = {-1, ST_F16, ST_F32, ST_BF16};
    opt.dtype = dts[fz_below(&f, 4)];
    st_error err;
    int rc = st_lora_bake(model_path, out, &in, 1, &opt, NULL, &err);
    FUZZ_ASSERT(rc == ST_OK || rc == ST_E_LORA || rc == ST_E_UNSUPPORTED, "bake: %d %s", rc,
                err.message);
    if (rc == ST_OK) {
        st_file *o = NULL;
        FUZZ_ASSERT(st_open(out, 0, &o, NULL) == ST_OK);
        FUZZ_ASSERT(st_tensor_count(o) == 3);
        st_close(o);
        unlink(out);
    } else {
        FUZZ_ASSERT(access(out, F_OK) != 0, "a failed bake left an output");
    }

    st_lora_resize_options ro;
    st_lora_resize_defaults(&ro);
    ro.rank = 1 + (unsigned)fz_below(&f, 8);
    ro.method = (st_lora_resize_method)fz_below(&f, 4);
    ro.param = (double)(1 + fz_below(&f, 20)) / 10.0;
    rc = st_lora_resize(lora, out, &ro, &err);
    FUZZ_ASSERT(rc == ST_OK || rc == ST_E_LORA || rc == ST_E_UNSUPPORTED, "resize: %d %s", rc,
                err.message);
    if (rc == ST_OK) {
        st_file *o = NULL;
        FUZZ_ASSERT(st_open(out, 0, &o, NULL) == ST_OK);
        st_close(o);
        unlink(out);
    }
    unlink(lora);
    return 0;
}
