/* `safetensors scan`: lists every global the pickles of a file reference,
 * classified dangerous / unknown / safe, without running anything (the
 * library's restricted pickle machine reads them). */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: " CLI_NAME " scan [--json] FILE...\n"
    "\n"
    "Report what the pickles in PyTorch checkpoints (.ckpt .pt .pth .bin) and\n"
    "other pickle files would import and call if Python loaded them. Nothing\n"
    "in FILE is ever executed. Each global is classed dangerous (runs code,\n"
    "touches processes, files or the network), unknown (never resolved), or\n"
    "safe (torch tensor rebuilding, storages, OrderedDict, numpy arrays).\n"
    "TorchScript archives (torch.jit.save) are dangerous whatever their\n"
    "globals: torch.jit.load runs their code; scan lists the code files and\n"
    "the operators they call (read as text, never run). numpy arrays found in\n"
    "a pickle are listed with dtype and shape. Safetensors files hold no code;\n"
    "scan says so.\n"
    "\n"
    "Options:\n"
    "      --json  one JSON document on stdout\n"
    "  -h, --help  show this help\n"
    "\n"
    "Exit status: 0 nothing dangerous, 1 a file is dangerous or invalid (a\n"
    "malformed or over-limit pickle or container), 2 usage or I/O error. The\n"
    "worst outcome over all files wins.\n";

typedef struct scan_totals {
    int dangerous_files;
    int error_files;
    int exit;  /* worst so far: I/O error (2) outranks a verdict (1) */
    bool first;
} scan_totals;

static void count_classes(const st_ckpt *ck, size_t n[3])
{
    n[0] = n[1] = n[2] = 0;
    for (size_t i = 0; i < st_ckpt_global_count(ck); i++)
        n[st_ckpt_global_at(ck, i)->safety]++;
}

static void print_code_text(const st_ckpt *ck)
{
    size_t nc = st_ckpt_code_count(ck), no = st_ckpt_op_count(ck);
    if (!nc)
        return;
    printf("  TorchScript code: %zu file%s, %zu distinct operator%s called\n", nc, nc == 1 ? "" : "s", no,
           no == 1 ? "" : "s");
    for (size_t i = 0; i < nc; i++) {
        const st_ckpt_code *c = st_ckpt_code_at(ck, i);
        char *p = cli_printable(c->path, c->path_len);
        printf("  code      %s (%llu bytes, %llu call%s)\n", p ? p : "?", (unsigned long long)c->size,
               (unsigned long long)c->calls, c->calls == 1 ? "" : "s");
        free(p);
    }
    for (size_t i = 0; i < no; i++) {
        const st_ckpt_op *o = st_ckpt_op_at(ck, i);
        char *p = cli_printable(o->name, o->name_len);
        printf("  op        %s", p ? p : "?");
        if (o->count > 1)
            printf(" (x%llu)", (unsigned long long)o->count);
        putchar('\n');
        free(p);
    }
}

static void print_shape(FILE *f, const uint64_t *shape, uint32_t rank)
{
    fputc('[', f);
    for (uint32_t i = 0; i < rank; i++)
        fprintf(f, i ? ", %llu" : "%llu", (unsigned long long)shape[i]);
    fputc(']', f);
}

static void print_arrays_text(const st_ckpt *ck)
{
    for (size_t i = 0; i < st_ckpt_array_count(ck); i++) {
        const st_ckpt_array *a = st_ckpt_array_at(ck, i);
        char *d = cli_printable(a->numpy_dtype, strlen(a->numpy_dtype));
        printf("  numpy     ndarray %s ", d ? d : "?");
        print_shape(stdout, a->shape, a->rank);
        printf("%s  [%s, offset %llu]", a->fortran ? " (Fortran order)" : "", a->pickle,
               (unsigned long long)a->offset);
        if (a->refused)
            printf(": not a tensor: %s", a->refused);
        putchar('\n');
        free(d);
    }
}

