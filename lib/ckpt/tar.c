/* Tar checkpoints: torch.save before torch 0.4 wrote a ustar archive with
 * the members sys_info, pickle, tensors and storages. First a strict
 * reader of the archive, then the members, read as torch's legacy_load
 * reads them: storages (a pickled count, then per storage a pickled (key,
 * location, storage class), an 8-byte element count and the raw bytes;
 * then a pickled list of views), tensors (a pickled count, then per tensor
 * a pickled (key, storage key, type) and its rank, sizes, strides and
 * offset as little-endian integers) and pickle (the object, whose
 * persistent ids are tensor or storage keys).
 *
 * The archive reader accepts only what that writer produces: 512-byte
 * ustar headers (POSIX or GNU magic) with a correct checksum, octal
 * fields, regular files, names that fit the name field (no prefix, no pax
 * or GNU long-name records), data inside the file, no repeated name, then
 * zero blocks to the end of the file (at most the two end blocks and the
 * record padding). Every count, size and geometry read from the members
 * is checked with the same care as the legacy stream's. */
#include "ckpt/ckpt_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_tar_member {
    char name[101];
    uint64_t header_offset, data_offset, size;
} st_tar_member;

#define BLOCK 512u
#define MAX_TRAILER (2u * 10240u) /* end blocks + padding to a 10 KiB record */

static int tfail(st_error *err, uint64_t off, const char *msg)
{
    return st_fail(err, ST_E_CKPT_FORMAT, off, "tar checkpoint: %s (header at offset %llu)", msg,
                   (unsigned long long)off);
}

/* An octal field: optional leading spaces, digits, then NUL/space to the
 * end of the field. */
static bool octal(const unsigned char *f, size_t n, uint64_t *out)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && f[i] == ' ')
        i++;
    size_t d = 0;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, d++) {
        if (v >> 61)
            return false;
        v = v * 8 + (uint64_t)(f[i] - '0');
    }
    if (d == 0)
        return false;
    for (; i < n; i++)
        if (f[i] != 0 && f[i] != ' ')
            return false;
    *out = v;
    return true;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static int tar_list(int fd, uint64_t size, st_tar_member *out, size_t cap, size_t *count, st_error *err)
{
    *count = 0;
    uint64_t pos = 0;
    unsigned char h[BLOCK];
    for (;;) {
        if (size - pos < BLOCK)
            return tfail(err, pos, "archive ends inside a header or without end blocks");
        if (st_pread_full(fd, h, BLOCK, pos))
            return st_fail(err, ST_E_IO, pos, "read error at offset %llu", (unsigned long long)pos);
        if (all_zero(h, BLOCK))
            break;
        uint64_t sum = 0, want, sz;
        for (size_t i = 0; i < BLOCK; i++)
            sum += (i >= 148 && i < 156) ? ' ' : h[i];
        if (!octal(h + 148, 8, &want) || want != sum)
            return tfail(err, pos, "header checksum mismatch");
        if (!(memcmp(h + 257, "ustar\0" "00", 8) == 0 || memcmp(h + 257, "ustar  \0", 8) == 0))
            return tfail(err, pos, "not a ustar header");
        if (h[156] != '0' && h[156] != 0)
            return tfail(err, pos, "member is not a regular file (links, folders, pax or long-name records are not read)");
        if (!octal(h + 124, 12, &sz))
            return tfail(err, pos, "bad size field");
        size_t nl = 0;
        while (nl < 100 && h[nl])
            nl++;
        if (nl == 0 || nl == 100 || h[345] != 0)
            return tfail(err, pos, "empty or over-long member name");
        uint64_t data = pos + BLOCK;
        if (sz > size - data)
            return tfail(err, pos, "member data runs past the end of the file");
        if (*count >= cap)
            return tfail(err, pos, "too many members");
        for (size_t i = 0; i < *count; i++)
            if (strlen(out[i].name) == nl && memcmp(out[i].name, h, nl) == 0)
                return tfail(err, pos, "repeated member name");
        st_tar_member *m = &out[(*count)++];
        memcpy(m->name, h, nl);
        m->name[nl] = 0;
        m->header_offset = pos;
        m->data_offset = data;
        m->size = sz;
        uint64_t padded = sz + (BLOCK - sz % BLOCK) % BLOCK;
        if (padded > size - data)
            return tfail(err, pos, "member padding runs past the end of the file");
        pos = data + padded;
    }
    /* the rest: zero blocks only, a bounded amount */
    if (size - pos > MAX_TRAILER)
        return tfail(err, pos, "data after the end of the archive");
    unsigned char rest[MAX_TRAILER];
    size_t rl = (size_t)(size - pos);
    if (st_pread_full(fd, rest, rl, pos))
        return st_fail(err, ST_E_IO, pos, "read error at offset %llu", (unsigned long long)pos);
    if (!all_zero(rest, rl))
        return tfail(err, pos, "data after the end of the archive");
    return ST_OK;
}

