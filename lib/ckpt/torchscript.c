/* TorchScript code in an archive, scanned lexically, never run (the
 * lexer is tscode.c; this file feeds it the archive's code/ entries and
 * keeps what it reports): the code files, the operators they call, and
 * each declared class's parameters and buffers, which decide the names
 * the importer gives (as state_dict() does). */
#include "ckpt/ckpt_model.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* operators by name */
static bool op_eq(const st_ckpt *ck, uint32_t pos, const void *key, size_t len)
{
    return ck->ops[pos].name_len == len && memcmp(ck->ops[pos].name, key, len) == 0;
}
static uint64_t op_hash(const st_ckpt *ck, uint32_t pos)
{
    return ck_hash(ck, ck->ops[pos].name, ck->ops[pos].name_len);
}

/* TorchScript class facts */
static bool tsn_eq(const st_ckpt *ck, uint32_t pos, const void *key, size_t len)
{
    return ck->tsn[pos].n == len && memcmp(ck->tsn[pos].s, key, len) == 0;
}
static uint64_t tsn_hash(const st_ckpt *ck, uint32_t pos)
{
    return ck_hash(ck, ck->tsn[pos].s, ck->tsn[pos].n);
}
bool ck_ts_declared(const st_ckpt *ck, const char *s, size_t n)
{
    uint32_t *slot = ck_index_slot(&ck->tsn_index, ck, ck_hash(ck, s, n), s, n, tsn_eq);
    return slot && *slot;
}
static int tsn_add(st_ckpt *ck, const char *s, size_t n)
{
    uint64_t h = ck_hash(ck, s, n);
    uint32_t *slot = ck_index_slot(&ck->tsn_index, ck, h, s, n, tsn_eq);
    if (slot && *slot)
        return ST_OK;
    /* keys repeat the module path (as long as a zip name): bound the
     * bytes too, or a small file could make a few GiB of keys */
    if (ck->ntsn >= MAX_OPS || n > (16u << 20) - ck->tsn_bytes) {
        ck->tsn_full = true;
        return ST_OK;
    }
    ck->tsn_bytes += n;
    if (ck_index_grow(&ck->tsn_index, ck, tsn_hash) || ck_grow((void **)&ck->tsn, &ck->tsncap, ck->ntsn + 1, sizeof *ck->tsn))
        return ST_E_NOMEM;
    char *c = st_arena_strdup(&ck->arena, s, n, NULL);
    if (!c)
        return ST_E_NOMEM;
    ck->tsn[ck->ntsn] = (struct ck_str){c, n};
    ck_index_insert(&ck->tsn_index, h, (uint32_t)ck->ntsn++);
    return ST_OK;
}

/* Streams an entry's bytes (inflated if deflated) to fn in 64 KiB pieces;
 * size and CRC-32 checked at the end. */
typedef int (*chunk_fn)(void *ctx, const unsigned char *p, size_t n);

