/* PyTorch checkpoints: format detection, the zip (and TorchScript) and
 * legacy containers, storages from persistent ids, numpy arrays, tensor
 * naming (flattening), and reading a tensor's bytes in C order (tar
 * checkpoints: tar.c). Nothing from the file is ever executed: the
 * pickles run on the restricted machine in pickle.c. */
#include "ckpt/ckpt_model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- small helpers ---- */

int ck_nomem(st_error *err)
{
    return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
}

int ck_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return ST_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem)
            return ST_E_NOMEM;
        c *= 2;
    }
    void *np = realloc(*p, c * elem);
    if (!np)
        return ST_E_NOMEM;
    *p = np;
    *cap = c;
    return ST_OK;
}

uint32_t *ck_index_slot(const ck_index *ix, const st_ckpt *ck, uint64_t h, const void *key, size_t len,
                        ck_eq_fn eqf)
{
    if (!ix->cap)
        return NULL;
    size_t mask = ix->cap - 1, i = (size_t)h & mask;
    while (ix->slots[i]) {
        if (ck && eqf(ck, ix->slots[i] - 1, key, len))
            return &ix->slots[i];
        i = (i + 1) & mask;
    }
    return &ix->slots[i];
}

int ck_index_grow(ck_index *ix, const st_ckpt *ck, ck_hash_fn hf)
{
    if ((ix->n + 1) * 2 <= ix->cap)
        return ST_OK;
    size_t cap = ix->cap ? ix->cap * 2 : 64;
    uint32_t *old = ix->slots;
    size_t oldcap = ix->cap;
    ix->slots = calloc(cap, sizeof *ix->slots);
    if (!ix->slots) {
        ix->slots = old;
        return ST_E_NOMEM;
    }
    ix->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i])
            ck_index_insert(ix, hf(ck, old[i] - 1), old[i] - 1);
    free(old);
    return ST_OK;
}

int ck_index_insert(ck_index *ix, uint64_t h, uint32_t pos)
{
    size_t mask = ix->cap - 1, i = (size_t)h & mask;
    while (ix->slots[i])
        i = (i + 1) & mask;
    ix->slots[i] = pos + 1;
    ix->n++;
    return ST_OK;
}

/* storages by key */
uint64_t ck_hash(const st_ckpt *ck, const void *data, size_t len)
{
    return st_hash_bytes_seeded(ck->hash_seed, data, len);
}

bool ck_st_eq(const st_ckpt *ck, uint32_t pos, const void *key, size_t len)
{
    return ck->st[pos].key_len == len && memcmp(ck->st[pos].key, key, len) == 0;
}
uint64_t ck_st_hash(const st_ckpt *ck, uint32_t pos)
{
    return ck_hash(ck, ck->st[pos].key, ck->st[pos].key_len);
}
/* tensors by name */
static bool t_eq(const st_ckpt *ck, uint32_t pos, const void *key, size_t len)
{
    return ck->t[pos].pub.name_len == len && memcmp(ck->t[pos].pub.name, key, len) == 0;
}
static uint64_t t_hash(const st_ckpt *ck, uint32_t pos)
{
    return ck_hash(ck, ck->t[pos].pub.name, ck->t[pos].pub.name_len);
}
/* globals by "module\nname" */
static uint64_t g_hash2(const st_ckpt *ck, const char *mod, size_t modn, const char *name, size_t namen)
{
    return ck_hash(ck, mod, modn) * 31u ^ ck_hash(ck, name, namen);
}
typedef struct { const char *mod, *name; size_t modn, namen; } g_key;
static bool g_eq(const st_ckpt *ck, uint32_t pos, const void *key, size_t len)
{
    (void)len;
    const g_key *k = key;
    const st_ckpt_global *g = &ck->g[pos];
    return g->module_len == k->modn && g->name_len == k->namen && memcmp(g->module, k->mod, k->modn) == 0 &&
           memcmp(g->name, k->name, k->namen) == 0;
}
static uint64_t g_hash(const st_ckpt *ck, uint32_t pos)
{
    return g_hash2(ck, ck->g[pos].module, ck->g[pos].module_len, ck->g[pos].name, ck->g[pos].name_len);
}

/* ---- format detection ---- */

static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

static bool is_legacy_magic(const pk_value *v)
{
    return v && v->kind == PK_BIGINT && v->u.s.n == 10 && memcmp(v->u.s.p, legacy_magic, 10) == 0;
}

static st_format detect_buf(const unsigned char *h, size_t n, uint64_t size, const unsigned char *last)
{
    if (n >= 4 && h[0] == 'P' && h[1] == 'K' && ((h[2] == 3 && h[3] == 4) || (h[2] == 5 && h[3] == 6)))
        return ST_FORMAT_ZIP_PICKLE;
    /* safetensors first: its length prefix may begin with 0x80 0x0N */
    if (n >= 9 && size >= 8) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | h[i];
        size_t i = 8;
        while (i < n && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n' || h[i] == '\r'))
            i++;
        if (hl <= ST_MAX_HEADER_SIZE && hl <= size - 8 && i < n && h[i] == '{')
            return ST_FORMAT_SAFETENSORS;
    }
    if (n >= 2 && h[0] == 0x80 && h[1] <= 5) {
        st_ckpt_limits lim;
        st_ckpt_default_limits(&lim);
        lim.max_memory = 1u << 20;
        pk_value *v = NULL;
        pk_machine *m = NULL;
        st_error e;
        int rc = pk_run_memory(h, n, &lim, NULL, false, &m, &v, NULL, &e);
        bool legacy = rc == ST_OK && is_legacy_magic(v);
        pk_free(m);
        return legacy ? ST_FORMAT_LEGACY_PICKLE : ST_FORMAT_RAW_PICKLE;
    }
    /* protocol 0/1 pickles start with one of a few opcodes and end in STOP */
    if (n >= 2 && strchr("(]}c)", h[0]) && h[0] && last && *last == '.')
        return ST_FORMAT_RAW_PICKLE;
    return ST_FORMAT_UNKNOWN;
}

/* TorchScript archives have code/ (and constants.pkl) beside data.pkl. */
static bool zip_is_torchscript(const st_zip *z)
{
    for (size_t i = 0; i < z->count; i++) {
        const st_zip_entry *en = &z->entries[i];
        const char *rest = en->name + z->prefix_len;
        size_t rl = en->name_len - z->prefix_len;
        if ((rl > 5 && memcmp(rest, "code/", 5) == 0) || (rl == 13 && memcmp(rest, "constants.pkl", 13) == 0))
            return true;
    }
    return false;
}

static int detect_fd(int fd, uint64_t size, st_format *out, st_error *err)
{
    unsigned char h[4096], last = 0;
    size_t n = size < sizeof h ? (size_t)size : sizeof h;
    if (st_pread_full(fd, h, n, 0) || (size && st_pread_full(fd, &last, 1, size - 1)))
        return st_fail(err, ST_E_IO, 0, "read error");
    *out = detect_buf(h, n, size, size ? &last : NULL);
    if (*out == ST_FORMAT_UNKNOWN && n >= 263 && memcmp(h + 257, "ustar", 5) == 0)
        *out = ST_FORMAT_TAR_PICKLE;
    if (*out == ST_FORMAT_ZIP_PICKLE) {
        st_zip z;
        if (st_zip_open(fd, size, &z, NULL) == ST_OK) { /* a bad zip: open says why */
            if (zip_is_torchscript(&z))
                *out = ST_FORMAT_TORCHSCRIPT;
            st_zip_free(&z);
        }
    }
    return ST_OK;
}

static int open_fd(const char *path, int *fd, uint64_t *size, st_error *err)
{
    if (!path)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "no path");
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(*fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(*fd);
        *fd = -1;
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "%s is not a regular file", path);
    }
    *size = (uint64_t)sb.st_size;
    return ST_OK;
}

int st_ckpt_detect(const char *path, st_format *out, st_error *err)
{
    int fd;
    uint64_t size;
    if (!out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "no output");
    int rc = open_fd(path, &fd, &size, err);
    if (rc)
        return rc;
    rc = detect_fd(fd, size, out, err);
    close(fd);
    return rc;
}

const char *st_format_name(st_format f)
{
    switch (f) {
    case ST_FORMAT_SAFETENSORS: return "safetensors";
    case ST_FORMAT_ZIP_PICKLE: return "zip-pickle";
    case ST_FORMAT_LEGACY_PICKLE: return "legacy-pickle";
    case ST_FORMAT_RAW_PICKLE: return "raw-pickle";
    case ST_FORMAT_TORCHSCRIPT: return "torchscript";
    case ST_FORMAT_TAR_PICKLE: return "tar-pickle";
    case ST_FORMAT_UNKNOWN: break;
    }
    return "unknown";
}

