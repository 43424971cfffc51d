/*
 * `safetensors hash`: the digests model sites and UIs name files by, all in
 * one read pass (library: st_hash_fd), plus the hashes a file carries in its
 * own metadata and whether they are right.
 *
 * Embedded hashes (kohya sd-scripts library/train_util.py,
 * precalculate_safetensors_hashes): kohya serializes the state dict with
 * only the "ss_*" metadata keys, and stores
 *   sshs_model_hash  = addnet_hash_safetensors of that = SHA-256 of the
 *                      tensor data after the header: our autov3, since the
 *                      data bytes do not depend on the metadata;
 *   sshs_legacy_hash = addnet_hash_legacy of that = the autov1 rule (8 hex
 *                      digits at 1 MiB) over the file as it was *with only
 *                      ss_* metadata*, which we rebuild with the canonical
 *                      writer (byte for byte the reference serializer that
 *                      kohya used) and hash the same window of.
 * A1111 shows sshs_model_hash as a LoRA's hash without recomputing it
 * (extensions-builtin/Lora network.py), so a stale value matters.
 * modelspec.hash_sha256 (the SAI model spec) is self-reported: some writers
 * put the data hash there, some the whole file's, some with "0x"; we say
 * which digest it matches, if any.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " hash [--algo LIST] [--civitai] [--json] [--variant NAME]\n"
    "                      FILE...\n"
    "\n"
    "Compute the digests model sites and UIs name files by, in one read pass\n"
    "over each FILE (any file; '-' reads standard input; an index (*.json) or\n"
    "a folder is validated as a sharded model, then its shards are hashed, as\n"
    "many at once as --threads allows):\n"
    "  sha256   SHA-256 of the whole file\n"
    "  autov1   A1111's old model hash: SHA-256 of the 64 KiB at 1 MiB, 8 digits\n"
    "  autov2   first 10 digits of the SHA-256 (A1111's short hash)\n"
    "  autov3   SHA-256 of the tensor data after the header (kohya / A1111\n"
    "           LoRA hash, Civitai AutoV3); safetensors files only\n"
    "  crc32    CRC-32\n"
    "  blake3   BLAKE3\n"
    "For safetensors files it also checks the hashes kohya's trainer embeds in\n"
    "the metadata (sshs_model_hash, sshs_legacy_hash) and modelspec.hash_sha256.\n"
    "\n"
    "Options:\n"
    "  --algo LIST   comma-separated digests, or 'all'\n"
    "                (default: sha256,autov1,autov2,autov3)\n"
    "  --civitai     print as Civitai lists them: SHA256, AutoV1, AutoV2, AutoV3,\n"
    "                CRC32, BLAKE3 (all six unless --algo), upper case, CRC-32\n"
    "                bytes reversed, AutoV1 null for files under 2 MiB\n"
    "  --json        one JSON object per line and file\n"
    "  --threads N   hashing threads (default: one per CPU, as useful); over a\n"
    "                sharded model, up to N shards at once (1: one by one)\n"
    "  --variant NAME  a folder's weight variant NAME (fp16, ema, non_ema,\n"
    "                ...) instead of its plain weights, as diffusers picks it\n"
    "  -q, --quiet    no progress line (shown when stderr is a terminal)\n"
    "  --progress     a progress line even when stderr is not a terminal\n"
    "  -h, --help    show this help\n"
    "\n"
    "Exit status: 0 success, 2 usage error or a file that cannot be read.\n";

#define DEFAULT_ALGOS (ST_HASH_SHA256 | ST_HASH_AUTOV1 | ST_HASH_AUTOV2 | ST_HASH_AUTOV3)

static const unsigned order[] = {ST_HASH_SHA256, ST_HASH_AUTOV1, ST_HASH_AUTOV2,
                                 ST_HASH_AUTOV3, ST_HASH_CRC32,  ST_HASH_BLAKE3};
#define NORDER (sizeof order / sizeof order[0])

static const char *civitai_name(unsigned algo)
{
    switch (algo) {
    case ST_HASH_SHA256: return "SHA256";
    case ST_HASH_AUTOV1: return "AutoV1";
    case ST_HASH_AUTOV2: return "AutoV2";
    case ST_HASH_AUTOV3: return "AutoV3";
    case ST_HASH_CRC32: return "CRC32";
    case ST_HASH_BLAKE3: return "BLAKE3";
    default: return "?";
    }
}

static int parse_algos(const char *list, unsigned *out)
{
    unsigned algos = 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        unsigned a;
        if (len == 3 && strncasecmp(p, "all", 3) == 0)
            algos |= ST_HASH_ALL;
        else if (st_hash_from_name(p, len, &a) == ST_OK)
            algos |= a;
        else
            return -1;
        p += len;
        if (*p == ',')
            p++;
    }
    if (!algos)
        return -1;
    *out = algos;
    return 0;
}

/* ---- embedded hashes ---- */

