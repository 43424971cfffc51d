/* `safetensors convert` for PyTorch checkpoints: the input's pickles are
 * scanned first (nothing is executed, ever); a dangerous global refuses
 * the conversion unless --allow-unsafe-globals. The tensors are written by
 * the library (st_ckpt_write_safetensors: kernel copies where the bytes
 * are one run of the file, streaming otherwise). */
#include "convert_ckpt.h"

#include <stdlib.h>
#include <string.h>

static int report(const char *path, st_error *err, int rc)
{
    if (err->code == ST_OK)
        err->code = rc;
    cli_print_error(path, err);
    return cli_exit_code(err->code);
}

int convert_ckpt(const char *in_path, const char *out_path, bool allow_unsafe, uint64_t pad,
                 const cli_common *common)
{
    st_error err;
    memset(&err, 0, sizeof err);
    st_ckpt *scan = NULL, *ck = NULL;
    /* Scan every pickle of the file (also those torch.load would not run). */
    int rc = st_ckpt_open(in_path, ST_CKPT_SCAN, NULL, &scan, &err);
    if (rc != ST_OK)
        return report(in_path, &err, rc);
    size_t nd = st_ckpt_dangerous_count(scan);
    for (size_t i = 0; i < st_ckpt_global_count(scan); i++) {
        const st_ckpt_global *g = st_ckpt_global_at(scan, i);
        if (g->safety != ST_SAFETY_DANGEROUS)
            continue;
        char *m = cli_printable(g->module, g->module_len), *n = cli_printable(g->name, g->name_len);
        cli_errorf("%s: %s: dangerous global %s.%s (%s, offset %llu)", in_path,
                   allow_unsafe ? "warning" : "unsafe", m ? m : "?", n ? n : "?", g->pickle,
                   (unsigned long long)g->offset);
        free(m);
        free(n);
    }
    bool code = st_ckpt_format(scan) == ST_FORMAT_TORCHSCRIPT || st_ckpt_code_count(scan);
    if (code)
        cli_errorf("%s: %s: TorchScript archive: torch.jit.load runs its code (%zu code file%s); only the "
                   "tensors of its pickles are read here, the code never is", in_path,
                   allow_unsafe ? "warning" : "unsafe", st_ckpt_code_count(scan),
                   st_ckpt_code_count(scan) == 1 ? "" : "s");
    st_ckpt_close(scan);
    if (code && !allow_unsafe) {
        cli_errorf("%s: refusing to convert TorchScript (nothing was executed; --allow-unsafe-globals imports "
                   "its tensors anyway, still without running anything)", in_path);
        return CLI_EXIT_INVALID;
    }
    if (nd && !allow_unsafe) {
        cli_errorf("%s: refusing to convert: %zu dangerous global%s (nothing was executed; "
                   "--allow-unsafe-globals converts the tensors anyway, still without running anything)",
                   in_path, nd, nd == 1 ? "" : "s");
        return CLI_EXIT_INVALID;
    }
    if (cli_same_file(in_path, out_path)) {
        cli_errorf("invalid_argument: OUT '%s' is the input file; inputs are never overwritten", out_path);
        return CLI_EXIT_ERROR;
    }
    rc = st_ckpt_open(in_path, 0, NULL, &ck, &err);
    if (rc != ST_OK)
        return report(in_path, &err, rc);

    int ret = CLI_EXIT_ERROR;
    size_t n = st_ckpt_tensor_count(ck);
    if (n == 0)
        cli_errorf("%s: warning: no tensors found (only dicts, lists and tuples of tensors are read; "
                   "a pickled nn.Module object is not)", in_path);
    for (size_t i = 0; i < st_ckpt_array_count(ck); i++) {
        const st_ckpt_array *a = st_ckpt_array_at(ck, i);
        if (!a->refused || !a->name)
            continue;
        char *nm = cli_printable(a->name, a->name_len);
        cli_errorf("%s: warning: numpy array '%s' (%s) left out: %s", in_path, nm ? nm : "?", a->numpy_dtype,
                   a->refused);
        free(nm);
    }
    cli_progress *line = cli_progress_new("convert", common);
    st_ckpt_write_options wo;
    memset(&wo, 0, sizeof wo);
    wo.hooks = cli_output_hooks(line);
    wo.pad = pad;
    st_ckpt_write_report rep;
    rc = st_ckpt_write_safetensors(ck, out_path, &wo, &rep, &err);
    cli_progress_done(line);
    if (rc != ST_OK) {
        report(rep.failed_input == 0 ? in_path : out_path, &err, rc);
        goto done;
    }
    {
        char a[32], b[32];
        char *p = cli_printable(out_path, strlen(out_path));
        printf("wrote %s: %zu tensor%s from a %s checkpoint, %zu metadata key%s, %s (%s bytes)\n",
               p ? p : out_path, rep.tensors, rep.tensors == 1 ? "" : "s",
               st_format_name(st_ckpt_format(ck)), rep.metadata, rep.metadata == 1 ? "" : "s",
               cli_human_size(rep.output_size, a, sizeof a),
               cli_grouped(rep.output_size, b, sizeof b));
        free(p);
    }
    ret = CLI_EXIT_OK;
done:
    st_ckpt_close(ck);
    return ret;
}