/* ---- the members: storages, tensors, pickle ---- */

static int tar_key(const pk_value *v, char *buf, size_t cap, size_t *n)
{
    if (v->kind == PK_INT) {
        *n = (size_t)snprintf(buf, cap, "%lld", (long long)v->u.i);
        return ST_OK;
    }
    if (v->kind == PK_STR && v->u.s.n && v->u.s.n < cap) {
        for (size_t i = 0; i < v->u.s.n; i++)
            if (v->u.s.p[i] < '0' || v->u.s.p[i] > '9')
                return -1;
        memcpy(buf, v->u.s.p, v->u.s.n);
        buf[v->u.s.n] = 0;
        *n = v->u.s.n;
        return ST_OK;
    }
    return -1;
}

static int tar_type(const pk_value *t)
{
    if (!t || t->kind != PK_GLOBAL ||
        !((t->u.g.modn == 5 && memcmp(t->u.g.mod, "torch", 5) == 0) ||
          (t->u.g.modn == 10 && memcmp(t->u.g.mod, "torch.cuda", 10) == 0)))
        return -1;
    for (size_t i = 0; i < ck_storage_type_count; i++)
        if (strlen(ck_storage_types[i].name) == t->u.g.namen && memcmp(ck_storage_types[i].name, t->u.g.name, t->u.g.namen) == 0)
            return (int)i;
    return -1;
}

static int cmp_tt(const void *a, const void *b)
{
    const ck_tar_tensor *x = *(const ck_tar_tensor *const *)a, *y = *(const ck_tar_tensor *const *)b;
    return strcmp(x->key, y->key);
}

static ck_tar_tensor *tt_find(const st_ckpt *ck, const char *key)
{
    size_t lo = 0, hi = ck->ntt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->tt[mid]->key, key);
        if (c == 0)
            return ck->tt[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int tar_persid(void *ctx, pk_value *pid, pk_value *out, st_error *err)
{
    st_ckpt *ck = ctx;
    if (pid->kind == PK_TUPLE && pid->u.seq.n >= 1 && pk_is_str(pid->u.seq.v[0], "module"))
        return ST_OK; /* a module's class and source: stays an inert None */
    char key[32];
    size_t kn;
    if (tar_key(pid, key, sizeof key, &kn))
        return ck_pid_error(err, "not a tensor or storage key");
    ck_tar_tensor *t = tt_find(ck, key);
    if (t) {
        *out = t->value;
        return ST_OK;
    }
    uint32_t *slot = ck_index_slot(&ck->st_index, ck, ck_hash(ck, key, kn), key, kn, ck_st_eq);
    if (!slot || !*slot)
        return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "tar checkpoint: persistent id %s names no tensor or storage", key);
    out->kind = PK_STORAGE;
    out->u.st.index = *slot - 1;
    return ST_OK;
}

/* A new located storage (tar "storages" member, or one of its views). */
static int tar_storage(st_ckpt *ck, const char *key, size_t kn, int type, uint64_t numel, uint64_t offset,
                       st_error *err)
{
    uint64_t h = ck_hash(ck, key, kn);
    uint32_t *slot = ck_index_slot(&ck->st_index, ck, h, key, kn, ck_st_eq);
    if (slot && *slot)
        return st_fail(err, ST_E_CKPT_TENSOR, offset, "tar checkpoint: storage %s defined twice", key);
    if (ck->nst >= UINT32_MAX - 1 || ck_index_grow(&ck->st_index, ck, ck_st_hash) ||
        ck_grow((void **)&ck->st, &ck->stcap, ck->nst + 1, sizeof *ck->st))
        return ck_nomem(err);
    ck_storage *s = &ck->st[ck->nst];
    memset(s, 0, sizeof *s);
    s->key = st_arena_strdup(&ck->arena, key, kn, NULL);
    if (!s->key)
        return ck_nomem(err);
    s->key_len = kn;
    s->type_name = ck_storage_types[type].name;
    s->dtype = ck_storage_types[type].dtype;
    s->elem = ck_storage_types[type].elem;
    s->swap = s->dtype == ST_C64 ? 4 : s->elem > 1 ? s->elem : 0;
    s->be = ck->big_endian;
    s->numel = numel;
    s->offset = offset;
    s->located = true;
    s->root = -1;
    ck_index_insert(&ck->st_index, h, (uint32_t)ck->nst++);
    return ST_OK;
}