static void print_text(const char *path, st_format fmt, const st_ckpt *ck, const st_error *err)
{
    char *p = cli_printable(path, strlen(path));
    const char *shown = p ? p : path;
    if (fmt == ST_FORMAT_SAFETENSORS) {
        printf("%s: safetensors: holds no code (nothing to scan)\n", shown);
    } else if (!ck) {
        char buf[700];
        printf("%s: %s: error: %s: %s\n", shown, st_format_name(fmt), st_code_name(err->code),
               cli_error_message(err, buf, sizeof buf));
    } else {
        size_t n[3];
        count_classes(ck, n);
        size_t ng = st_ckpt_global_count(ck);
        printf("%s: %s: %zu global%s: %zu dangerous, %zu unknown, %zu safe\n", shown,
               st_format_name(fmt), ng, ng == 1 ? "" : "s", n[2], n[1], n[0]);
        /* dangerous first, then unknown, then safe */
        for (int cls = 2; cls >= 0; cls--)
            for (size_t i = 0; i < ng; i++) {
                const st_ckpt_global *g = st_ckpt_global_at(ck, i);
                if ((int)g->safety != cls)
                    continue;
                char *m = cli_printable(g->module, g->module_len), *nm = cli_printable(g->name, g->name_len);
                printf("  %-9s %s.%s", st_safety_name(g->safety), m ? m : "?", nm ? nm : "?");
                if (g->count > 1)
                    printf(" (x%llu)", (unsigned long long)g->count);
                if (cls == 2)
                    printf("  [%s, offset %llu]", g->pickle, (unsigned long long)g->offset);
                putchar('\n');
                free(m);
                free(nm);
            }
        print_code_text(ck);
        print_arrays_text(ck);
        const st_error *se = st_ckpt_scan_error(ck);
        if (se) {
            char buf[700];
            printf("  error: the scan stopped early: %s: %s\n", st_code_name(se->code),
                   cli_error_message(se, buf, sizeof buf));
        }
        if (st_ckpt_code_count(ck) || fmt == ST_FORMAT_TORCHSCRIPT)
            printf("  DANGEROUS: TorchScript: torch.jit.load compiles and runs the code in this file\n");
        if (n[2])
            printf("  DANGEROUS: loading this file in Python (torch.load, pickle.load) can run code\n");
    }
    free(p);
}

static void print_json(const char *path, st_format fmt, const st_ckpt *ck, const st_error *err, scan_totals *t)
{
    if (!t->first)
        fputs(",\n", stdout);
    t->first = false;
    fputs("  {\"file\":", stdout);
    cli_json_cstr(stdout, path);
    fputs(",\"format\":", stdout);
    cli_json_cstr(stdout, st_format_name(fmt));
    const st_error *e = ck ? st_ckpt_scan_error(ck) : fmt == ST_FORMAT_SAFETENSORS ? NULL : err;
    size_t n[3] = {0, 0, 0};
    if (ck)
        count_classes(ck, n);
    bool code = ck && st_ckpt_safety(ck) == ST_SAFETY_DANGEROUS;
    const char *status = code ? "dangerous" : e ? "error" : "clean";
    fputs(",\"status\":", stdout);
    cli_json_cstr(stdout, status);
    printf(",\"dangerous\":%zu,\"unknown\":%zu,\"safe\":%zu,\"error\":", n[2], n[1], n[0]);
    if (e) {
        char buf[700];
        fputs("{\"code\":", stdout);
        cli_json_cstr(stdout, st_code_name(e->code));
        fputs(",\"message\":", stdout);
        cli_json_cstr(stdout, cli_error_message(e, buf, sizeof buf));
        fputs("}", stdout);
    } else
        fputs("null", stdout);
    fputs(",\"globals\":[", stdout);
    for (size_t i = 0; ck && i < st_ckpt_global_count(ck); i++) {
        const st_ckpt_global *g = st_ckpt_global_at(ck, i);
        fputs(i ? ",{\"module\":" : "{\"module\":", stdout);
        cli_json_string(stdout, g->module, g->module_len);
        fputs(",\"name\":", stdout);
        cli_json_string(stdout, g->name, g->name_len);
        fputs(",\"safety\":", stdout);
        cli_json_cstr(stdout, st_safety_name(g->safety));
        fputs(",\"count\":", stdout);
        cli_json_u64(stdout, g->count);
        fputs(",\"pickle\":", stdout);
        cli_json_cstr(stdout, g->pickle);
        fputs(",\"offset\":", stdout);
        cli_json_u64(stdout, g->offset);
        fputs("}", stdout);
    }
    fputs("],\"code\":[", stdout);
    for (size_t i = 0; ck && i < st_ckpt_code_count(ck); i++) {
        const st_ckpt_code *c = st_ckpt_code_at(ck, i);
        fputs(i ? ",{\"path\":" : "{\"path\":", stdout);
        cli_json_string(stdout, c->path, c->path_len);
        fputs(",\"bytes\":", stdout);
        cli_json_u64(stdout, c->size);
        fputs(",\"calls\":", stdout);
        cli_json_u64(stdout, c->calls);
        fputs("}", stdout);
    }
    fputs("],\"ops\":[", stdout);
    for (size_t i = 0; ck && i < st_ckpt_op_count(ck); i++) {
        const st_ckpt_op *o = st_ckpt_op_at(ck, i);
        fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
        cli_json_string(stdout, o->name, o->name_len);
        fputs(",\"count\":", stdout);
        cli_json_u64(stdout, o->count);
        fputs("}", stdout);
    }
    fputs("],\"numpy_arrays\":[", stdout);
    for (size_t i = 0; ck && i < st_ckpt_array_count(ck); i++) {
        const st_ckpt_array *a = st_ckpt_array_at(ck, i);
        fputs(i ? ",{\"dtype\":" : "{\"dtype\":", stdout);
        cli_json_cstr(stdout, a->numpy_dtype);
        fputs(",\"shape\":", stdout);
        print_shape(stdout, a->shape, a->rank);
        printf(",\"fortran\":%s,\"pickle\":", a->fortran ? "true" : "false");
        cli_json_cstr(stdout, a->pickle);
        fputs(",\"offset\":", stdout);
        cli_json_u64(stdout, a->offset);
        fputs(",\"refused\":", stdout);
        if (a->refused)
            cli_json_cstr(stdout, a->refused);
        else
            fputs("null", stdout);
        fputs("}", stdout);
    }
    fputs("]}", stdout);
}