/* ---- hooks for the pickle machine ---- */

static int on_global(void *ctx, const char *mod, size_t modn, const char *name, size_t namen, uint64_t offset,
                     uint32_t *id, st_error *err)
{
    st_ckpt *ck = ctx;
    g_key k = {mod, name, modn, namen};
    uint64_t h = g_hash2(ck, mod, modn, name, namen);
    uint32_t *slot = ck_index_slot(&ck->g_index, ck, h, &k, 0, g_eq);
    if (slot && *slot) {
        ck->g[*slot - 1].count++;
        *id = *slot - 1;
        return ST_OK;
    }
    if (ck->ng >= UINT32_MAX - 1 || ck_index_grow(&ck->g_index, ck, g_hash) ||
        ck_grow((void **)&ck->g, &ck->gcap, ck->ng + 1, sizeof *ck->g))
        return ck_nomem(err);
    st_ckpt_global *g = &ck->g[ck->ng];
    bool over = false;
    g->module = st_arena_strdup(&ck->arena, mod, modn, &over);
    g->name = st_arena_strdup(&ck->arena, name, namen, &over);
    if (!g->module || !g->name)
        return ck_nomem(err);
    g->module_len = modn;
    g->name_len = namen;
    g->safety = st_ckpt_classify(mod, modn, name, namen);
    g->count = 1;
    g->pickle = ck->pickle_label;
    g->offset = offset;
    if (g->safety == ST_SAFETY_DANGEROUS)
        ck->ndanger++;
    ck_index_insert(&ck->g_index, h, (uint32_t)ck->ng);
    *id = (uint32_t)ck->ng++;
    return ST_OK;
}

static int on_array(void *ctx, pk_value *v, st_error *err)
{
    st_ckpt *ck = ctx;
    if (ck->narr >= ck->lim.max_tensors)
        return st_fail(err, ST_E_PICKLE_LIMIT, v->u.arr.offset, "more than %llu numpy arrays",
                       (unsigned long long)ck->lim.max_tensors);
    if (ck_grow((void **)&ck->arr, &ck->arrcap, ck->narr + 1, sizeof *ck->arr))
        return ck_nomem(err);
    ck_array *a = &ck->arr[ck->narr];
    memset(a, 0, sizeof *a);
    uint32_t rank = v->u.arr.rank;
    char *dt = st_arena_alloc(&ck->arena, v->u.arr.coden + 2, NULL);
    uint64_t *shape = st_arena_alloc(&ck->arena, (rank ? rank : 1) * sizeof *shape, NULL);
    if (!dt || !shape)
        return ck_nomem(err);
    dt[0] = v->u.arr.order;
    memcpy(dt + 1, v->u.arr.code, v->u.arr.coden);
    dt[v->u.arr.coden + 1] = 0;
    memcpy(shape, v->u.arr.shape, rank * sizeof *shape);
    a->pub.pickle = ck->pickle_label;
    a->pub.offset = v->u.arr.offset;
    a->pub.numpy_dtype = dt;
    a->pub.dtype = v->u.arr.dtype;
    a->pub.rank = rank;
    a->pub.shape = shape;
    a->pub.fortran = v->u.arr.fortran;
    a->pub.refused = v->u.arr.dtype < 0 ? v->u.arr.why : NULL;
    v->u.arr.rec = (uint32_t)++ck->narr;
    return ST_OK;
}

const ck_storage_type ck_storage_types[] = {
    {"DoubleStorage", ST_F64, 8},       {"FloatStorage", ST_F32, 4},
    {"HalfStorage", ST_F16, 2},         {"BFloat16Storage", ST_BF16, 2},
    {"LongStorage", ST_I64, 8},         {"IntStorage", ST_I32, 4},
    {"ShortStorage", ST_I16, 2},        {"CharStorage", ST_I8, 1},
    {"ByteStorage", ST_U8, 1},          {"BoolStorage", ST_BOOL, 1},
    {"ComplexFloatStorage", ST_C64, 8}, {"ComplexDoubleStorage", -1, 16},
    {"UInt16Storage", ST_U16, 2},       {"UInt32Storage", ST_U32, 4},
    {"UInt64Storage", ST_U64, 8},       {"Float8_e5m2Storage", ST_F8_E5M2, 1},
    {"Float8_e4m3fnStorage", ST_F8_E4M3, 1}, {"Float8_e5m2fnuzStorage", ST_F8_E5M2FNUZ, 1},
    {"Float8_e4m3fnuzStorage", ST_F8_E4M3FNUZ, 1}, {"Float8_e8m0fnuStorage", ST_F8_E8M0, 1},
    {"QUInt8Storage", -1, 1},           {"QInt8Storage", -1, 1},
    {"QInt32Storage", -1, 4},           {"QUInt4x2Storage", -1, 1},
    {"QUInt2x4Storage", -1, 1},         {"UntypedStorage", ST_U8, 1},
};
const size_t ck_storage_type_count = sizeof ck_storage_types / sizeof ck_storage_types[0];

int ck_pid_error(st_error *err, const char *what)
{
    return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "persistent id: %s", what);
}

/* ('storage', storage_type, key, location, numel[, view_metadata]) */
static int on_persid(void *ctx, pk_value *pid, uint32_t *index, st_error *err)
{
    st_ckpt *ck = ctx;
    if (!pid || pid->kind != PK_TUPLE || pid->u.seq.n < 5 || !pk_is_str(pid->u.seq.v[0], "storage"))
        return ck_pid_error(err, "not a ('storage', type, key, location, size) tuple");
    pk_value **a = pid->u.seq.v;
    pk_value *type = a[1], *key = a[2], *numel = a[4];
    if (type->kind != PK_GLOBAL || key->kind != PK_STR || numel->kind != PK_INT || numel->u.i < 0)
        return ck_pid_error(err, "storage type, key or size of the wrong kind");
    /* exact lengths: a module name may hold a NUL byte */
    size_t ml = type->u.g.modn;
    const char *mod = type->u.g.mod;
    if (!((ml == 5 && memcmp(mod, "torch", 5) == 0) || (ml == 10 && memcmp(mod, "torch.cuda", 10) == 0) ||
          (ml == 13 && memcmp(mod, "torch.storage", 13) == 0)))
        return ck_pid_error(err, "storage type is not a torch storage class");
    int found = -1;
    for (size_t i = 0; i < sizeof ck_storage_types / sizeof ck_storage_types[0]; i++)
        if (strlen(ck_storage_types[i].name) == type->u.g.namen &&
            memcmp(ck_storage_types[i].name, type->u.g.name, type->u.g.namen) == 0)
            found = (int)i;
    if (found < 0) {
        char q[120];
        st_quote_name(q, sizeof q, type->u.g.name, type->u.g.namen);
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "unknown storage class torch.%s", q);
    }
    bool legacy = ck->format == ST_FORMAT_LEGACY_PICKLE;
    pk_value *view = legacy && pid->u.seq.n >= 6 ? a[5] : NULL;
    if (view && view->kind == PK_NONE)
        view = NULL;
    if (view && (view->kind != PK_TUPLE || view->u.seq.n != 3 || view->u.seq.v[0]->kind != PK_STR ||
                 view->u.seq.v[1]->kind != PK_INT || view->u.seq.v[2]->kind != PK_INT ||
                 view->u.seq.v[1]->u.i < 0 || view->u.seq.v[2]->u.i < 0))
        return ck_pid_error(err, "bad storage view metadata");
    /* The storage this pid names: a view's own key, else the root key. */
    const char *k = view ? view->u.seq.v[0]->u.s.p : key->u.s.p;
    size_t kn = view ? view->u.seq.v[0]->u.s.n : key->u.s.n;
    const char *rk = k; /* the record's own name */
    size_t rkn = kn;
    if (ck->const_keys) { /* constants/0 is not data/0 */
        char *ckey = st_arena_alloc(&ck->arena, kn + 11, NULL);
        if (!ckey)
            return ck_nomem(err);
        memcpy(ckey, "constants/", 10);
        memcpy(ckey + 10, k, kn);
        ckey[kn + 10] = 0;
        k = ckey;
        kn += 10;
    }
    uint64_t h = ck_hash(ck, k, kn);
    uint32_t *slot = ck_index_slot(&ck->st_index, ck, h, k, kn, ck_st_eq);
    if (slot && *slot) {
        ck_storage *s = &ck->st[*slot - 1];
        if (strcmp(s->type_name, ck_storage_types[found].name) != 0)
            return ck_pid_error(err, "one storage used with two element types");
        *index = *slot - 1;
        return ST_OK;
    }
    int64_t root = -1;
    if (view) { /* the root first */
        uint32_t ri;
        pk_value rootpid = *pid;
        pk_value *items[6];
        memcpy(items, a, 5 * sizeof *items);
        items[5] = NULL;
        pk_value none = {.kind = PK_NONE};
        items[5] = &none;
        rootpid.u.seq.v = items;
        rootpid.u.seq.n = 6;
        int rc = on_persid(ctx, &rootpid, &ri, err);
        if (rc)
            return rc;
        root = ri;
        uint64_t vo = (uint64_t)view->u.seq.v[1]->u.i, vs = (uint64_t)view->u.seq.v[2]->u.i;
        if (vo > ck->st[ri].numel || vs > ck->st[ri].numel - vo)
            return ck_pid_error(err, "storage view outside its root storage");
    }
    if (ck->nst >= UINT32_MAX - 1 || ck_index_grow(&ck->st_index, ck, ck_st_hash) ||
        ck_grow((void **)&ck->st, &ck->stcap, ck->nst + 1, sizeof *ck->st))
        return ck_nomem(err);
    ck_storage *s = &ck->st[ck->nst];
    memset(s, 0, sizeof *s);
    s->key = st_arena_strdup(&ck->arena, k, kn, NULL);
    if (!s->key)
        return ck_nomem(err);
    s->key_len = kn;
    s->type_name = ck_storage_types[found].name;
    s->dtype = ck_storage_types[found].dtype;
    s->elem = ck_storage_types[found].elem;
    s->swap = s->dtype == ST_C64 ? 4 : s->elem > 1 ? s->elem : 0;
    s->numel = view ? (uint64_t)view->u.seq.v[2]->u.i : (uint64_t)numel->u.i;
    s->root = root;
    s->view_off = view ? (uint64_t)view->u.seq.v[1]->u.i : 0;
    s->be = ck->big_endian;
    if (s->numel > UINT64_MAX / s->elem)
        return ck_pid_error(err, "storage size overflows");
    if (ck->format == ST_FORMAT_ZIP_PICKLE || ck->format == ST_FORMAT_TORCHSCRIPT) {
        /* the record: <prefix>data/<key> (constants/<key> for constants.pkl) */
        const char *dir = ck->rec_dir ? ck->rec_dir : "data/";
        size_t dl = strlen(dir), need = ck->zip.prefix_len + dl + rkn;
        char *rec = malloc(need + 1);
        if (!rec)
            return ck_nomem(err);
        memcpy(rec, ck->zip.prefix, ck->zip.prefix_len);
        memcpy(rec + ck->zip.prefix_len, dir, dl);
        memcpy(rec + ck->zip.prefix_len + dl, rk, rkn);
        rec[need] = 0;
        const st_zip_entry *en = st_zip_find(&ck->zip, rec, need);
        char q[200];
        st_quote_name(q, sizeof q, rec, need);
        free(rec);
        if (!en)
            return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "storage record %s is missing from the archive", q);
        if (en->method != 0)
            return st_fail(err, ST_E_UNSUPPORTED, en->header_offset, "storage record %s is compressed", q);
        if (en->size != s->numel * s->elem)
            return st_fail(err, ST_E_CKPT_TENSOR, en->header_offset,
                           "storage record %s holds %llu bytes, its pickle says %llu", q,
                           (unsigned long long)en->size, (unsigned long long)(s->numel * s->elem));
        s->offset = en->data_offset;
        s->located = true;
    }
    ck_index_insert(&ck->st_index, h, (uint32_t)ck->nst);
    *index = (uint32_t)ck->nst++;
    return ST_OK;
}