typedef struct tar_reader {
    st_ckpt *ck;
    uint64_t pos, end;
    pk_machine *m;
    pk_value *v;
} tar_reader;

/* The next pickle of a member; the previous one's values are freed. */
static int tar_next(tar_reader *r, const char *label, bool main, st_error *err)
{
    pk_free(r->m);
    r->m = NULL;
    pk_hooks h;
    ck_hooks_for(r->ck, &h);
    if (main)
        h.persid_value = tar_persid;
    r->ck->pickle_label = label;
    uint64_t stop = r->pos;
    int rc = pk_run(r->ck->fd, r->pos, r->end, &r->ck->lim, &h, !r->ck->scan_only, &r->m, &r->v, &stop, err);
    if (!rc)
        r->pos = stop;
    return rc;
}

static int tar_raw(tar_reader *r, void *buf, size_t n, const char *what, st_error *err)
{
    if (r->end - r->pos < n)
        return st_fail(err, ST_E_CKPT_FORMAT, r->pos, "tar checkpoint: %s truncated at offset %llu", what,
                       (unsigned long long)r->pos);
    if (st_pread_full(r->ck->fd, buf, n, r->pos))
        return st_fail(err, ST_E_IO, r->pos, "read error at offset %llu", (unsigned long long)r->pos);
    r->pos += n;
    return ST_OK;
}

static int64_t le64s(const unsigned char *b)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | b[i];
    return (int64_t)x;
}

static int tar_count(tar_reader *r, const char *label, uint64_t *n, st_error *err)
{
    int rc = tar_next(r, label, false, err);
    if (rc)
        return rc;
    if (r->v->kind != PK_INT || r->v->u.i < 0 || (uint64_t)r->v->u.i > r->end - r->pos)
        return st_fail(err, ST_E_CKPT_FORMAT, r->pos, "tar checkpoint: %s is not a plausible count", label);
    *n = (uint64_t)r->v->u.i;
    return ST_OK;
}

