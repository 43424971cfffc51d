/* Fuzz target: st_identify over arbitrary headers.
 *
 * Two kinds of input, by the first byte:
 *  - even: the bytes are a file; when st_open_memory accepts it, identify;
 *  - odd: a structured model built from the bytes: up to 40 tensors whose
 *    names join fragments of the key names the rules look for (with layer
 *    numbers), shapes from the dimensions the rules compare (320, 768, 1280,
 *    ...), any dtype, and metadata from the keys and values the rules read.
 *    The header is written here and the data region is a large zero
 *    mapping, so multi-megabyte tensors cost nothing until read.
 * Checked: st_identify returns ST_OK and fills every field in range (enums
 * named, reasons NUL-terminated, count <= ST_IDENTIFY_MAX_REASONS, the
 * parameter counts add up to the total, format NONE unless a LoRA), a
 * second call gives the same result, and st_identify_tensors on the same
 * tensors (given in reverse order) and metadata gives the same verdict. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const frag[] = {
    "model.diffusion_model.", "input_blocks.0.0.weight", "input_blocks.", "middle_block.",
    "output_blocks.", "output_blocks.11.1.transformer_blocks.0.norm1.bias", "label_emb.0.0.weight",
    "first_stage_model.", "decoder.conv_in.weight", "encoder.conv_in.weight", "conv_in.weight",
    "cond_stage_model.", "cond_stage_model.model.", "cond_stage_model.transformer.",
    "conditioner.embedders.0.model.", "conditioner.embedders.1.model.", "conditioner.embedders.",
    "transformer.resblocks.0.attn.in_proj_weight", "ln_final.weight",
    "text_model.encoder.layers.0.self_attn.q_proj.weight", "layers.0.self_attn.q_proj.weight",
    "encoder.block.0.layer.0.SelfAttention.q.weight", "text_encoders.clip_l.",
    "text_encoders.clip_g.", "text_encoders.t5xxl.", "text_encoder.", "text_encoder_2.",
    "model_ema.", "decay", "num_updates", "control_model.", "control_model.input_hint_block.0.weight",
    "input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight", "controlnet_blocks.",
    "controlnet_x_embedder.weight", "double_blocks.", "double_blocks.0.img_attn.norm.key_norm.scale",
    "single_blocks.", "img_in.weight", "guidance_in.in_layer.weight", "joint_blocks.",
    "joint_blocks.0.context_block.attn.qkv.weight", "pos_embed.proj.weight",
    "time_embedding.linear_1.weight", "add_embedding.linear_1.weight",
    "class_embedding.linear_1.weight", "time_text_embed.guidance_embedder.linear_1.weight",
    "single_transformer_blocks.0.attn.to_k.weight", "transformer_blocks.0.attn.add_q_proj.weight",
    "transformer_blocks.0.attn.add_k_proj", "attn2.to_k.weight", "attn2_to_k", "clip_mapper.weight",
    "clip_txt_mapper.weight", "clf.1.weight", "lora_unet_input_blocks_", "lora_unet_middle_block_",
    "lora_unet_output_blocks_", "lora_te1_", "lora_te2_", "lora_te_", ".lora_down.weight",
    ".lora_up.weight", ".alpha", ".hada_w1_a", ".hada_w1_b", ".lokr_w1", ".lokr_w2", ".lokr_w1_b",
    ".lora_A.weight", ".lora_B.weight", ".lora.down.weight", ".lora.up.weight",
    ".lora_linear_layer.down.weight", "string_to_param.", "emb_params", "clip_l", "clip_g", "*",
    "te1.", "te2.", "v_pred", "weight", "bias", "0.", "1.", "9."};

static const uint64_t dimv[] = {0,   1,   2,   3,   4,   5,    8,    9,    16,   64,
                                128, 320, 384, 640, 768, 1024, 1280, 2048, 2816, 4096};

static const char *const meta_keys[] = {"modelspec.architecture", "modelspec.prediction_type",
                                        "ss_base_model_version", "ss_v_parameterization",
                                        "format"};
static const char *const meta_vals[] = {"stable-diffusion-xl-v1-refiner",
                                        "stable-diffusion-xl-v1-base",
                                        "stable-diffusion-v1",
                                        "stable-diffusion-v2-768-v",
                                        "stable-diffusion-v3",
                                        "flux-1-dev",
                                        "flux-1-schnell",
                                        "stable-cascade",
                                        "sdxl_base_v1-0",
                                        "sd_v1",
                                        "sd_v2_768_v",
                                        "v",
                                        "v_prediction",
                                        "epsilon",
                                        "True",
                                        "true",
                                        "pt",
                                        "flux1/lora"};

#define DATA_SPACE (256u << 20) /* the zero mapping: lazily backed */
static uint8_t *g_file;