/* ---- naming: flattening the unpickled object ---- */

static int name_push(st_ckpt *ck, const char *s, size_t n, size_t *saved, st_error *err)
{
    *saved = ck->name_len;
    size_t need = ck->name_len + 1 + n + 1;
    if (ck_grow((void **)&ck->name, &ck->name_cap, need, 1))
        return ck_nomem(err);
    if (ck->name_len)
        ck->name[ck->name_len++] = '.';
    memcpy(ck->name + ck->name_len, s, n);
    ck->name_len += n;
    ck->name[ck->name_len] = 0;
    return ST_OK;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xe0) == 0xc0) { k = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { k = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { k = 3; cp = c & 0x07; }
        else return false;
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static int emit_tensor(st_ckpt *ck, const pk_value *tv, st_error *err)
{
    char q[160];
    st_quote_name(q, sizeof q, ck->name, ck->name_len);
    uint64_t limit = ck->name_limit ? ck->name_limit : ck->lim.max_tensors;
    if (ck->nt >= limit)
        return st_fail(err, ST_E_PICKLE_LIMIT, ST_NO_OFFSET,
                       "more than %llu tensor names (for a pickle of this size)",
                       (unsigned long long)limit);
    if (!utf8_valid((const unsigned char *)ck->name, ck->name_len))
        return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "tensor name %s is not UTF-8", q);
    const ck_storage *s = &ck->st[tv->u.t.storage->u.st.index];
    if (s->dtype < 0)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "tensor %s is a torch.%s, which safetensors cannot hold",
                       q, s->type_name);
    uint32_t rank = tv->u.t.rank;
    uint64_t nel;
    if (!st_shape_product(tv->u.t.shape, rank, &nel) || nel > UINT64_MAX / s->elem)
        return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "tensor %s: element count overflows", q);
    int contiguous = 1;
    if (nel) {
        /* last element's index in the storage must exist */
        uint64_t last = tv->u.t.offset, expect = 1;
        for (uint32_t i = rank; i-- > 0;) {
            uint64_t d = tv->u.t.shape[i], st = tv->u.t.stride[i], span;
            if (__builtin_mul_overflow(d - 1, st, &span) || __builtin_add_overflow(last, span, &last))
                return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "tensor %s: strides overflow", q);
            if (d != 1 && st != expect)
                contiguous = 0;
            expect *= d;
        }
        if (last >= s->numel)
            return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET,
                           "tensor %s reaches element %llu of a storage of %llu elements", q,
                           (unsigned long long)last, (unsigned long long)s->numel);
    } else if (tv->u.t.offset > s->numel) {
        return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "tensor %s: offset past its storage", q);
    }
    uint64_t h = ck_hash(ck, ck->name, ck->name_len);
    uint32_t *slot = ck_index_slot(&ck->t_index, ck, h, ck->name, ck->name_len, t_eq);
    if (slot && *slot)
        return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "two tensors are named %s", q);
    if (ck_index_grow(&ck->t_index, ck, t_hash) || ck_grow((void **)&ck->t, &ck->tcap, ck->nt + 1, sizeof *ck->t))
        return ck_nomem(err);
    ck_tensor *t = &ck->t[ck->nt];
    memset(t, 0, sizeof *t);
    t->storage = tv->u.t.storage->u.st.index;
    st_ckpt_tensor *p = &t->pub;
    p->name = st_arena_strdup(&ck->arena, ck->name, ck->name_len, NULL);
    uint64_t *shape = st_arena_alloc(&ck->arena, (rank ? rank : 1) * sizeof *shape * 2, NULL);
    if (!p->name || !shape)
        return ck_nomem(err);
    memcpy(shape, tv->u.t.shape, rank * sizeof *shape);
    memcpy(shape + rank, tv->u.t.stride, rank * sizeof *shape);
    p->name_len = ck->name_len;
    p->dtype = (st_dtype)s->dtype;
    p->rank = rank;
    p->shape = shape;
    p->strides = shape + rank;
    p->storage_offset = tv->u.t.offset;
    p->nelements = nel;
    p->nbytes = nel * s->elem;
    p->storage_key = s->key;
    p->contiguous = contiguous;
    ck_index_insert(&ck->t_index, h, (uint32_t)ck->nt);
    ck->nt++;
    return ST_OK;
}

static int flatten(st_ckpt *ck, pk_value *v, uint32_t depth, st_error *err);

/* A TorchScript module object: an instance of a class the archive's code
 * defines (__torch__.*), its attributes set by BUILD as a dict. */
static bool ts_module(const st_ckpt *ck, const pk_value *v)
{
    if (ck->format != ST_FORMAT_TORCHSCRIPT || v->kind != PK_OBJECT || !v->u.o.cls ||
        v->u.o.cls->kind != PK_GLOBAL || !v->u.o.state || v->u.o.state->kind != PK_DICT)
        return false;
    const pk_value *g = v->u.o.cls;
    return g->u.g.modn >= 9 && memcmp(g->u.g.mod, "__torch__", 9) == 0 &&
           (g->u.g.modn == 9 || g->u.g.mod[9] == '.');
}