static void scan_one(const char *path, bool json, scan_totals *t)
{
    st_error err;
    memset(&err, 0, sizeof err);
    st_format fmt = ST_FORMAT_UNKNOWN;
    st_ckpt *ck = NULL;
    int rc = st_ckpt_detect(path, &fmt, &err);
    if (rc == ST_OK && fmt == ST_FORMAT_UNKNOWN) {
        rc = err.code = ST_E_CKPT_FORMAT;
        err.offset = ST_NO_OFFSET;
        snprintf(err.message, sizeof err.message, "neither a pickle-based file nor safetensors");
    }
    if (rc == ST_OK && fmt != ST_FORMAT_SAFETENSORS)
        rc = st_ckpt_open(path, ST_CKPT_SCAN, NULL, &ck, &err);
    if (rc != ST_OK && err.code == ST_OK)
        err.code = rc;
    int ex = CLI_EXIT_OK;
    if (ck && st_ckpt_safety(ck) == ST_SAFETY_DANGEROUS) {
        t->dangerous_files++;
        ex = CLI_EXIT_INVALID;
    } else if (rc != ST_OK || (ck && st_ckpt_scan_error(ck))) {
        t->error_files++;
        ex = cli_exit_code(rc != ST_OK ? err.code : st_ckpt_scan_error(ck)->code);
    }
    if (ex > t->exit)
        t->exit = ex;
    if (json)
        print_json(path, fmt, ck, &err, t);
    else
        print_text(path, fmt, ck, &err);
    st_ckpt_close(ck);
}

int cmd_scan(int argc, char **argv)
{
    static const cli_command cmd = {usage, CLI_OPT_JSON, NULL, NULL, NULL, false};
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, NULL);
    if (ret >= 0)
        return ret;
    bool json = common.json;
    int first = common.first_arg;
    if (first >= argc)
        return cli_usage_error(usage, "scan: expected at least one FILE");
    scan_totals t = {0, 0, CLI_EXIT_OK, true};
    if (json)
        fputs("{\"files\":[\n", stdout);
    for (int i = first; i < argc; i++)
        scan_one(argv[i], json, &t);
    if (json)
        printf("\n],\"dangerous_files\":%d,\"error_files\":%d}\n", t.dangerous_files, t.error_files);
    return t.exit;
}