typedef enum { EMB_MODEL, EMB_LEGACY, EMB_MODELSPEC, EMB_COUNT } emb_kind;
static const char *const emb_keys[EMB_COUNT] = {"sshs_model_hash", "sshs_legacy_hash",
                                                "modelspec.hash_sha256"};

typedef struct embedded {
    const char *value;    /* as stored, or NULL when absent */
    size_t len;
    int matches;          /* 1 yes, 0 no, -1 cannot tell */
    const char *matched;  /* which digest it matched */
} embedded;

/* The value lower-cased, without "0x"; empty when it is not plain hex. */
static void normalize_hex(const char *v, size_t len, char *out, size_t cap)
{
    out[0] = '\0';
    if (len >= 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        v += 2;
        len -= 2;
    }
    if (len == 0 || len >= cap)
        return;
    for (size_t i = 0; i < len; i++) {
        if (!isxdigit((unsigned char)v[i])) {
            out[0] = '\0';
            return;
        }
        out[i] = (char)tolower((unsigned char)v[i]);
    }
    out[len] = '\0';
}

/* Captures the window autov1 hashes from the bytes the writer streams. */
typedef struct window {
    uint64_t pos;
    uint8_t buf[0x10000];
    size_t len;
} window;

static int window_sink(void *ctx, const void *data, size_t len)
{
    window *w = ctx;
    const uint64_t start = 0x100000, end = 0x110000;
    uint64_t a = w->pos, b = w->pos + len;
    if (b > start && a < end) {
        uint64_t from = a > start ? a : start, to = b < end ? b : end;
        memcpy(w->buf + (from - start), (const uint8_t *)data + (from - a), (size_t)(to - from));
        if (to - start > w->len)
            w->len = (size_t)(to - start);
    }
    w->pos = b;
    return b >= end ? 1 : 0; /* enough: stop the writer */
}

typedef struct tensor_src {
    const st_file *f;
    const st_tensor *t;
} tensor_src;

static int tensor_reader(void *ctx, uint64_t offset, void *buf, size_t len)
{
    const tensor_src *s = ctx;
    return st_tensor_read(s->f, s->t, offset, buf, len, NULL) == ST_OK ? 0 : 1;
}

/* kohya's sshs_legacy_hash: the autov1 rule over the file rebuilt with only
 * its ss_* metadata. Writes 8 hex digits to out; returns 0, or -1. */