/* A numpy array where a tensor would be: a tensor on a storage made of
 * the array's bytes (kept in its pickle's arena), or, for a dtype that is
 * no tensor's, a note on the array's record and nothing else. */
static int emit_array(st_ckpt *ck, pk_value *v, st_error *err)
{
    ck_array *rec = v->u.arr.rec ? &ck->arr[v->u.arr.rec - 1] : NULL;
    if (rec && !rec->pub.name) {
        rec->pub.name = st_arena_strdup(&ck->arena, ck->name, ck->name_len, NULL);
        rec->pub.name_len = ck->name_len;
        if (!rec->pub.name)
            return ck_nomem(err);
    }
    if (v->u.arr.dtype < 0 || !v->u.arr.data) {
        if (rec && !rec->pub.refused)
            rec->pub.refused = v->u.arr.why ? v->u.arr.why : "no data";
        return ST_OK;
    }
    /* one storage per array: offsets alone repeat across deflated pickles */
    char key[48];
    int kl = snprintf(key, sizeof key, "numpy#%u@%llu", (unsigned)v->u.arr.rec,
                      (unsigned long long)v->u.arr.offset);
    uint64_t h = ck_hash(ck, key, (size_t)kl);
    uint32_t *slot = ck_index_slot(&ck->st_index, ck, h, key, (size_t)kl, ck_st_eq), si;
    if (slot && *slot) {
        si = *slot - 1;
    } else {
        if (ck->nst >= UINT32_MAX - 1 || ck_index_grow(&ck->st_index, ck, ck_st_hash) ||
            ck_grow((void **)&ck->st, &ck->stcap, ck->nst + 1, sizeof *ck->st))
            return ck_nomem(err);
        ck_storage *s = &ck->st[ck->nst];
        memset(s, 0, sizeof *s);
        s->key = st_arena_strdup(&ck->arena, key, (size_t)kl, NULL);
        if (!s->key)
            return ck_nomem(err);
        s->key_len = (size_t)kl;
        s->type_name = "numpy.ndarray";
        s->dtype = v->u.arr.dtype;
        s->elem = v->u.arr.elem;
        s->swap = s->dtype == ST_C64 ? 4 : s->elem > 1 ? s->elem : 0;
        s->be = v->u.arr.order == '>';
        s->numel = v->u.arr.numel;
        s->root = -1;
        s->mem = v->u.arr.data;
        s->located = true;
        ck_index_insert(&ck->st_index, h, (uint32_t)ck->nst);
        si = (uint32_t)ck->nst++;
    }
    uint32_t rank = v->u.arr.rank;
    uint64_t *stride = malloc((rank ? rank : 1) * sizeof *stride);
    if (!stride)
        return ck_nomem(err);
    /* C order, or Fortran order (first index fastest), in elements */
    uint64_t acc = 1;
    for (uint32_t i = 0; i < rank; i++) {
        uint32_t d = v->u.arr.fortran ? i : rank - 1 - i;
        stride[d] = acc;
        acc *= v->u.arr.shape[d] ? v->u.arr.shape[d] : 1;
    }
    pk_value sv = {.kind = PK_STORAGE};
    sv.u.st.index = si;
    pk_value tv = {.kind = PK_TENSOR};
    tv.u.t.storage = &sv;
    tv.u.t.rank = rank;
    tv.u.t.shape = v->u.arr.shape;
    tv.u.t.stride = stride;
    int rc = emit_tensor(ck, &tv, err);
    free(stride);
    return rc;
}

/* A tensor torch rebuilds with a function we do not read (sparse,
 * quantized, nested, meta, numpy-backed...): an error where it would be
 * named, rather than a tensor silently missing from the output. */
static bool unsupported_tensor(const pk_value *v)
{
    if (v->kind != PK_OBJECT || !v->u.o.cls || v->u.o.cls->kind != PK_GLOBAL)
        return false;
    const pk_value *g = v->u.o.cls;
    bool torch_mod = (g->u.g.modn == 12 && memcmp(g->u.g.mod, "torch._utils", 12) == 0) ||
                     (g->u.g.modn == 13 && memcmp(g->u.g.mod, "torch._tensor", 13) == 0);
    return torch_mod && g->u.g.namen > 9 && memcmp(g->u.g.name, "_rebuild_", 9) == 0;
}

static int flatten_child(st_ckpt *ck, const char *key, size_t keylen, pk_value *v, uint32_t depth, st_error *err)
{
    if (unsupported_tensor(v)) {
        size_t saved;
        int rc = name_push(ck, key, keylen, &saved, err);
        char q[160];
        st_quote_name(q, sizeof q, ck->name, ck->name_len);
        if (!rc)
            rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                         "tensor %s is rebuilt by torch.%s.%s (a sparse, quantized or other special "
                         "tensor), which safetensors cannot hold",
                         q, v->u.o.cls->u.g.mod + 6, v->u.o.cls->u.g.name);
        ck->name_len = saved;
        return rc;
    }
    if (v->kind != PK_TENSOR && v->kind != PK_DICT && v->kind != PK_LIST && v->kind != PK_TUPLE &&
        v->kind != PK_ARRAY && !ts_module(ck, v))
        return ST_OK; /* non-tensor values are dropped */
    size_t saved;
    int rc = name_push(ck, key, keylen, &saved, err);
    if (!rc)
        rc = flatten(ck, v, depth + 1, err);
    ck->name_len = saved;
    if (ck->name)
        ck->name[saved] = 0;
    return rc;
}

static int flatten(st_ckpt *ck, pk_value *v, uint32_t depth, st_error *err)
{
    if (++ck->visits > ck->visit_limit)
        return st_fail(err, ST_E_PICKLE_LIMIT, ST_NO_OFFSET,
                       "more than %llu container entries to walk (shared containers nested like a bomb?)",
                       (unsigned long long)ck->visit_limit);
    if (depth > ck->lim.max_depth)
        return st_fail(err, ST_E_PICKLE_LIMIT, ST_NO_OFFSET, "containers nested deeper than %u",
                       ck->lim.max_depth);
    if (v->kind == PK_TENSOR)
        return emit_tensor(ck, v, err);
    if (v->kind == PK_ARRAY)
        return emit_array(ck, v, err);
    if (v->visiting)
        return ST_OK; /* a cycle holds nothing new */
    int rc = ST_OK;
    v->visiting = 1;
    bool mod = ts_module(ck, v);
    pk_value *d = mod ? v->u.o.state : v;
    /* a module whose class the code declares: only the tensors its
     * __parameters__ / __buffers__ name, as state_dict() */
    char *qual = NULL;
    size_t qn = 0;
    if (mod && !ck->tsn_full) {
        const pk_value *g = v->u.o.cls;
        qn = g->u.g.modn + 1 + g->u.g.namen;
        qual = malloc(qn + 1 + 257);
        if (!qual) {
            v->visiting = 0;
            return ck_nomem(err);
        }
        memcpy(qual, g->u.g.mod, g->u.g.modn);
        qual[g->u.g.modn] = '.';
        memcpy(qual + g->u.g.modn + 1, g->u.g.name, g->u.g.namen);
        if (!ck_ts_declared(ck, qual, qn)) {
            free(qual);
            qual = NULL;
        }
    }
    if (d->kind == PK_DICT) {
        for (size_t i = 0; i < d->u.seq.n && !rc; i++) {
            pk_value *k = d->u.seq.v[2 * i], *val = d->u.seq.v[2 * i + 1];
            if (qual && (val->kind == PK_TENSOR || val->kind == PK_ARRAY)) {
                if (k->kind != PK_STR || k->u.s.n > 256)
                    continue;
                qual[qn] = '\n';
                memcpy(qual + qn + 1, k->u.s.p, k->u.s.n);
                if (!ck_ts_declared(ck, qual, qn + 1 + k->u.s.n))
                    continue; /* a plain tensor attribute: not in state_dict() */
            } else if (qual && !ts_module(ck, val)) {
                continue; /* lists of tensors (LSTM's _flat_weights) are not either */
            }
            char num[32];
            if (k->kind == PK_STR)
                rc = flatten_child(ck, k->u.s.p, k->u.s.n, val, depth, err);
            else if (k->kind == PK_INT) {
                int n = snprintf(num, sizeof num, "%lld", (long long)k->u.i);
                rc = flatten_child(ck, num, (size_t)n, val, depth, err);
            } /* other key kinds: dropped */
        }
        free(qual);
    } else if (v->kind == PK_LIST || v->kind == PK_TUPLE) {
        for (size_t i = 0; i < v->u.seq.n && !rc; i++) {
            char num[32];
            int n = snprintf(num, sizeof num, "%zu", i);
            rc = flatten_child(ck, num, (size_t)n, v->u.seq.v[i], depth, err);
        }
    }
    v->visiting = 0;
    return rc;
}

