/* Fuzz target: the options of `merge` (st_merge, lib/sd/merge.c) as a user
 * types them: the mode, the multiplier as text (parsed with strtod, as the
 * CLI does, so "nan", "inf", "1e400" and hex floats reach the library), the
 * output dtype by name, and the discard pattern (a POSIX extended regular
 * expression compiled by the library). The models are three small files
 * with Stable Diffusion names, written once (in /dev/shm; the folder is
 * left for the next run's inspection, a few KB).
 *
 * Input: byte 0 picks mode and dtype; then the multiplier text up to the
 * first NUL, then the discard pattern up to the next NUL (absent: none).
 *
 * Properties: every return is ST_OK or a documented code with a message; a
 * non-finite multiplier, a wrong input count for the mode or a dtype merge
 * cannot write is ST_E_ARG; on failure no output and no temporary file
 * exist; on success the output passes st_open, holds written = tensors -
 * discarded tensors, and a weighted merge with multiplier 0 reproduces A's
 * values. *
 * fuzz-min-seconds: 60 (one of the CLI's own parsers: at least this long
 * in `make test`) */
#include "fuzz_util.h"

#include <dirent.h>
#include <math.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char paths[3][128];
static char out_path[128];

static const char *const names[] = {
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.out.2.bias",
    "first_stage_model.decoder.conv_in.weight",
    "cond_stage_model.transformer.text_model.final_layer_norm.weight",
};
#define NNAMES (sizeof names / sizeof names[0])

static void write_model(const char *path, float base)
{
    st_writer *w = st_writer_new();
    FUZZ_ASSERT(w != NULL);
    float vals[NNAMES][6];
    st_error err;
    for (size_t i = 0; i < NNAMES; i++) {
        for (size_t k = 0; k < 6; k++)
            vals[i][k] = base + (float)(i * 6 + k) * 0.25f;
        uint64_t shape[2] = {2, 3};
        FUZZ_ASSERT(st_writer_add(w, names[i], strlen(names[i]), ST_F32, shape, 2, vals[i],
                                  sizeof vals[i], &err) == ST_OK,
                    "%s", err.message);
    }
    FUZZ_ASSERT(st_writer_write(w, path, &err) == ST_OK, "%s", err.message);
    st_writer_free(w);
}

static void setup(void)
{
    if (dir[0])
        return;
    /* tmpfs when there is one: every merge fsyncs its output */
    struct stat st;
    snprintf(dir, sizeof dir, "%s/st_fuzz_merge.XXXXXX",
             stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp");
    FUZZ_ASSERT(mkdtemp(dir) != NULL);
    for (int i = 0; i < 3; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%c.safetensors", dir, 'a' + i);
        write_model(paths[i], (float)i - 1.0f);
    }
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);
}

/* Files in dir besides the three models (the output, temporaries). */
static int extra_files(void)
{
    DIR *d = opendir(dir);
    FUZZ_ASSERT(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' || strstr(e->d_name, ".tmp"))
            n += strcmp(e->d_name, "a.safetensors") && strcmp(e->d_name, "b.safetensors") &&
                 strcmp(e->d_name, "c.safetensors");
    closedir(d);
    return n;
}

static char *take_string(const uint8_t **p, size_t *n, bool *present)
{
    const uint8_t *nul = memchr(*p, 0, *n);
    size_t len = nul ? (size_t)(nul - *p) : *n;
    *present = *n > 0;
    char *s = malloc(len + 1);
    FUZZ_ASSERT(s != NULL);
    memcpy(s, *p, len);
    s[len] = 0;
    *p += nul ? len + 1 : len;
    *n -= nul ? len + 1 : len;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const dtypes[] = {"F16", "BF16", "F32", "F64", "I8", "F8_E4M3", "BOOL",
                                         "F16"};
    setup();
    if (size == 0)
        return 0;
    uint8_t pick = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    bool has_alpha, has_discard;
    char *alpha_text = take_string(&p, &n, &has_alpha);
    char *discard = take_string(&p, &n, &has_discard);

    st_merge_options o;
    memset(&o, 0, sizeof o);
    o.mode = (pick & 1) ? ST_MERGE_ADD_DIFF : ST_MERGE_WEIGHTED;
    size_t ninputs = 2 + ((pick >> 1) & 1);
    o.set_dtype = (pick >> 2) & 1;
    const char *dtype_name = dtypes[(pick >> 3) & 7];
    st_dtype dt = ST_F32;
    bool dtype_known = st_dtype_from_name(dtype_name, strlen(dtype_name), &dt) == ST_OK;
    o.dtype = dt;
    char *end = NULL;
    o.alpha = has_alpha ? strtod(alpha_text, &end) : 0.5;
    o.discard = has_discard ? discard : NULL;
    const char *inputs[3] = {paths[0], paths[1], paths[2]};

    st_merge_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_merge(inputs, ninputs, out_path, &o, &rep, &err);
    bool bad_count = ninputs != (o.mode == ST_MERGE_ADD_DIFF ? 3u : 2u);
    bool bad_dtype = o.set_dtype && (!dtype_known || (dt != ST_F16 && dt != ST_BF16 &&
                                                      dt != ST_F32 && dt != ST_F64));
    if (!isfinite(o.alpha) || bad_count || bad_dtype)
        FUZZ_ASSERT(rc == ST_E_ARG, "alpha %g count %zu dtype %s: got %s", o.alpha, ninputs,
                    dtype_name, st_code_name(rc));
    if (rc != ST_OK) {
        fz_check_error(rc, &err);
        FUZZ_ASSERT(rc == ST_E_ARG, "only the options can be wrong here: %s", err.message);
        FUZZ_ASSERT(extra_files() == 0, "a failed merge left a file behind");
    } else {
        FUZZ_ASSERT(rep.tensors == NNAMES && rep.written + rep.discarded == rep.tensors);
        st_file *f = NULL;
        FUZZ_ASSERT(st_open(out_path, 0, &f, &err) == ST_OK, "%s", err.message);
        FUZZ_ASSERT(st_tensor_count(f) == rep.written);
        if (o.mode == ST_MERGE_WEIGHTED && o.alpha == 0.0 && !o.set_dtype) {
            /* (1 - 0) A + 0 B = A, exactly */
            for (size_t i = 0; i < st_tensor_count(f); i++) {
                const st_tensor *t = st_tensor_at(f, i);
                const float *v = st_tensor_data(f, t);
                size_t k = 0;
                while (k < NNAMES && (strlen(names[k]) != t->name_len ||
                                      memcmp(names[k], t->name, t->name_len) != 0))
                    k++;
                FUZZ_ASSERT(k < NNAMES && t->dtype == ST_F32 && v != NULL);
                for (size_t j = 0; j < 6; j++)
                    FUZZ_ASSERT(v[j] == -1.0f + (float)(k * 6 + j) * 0.25f,
                                "alpha 0 keeps A");
            }
        }
        st_close(f);
        FUZZ_ASSERT(unlink(out_path) == 0);
        FUZZ_ASSERT(extra_files() == 0, "temporary file left after success");
    }
    free(alpha_text);
    free(discard);
    return 0;
}