static int legacy_hash(const st_file *f, char out[ST_HASH_TEXT_MAX])
{
    int rc = -1;
    size_t n = st_tensor_count(f);
    tensor_src *src = calloc(n ? n : 1, sizeof *src);
    window *w = calloc(1, sizeof *w);
    st_writer *wr = st_writer_new();
    if (!src || !w || !wr)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(f, i);
        src[i].f = f;
        src[i].t = t;
        if (st_writer_add_stream(wr, t->name, t->name_len, t->dtype, t->shape, t->rank,
                                 st_tensor_nbytes(t), tensor_reader, &src[i], NULL) != ST_OK)
            goto out;
    }
    for (size_t i = 0; i < st_metadata_count(f); i++) {
        const char *k, *v;
        size_t kl, vl;
        if (st_metadata_at(f, i, &k, &kl, &v, &vl) == ST_OK && kl >= 3 &&
            memcmp(k, "ss_", 3) == 0)
            if (st_writer_set_metadata(wr, k, kl, v, vl, NULL) != ST_OK)
                goto out;
    }
    /* Stops with ST_E_CALLBACK once the window is complete. */
    (void)st_writer_write_to(wr, window_sink, w, NULL);
    st_hashes h;
    if (st_hash_memory(w->buf, w->len, ST_HASH_SHA256, NULL, &h, NULL) != ST_OK)
        goto out;
    /* autov1's 8 digits are the first 4 bytes of that SHA-256 */
    char full[ST_HASH_TEXT_MAX];
    if (st_hash_text(&h, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, full) != ST_OK)
        goto out;
    memcpy(out, full, 8);
    out[8] = '\0';
    rc = 0;
out:
    st_writer_free(wr);
    free(w);
    free(src);
    return rc;
}

static void check_embedded(const st_file *f, const st_hashes *h, embedded emb[EMB_COUNT])
{
    char v3[ST_HASH_TEXT_MAX], sha[ST_HASH_TEXT_MAX];
    int have_v3 = st_hash_text(h, ST_HASH_AUTOV3, ST_HASH_STYLE_PLAIN, v3) == ST_OK;
    int have_sha = st_hash_text(h, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, sha) == ST_OK;
    for (int k = 0; k < EMB_COUNT; k++) {
        embedded *e = &emb[k];
        memset(e, 0, sizeof *e);
        e->matches = -1;
        if (!f)
            continue;
        e->value = st_metadata_get(f, emb_keys[k], strlen(emb_keys[k]), &e->len);
        if (!e->value)
            continue;
        char norm[ST_HASH_TEXT_MAX];
        normalize_hex(e->value, e->len, norm, sizeof norm);
        switch (k) {
        case EMB_MODEL:
            if (have_v3)
                e->matches = strcmp(norm, v3) == 0;
            if (e->matches == 1)
                e->matched = "autov3";
            break;
        case EMB_LEGACY: {
            char lh[ST_HASH_TEXT_MAX];
            if (legacy_hash(f, lh) == 0)
                e->matches = strcmp(norm, lh) == 0;
            if (e->matches == 1)
                e->matched = "autov1 of the file with only ss_* metadata";
            break;
        }
        case EMB_MODELSPEC:
            if (have_v3 || have_sha) {
                e->matches = 0;
                if (have_v3 && strcmp(norm, v3) == 0)
                    e->matched = "autov3";
                else if (have_sha && strcmp(norm, sha) == 0)
                    e->matched = "sha256";
                if (e->matched)
                    e->matches = 1;
            }
            break;
        default:
            break;
        }
    }
}

/* ---- output ---- */