static int read_desc(void *ctx, size_t index, void *buf, size_t len)
{
    const st_file *f = ctx;
    /* index counts from the end: the list is passed reversed */
    const st_tensor *t = st_tensor_at(f, st_tensor_count(f) - 1 - index);
    return t ? st_tensor_read(f, t, 0, buf, len, NULL) : -1;
}

/* st_identify_tensors on the file's tensors, in reverse order. */
static void check_same_as_list(const st_file *f, const st_identity *a)
{
    size_t n = st_tensor_count(f), nm = st_metadata_count(f);
    st_tensor_desc *d = malloc((n ? n : 1) * sizeof *d);
    const char **meta = malloc((nm ? 2 * nm : 1) * sizeof *meta);
    FUZZ_ASSERT(d && meta, "oom");
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, n - 1 - i);
        d[i] = (st_tensor_desc){t->name, t->name_len, t->dtype, t->rank, t->shape};
    }
    for (size_t i = 0; i < nm; i++)
        st_metadata_at(f, i, &meta[2 * i], NULL, &meta[2 * i + 1], NULL);
    st_identity b;
    memset(&b, 0x33, sizeof b);
    st_error err;
    int rc = st_identify_tensors(d, n, meta, nm, read_desc, (void *)f, &b, &err);
    FUZZ_ASSERT(rc == ST_OK, "st_identify_tensors: %d", rc);
    FUZZ_ASSERT(a->kind == b.kind && a->family == b.family && a->variants == b.variants &&
                    a->format == b.format && a->ema == b.ema && a->precision == b.precision &&
                    a->confidence == b.confidence &&
                    memcmp(&a->params, &b.params, sizeof a->params) == 0,
                "st_identify_tensors (reversed list) differs from st_identify: kind %s/%s family "
                "%s/%s confidence %s/%s",
                st_kind_name(a->kind), st_kind_name(b.kind), st_family_name(a->family),
                st_family_name(b.family), st_confidence_name(a->confidence),
                st_confidence_name(b.confidence));
    free(d);
    free(meta);
}

static void check_identity(const st_file *f)
{
    st_identity a, b;
    st_error err;
    memset(&a, 0x5a, sizeof a);
    memset(&b, 0xa5, sizeof b);
    int rc = st_identify(f, &a, &err);
    FUZZ_ASSERT(rc == ST_OK, "st_identify: %d", rc);
    FUZZ_ASSERT(st_kind_name(a.kind) != NULL, "kind name");
    FUZZ_ASSERT((unsigned)a.kind <= ST_KIND_CONTROLNET, "kind %d", (int)a.kind);
    FUZZ_ASSERT((unsigned)a.family <= ST_FAMILY_T5XXL, "family %d", (int)a.family);
    FUZZ_ASSERT((unsigned)a.format <= ST_LORA_DIFFUSERS, "format %d", (int)a.format);
    FUZZ_ASSERT((unsigned)a.confidence <= ST_CONFIDENCE_HIGH, "confidence %d", (int)a.confidence);
    FUZZ_ASSERT(st_family_name(a.family) && st_lora_format_name(a.format) &&
                    st_confidence_name(a.confidence),
                "names");
    FUZZ_ASSERT(a.format == ST_LORA_NONE || a.kind == ST_KIND_LORA, "format without LoRA");
    FUZZ_ASSERT((a.variants & ~0x7fu) == 0, "variants 0x%x", a.variants);
    for (unsigned bit = 1; bit <= 0x40; bit <<= 1)
        if (a.variants & bit)
            FUZZ_ASSERT(st_variant_name(bit) != NULL, "variant name");
    FUZZ_ASSERT(a.ema == 0 || a.ema == 1, "ema");
    FUZZ_ASSERT(a.precision == -1 || (a.precision >= 0 && a.precision < ST_DTYPE_COUNT),
                "precision %d", a.precision);
    FUZZ_ASSERT(a.reason_count <= ST_IDENTIFY_MAX_REASONS, "reasons %zu", a.reason_count);
    for (size_t i = 0; i < a.reason_count; i++)
        FUZZ_ASSERT(memchr(a.reasons[i], 0, ST_IDENTIFY_REASON_MAX) != NULL, "reason %zu", i);
    unsigned __int128 sum = (unsigned __int128)a.params.diffusion_model + a.params.text_encoder +
                            a.params.vae + a.params.ema + a.params.controlnet + a.params.other;
    FUZZ_ASSERT(sum == a.params.total, "params do not add up");
    rc = st_identify(f, &b, &err);
    FUZZ_ASSERT(rc == ST_OK, "second st_identify");
    FUZZ_ASSERT(a.kind == b.kind && a.family == b.family && a.variants == b.variants &&
                    a.format == b.format && a.ema == b.ema && a.precision == b.precision &&
                    a.confidence == b.confidence && a.reason_count == b.reason_count &&
                    memcmp(&a.params, &b.params, sizeof a.params) == 0,
                "not deterministic");
    for (size_t i = 0; i < a.reason_count; i++)
        FUZZ_ASSERT(strcmp(a.reasons[i], b.reasons[i]) == 0, "reason %zu differs", i);
    check_same_as_list(f, &a);
}