pk_value *ck_dict_get(pk_value *d, const char *key)
{
    if (!d || d->kind != PK_DICT)
        return NULL;
    pk_value *found = NULL;
    for (size_t i = 0; i < d->u.seq.n; i++)
        if (pk_is_str(d->u.seq.v[2 * i], key))
            found = d->u.seq.v[2 * i + 1]; /* last one wins, as in a dict */
    return found;
}

static int add_meta(st_ckpt *ck, const char *k, size_t kn, const char *v, size_t vn)
{
    const char *vs = st_arena_strdup(&ck->arena, v, vn, NULL);
    if (!vs)
        return ST_E_NOMEM;
    /* a repeated key replaces the earlier value, as in a dict */
    for (size_t i = 0; i < ck->nmeta; i++)
        if (ck->meta[i].kl == kn && memcmp(ck->meta[i].k, k, kn) == 0) {
            ck->meta[i].v = vs;
            ck->meta[i].vl = vn;
            return ST_OK;
        }
    const char *ks = st_arena_strdup(&ck->arena, k, kn, NULL);
    if (!ks || ck_grow((void **)&ck->meta, &ck->mcap, ck->nmeta + 1, sizeof *ck->meta))
        return ST_E_NOMEM;
    ck->meta[ck->nmeta++] = (struct ck_meta){ks, vs, kn, vn};
    return ST_OK;
}

static int collect_meta(st_ckpt *ck, pk_value *root, st_error *err)
{
    if (!root || root->kind != PK_DICT)
        return ST_OK;
    for (size_t i = 0; i < root->u.seq.n && ck->nmeta < 1024; i++) {
        pk_value *k = root->u.seq.v[2 * i], *v = root->u.seq.v[2 * i + 1];
        if (k->kind != PK_STR || k->u.s.n > 256 || !utf8_valid((const unsigned char *)k->u.s.p, k->u.s.n))
            continue;
        char buf[64];
        const char *val = buf;
        size_t vn;
        if (v->kind == PK_BOOL)
            vn = (size_t)snprintf(buf, sizeof buf, "%s", v->u.i ? "True" : "False");
        else if (v->kind == PK_INT)
            vn = (size_t)snprintf(buf, sizeof buf, "%lld", (long long)v->u.i);
        else if (v->kind == PK_FLOAT) {
            /* shortest text that reads back exactly, as Python's repr */
            int prec = 1;
            for (; prec < 17; prec++) {
                snprintf(buf, sizeof buf, "%.*g", prec, v->u.f);
                if (strtod(buf, NULL) == v->u.f)
                    break;
            }
            vn = (size_t)snprintf(buf, sizeof buf, "%.*g", prec, v->u.f);
        } else if (v->kind == PK_STR && v->u.s.n <= 1024 &&
                   utf8_valid((const unsigned char *)v->u.s.p, v->u.s.n)) {
            val = v->u.s.p;
            vn = v->u.s.n;
        } else
            continue;
        if (add_meta(ck, k->u.s.p, k->u.s.n, val, vn))
            return ck_nomem(err);
    }
    return ST_OK;
}

int ck_name_tensors(st_ckpt *ck, pk_value *root, uint64_t pickle_bytes, st_error *err)
{
    /* A walk visits each container entry once per path to it: shared
     * containers nested like a bomb multiply the paths, so the walk gets
     * max(1 Mi, 64 x the pickle's bytes) visits at most. */
    ck->visit_limit = pk_scaled_limit(ck->lim.max_visits, (uint64_t)1 << 20, pickle_bytes);
    /* Each name costs the pickle at least a key and a reference (8+ bytes),
     * so P / 8 names (16 Ki at least) is room for any real checkpoint;
     * a bomb whose paths all lead to one shared tensor is stopped early. */
    uint64_t names = pickle_bytes / 8 > (16u << 10) ? pickle_bytes / 8 : (16u << 10);
    ck->name_limit = names < ck->lim.max_tensors ? names : ck->lim.max_tensors;
    int rc = collect_meta(ck, root, err);
    if (rc)
        return rc;
    pk_value *v = root;
    for (int i = 0; i < 2; i++) { /* state_dict, also nested once more */
        pk_value *sd = ck_dict_get(v, "state_dict");
        if (sd && sd->kind == PK_DICT)
            v = sd;
    }
    ck->name_len = 0;
    if (v->kind == PK_TENSOR || v->kind == PK_ARRAY) {
        size_t saved;
        if ((rc = name_push(ck, "tensor", 6, &saved, err)))
            return rc;
        return v->kind == PK_TENSOR ? emit_tensor(ck, v, err) : emit_array(ck, v, err);
    }
    return flatten(ck, v, 0, err);
}

/* ---- containers ---- */

void ck_scan_note(st_ckpt *ck, const st_error *e)
{
    if (!ck->has_scan_err) {
        ck->scan_err = *e;
        ck->has_scan_err = true;
    }
}

const pk_hooks *ck_hooks_for(st_ckpt *ck, pk_hooks *h)
{
    h->ctx = ck;
    h->global = on_global;
    h->persid = on_persid;
    h->array = on_array;
    h->persid_value = NULL;
    return h;
}

/* A pickle inside the zip: stored (pread straight) or deflated (inflated
 * into memory, bounded by max_pickle_bytes). CRC checked either way. */
static int run_zip_pickle(st_ckpt *ck, const st_zip_entry *en, bool interpret, pk_machine **m, pk_value **res,
                          st_error *err)
{
    pk_hooks h;
    ck_hooks_for(ck, &h);
    char q[200];
    st_quote_name(q, sizeof q, en->name, en->name_len);
    if (en->size > ck->lim.max_pickle_bytes)
        return st_fail(err, ST_E_PICKLE_LIMIT, en->data_offset, "pickle %s is larger than the limit", q);
    /* CRC over the raw bytes first, in chunks */
    unsigned char *buf = malloc(1u << 16);
    unsigned char *out = NULL;
    if (!buf)
        return ck_nomem(err);
    int rc = ST_OK;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    bool inflating = en->method == 8;
    if (inflating) {
        out = malloc(en->size ? (size_t)en->size : 1);
        if (!out || inflateInit2(&zs, -15) != Z_OK) {
            free(buf);
            free(out);
            return ck_nomem(err);
        }
        zs.next_out = out;
        zs.avail_out = (uInt)en->size;
        if (en->size > UINT32_MAX) {
            rc = st_fail(err, ST_E_UNSUPPORTED, en->data_offset, "compressed pickle %s over 4 GiB", q);
            goto done;
        }
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t off = 0; off < en->csize;) {
        size_t n = en->csize - off < (1u << 16) ? (size_t)(en->csize - off) : (1u << 16);
        if (st_pread_full(ck->fd, buf, n, en->data_offset + off)) {
            rc = st_fail(err, ST_E_IO, en->data_offset + off, "read error");
            goto done;
        }
        if (inflating) {
            zs.next_in = buf;
            zs.avail_in = (uInt)n;
            int zr = inflate(&zs, Z_NO_FLUSH);
            if (zr != Z_OK && zr != Z_STREAM_END) {
                rc = st_fail(err, ST_E_ZIP, en->data_offset, "bad deflate data in %s", q);
                goto done;
            }
        } else
            crc = crc32(crc, buf, (uInt)n);
        off += n;
    }
    if (inflating) {
        if (zs.total_out != en->size) {
            rc = st_fail(err, ST_E_ZIP, en->data_offset, "%s inflates to the wrong size", q);
            goto done;
        }
        crc = crc32(0L, out, (uInt)en->size);
    }
    if (crc != en->crc32) {
        rc = st_fail(err, ST_E_ZIP, en->data_offset, "CRC-32 mismatch in %s", q);
        goto done;
    }
    if (inflating)
        rc = pk_run_memory(out, (size_t)en->size, &ck->lim, &h, interpret, m, res, NULL, err);
    else
        rc = pk_run(ck->fd, en->data_offset, en->data_offset + en->size, &ck->lim, &h, interpret, m, res, NULL, err);
done:
    if (inflating)
        inflateEnd(&zs);
    free(buf);
    free(out);
    return rc;
}

/* Keeps a pickle's arena alive with the checkpoint when numpy arrays the
 * tensors read from were rebuilt in it; else frees it. */
int ck_keep_machine(st_ckpt *ck, pk_machine *m, size_t narr_before, st_error *err)
{
    if (!m || ck->narr == narr_before) {
        pk_free(m);
        return ST_OK;
    }
    if (ck_grow((void **)&ck->keep, &ck->keepcap, ck->nkeep + 1, sizeof *ck->keep)) {
        pk_free(m);
        return ck_nomem(err);
    }
    ck->keep[ck->nkeep++] = m;
    return ST_OK;
}