static void print_text(const char *path, const st_hashes *h, unsigned algos, bool civitai,
                       const char *not_st, const embedded emb[EMB_COUNT])
{
    char *p = cli_printable(path, strlen(path));
    printf("%s\n", p ? p : path);
    free(p);
    for (size_t i = 0; i < NORDER; i++) {
        unsigned a = order[i];
        if (!(algos & a))
            continue;
        char txt[ST_HASH_TEXT_MAX];
        const char *label = civitai ? civitai_name(a) : st_hash_name(a);
        if (st_hash_text(h, a, civitai ? ST_HASH_STYLE_CIVITAI : ST_HASH_STYLE_PLAIN, txt) ==
            ST_OK)
            printf("  %-8s %s\n", label, txt);
        else if (a == ST_HASH_AUTOV3)
            printf("  %-8s %s (%s)\n", label, civitai ? "null" : "-",
                   not_st ? not_st : "no tensor data");
        else if (a == ST_HASH_AUTOV1)
            printf("  %-8s null (file under 2 MiB)\n", label);
        else
            printf("  %-8s -\n", label);
    }
    for (int k = 0; k < EMB_COUNT; k++) {
        if (!emb[k].value)
            continue;
        char *v = cli_printable(emb[k].value, emb[k].len);
        const char *verdict = emb[k].matches == 1   ? "matches"
                              : emb[k].matches == 0 ? "DOES NOT MATCH"
                                                    : "not checked";
        printf("  %s %s (%s%s%s)\n", emb_keys[k], v ? v : "?", verdict,
               emb[k].matched ? " " : "", emb[k].matched ? emb[k].matched : "");
        free(v);
    }
}

static void print_json(const char *path, const st_hashes *h, unsigned algos, bool civitai,
                       const char *not_st, const embedded emb[EMB_COUNT])
{
    FILE *o = stdout;
    fputs("{\"file\": ", o);
    cli_json_string(o, path, strlen(path));
    fputs(", \"size\": ", o);
    cli_json_u64(o, h->size);
    fputs(", \"safetensors\": ", o);
    fputs(not_st ? "false" : "true", o);
    if (not_st) {
        fputs(", \"safetensors_error\": ", o);
        cli_json_cstr(o, not_st);
    }
    fputs(civitai ? ", \"hashes\": {" : ", ", o);
    bool first = true;
    for (size_t i = 0; i < NORDER; i++) {
        unsigned a = order[i];
        if (!(algos & a))
            continue;
        char txt[ST_HASH_TEXT_MAX];
        fprintf(o, "%s\"%s\": ", first ? "" : ", ", civitai ? civitai_name(a) : st_hash_name(a));
        first = false;
        if (st_hash_text(h, a, civitai ? ST_HASH_STYLE_CIVITAI : ST_HASH_STYLE_PLAIN, txt) ==
            ST_OK)
            cli_json_cstr(o, txt);
        else
            fputs("null", o);
    }
    if (civitai)
        putc('}', o);
    if (h->computed & ST_HASH_AUTOV3) {
        fputs(", \"data_offset\": ", o);
        cli_json_u64(o, h->autov3_offset);
    }
    fputs(", \"embedded\": {", o);
    first = true;
    for (int k = 0; k < EMB_COUNT; k++) {
        if (!emb[k].value)
            continue;
        fprintf(o, "%s\"%s\": {\"value\": ", first ? "" : ", ", emb_keys[k]);
        first = false;
        cli_json_string(o, emb[k].value, emb[k].len);
        fputs(", \"matches\": ", o);
        fputs(emb[k].matches == 1 ? "true" : emb[k].matches == 0 ? "false" : "null", o);
        fputs(", \"matched\": ", o);
        cli_json_cstr(o, emb[k].matched);
        putc('}', o);
    }
    fputs("}}\n", o);
}

static int open_error(const char *path, int e)
{
    st_error err;
    memset(&err, 0, sizeof err);
    err.code = ST_E_IO;
    err.offset = ST_NO_OFFSET;
    snprintf(err.message, sizeof err.message, "cannot open: %s", strerror(e));
    cli_print_error(path, &err);
    return CLI_EXIT_ERROR;
}

/* The digests to compute: those asked for, and those the embedded hashes
 * are checked against (autov3 only of a safetensors file). */
static unsigned wanted(unsigned algos, bool valid, bool has_modelspec, bool has_sshs)
{
    unsigned want = algos;
    if (!valid)
        want &= ~ST_HASH_AUTOV3;
    if (valid && has_modelspec)
        want |= ST_HASH_SHA256 | ST_HASH_AUTOV3; /* to tell which it is */
    if (valid && has_sshs)
        want |= ST_HASH_AUTOV3;
    if (want == 0)
        want = ST_HASH_SHA256; /* only autov3 asked, of a non-safetensors file */
    return want;
}