static int tar_storages(st_ckpt *ck, const st_tar_member *mb, st_error *err)
{
    tar_reader r = {ck, mb->data_offset, mb->data_offset + mb->size, NULL, NULL};
    uint64_t n;
    int rc = tar_count(&r, "storages (count)", &n, err);
    for (uint64_t i = 0; i < n && !rc; i++) {
        if ((rc = tar_next(&r, "storages (header)", false, err)))
            break;
        pk_value *a = r.v;
        char key[32];
        size_t kn;
        int type;
        if (a->kind != PK_TUPLE || a->u.seq.n != 3 || tar_key(a->u.seq.v[0], key, sizeof key, &kn) ||
            a->u.seq.v[1]->kind != PK_STR || (type = tar_type(a->u.seq.v[2])) < 0) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos, "tar checkpoint: storage %llu is not (key, location, storage class)",
                         (unsigned long long)i);
            break;
        }
        unsigned char nb[8];
        if ((rc = tar_raw(&r, nb, 8, "storage size", err)))
            break;
        int64_t numel = le64s(nb);
        uint64_t nbytes;
        if (numel < 0 || __builtin_mul_overflow((uint64_t)numel, (uint64_t)ck_storage_types[type].elem, &nbytes) ||
            nbytes > r.end - r.pos) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos - 8, "tar checkpoint: storage %s of %lld elements runs past its member",
                         key, (long long)numel);
            break;
        }
        if (ck_storage_types[type].dtype < 0) {
            rc = st_fail(err, ST_E_UNSUPPORTED, r.pos, "tar checkpoint: storage %s is a torch.%s, which safetensors cannot hold",
                         key, ck_storage_types[type].name);
            break;
        }
        if (!ck->scan_only)
            rc = tar_storage(ck, key, kn, type, (uint64_t)numel, r.pos, err);
        r.pos += nbytes;
    }
    /* views: [(target, root, offset, numel), ...] */
    if (!rc)
        rc = tar_next(&r, "storages (views)", false, err);
    if (!rc && r.v->kind != PK_LIST)
        rc = st_fail(err, ST_E_CKPT_FORMAT, r.pos, "tar checkpoint: storage views are not a list");
    for (size_t i = 0; !rc && i < r.v->u.seq.n; i++) {
        pk_value *a = r.v->u.seq.v[i];
        char key[32], root[32];
        size_t kn, rn;
        if (a->kind != PK_TUPLE || a->u.seq.n != 4 || tar_key(a->u.seq.v[0], key, sizeof key, &kn) ||
            tar_key(a->u.seq.v[1], root, sizeof root, &rn) || a->u.seq.v[2]->kind != PK_INT ||
            a->u.seq.v[3]->kind != PK_INT || a->u.seq.v[2]->u.i < 0 || a->u.seq.v[3]->u.i < 0) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos, "tar checkpoint: bad storage view %zu", i);
            break;
        }
        if (ck->scan_only)
            continue;
        uint32_t *slot = ck_index_slot(&ck->st_index, ck, ck_hash(ck, root, rn), root, rn, ck_st_eq);
        if (!slot || !*slot) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos, "tar checkpoint: view %s of a missing storage %s", key, root);
            break;
        }
        ck_storage rs = ck->st[*slot - 1];
        uint64_t off = (uint64_t)a->u.seq.v[2]->u.i, cnt = (uint64_t)a->u.seq.v[3]->u.i;
        if (rs.mem || off > rs.numel || cnt > rs.numel - off) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos, "tar checkpoint: view %s outside its storage %s", key, root);
            break;
        }
        int type = -1;
        for (size_t k = 0; k < ck_storage_type_count; k++)
            if (ck_storage_types[k].name == rs.type_name)
                type = (int)k;
        rc = tar_storage(ck, key, kn, type, cnt, rs.offset + off * rs.elem, err);
    }
    pk_free(r.m);
    return rc;
}

static int tar_tensors(st_ckpt *ck, const st_tar_member *mb, st_error *err)
{
    tar_reader r = {ck, mb->data_offset, mb->data_offset + mb->size, NULL, NULL};
    uint64_t n;
    int rc = tar_count(&r, "tensors (count)", &n, err);
    if (!rc && n > ck->lim.max_tensors)
        rc = st_fail(err, ST_E_PICKLE_LIMIT, r.pos, "more than %llu tensors", (unsigned long long)ck->lim.max_tensors);
    for (uint64_t i = 0; i < n && !rc; i++) {
        if ((rc = tar_next(&r, "tensors (header)", false, err)))
            break;
        pk_value *a = r.v;
        char key[32], sid[32];
        size_t kn, sn;
        if (a->kind != PK_TUPLE || a->u.seq.n != 3 || tar_key(a->u.seq.v[0], key, sizeof key, &kn) ||
            tar_key(a->u.seq.v[1], sid, sizeof sid, &sn)) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos, "tar checkpoint: tensor %llu is not (key, storage, type)",
                         (unsigned long long)i);
            break;
        }
        unsigned char b8[8];
        if ((rc = tar_raw(&r, b8, 8, "tensor rank", err)))
            break;
        int32_t ndim = (int32_t)((uint32_t)b8[0] | (uint32_t)b8[1] << 8 | (uint32_t)b8[2] << 16 | (uint32_t)b8[3] << 24);
        if (ndim < 0 || ndim > ST_MAX_RANK || (uint64_t)ndim * 16 + 8 > r.end - r.pos) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos - 8, "tar checkpoint: tensor %s has rank %d", key, ndim);
            break;
        }
        uint64_t *dims = ck->scan_only ? NULL : st_arena_alloc(&ck->arena, (size_t)(2 * ndim + 1) * 8, NULL);
        ck_tar_tensor *t = ck->scan_only ? NULL : st_arena_alloc(&ck->arena, sizeof *t, NULL);
        char *kc = ck->scan_only ? NULL : st_arena_strdup(&ck->arena, key, kn, NULL);
        if (!ck->scan_only && (!dims || !t || !kc)) {
            rc = ck_nomem(err);
            break;
        }
        int64_t off = 0;
        for (int j = 0; j < 2 * ndim + 1 && !rc; j++) {
            if ((rc = tar_raw(&r, b8, 8, "tensor geometry", err)))
                break;
            int64_t x = le64s(b8);
            if (x < 0)
                rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos - 8, "tar checkpoint: tensor %s has a negative size, stride or offset",
                             key);
            else if (j == 2 * ndim)
                off = x;
            else if (dims)
                dims[j] = (uint64_t)x;
        }
        if (rc || ck->scan_only)
            continue;
        uint32_t *slot = ck_index_slot(&ck->st_index, ck, ck_hash(ck, sid, sn), sid, sn, ck_st_eq);
        if (!slot || !*slot) {
            rc = st_fail(err, ST_E_CKPT_TENSOR, r.pos, "tar checkpoint: tensor %s on a missing storage %s", key, sid);
            break;
        }
        memset(t, 0, sizeof *t);
        t->key = kc;
        t->storage.kind = PK_STORAGE;
        t->storage.u.st.index = *slot - 1;
        t->value.kind = PK_TENSOR;
        t->value.u.t.storage = &t->storage;
        t->value.u.t.offset = (uint64_t)off;
        t->value.u.t.rank = (uint32_t)ndim;
        t->value.u.t.shape = dims;
        t->value.u.t.stride = dims + ndim;
        if (ck_grow((void **)&ck->tt, &ck->ttcap, ck->ntt + 1, sizeof *ck->tt)) {
            rc = ck_nomem(err);
            break;
        }
        ck->tt[ck->ntt++] = t;
    }
    pk_free(r.m);
    if (!rc && ck->ntt > 1) {
        qsort(ck->tt, ck->ntt, sizeof *ck->tt, cmp_tt);
        for (size_t i = 0; i + 1 < ck->ntt; i++)
            if (strcmp(ck->tt[i]->key, ck->tt[i + 1]->key) == 0)
                return st_fail(err, ST_E_CKPT_TENSOR, ST_NO_OFFSET, "tar checkpoint: tensor %s defined twice",
                               ck->tt[i]->key);
    }
    return rc;
}