static bool has_suffix(const char *s, size_t n, const char *suf)
{
    size_t l = strlen(suf);
    return n >= l && memcmp(s + n - l, suf, l) == 0;
}

/* Every pickle of an archive: *.pkl, TorchScript's *.debug_pkl, and
 * stored entries under extra/ that begin as a pickle does. */
static bool is_pickle_entry(const st_ckpt *ck, const st_zip_entry *en)
{
    const char *rest = en->name + ck->zip.prefix_len;
    size_t rl = en->name_len - ck->zip.prefix_len;
    if (has_suffix(rest, rl, ".pkl") || has_suffix(rest, rl, ".debug_pkl"))
        return true;
    unsigned char b = 0;
    return rl > 6 && memcmp(rest, "extra/", 6) == 0 && en->method == 0 && en->size >= 2 &&
           st_pread_full(ck->fd, &b, 1, en->data_offset) == 0 && b == 0x80;
}

/* constants.pkl: a tuple the code calls CONSTANTS.c0, c1, ... */
static int name_constants(st_ckpt *ck, pk_value *res, st_error *err)
{
    if (!res || res->kind != PK_TUPLE)
        return st_fail(err, ST_E_CKPT_FORMAT, ST_NO_OFFSET, "constants.pkl does not hold a tuple");
    int rc = ST_OK;
    for (size_t i = 0; i < res->u.seq.n && !rc; i++) {
        pk_value *v = res->u.seq.v[i];
        if (v->kind != PK_TENSOR && v->kind != PK_ARRAY)
            continue;
        char nm[48];
        int n = snprintf(nm, sizeof nm, "CONSTANTS.c%zu", i);
        ck->name_len = 0;
        size_t saved;
        if ((rc = name_push(ck, nm, (size_t)n, &saved, err)))
            break;
        rc = v->kind == PK_TENSOR ? emit_tensor(ck, v, err) : emit_array(ck, v, err);
    }
    ck->name_len = 0;
    return rc;
}

static int open_zip(st_ckpt *ck, st_error *err)
{
    int rc = st_zip_open(ck->fd, ck->size, &ck->zip, err);
    if (rc)
        return rc;
    if (ck->format == ST_FORMAT_ZIP_PICKLE && zip_is_torchscript(&ck->zip))
        ck->format = ST_FORMAT_TORCHSCRIPT;
    /* TorchScript code: listed and lexed, never run (both modes) */
    for (size_t i = 0; i < ck->zip.count; i++) {
        const st_zip_entry *en = &ck->zip.entries[i];
        if (!ck_ts_is_code(ck, en))
            continue;
        st_error e = {0};
        if (en->size > ck->lim.max_pickle_bytes)
            rc = st_fail(&e, ST_E_PICKLE_LIMIT, en->data_offset, "code file larger than the limit");
        else
            rc = ck_ts_scan_code(ck, en, &e);
        if (rc) {
            if (!ck->scan_only) {
                if (err)
                    *err = e;
                return rc;
            }
            ck_scan_note(ck, &e);
            rc = ST_OK;
        }
    }
    if (ck->scan_only) {
        /* every pickle in the archive (data.pkl, constants.pkl, ...) */
        for (size_t i = 0; i < ck->zip.count; i++) {
            const st_zip_entry *en = &ck->zip.entries[i];
            if (!is_pickle_entry(ck, en))
                continue;
            ck->pickle_label = en->name;
            st_error e = {0};
            pk_machine *m = NULL;
            pk_value *res;
            if (run_zip_pickle(ck, en, false, &m, &res, &e))
                ck_scan_note(ck, &e);
            pk_free(m);
        }
        return ST_OK;
    }
    size_t pl = ck->zip.prefix_len;
    char name[4096];
    if (pl + 16 > sizeof name)
        return st_fail(err, ST_E_ZIP, ST_NO_OFFSET, "top-level folder name too long");
    memcpy(name, ck->zip.prefix, pl);
    memcpy(name + pl, "byteorder", 10);
    const st_zip_entry *bo = st_zip_find(&ck->zip, name, pl + 9);
    if (bo) {
        char b[8] = {0};
        if (bo->method != 0 || bo->size > 6 || st_pread_full(ck->fd, b, (size_t)bo->size, bo->data_offset))
            return st_fail(err, ST_E_ZIP, bo->header_offset, "unreadable byteorder record");
        if (bo->size == 3 && memcmp(b, "big", 3) == 0)
            ck->big_endian = true;
        else if (!(bo->size == 6 && memcmp(b, "little", 6) == 0))
            return st_fail(err, ST_E_CKPT_FORMAT, bo->data_offset, "byteorder record is neither 'little' nor 'big'");
    }
    pk_machine *m = NULL;
    pk_value *res = NULL;
    size_t before;
    if (ck->format == ST_FORMAT_TORCHSCRIPT) {
        memcpy(name + pl, "constants.pkl", 14);
        const st_zip_entry *ce = st_zip_find(&ck->zip, name, pl + 13);
        if (ce) {
            ck->pickle_label = ce->name;
            ck->rec_dir = "constants/";
            ck->const_keys = true;
            before = ck->narr;
            rc = run_zip_pickle(ck, ce, true, &m, &res, err);
            if (!rc)
                rc = name_constants(ck, res, err);
            ck->rec_dir = NULL;
            ck->const_keys = false;
            int krc = ck_keep_machine(ck, m, before, err);
            m = NULL;
            if (rc || krc)
                return rc ? rc : krc;
        }
    }
    memcpy(name + pl, "data.pkl", 9);
    const st_zip_entry *en = st_zip_find(&ck->zip, name, pl + 8);
    if (!en)
        return st_fail(err, ST_E_CKPT_FORMAT, ST_NO_OFFSET, "zip archive without %s (not a PyTorch checkpoint)", name);
    ck->pickle_label = en->name;
    before = ck->narr;
    rc = run_zip_pickle(ck, en, true, &m, &res, err);
    if (!rc)
        rc = ck_name_tensors(ck, res, en->size, err);
    int krc = ck_keep_machine(ck, m, before, err);
    return rc ? rc : krc;
}

static const char *const legacy_labels[5] = {"pickle 1 (magic number)", "pickle 2 (protocol)",
                                             "pickle 3 (sys info)", "pickle 4 (object)",
                                             "pickle 5 (storage keys)"};