/* After the digests: the embedded hashes checked and everything printed.
 * f is NULL when the file is not a safetensors file (not_st says why). */
static void report_file(const char *path, const st_file *f, const char *not_st,
                        const st_hashes *h, unsigned algos, bool civitai, bool json)
{
    embedded emb[EMB_COUNT];
    check_embedded(f, h, emb);
    if (json)
        print_json(path, h, algos, civitai, f ? NULL : not_st, emb);
    else
        print_text(path, h, algos, civitai, f ? NULL : not_st, emb);
    fflush(stdout);
}

static int hash_one(const char *path, unsigned algos, bool civitai, bool json,
                    const st_hash_options *opt)
{
    bool is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    st_error err;
    memset(&err, 0, sizeof err);
    if (fd < 0)
        return open_error(path, errno);
    struct stat st;
    int ferr = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : 0;
    if (ferr) {
        if (!is_stdin)
            close(fd);
        return open_error(path, ferr);
    }

    /* Is it a safetensors file? Needed for autov3 and the metadata. Only
     * regular files: a pipe can be read once. */
    st_file *f = NULL;
    char not_st[ST_ERROR_MESSAGE_MAX + 64] = "not a regular file";
    bool valid = false;
    if (!is_stdin && S_ISREG(st.st_mode)) {
        st_error oerr;
        memset(&oerr, 0, sizeof oerr);
        int rc = st_open(path, ST_OPEN_PREAD, &f, &oerr);
        if (rc == ST_OK) {
            valid = true;
        } else {
            if (oerr.code == ST_OK)
                oerr.code = rc;
            snprintf(not_st, sizeof not_st, "not a safetensors file: %s",
                     st_code_name(oerr.code));
        }
    }

    st_hashes h;
    bool spec = valid && st_metadata_get(f, "modelspec.hash_sha256", 21, NULL);
    bool sshs = valid && st_metadata_get(f, "sshs_model_hash", 15, NULL);
    int rc = st_hash_fd(fd, wanted(algos, valid, spec, sshs), opt, &h, &err);
    cli_progress_clear(opt->progress_ctx);
    if (!is_stdin)
        close(fd);
    /* A regular file that shrank or grew while it was read would get the
     * digest of bytes that were never the file: report it instead. */
    if (rc == ST_OK && !is_stdin && S_ISREG(st.st_mode) && h.size != (uint64_t)st.st_size) {
        rc = ST_E_IO;
        err.code = ST_E_IO;
        err.offset = ST_NO_OFFSET;
        snprintf(err.message, sizeof err.message,
                 "the file changed size while being hashed (%llu bytes when opened, %llu read)",
                 (unsigned long long)st.st_size, (unsigned long long)h.size);
    }
    if (rc != ST_OK) {
        if (err.code == ST_OK)
            err.code = rc;
        cli_print_error(path, &err);
        st_close(f);
        return CLI_EXIT_ERROR;
    }
    report_file(path, valid ? f : NULL, not_st, &h, algos, civitai, json);
    st_close(f);
    return CLI_EXIT_OK;
}

/* An index or a folder: the model validated whole, its shards hashed
 * side by side (st_model_hash), then each reported as a file (the hashes
 * model sites list per file). */
