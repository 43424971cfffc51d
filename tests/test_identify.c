/* st_identify through the API on small files built with the writer and
 * opened from memory (the realistic full layouts are in identify_test.py):
 * adapters, embeddings, metadata hints, ComfyUI's SD2 v-prediction test on
 * real tensor values, the name functions and bad arguments. */
#include "test.h"

#include "safetensors.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct spec {
    const char *name;
    st_dtype dtype;
    uint32_t rank;
    uint64_t shape[4];
} spec;

/* Serializes tensors (zero data unless `fill` names one to fill with the
 * float pattern +-amp) and metadata pairs, then identifies the result. */
static int identify(const spec *t, size_t n, const char *const *meta, size_t nmeta,
                    const char *fill, float amp, st_identity *id)
{
    st_writer *w = st_writer_new();
    void **bufs = calloc(n, sizeof *bufs);
    for (size_t i = 0; i < n; i++) {
        uint64_t count = 1;
        for (uint32_t d = 0; d < t[i].rank; d++)
            count *= t[i].shape[d];
        size_t nb = (size_t)count * (st_dtype_bits(t[i].dtype) / 8);
        bufs[i] = calloc(1, nb ? nb : 1);
        if (fill && strcmp(fill, t[i].name) == 0 && t[i].dtype == ST_F32)
            for (uint64_t k = 0; k < count; k++) {
                float v = (k % 2) ? amp : -amp;
                memcpy((char *)bufs[i] + 4 * k, &v, 4);
            }
        CHECK_EQ_INT(st_writer_add(w, t[i].name, strlen(t[i].name), t[i].dtype, t[i].shape,
                                   t[i].rank, bufs[i], nb, NULL),
                     ST_OK);
    }
    for (size_t i = 0; i + 1 < nmeta * 2; i += 2)
        st_writer_set_metadata(w, meta[i], strlen(meta[i]), meta[i + 1], strlen(meta[i + 1]), NULL);
    void *out = NULL;
    size_t len = 0;
    CHECK_EQ_INT(st_writer_serialize(w, &out, &len, NULL), ST_OK);
    st_file *f = NULL;
    CHECK_EQ_INT(st_open_memory(out, len, 0, &f, NULL), ST_OK);
    int rc = st_identify(f, id, NULL);
    st_close(f);
    free(out);
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    st_writer_free(w);
    return rc;
}

static bool has_reason(const st_identity *id, const char *needle)
{
    for (size_t i = 0; i < id->reason_count; i++)
        if (strstr(id->reasons[i], needle))
            return true;
    return false;
}