static int open_legacy(st_ckpt *ck, st_error *err)
{
    pk_hooks h;
    ck_hooks_for(ck, &h);
    uint64_t pos = 0;
    int rc = ST_OK;
    pk_machine *main_m = NULL;
    pk_value *keys = NULL;
    pk_machine *keys_m = NULL;
    for (int i = 0; i < 5; i++) {
        ck->pickle_label = legacy_labels[i];
        pk_machine *m = NULL;
        pk_value *res = NULL;
        uint64_t end = 0;
        st_error e = {0};
        uint64_t pickle_start = pos;
        rc = pk_run(ck->fd, pos, ck->size, &ck->lim, &h, !ck->scan_only, &m, &res, &end, &e);
        if (rc) {
            pk_free(m);
            if (ck->scan_only) {
                ck_scan_note(ck, &e);
                rc = ST_OK;
                goto out;
            }
            if (err)
                *err = e;
            goto out;
        }
        pos = end;
        if (ck->scan_only) {
            pk_free(m);
            continue;
        }
        if (i == 0 && !is_legacy_magic(res))
            rc = st_fail(err, ST_E_CKPT_FORMAT, 0, "legacy checkpoint: wrong magic number");
        else if (i == 1 && !(res->kind == PK_INT && res->u.i == 1001))
            rc = st_fail(err, ST_E_CKPT_FORMAT, 0, "legacy checkpoint: protocol version is not 1001");
        else if (i == 2) {
            pk_value *le = ck_dict_get(res, "little_endian");
            if (res->kind != PK_DICT || !le || le->kind != PK_BOOL)
                rc = st_fail(err, ST_E_CKPT_FORMAT, 0, "legacy checkpoint: bad sys info");
            else
                ck->big_endian = !le->u.i;
        } else if (i == 3) {
            main_m = m;
            m = NULL;
            rc = ck_name_tensors(ck, res, end - pickle_start, err);
        } else if (i == 4) {
            keys = res;
            keys_m = m;
            m = NULL;
        }
        pk_free(m);
        if (rc)
            goto out;
    }
    if (ck->scan_only)
        goto out;
    /* Raw storages follow, in the order of the keys list: a u64 element
     * count, then the bytes. */
    if (keys->kind != PK_LIST) {
        rc = st_fail(err, ST_E_CKPT_FORMAT, pos, "legacy checkpoint: storage keys are not a list");
        goto out;
    }
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        pk_value *k = keys->u.seq.v[i];
        if (k->kind != PK_STR) {
            rc = st_fail(err, ST_E_CKPT_FORMAT, pos, "legacy checkpoint: a storage key is not a string");
            goto out;
        }
        uint32_t *slot = ck_index_slot(&ck->st_index, ck, ck_hash(ck, k->u.s.p, k->u.s.n), k->u.s.p, k->u.s.n, ck_st_eq);
        char q[120];
        st_quote_name(q, sizeof q, k->u.s.p, k->u.s.n);
        if (!slot || !*slot) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, pos, "legacy checkpoint: storage %s is not used by the object", q);
            goto out;
        }
        ck_storage *s = &ck->st[*slot - 1];
        unsigned char nb[8];
        if (s->root >= 0 || s->located) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, pos, "legacy checkpoint: storage %s listed twice or is a view", q);
            goto out;
        }
        if (pos > ck->size || ck->size - pos < 8 || st_pread_full(ck->fd, nb, 8, pos)) {
            rc = st_fail(err, ST_E_CKPT_FORMAT, pos, "legacy checkpoint: truncated at storage %s", q);
            goto out;
        }
        uint64_t numel = 0;
        for (int j = 0; j < 8; j++)
            numel |= (uint64_t)nb[ck->big_endian ? 7 - j : j] << (8 * j);
        if (numel != s->numel) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, pos,
                         "legacy checkpoint: storage %s holds %llu elements, its pickle says %llu", q,
                         (unsigned long long)numel, (unsigned long long)s->numel);
            goto out;
        }
        pos += 8;
        uint64_t nbytes = s->numel * s->elem;
        if (nbytes > ck->size - pos) {
            rc = st_fail(err, ST_E_CKPT_FORMAT, pos, "legacy checkpoint: storage %s runs past the end of the file", q);
            goto out;
        }
        s->offset = pos;
        s->located = true;
        pos += nbytes;
    }
    for (size_t i = 0; i < ck->nst; i++) {
        ck_storage *s = &ck->st[i];
        if (s->root >= 0) {
            const ck_storage *r = &ck->st[s->root];
            s->offset = r->offset + s->view_off * r->elem;
            s->located = r->located;
        }
        if (!s->located) {
            char q[120];
            st_quote_name(q, sizeof q, s->key, s->key_len);
            rc = st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "legacy checkpoint: storage %s has no data", q);
            goto out;
        }
    }
out:
    if (rc)
        pk_free(main_m);
    else
        rc = ck_keep_machine(ck, main_m, 0, err);
    pk_free(keys_m);
    return rc;
}

static void open_raw_scan(st_ckpt *ck)
{
    pk_hooks h;
    ck_hooks_for(ck, &h);
    uint64_t pos = 0;
    static const char *const labels[] = {"pickle 1", "pickle 2", "pickle 3", "pickle 4", "pickle 5+"};
    /* Consecutive pickles, as picklescan does, while one seems to follow. */
    for (int i = 0; pos < ck->size; i++) {
        if (i > 0) {
            unsigned char b;
            if (st_pread_full(ck->fd, &b, 1, pos) || b != 0x80)
                break;
        }
        ck->pickle_label = labels[i < 4 ? i : 4];
        pk_machine *m = NULL;
        pk_value *res;
        uint64_t end = pos;
        st_error e = {0};
        int rc = pk_run(ck->fd, pos, ck->size, &ck->lim, &h, false, &m, &res, &end, &e);
        pk_free(m);
        if (rc) {
            ck_scan_note(ck, &e);
            break;
        }
        pos = end;
    }
}

int st_ckpt_open(const char *path, unsigned flags, const st_ckpt_limits *limits, st_ckpt **out, st_error *err)
{
    if (!out)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "no output handle");
    *out = NULL;
    st_ckpt *ck = calloc(1, sizeof *ck);
    if (!ck)
        return ck_nomem(err);
    ck->fd = -1;
    ck->hash_seed = st_hash_seed(ck);
    if (limits)
        ck->lim = *limits;
    else
        st_ckpt_default_limits(&ck->lim);
    ck->scan_only = flags & ST_CKPT_SCAN;
    int rc = open_fd(path, &ck->fd, &ck->size, err);
    if (!rc)
        rc = detect_fd(ck->fd, ck->size, &ck->format, err);
    if (!rc) {
        switch (ck->format) {
        case ST_FORMAT_ZIP_PICKLE:
        case ST_FORMAT_TORCHSCRIPT:
            rc = open_zip(ck, err);
            break;
        case ST_FORMAT_TAR_PICKLE:
            rc = ck_open_tar(ck, err);
            break;
        case ST_FORMAT_LEGACY_PICKLE:
            rc = open_legacy(ck, err);
            break;
        case ST_FORMAT_RAW_PICKLE:
            if (ck->scan_only)
                open_raw_scan(ck);
            else
                rc = st_fail(err, ST_E_CKPT_FORMAT, 0,
                             "a bare pickle holds no tensor storages (only scanning is supported)");
            break;
        case ST_FORMAT_SAFETENSORS:
            rc = st_fail(err, ST_E_CKPT_FORMAT, 0, "a safetensors file, not a pickle (it cannot contain code)");
            break;
        default:
            rc = st_fail(err, ST_E_CKPT_FORMAT, 0, "not a PyTorch checkpoint or pickle");
        }
    }
    if (rc) {
        st_ckpt_close(ck);
        return rc;
    }
    free(ck->name);
    ck->name = NULL;
    ck->name_cap = 0;
    *out = ck;
    return ST_OK;
}

void st_ckpt_close(st_ckpt *ck)
{
    if (!ck)
        return;
    if (ck->fd >= 0)
        close(ck->fd);
    st_zip_free(&ck->zip);
    st_arena_free(&ck->arena);
    free(ck->st);
    free(ck->st_index.slots);
    free(ck->t);
    free(ck->t_index.slots);
    free(ck->g);
    free(ck->g_index.slots);
    free(ck->meta);
    free(ck->name);
    free(ck->code);
    free(ck->ops);
    free(ck->op_index.slots);
    free(ck->tsn);
    free(ck->tsn_index.slots);
    free(ck->arr);
    for (size_t i = 0; i < ck->nkeep; i++)
        pk_free(ck->keep[i]);
    free(ck->keep);
    free(ck->tt);
    free(ck);
}

st_format st_ckpt_format(const st_ckpt *ck) { return ck ? ck->format : ST_FORMAT_UNKNOWN; }
const st_error *st_ckpt_scan_error(const st_ckpt *ck) { return ck && ck->has_scan_err ? &ck->scan_err : NULL; }
size_t st_ckpt_tensor_count(const st_ckpt *ck) { return ck ? ck->nt : 0; }
const st_ckpt_tensor *st_ckpt_tensor_at(const st_ckpt *ck, size_t i)
{
    return ck && i < ck->nt ? &ck->t[i].pub : NULL;
}
size_t st_ckpt_global_count(const st_ckpt *ck) { return ck ? ck->ng : 0; }
const st_ckpt_global *st_ckpt_global_at(const st_ckpt *ck, size_t i) { return ck && i < ck->ng ? &ck->g[i] : NULL; }
size_t st_ckpt_dangerous_count(const st_ckpt *ck) { return ck ? ck->ndanger : 0; }
size_t st_ckpt_code_count(const st_ckpt *ck) { return ck ? ck->ncode : 0; }
const st_ckpt_code *st_ckpt_code_at(const st_ckpt *ck, size_t i) { return ck && i < ck->ncode ? &ck->code[i] : NULL; }
size_t st_ckpt_op_count(const st_ckpt *ck) { return ck ? ck->nops : 0; }
const st_ckpt_op *st_ckpt_op_at(const st_ckpt *ck, size_t i) { return ck && i < ck->nops ? &ck->ops[i] : NULL; }
size_t st_ckpt_array_count(const st_ckpt *ck) { return ck ? ck->narr : 0; }
const st_ckpt_array *st_ckpt_array_at(const st_ckpt *ck, size_t i) { return ck && i < ck->narr ? &ck->arr[i].pub : NULL; }

st_safety st_ckpt_safety(const st_ckpt *ck)
{
    if (!ck)
        return ST_SAFETY_UNKNOWN;
    if (ck->ndanger || ck->ncode || ck->format == ST_FORMAT_TORCHSCRIPT)
        return ST_SAFETY_DANGEROUS;
    for (size_t i = 0; i < ck->ng; i++)
        if (ck->g[i].safety == ST_SAFETY_UNKNOWN)
            return ST_SAFETY_UNKNOWN;
    return ST_SAFETY_SAFE;
}
size_t st_ckpt_metadata_count(const st_ckpt *ck) { return ck ? ck->nmeta : 0; }