static int hash_model(const char *path, const char *variant, unsigned algos, bool civitai,
                      bool json, const st_hash_options *opt)
{
    st_model *m = NULL;
    int ret = cli_open_model_variant(path, variant, &m);
    if (ret != CLI_EXIT_OK)
        return ret;
    size_t n = st_model_shard_count(m);
    st_hashes *hs = calloc(n ? n : 1, sizeof *hs);
    st_error err;
    memset(&err, 0, sizeof err);
    size_t failed = SIZE_MAX;
    int rc = hs ? st_model_hash(m, wanted(algos, true,
                                          st_model_metadata_get(m, "modelspec.hash_sha256", 21,
                                                                NULL) != NULL,
                                          st_model_metadata_get(m, "sshs_model_hash", 15,
                                                                NULL) != NULL),
                                opt, hs, &failed, &err)
                : ST_E_NOMEM;
    cli_progress_clear(opt->progress_ctx);
    if (rc != ST_OK) {
        if (err.code == ST_OK) {
            err.code = rc;
            err.offset = ST_NO_OFFSET;
            snprintf(err.message, sizeof err.message, "out of memory");
        }
        cli_print_error(failed < n ? st_model_shard_path(m, failed) : path, &err);
        ret = CLI_EXIT_ERROR;
    }
    for (size_t i = 0; rc == ST_OK && i < n; i++) {
        const char *sp = st_model_shard_path(m, i);
        st_file *f = NULL;
        char not_st[ST_ERROR_MESSAGE_MAX + 64] = "";
        st_error oerr;
        memset(&oerr, 0, sizeof oerr);
        /* the model's validation passed: this only fails on a shard
         * replaced since, which its digests already describe */
        int orc = st_open(sp, ST_OPEN_PREAD, &f, &oerr);
        if (orc != ST_OK)
            snprintf(not_st, sizeof not_st, "not a safetensors file: %s",
                     st_code_name(oerr.code ? oerr.code : orc));
        report_file(sp, f, not_st, &hs[i], algos, civitai, json);
        st_close(f);
    }
    free(hs);
    st_model_close(m);
    return ret;
}

typedef struct hash_args {
    unsigned algos;
    bool civitai;
    st_hash_options opt;
} hash_args;

static int on_option(void *ctx, int c, const char *arg)
{
    hash_args *a = ctx;
    switch (c) {
    case 'a':
        if (parse_algos(arg, &a->algos) != 0)
            return cli_usage_error(usage, "hash: bad --algo list '%s'", arg);
        return 0;
    case 'c': a->civitai = true; return 0;
    case 't': {
        char *end;
        errno = 0;
        unsigned long n = strtoul(arg, &end, 10);
        if (errno || *end || end == arg || n < 1 || n > 64)
            return cli_usage_error(usage, "hash: --threads takes 1..64");
        a->opt.threads = (unsigned)n;
        return 0;
    }
    default: return cli_usage_error(usage, NULL);
    }
}

int cmd_hash(int argc, char **argv)
{
    static const struct option opts[] = {
        {"algo", required_argument, NULL, 'a'},
        {"civitai", no_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    static const cli_command cmd = {usage, CLI_OPT_JSON | CLI_OPT_PROGRESS | CLI_OPT_VARIANT, opts,
                                    NULL, on_option, false};
    hash_args a;
    memset(&a, 0, sizeof a);
    cli_common common;
    int ret = cli_parse_options(argc, argv, &cmd, &common, &a);
    if (ret >= 0)
        return ret;
    unsigned algos = a.algos;
    bool civitai = a.civitai, json = common.json;
    st_hash_options opt = a.opt;
    cli_progress *bar = cli_progress_new("hash", &common);
    opt.progress = cli_progress_cb;
    opt.progress_ctx = bar;
    int first = common.first_arg;
    if (first >= argc)
        return cli_usage_error(usage, "hash: no FILE given");
    if (!algos)
        algos = civitai ? ST_HASH_ALL : DEFAULT_ALGOS;
    int worst = CLI_EXIT_OK;
    for (int i = first; i < argc; i++) {
        int rc;
        if (strcmp(argv[i], "-") != 0 && cli_is_model_path(argv[i])) {
            rc = hash_model(argv[i], common.variant, algos, civitai, json, &opt);
        } else {
            rc = hash_one(argv[i], algos, civitai, json, &opt);
        }
        if (rc > worst)
            worst = rc;
    }
    cli_progress_done(bar);
    return worst;
}