int ck_open_tar(st_ckpt *ck, st_error *err)
{
    st_tar_member mb[8];
    size_t n;
    int rc = tar_list(ck->fd, ck->size, mb, sizeof mb / sizeof mb[0], &n, err);
    if (rc)
        return rc;
    const st_tar_member *sys = NULL, *sto = NULL, *ten = NULL, *pkl = NULL;
    for (size_t i = 0; i < n; i++) {
        const st_tar_member *m = &mb[i];
        if (strcmp(m->name, "sys_info") == 0) sys = m;
        else if (strcmp(m->name, "storages") == 0) sto = m;
        else if (strcmp(m->name, "tensors") == 0) ten = m;
        else if (strcmp(m->name, "pickle") == 0) pkl = m;
        else {
            char q[160];
            st_quote_name(q, sizeof q, m->name, strlen(m->name));
            return st_fail(err, ST_E_CKPT_FORMAT, m->header_offset, "tar checkpoint: unexpected member %s", q);
        }
    }
    if (!sto || !ten || !pkl)
        return st_fail(err, ST_E_CKPT_FORMAT, 0, "a tar archive without the storages, tensors and pickle members of a torch checkpoint");
    st_error e = {0};
    st_error *pe = ck->scan_only ? &e : err;
    if (sys) {
        tar_reader r = {ck, sys->data_offset, sys->data_offset + sys->size, NULL, NULL};
        rc = tar_next(&r, "sys_info", false, pe);
        if (!rc && !ck->scan_only) {
            pk_value *le = ck_dict_get(r.v, "little_endian");
            if (le && le->kind == PK_BOOL)
                ck->big_endian = !le->u.i;
        }
        pk_free(r.m);
    }
    if (!rc)
        rc = tar_storages(ck, sto, pe);
    if (!rc)
        rc = tar_tensors(ck, ten, pe);
    if (!rc) {
        tar_reader r = {ck, pkl->data_offset, pkl->data_offset + pkl->size, NULL, NULL};
        rc = tar_next(&r, "pickle", true, pe);
        if (!rc && !ck->scan_only)
            rc = ck_name_tensors(ck, r.v, pkl->size, pe);
        if (rc)
            pk_free(r.m);
        else
            rc = ck_keep_machine(ck, r.m, 0, pe);
    }
    if (rc && ck->scan_only) {
        ck_scan_note(ck, &e);
        rc = ST_OK;
    }
    return rc;
}