static int zip_stream(st_ckpt *ck, const st_zip_entry *en, chunk_fn fn, void *ctx, st_error *err)
{
    enum { CH = 1 << 16 };
    char q[200];
    st_quote_name(q, sizeof q, en->name, en->name_len);
    unsigned char *in = malloc(CH), *out = malloc(CH);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    bool inflating = en->method == 8;
    int rc = ST_OK;
    if (!in || !out || (inflating && inflateInit2(&zs, -15) != Z_OK)) {
        free(in);
        free(out);
        return ck_nomem(err);
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    uint64_t total = 0;
    bool ended = !inflating;
    for (uint64_t off = 0; off < en->csize && !rc;) {
        size_t n = en->csize - off < CH ? (size_t)(en->csize - off) : CH;
        if (st_pread_full(ck->fd, in, n, en->data_offset + off)) {
            rc = st_fail(err, ST_E_IO, en->data_offset + off, "read error");
            break;
        }
        off += n;
        if (!inflating) {
            crc = crc32(crc, in, (uInt)n);
            total += n;
            if ((rc = fn(ctx, in, n)))
                break;
            continue;
        }
        zs.next_in = in;
        zs.avail_in = (uInt)n;
        while (zs.avail_in && !ended && !rc) {
            zs.next_out = out;
            zs.avail_out = CH;
            int zr = inflate(&zs, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END) {
                rc = st_fail(err, ST_E_ZIP, en->data_offset, "bad deflate data in %s", q);
                break;
            }
            size_t got = CH - zs.avail_out;
            total += got;
            if (total > en->size) {
                rc = st_fail(err, ST_E_ZIP, en->data_offset, "%s inflates past its stated size", q);
                break;
            }
            crc = crc32(crc, out, (uInt)got);
            if (got && (rc = fn(ctx, out, got)))
                break;
            if (zr == Z_STREAM_END)
                ended = true;
            else if (got == 0 && zs.avail_in == 0)
                break;
        }
    }
    if (!rc && (total != en->size || !ended))
        rc = st_fail(err, ST_E_ZIP, en->data_offset, "%s inflates to the wrong size", q);
    if (!rc && crc != en->crc32)
        rc = st_fail(err, ST_E_ZIP, en->data_offset, "CRC-32 mismatch in %s", q);
    if (inflating)
        inflateEnd(&zs);
    free(in);
    free(out);
    return rc;
}

typedef struct code_ctx {
    st_ckpt *ck;
    st_ts_lexer lx;
    st_ts_sink sink;
    st_error *err;
    char *qual;        /* "module.Class" of the class being read, then '\n' */
    size_t modn, qn, qcap;
    bool in_class;
} code_ctx;

/* `class NAME` in code/a/b.py: the class a.b.NAME of the pickles */
static int on_class(void *ctx, const char *name, size_t len)
{
    code_ctx *c = ctx;
    c->in_class = false;
    size_t need = c->modn + 1 + len + 1 + 256 + 1;
    if (ck_grow((void **)&c->qual, &c->qcap, need, 1))
        return ck_nomem(c->err);
    c->qual[c->modn] = '.';
    memcpy(c->qual + c->modn + 1, name, len);
    c->qn = c->modn + 1 + len;
    if (tsn_add(c->ck, c->qual, c->qn))
        return ck_nomem(c->err);
    c->in_class = true;
    return 0;
}

static int on_attr(void *ctx, int kind, const char *name, size_t len)
{
    (void)kind; /* parameters and buffers alike are in state_dict() */
    code_ctx *c = ctx;
    if (!c->in_class || len > 256)
        return 0;
    c->qual[c->qn] = '\n';
    memcpy(c->qual + c->qn + 1, name, len);
    if (tsn_add(c->ck, c->qual, c->qn + 1 + len))
        return ck_nomem(c->err);
    return 0;
}

static int on_call(void *ctx, const char *name, size_t len)
{
    code_ctx *c = ctx;
    st_ckpt *ck = c->ck;
    ck->code[ck->ncode - 1].calls++;
    uint64_t h = ck_hash(ck, name, len);
    uint32_t *slot = ck_index_slot(&ck->op_index, ck, h, name, len, op_eq);
    if (slot && *slot) {
        ck->ops[*slot - 1].count++;
        return 0;
    }
    if (ck->nops >= MAX_OPS)
        return 0; /* counted in the file's calls, not listed */
    if (ck_index_grow(&ck->op_index, ck, op_hash) || ck_grow((void **)&ck->ops, &ck->opscap, ck->nops + 1, sizeof *ck->ops))
        return ck_nomem(c->err);
    st_ckpt_op *op = &ck->ops[ck->nops];
    op->name = st_arena_strdup(&ck->arena, name, len, NULL);
    if (!op->name)
        return ck_nomem(c->err);
    op->name_len = len;
    op->count = 1;
    op->first_code = ck->ncode - 1;
    ck_index_insert(&ck->op_index, h, (uint32_t)ck->nops++);
    return 0;
}

static int lex_chunk(void *ctx, const unsigned char *p, size_t n)
{
    code_ctx *c = ctx;
    return st_ts_lex(&c->lx, p, n, &c->sink);
}

int ck_ts_scan_code(st_ckpt *ck, const st_zip_entry *en, st_error *err)
{
    if (ck_grow((void **)&ck->code, &ck->codecap, ck->ncode + 1, sizeof *ck->code))
        return ck_nomem(err);
    st_ckpt_code *cd = &ck->code[ck->ncode++];
    memset(cd, 0, sizeof *cd);
    cd->path = en->name;
    cd->path_len = en->name_len;
    cd->size = en->size;
    code_ctx c;
    memset(&c, 0, sizeof c);
    c.ck = ck;
    c.err = err;
    c.sink = (st_ts_sink){&c, on_call, on_class, on_attr};
    st_ts_lex_init(&c.lx);
    /* the module: the path under code/ without .py, '/' read as '.' */
    const char *rest = en->name + ck->zip.prefix_len + 5;
    size_t rl = en->name_len - ck->zip.prefix_len - 5 - 3;
    if (ck_grow((void **)&c.qual, &c.qcap, rl + 1, 1))
        return ck_nomem(err);
    for (size_t i = 0; i < rl; i++)
        c.qual[i] = rest[i] == '/' ? '.' : rest[i];
    c.modn = rl;
    int rc = zip_stream(ck, en, lex_chunk, &c, err);
    free(c.qual);
    return rc;
}

bool ck_ts_is_code(const st_ckpt *ck, const st_zip_entry *en)
{
    const char *rest = en->name + ck->zip.prefix_len;
    size_t rl = en->name_len - ck->zip.prefix_len;
    return rl > 5 && memcmp(rest, "code/", 5) == 0 && rl > 3 && memcmp(rest + rl - 3, ".py", 3) == 0;
}