static size_t put(char *h, size_t at, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (at + n <= cap)
        memcpy(h + at, s, n);
    return at + n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    st_file *f = NULL;
    if ((data[0] & 1) == 0) {
        if (st_open_memory(data + 1, size - 1, 0, &f, NULL) == ST_OK) {
            check_identity(f);
            st_close(f);
        }
        return 0;
    }
    if (!g_file) {
        g_file = mmap(NULL, DATA_SPACE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        FUZZ_ASSERT(g_file != MAP_FAILED, "mmap");
    }
    fz r;
    fz_init(&r, data + 1, size - 1);
    enum { HCAP = 65536 };
    static char h[HCAP];
    size_t at = 0;
    char tmp[256];
    at = put(h, at, HCAP, "{");
    int first = 1;
    size_t nmeta = (size_t)fz_below(&r, 3);
    if (nmeta) {
        at = put(h, at, HCAP, "\"__metadata__\":{");
        for (size_t i = 0; i < nmeta; i++) {
            snprintf(tmp, sizeof tmp, "%s\"%s\":\"%s\"", i ? "," : "",
                     meta_keys[fz_below(&r, sizeof meta_keys / sizeof *meta_keys)],
                     meta_vals[fz_below(&r, sizeof meta_vals / sizeof *meta_vals)]);
            at = put(h, at, HCAP, tmp);
        }
        at = put(h, at, HCAP, "}");
        first = 0;
    }
    uint64_t off = 0;
    size_t nt = (size_t)fz_below(&r, 41);
    for (size_t i = 0; i < nt; i++) {
        char name[200] = "";
        size_t nf = 1 + (size_t)fz_below(&r, 4);
        for (size_t k = 0; k < nf; k++) {
            uint8_t c = fz_byte(&r);
            size_t l = strlen(name);
            if (c >= 240)
                snprintf(name + l, sizeof name - l, "%u.", (unsigned)(c - 240));
            else
                snprintf(name + l, sizeof name - l, "%s",
                         frag[c % (sizeof frag / sizeof *frag)]);
        }
        st_dtype dt = (st_dtype)fz_below(&r, ST_DTYPE_COUNT);
        uint32_t rank = (uint32_t)fz_below(&r, 5);
        uint64_t shape[4], ne = 1;
        char shp[128] = "";
        for (uint32_t k = 0; k < rank; k++) {
            shape[k] = dimv[fz_below(&r, sizeof dimv / sizeof *dimv)];
            ne *= shape[k];
            size_t l = strlen(shp);
            snprintf(shp + l, sizeof shp - l, "%s%llu", k ? "," : "",
                     (unsigned long long)shape[k]);
        }
        if (ne * st_dtype_bits(dt) % 8)
            dt = ST_U8;
        uint64_t nb = ne * st_dtype_bits(dt) / 8;
        if (nb > DATA_SPACE / 2 || off + nb > DATA_SPACE / 2)
            continue; /* too big for the data space */
        snprintf(tmp, sizeof tmp, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%llu,%llu]}",
                 first ? "" : ",", name, st_dtype_name(dt), shp, (unsigned long long)off,
                 (unsigned long long)(off + nb));
        at = put(h, at, HCAP, tmp);
        off += nb;
        first = 0;
    }
    at = put(h, at, HCAP, "}");
    if (at > HCAP)
        return 0;
    /* The file: length, header, then `off` bytes of the zero mapping. The
     * header goes at the start of the mapping; the data after it must be
     * zero, so the header's page range is cleared again afterwards. */
    uint64_t n = at;
    for (int i = 0; i < 8; i++)
        g_file[i] = (uint8_t)(n >> (8 * i));
    memcpy(g_file + 8, h, at);
    /* Random values for the small tensor identify may read (one v-pred test). */
    size_t noise = off < 4096 ? (size_t)off : 4096;
    for (size_t k = 0; k < noise; k++)
        g_file[8 + at + k] = fz_byte(&r);
    if (st_open_memory(g_file, 8 + at + off, 0, &f, NULL) == ST_OK) {
        check_identity(f);
        st_close(f);
    }
    memset(g_file, 0, 8 + at + noise);
    return 0;
}