int st_ckpt_metadata_at(const st_ckpt *ck, size_t i, const char **key, size_t *key_len, const char **value,
                        size_t *value_len)
{
    if (!ck || i >= ck->nmeta)
        return ST_E_NOT_FOUND;
    if (key) *key = ck->meta[i].k;
    if (key_len) *key_len = ck->meta[i].kl;
    if (value) *value = ck->meta[i].v;
    if (value_len) *value_len = ck->meta[i].vl;
    return ST_OK;
}

/* ---- reading tensor data ---- */

static void swap_units(unsigned char *p, size_t n, unsigned unit)
{
    for (size_t i = 0; i + unit <= n; i += unit)
        for (unsigned a = 0, b = unit - 1; a < b; a++, b--) {
            unsigned char t = p[i + a];
            p[i + a] = p[i + b];
            p[i + b] = t;
        }
}

/* Gathering a non-contiguous tensor (a view, transpose, expand): each
 * output element is fetched through a small direct-mapped cache of
 * 512-byte blocks read with pread. Memory stays at the cache's 8 MiB
 * whatever the tensor (a file mapping would not: the kernel maps the pages
 * around every fault, so a transpose would pull in the whole storage). A
 * transpose of a matrix with up to 16 Ki rows keeps its working set (one
 * block per row) in the cache. */
#define GC_BLOCK 512u
#define GC_SLOTS 16384u
#define GC_WAYS 8u

typedef struct gcache {
    uint64_t *tag;         /* per way: block index + 1; 0 = empty */
    unsigned char *next;   /* per set: the way to replace next    */
    unsigned char *data;
} gcache;

static int gc_fetch(const st_ckpt *ck, gcache *gc, uint64_t fo, unsigned char *dst, unsigned n, st_error *err)
{
    uint64_t blk = fo / GC_BLOCK;
    size_t at = (size_t)(fo % GC_BLOCK);
    if (at + n > GC_BLOCK) { /* straddles two blocks: read it directly */
        if (st_pread_full(ck->fd, dst, n, fo))
            return st_fail(err, ST_E_IO, fo, "read error at offset %llu", (unsigned long long)fo);
        return ST_OK;
    }
    /* 8-way sets, splitmix64-mixed index: strided block numbers (one per
     * matrix row) spread evenly; a full set replaces in FIFO order. */
    uint64_t h = blk + 0x9e3779b97f4a7c15ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    size_t set = (size_t)(h & (GC_SLOTS / GC_WAYS - 1)), base = set * GC_WAYS, way = GC_WAYS;
    for (size_t w = 0; w < GC_WAYS; w++)
        if (gc->tag[base + w] == blk + 1) {
            way = w;
            break;
        }
    if (way == GC_WAYS) {
        way = gc->next[set];
        gc->next[set] = (unsigned char)((way + 1) % GC_WAYS);
        uint64_t start = blk * GC_BLOCK;
        size_t len = ck->size - start < GC_BLOCK ? (size_t)(ck->size - start) : GC_BLOCK;
        if (st_pread_full(ck->fd, gc->data + (base + way) * GC_BLOCK, len, start))
            return st_fail(err, ST_E_IO, start, "read error at offset %llu (file shorter?)",
                           (unsigned long long)start);
        gc->tag[base + way] = blk + 1;
    }
    memcpy(dst, gc->data + (base + way) * GC_BLOCK + at, n);
    return ST_OK;
}

static int read_gather(const st_ckpt *ck, const ck_tensor *t, const ck_storage *s, uint64_t offset,
                       unsigned char *dst, size_t len, st_error *err)
{
    const st_ckpt_tensor *p = &t->pub;
    unsigned es = s->elem;
    uint64_t e0 = offset / es, e1 = (offset + len + es - 1) / es;
    uint32_t rank = p->rank;
    uint64_t idx[64];
    if (rank > 64)
        return st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "non-contiguous tensor of rank %u", rank);
    uint64_t rem = e0;
    for (uint32_t i = rank; i-- > 0;) {
        idx[i] = p->shape[i] ? rem % p->shape[i] : 0;
        rem = p->shape[i] ? rem / p->shape[i] : 0;
    }
    gcache gc = {NULL, NULL, NULL};
    if (!s->mem) {
        gc.tag = calloc(GC_SLOTS, sizeof *gc.tag);
        gc.next = calloc(GC_SLOTS / GC_WAYS, 1);
        gc.data = malloc((size_t)GC_SLOTS * GC_BLOCK);
    }
    if (!s->mem && (!gc.tag || !gc.next || !gc.data)) {
        free(gc.tag);
        free(gc.next);
        free(gc.data);
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    }
    unsigned char el[16];
    size_t o = 0;
    int rc = ST_OK;
    for (uint64_t e = e0; e < e1 && !rc; e++) {
        uint64_t src = p->storage_offset;
        for (uint32_t i = 0; i < rank; i++)
            src += idx[i] * p->strides[i];
        if (s->mem)
            memcpy(el, s->mem + src * es, es);
        else
            rc = gc_fetch(ck, &gc, s->offset + src * es, el, es, err);
        if (s->be && s->swap)
            swap_units(el, es, s->swap);
        size_t from = e == e0 ? (size_t)(offset % es) : 0;
        size_t k = es - from;
        if (k > len - o)
            k = len - o;
        memcpy(dst + o, el + from, k);
        o += k;
        for (uint32_t i = rank; i-- > 0;) { /* odometer */
            if (++idx[i] < p->shape[i])
                break;
            idx[i] = 0;
        }
    }
    free(gc.tag);
    free(gc.next);
    free(gc.data);
    return rc;
}

int st_ckpt_tensor_read(const st_ckpt *ck, const st_ckpt_tensor *tensor, uint64_t offset, void *buf, size_t len,
                        st_error *err)
{
    if (!ck || !tensor || (!buf && len))
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "invalid argument");
    const ck_tensor *t = (const ck_tensor *)tensor;
    if (t < ck->t || t >= ck->t + ck->nt)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "tensor does not belong to this checkpoint");
    if (offset > tensor->nbytes || len > tensor->nbytes - offset) {
        char q[160];
        st_quote_name(q, sizeof q, tensor->name, tensor->name_len);
        return st_fail(err, ST_E_RANGE, ST_NO_OFFSET, "read past the end of tensor %s", q);
    }
    if (!len)
        return ST_OK;
    const ck_storage *s = &ck->st[t->storage];
    if (!tensor->contiguous)
        return read_gather(ck, t, s, offset, buf, len, err);
    if (s->mem) { /* a numpy array's bytes, in memory */
        const unsigned char *m0 = s->mem + tensor->storage_offset * s->elem;
        unsigned char *d = buf;
        if (!(s->be && s->swap)) {
            memcpy(d, m0 + offset, len);
            return ST_OK;
        }
        for (uint64_t i = offset; i < offset + len;) {
            unsigned char el[16];
            uint64_t e = i / s->elem, at = i % s->elem;
            memcpy(el, m0 + e * s->elem, s->elem);
            swap_units(el, s->elem, s->swap);
            size_t k = s->elem - (size_t)at;
            if (k > offset + len - i)
                k = (size_t)(offset + len - i);
            memcpy(d, el + at, k);
            d += k;
            i += k;
        }
        return ST_OK;
    }
    uint64_t src = s->offset + tensor->storage_offset * s->elem;
    if (!(s->be && s->swap)) {
        if (st_pread_full(ck->fd, buf, len, src + offset))
            return st_fail(err, ST_E_IO, src + offset, "read error at offset %llu (file shorter?)",
                           (unsigned long long)(src + offset));
        return ST_OK;
    }
    /* big-endian data: read whole elements, swap, copy the wanted part */
    unsigned char tmp[4096];
    unsigned es = s->elem;
    uint64_t a = offset - offset % es, end = offset + len;
    unsigned char *d = buf;
    while (a < end) {
        size_t n = sizeof tmp;
        if (end - a + es < n)
            n = (size_t)((end - a + es - 1) / es * es);
        if (a + n > tensor->nbytes)
            n = (size_t)(tensor->nbytes - a);
        if (st_pread_full(ck->fd, tmp, n, src + a))
            return st_fail(err, ST_E_IO, src + a, "read error");
        swap_units(tmp, n, s->swap);
        uint64_t from = a < offset ? offset - a : 0, to = a + n < end ? n : end - a;
        memcpy(d, tmp + from, (size_t)(to - from));
        d += to - from;
        a += n;
    }
    return ST_OK;
}
