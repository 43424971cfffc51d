/* `safetensors convert IN OUT.gguf --quant TYPE`: the library's
 * st_gguf_from_safetensors (lib/gguf/gguf_write.c) with a progress line,
 * and its summary: architecture, tensors by type, fallbacks, size. */
#include "convert_gguf.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool gguf_path(const char *path)
{
    size_t n = strlen(path);
    return n >= 5 && strcasecmp(path + n - 5, ".gguf") == 0;
}

int convert_to_gguf(const char *in_path, const char *out_path, const gguf_args *g,
                    const cli_common *common)
{
    int ftype = ST_GGUF_FTYPE_F16;
    if (g->quant && st_gguf_ftype_from_name(g->quant, &ftype) != ST_OK) {
        cli_errorf("invalid_argument: unknown --quant '%s' (f32, f16, bf16, q8_0, q5_1, q5_0, "
                   "q4_1, q4_0, q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_l, q3_k_m, q3_k_s, "
                   "q2_k)",
                   g->quant);
        return CLI_EXIT_ERROR;
    }
    st_gguf_write_options o;
    memset(&o, 0, sizeof o);
    o.ftype = ftype;
    o.arch = g->arch;
    o.threads = g->threads;
    cli_progress *line = cli_progress_new("convert", common);
    o.hooks = cli_output_hooks(line);
    st_gguf_write_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_gguf_from_safetensors(in_path, out_path, &o, &rep, &err);
    cli_progress_done(line);
    if (rc != ST_OK) {
        int code = cli_report(rep.failed_input == 0 ? in_path : NULL, rc, &err);
        /* a model this writer does not take is a usage matter, not a
         * verdict on the file */
        return rc == ST_E_UNSUPPORTED ? CLI_EXIT_ERROR : code;
    }
    if (rep.fallback_f16)
        cli_errorf("%s: warning: %zu tensor%s kept at F16: rows not a multiple of the %s "
                   "block size (as llama-quantize does)",
                   in_path, rep.fallback_f16, rep.fallback_f16 == 1 ? "" : "s",
                   st_gguf_ftype_name(ftype));
    char *p = cli_printable(out_path, strlen(out_path));
    char a[32], b[32];
    printf("wrote %s: %s, %s, %zu tensors (", p ? p : out_path, rep.arch,
           st_gguf_ftype_name(ftype), rep.tensors);
    bool first = true;
    for (int t = 0; t < ST_GGUF_TYPE_SLOTS; t++) {
        if (!rep.by_type[t])
            continue;
        printf("%s%zu %s", first ? "" : ", ", rep.by_type[t], st_ggml_type_name(t));
        first = false;
    }
    printf("), %s (%s bytes)\n", cli_human_size(rep.output_size, a, sizeof a),
           cli_grouped(rep.output_size, b, sizeof b));
    if (rep.reshaped)
        printf("%zu tensor%s stored reshaped with comfy.gguf.orig_shape (ComfyUI-GGUF restores "
               "them)\n",
               rep.reshaped, rep.reshaped == 1 ? "" : "s");
    if (rep.ignored && rep.prefix[0])
        printf("left out %zu tensor%s not under %s (not part of the %s model)\n", rep.ignored,
               rep.ignored == 1 ? "" : "s", rep.prefix, rep.arch);
    else if (rep.ignored)
        printf("left out %zu tensor%s (convert.py ignores them for %s)\n", rep.ignored,
               rep.ignored == 1 ? "" : "s", rep.arch);
    free(p);
    return CLI_EXIT_OK;
}
