/* The LoRA API (st_lora_bake / _extract / _resize) on tiny files built
 * here: values checked against the formulas computed by hand, argument
 * checks, progress cancellation leaving no output, error codes. */
#include "safetensors.h"
#include "test.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define Q_KEY "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
#define Q_MOD "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
#define TE_KEY "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
#define TE_MOD "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
enum { D = 8, R = 2 };

static char dir[256];

static char *path_of(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static float w_q[D * D], w_te[D * D], up[D * R], down[R * D];

static void write_model(void)
{
    st_writer *w = st_writer_new();
    uint64_t shape[2] = {D, D};
    st_error err;
    CHECK(st_writer_add(w, Q_KEY, strlen(Q_KEY), ST_F32, shape, 2, w_q, sizeof w_q, &err) == 0);
    CHECK(st_writer_add(w, TE_KEY, strlen(TE_KEY), ST_F32, shape, 2, w_te, sizeof w_te, &err) == 0);
    CHECK(st_writer_write(w, path_of("model.safetensors"), &err) == 0, "%s", err.message);
    st_writer_free(w);
}

static void write_lora(const char *name, float alpha, uint64_t rank)
{
    st_writer *w = st_writer_new();
    uint64_t ds[2] = {rank, D}, us[2] = {D, rank};
    st_error err;
    CHECK(st_writer_add(w, Q_MOD ".lora_down.weight", strlen(Q_MOD ".lora_down.weight"), ST_F32, ds,
                        2, down, rank * D * 4, &err) == 0);
    CHECK(st_writer_add(w, Q_MOD ".lora_up.weight", strlen(Q_MOD ".lora_up.weight"), ST_F32, us, 2,
                        up, rank * D * 4, &err) == 0);
    CHECK(st_writer_add(w, Q_MOD ".alpha", strlen(Q_MOD ".alpha"), ST_F32, NULL, 0, &alpha, 4,
                        &err) == 0);
    CHECK(st_writer_write(w, path_of(name), &err) == 0, "%s", err.message);
    st_writer_free(w);
}

static int stop_progress(void *ctx, uint64_t done, uint64_t total)
{
    (void)done, (void)total;
    ++*(int *)ctx;
    return 1;
}

static int count_layers(void *ctx, const st_lora_layer_info *info)
{
    CHECK(info->old_rank == R && info->new_rank == 1);
    CHECK(info->fro_retained > 0 && info->fro_retained <= 1.0 + 1e-9);
    ++*(int *)ctx;
    return 0;
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/st_test_lora.XXXXXX");
    if (!mkdtemp(dir))
        return 2;
    for (int i = 0; i < D * D; i++)
        w_q[i] = (float)((i * 37) % 11) / 11.0f - 0.5f, w_te[i] = (float)i / 64.0f;
    for (int i = 0; i < D * R; i++)
        up[i] = (float)((i * 7) % 5) / 5.0f - 0.3f, down[i] = (float)((i * 3) % 7) / 7.0f - 0.4f;
    write_model();
    write_lora("lora.safetensors", 1.0f, R);

    /* bake: W + 0.5 * (1 / 2) * up @ down on the one layer */
    char lora_path[512], nan_path[512];
    snprintf(lora_path, sizeof lora_path, "%s", path_of("lora.safetensors"));
    snprintf(nan_path, sizeof nan_path, "%s", path_of("nan.safetensors"));
    st_lora_input in = {lora_path, 0.5f};
    st_lora_bake_report rep;
    st_error err;
    CHECK(st_lora_bake(path_of("model.safetensors"), path_of("out.safetensors"), &in, 1, NULL, &rep,
                       &err) == ST_OK, "%s", err.message);
    CHECK(rep.modules == 1 && rep.tensors_patched == 1 && rep.unmatched == 0);
    st_file *f = NULL;
    CHECK(st_open(path_of("out.safetensors"), 0, &f, &err) == ST_OK);
    if (f) {
        const st_tensor *t = st_find(f, Q_KEY, strlen(Q_KEY));
        const float *got = st_tensor_data(f, t);
        double worst = 0;
        for (int i = 0; i < D; i++)
            for (int j = 0; j < D; j++) {
                double want = w_q[i * D + j];
                for (int k = 0; k < R; k++)
                    want += 0.25 * up[i * R + k] * down[k * D + j];
                worst = fmax(worst, fabs(got[i * D + j] - want));
            }
        CHECK(worst < 1e-6, "bake error %g", worst);
        t = st_find(f, TE_KEY, strlen(TE_KEY));
        CHECK(memcmp(st_tensor_data(f, t), w_te, sizeof w_te) == 0, "untouched tensor copied");
        CHECK(st_metadata_get(f, "lora_baked", 10, NULL) != NULL);
        st_close(f);
    }

    /* progress that stops: ST_E_CALLBACK, no output */
    int calls = 0;
    st_lora_bake_options opt;
    st_lora_bake_defaults(&opt);
    opt.progress = stop_progress;
    opt.progress_ctx = &calls;
    CHECK(st_lora_bake(path_of("model.safetensors"), path_of("stopped.safetensors"), &in, 1, &opt,
                       NULL, &err) == ST_E_CALLBACK, "%s", err.message);
    CHECK(calls == 1);
    CHECK(access(path_of("stopped.safetensors"), F_OK) != 0, "no output after a stop");

    /* arguments */
    CHECK(st_lora_bake(NULL, "x", &in, 1, NULL, NULL, &err) == ST_E_ARG);
    CHECK(st_lora_bake("x", "y", &in, 0, NULL, NULL, &err) == ST_E_ARG);
    st_lora_input nan_in = {in.path, NAN};
    CHECK(st_lora_bake(path_of("model.safetensors"), path_of("o.safetensors"), &nan_in, 1, NULL,
                       NULL, &err) == ST_E_ARG);
    opt.progress = NULL;
    opt.dtype = ST_F4;
    CHECK(st_lora_bake(path_of("model.safetensors"), path_of("o.safetensors"), &in, 1, &opt, NULL,
                       &err) == ST_E_ARG);
    CHECK(strcmp(st_code_name(ST_E_LORA), "lora") == 0);

    /* a NaN alpha and a rank above the layer: ST_E_LORA */
    write_lora("nan.safetensors", NAN, R);
    in.path = nan_path;
    CHECK(st_lora_bake(path_of("model.safetensors"), path_of("o.safetensors"), &in, 1, NULL, NULL,
                       &err) == ST_E_LORA);
    CHECK(strstr(err.message, "alpha") != NULL, "%s", err.message);
    CHECK(access(path_of("o.safetensors"), F_OK) != 0);

    /* extract the baked difference back: rank 2 recovers 0.25 up @ down */
    st_lora_extract_options xo;
    st_lora_extract_defaults(&xo);
    CHECK(xo.rank == 4 && xo.min_diff > 0.0099f && xo.dtype == ST_F32);
    xo.rank = R;
    xo.min_diff = 1e-6f;
    st_lora_extract_report xr;
    CHECK(st_lora_extract(path_of("model.safetensors"), path_of("out.safetensors"),
                          path_of("ex.safetensors"), &xo, &xr, &err) == ST_OK, "%s", err.message);
    CHECK(xr.layers == 1 && xr.skipped == 1, "layers %zu skipped %zu", xr.layers, xr.skipped);
    CHECK(st_open(path_of("ex.safetensors"), 0, &f, &err) == ST_OK);
    if (f) {
        const st_tensor *tu = st_find(f, Q_MOD ".lora_up.weight", strlen(Q_MOD ".lora_up.weight"));
        const st_tensor *td = st_find(f, Q_MOD ".lora_down.weight", strlen(Q_MOD ".lora_down.weight"));
        CHECK(tu && td && tu->shape[1] == R && td->shape[0] == R);
        if (tu && td) {
            const float *u = st_tensor_data(f, tu), *dn = st_tensor_data(f, td);
            double worst = 0;
            for (int i = 0; i < D; i++)
                for (int j = 0; j < D; j++) {
                    double want = 0, got = 0;
                    for (int k = 0; k < R; k++) {
                        want += 0.25 * up[i * R + k] * down[k * D + j];
                        got += (double)u[i * R + k] * dn[k * D + j];
                    }
                    worst = fmax(worst, fabs(got - want));
                }
            CHECK(worst < 1e-5, "extract error %g", worst);
        }
        st_close(f);
    }
    xo.rank = 0;
    CHECK(st_lora_extract(path_of("model.safetensors"), path_of("out.safetensors"),
                          path_of("ex2.safetensors"), &xo, NULL, &err) == ST_E_ARG);

    /* resize to rank 1, a layer callback per layer */
    st_lora_resize_options ro;
    st_lora_resize_defaults(&ro);
    ro.rank = 1;
    int layers = 0;
    ro.layer = count_layers;
    ro.layer_ctx = &layers;
    CHECK(st_lora_resize(lora_path, path_of("rs.safetensors"), &ro, &err) == ST_OK,
          "%s", err.message);
    CHECK(layers == 1);
    ro.method = ST_LORA_RESIZE_SV_FRO;
    ro.param = -1;
    CHECK(st_lora_resize(lora_path, path_of("rs.safetensors"), &ro, &err) == ST_E_ARG);

    const char *names[] = {"model", "lora", "out", "nan", "ex", "rs"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char n[64];
        snprintf(n, sizeof n, "%s.safetensors", names[i]);
        if (!getenv("KEEP")) unlink(path_of(n));
    }
    if (!getenv("KEEP")) rmdir(dir);
    TEST_END();
}