static void test_sd2_vpred(void)
{
    /* The SD2 UNet keys ComfyUI's rules read, with real values in norm1.bias. */
    const char *bias = "output_blocks.11.1.transformer_blocks.0.norm1.bias";
    spec t[] = {
        {"input_blocks.0.0.weight", ST_F32, 4, {320, 4, 3, 3}},
        {"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", ST_F32, 2, {320, 1024}},
        {"output_blocks.11.1.transformer_blocks.0.norm1.bias", ST_F32, 1, {320}},
    };
    st_identity id;
    CHECK_EQ_INT(identify(t, 3, NULL, 0, bias, 0.2f, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_DIFFUSION_MODEL);
    CHECK_EQ_INT(id.family, ST_FAMILY_SD2);
    CHECK(id.variants == ST_VARIANT_V_PREDICTION, "variants %x", id.variants);
    CHECK(has_reason(&id, "std 0.200"), "%s", id.reasons[0]);
    CHECK_EQ_INT(identify(t, 3, NULL, 0, bias, 0.05f, &id), ST_OK);
    CHECK(id.variants == 0, "std 0.05 is epsilon: %x", id.variants);
    CHECK_EQ_INT(id.precision, ST_F32);
    CHECK_EQ_INT(id.params.total, 320 * 4 * 9 + 320 * 1024 + 320);
    CHECK_EQ_INT(id.params.diffusion_model, id.params.total);
}

static void test_adapters(void)
{
    st_identity id;
    spec loha[] = {
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_a", ST_F16, 2, {320, 4}},
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.hada_w1_b", ST_F16, 2, {4, 768}},
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha", ST_F16, 0, {0}},
    };
    CHECK_EQ_INT(identify(loha, 3, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_LORA);
    CHECK_EQ_INT(id.format, ST_LORA_LYCORIS_LOHA);
    CHECK_EQ_INT(id.family, ST_FAMILY_SD1);
    CHECK_EQ_INT(id.confidence, ST_CONFIDENCE_HIGH);
    CHECK_EQ_INT(id.params.other, 1); /* the alpha */

    spec lokr[] = {
        {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lokr_w1", ST_F16, 2, {8, 8}},
        {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lokr_w2", ST_F16, 2, {80, 256}},
    };
    CHECK_EQ_INT(identify(lokr, 2, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.format, ST_LORA_LYCORIS_LOKR);
    CHECK_EQ_INT(id.family, ST_FAMILY_SDXL); /* 8 x 256 = 2048 */

    spec peft[] = {
        {"transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight", ST_BF16, 2, {16, 3072}},
        {"transformer.single_transformer_blocks.0.attn.to_k.lora_B.weight", ST_BF16, 2, {3072, 16}},
    };
    CHECK_EQ_INT(identify(peft, 2, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.format, ST_LORA_PEFT);
    CHECK_EQ_INT(id.family, ST_FAMILY_FLUX);
    CHECK_EQ_INT(id.precision, ST_BF16);

    /* Too small to tell from shapes: the metadata decides, with low confidence. */
    spec tiny[] = {
        {"lora_unet_x.lora_down.weight", ST_F16, 2, {4, 24}},
        {"lora_unet_x.lora_up.weight", ST_F16, 2, {24, 4}},
    };
    const char *meta[] = {"ss_base_model_version", "sdxl_base_v1-0", "ss_v_parameterization", "True"};
    CHECK_EQ_INT(identify(tiny, 2, meta, 2, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_LORA);
    CHECK_EQ_INT(id.family, ST_FAMILY_SDXL);
    CHECK_EQ_INT(id.confidence, ST_CONFIDENCE_LOW);
    CHECK(id.variants == ST_VARIANT_V_PREDICTION, "%x", id.variants);
    CHECK(has_reason(&id, "ss_base_model_version"), "-");
}

static void test_embeddings_and_unknown(void)
{
    st_identity id;
    spec sdxl[] = {{"clip_g", ST_F32, 2, {2, 1280}}, {"clip_l", ST_F32, 2, {2, 768}}};
    CHECK_EQ_INT(identify(sdxl, 2, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_EMBEDDING);
    CHECK_EQ_INT(id.family, ST_FAMILY_SDXL);
    spec odd[] = {{"emb_params", ST_F32, 2, {2, 333}}};
    CHECK_EQ_INT(identify(odd, 1, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_EMBEDDING);
    CHECK_EQ_INT(id.family, ST_FAMILY_UNKNOWN);
    spec none[] = {{"weight", ST_F32, 1, {3}}};
    CHECK_EQ_INT(identify(none, 1, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_UNKNOWN);
    CHECK_EQ_INT(id.confidence, ST_CONFIDENCE_NONE);
    CHECK(id.reason_count >= 1, "-");
    /* No tensors at all. */
    CHECK_EQ_INT(identify(NULL, 0, NULL, 0, NULL, 0, &id), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_UNKNOWN);
    CHECK_EQ_INT(id.precision, -1);
}

static void test_names(void)
{
    CHECK(strcmp(st_kind_name(ST_KIND_CONTROLNET), "controlnet") == 0, "-");
    CHECK(strcmp(st_kind_name((st_model_kind)99), "unknown") == 0, "-");
    CHECK(strcmp(st_family_name(ST_FAMILY_SDXL_REFINER), "sdxl_refiner") == 0, "-");
    CHECK(strcmp(st_family_name(ST_FAMILY_T5XXL), "t5xxl") == 0, "-");
    CHECK(strcmp(st_family_name((st_model_family)-1), "unknown") == 0, "-");
    CHECK(strcmp(st_variant_name(ST_VARIANT_INSTRUCT_PIX2PIX), "instruct_pix2pix") == 0, "-");
    CHECK(st_variant_name(3) == NULL, "-");
    CHECK(strcmp(st_lora_format_name(ST_LORA_LYCORIS_LOKR), "lycoris_lokr") == 0, "-");
    CHECK(strcmp(st_confidence_name(ST_CONFIDENCE_MEDIUM), "medium") == 0, "-");
    st_identity id;
    st_error err;
    CHECK_EQ_INT(st_identify(NULL, &id, &err), ST_E_ARG);
    CHECK_EQ_INT(err.code, ST_E_ARG);
}

/* The list API: unsorted names, a caller's metadata, no read callback,
 * shapes whose products overflow (saturated, never wrapped). */
static void test_list_api(void)
{
    static const uint64_t k_shape[] = {640, 2048}, d_shape[] = {8, 2048}, u_shape[] = {640, 8};
    static const uint64_t huge[] = {UINT64_MAX / 2, 4};
    st_tensor_desc t[] = {
        {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight", 73, ST_F16, 2, u_shape},
        {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight", 75, ST_F16, 2, d_shape},
        {"zz_big", 6, ST_F32, 2, huge},
        {"aa_other", 8, ST_F32, 2, k_shape},
    };
    const char *meta[] = {"ss_base_model_version", "sdxl_base_v1-0"};
    st_identity id;
    CHECK_EQ_INT(st_identify_tensors(t, 4, meta, 1, NULL, NULL, &id, NULL), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_LORA);
    CHECK_EQ_INT(id.family, ST_FAMILY_SDXL);
    CHECK_EQ_INT(id.confidence, ST_CONFIDENCE_HIGH);
    CHECK(id.params.total == UINT64_MAX, "saturated total %llu", (unsigned long long)id.params.total);
    CHECK(has_reason(&id, "agrees"), "-");
    /* The caller's list is left as it was. */
    CHECK(t[0].name_len == 73 && t[2].shape == huge, "-");
    CHECK_EQ_INT(st_identify_tensors(NULL, 1, NULL, 0, NULL, NULL, &id, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_identify_tensors(t, 4, NULL, 1, NULL, NULL, &id, NULL), ST_E_ARG);
    st_tensor_desc bad = {"x", 1, ST_F32, 2, NULL};
    CHECK_EQ_INT(st_identify_tensors(&bad, 1, NULL, 0, NULL, NULL, &id, NULL), ST_E_ARG);
    CHECK_EQ_INT(st_identify_tensors(NULL, 0, NULL, 0, NULL, NULL, &id, NULL), ST_OK);
    CHECK_EQ_INT(id.kind, ST_KIND_UNKNOWN);
}

int main(void)
{
    test_list_api();
    test_sd2_vpred();
    test_adapters();
    test_embeddings_and_unknown();
    test_names();
    TEST_END();
}
