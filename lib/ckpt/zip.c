/* A strict reader for the zip container PyTorch writes (torch.save since
 * 1.6): every record "stored" (uncompressed), 64-byte aligned, one
 * top-level folder, zip64 records for archives over 4 GiB.
 *
 * Why not Debian's libzip or minizip: both can list the archive, but
 * neither hands out the file offset of an entry's data in a public, stable
 * way (libzip has no such call at all; minizip only after opening the
 * entry, through one global cursor per unzFile, so not thread-safe), and
 * both accept what we must reject: overlapping or out-of-order entries,
 * local headers that disagree with the central directory, duplicate names,
 * junk between the central directory and its end record. The converter
 * streams tensor bytes with pread straight from the entry's data offset,
 * so we need that offset and its bounds proven, and nothing more; the
 * format subset is small (no compression needed for storages, no
 * encryption, one disk), hence this reader.
 *
 * Checks: end record at the very end (comment included); zip64 locator and
 * record when present, and consistent; central directory exactly between
 * its stated offset and the end records; per entry: signature, no
 * encryption, stored (or deflate, which only small pickles may use; the
 * tensor reader refuses it), sizes equal for stored, zip64 extra fields
 * well formed, one disk, local header that repeats name/method (and
 * crc/sizes unless a data descriptor follows), data inside the file and
 * before the central directory, no two entries overlapping, no duplicate
 * names, one common top-level folder. */
#include "ckpt/ckpt_internal.h"

#include <stdlib.h>
#include <string.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define EOCD_SIZE 22u
#define LOC64_SIZE 20u
#define EOCD64_MIN 56u
#define CENTRAL_SIZE 46u
#define LOCAL_SIZE 30u
#define MAX_CD_BYTES (256u * 1024u * 1024u)

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int zfail(st_error *err, uint64_t off, const char *msg, const char *name)
{
    if (name) {
        char q[160];
        st_quote_name(q, sizeof q, name, strlen(name));
        return st_fail(err, ST_E_ZIP, off, "%s (entry %s, offset %llu)", msg, q,
                       (unsigned long long)off);
    }
    return st_fail(err, ST_E_ZIP, off, "%s (offset %llu)", msg, (unsigned long long)off);
}

static int cmp_name(const void *a, const void *b)
{
    const st_zip_entry *x = a, *y = b;
    return st_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static int cmp_offset(const void *a, const void *b)
{
    const st_zip_entry *x = *(const st_zip_entry *const *)a, *y = *(const st_zip_entry *const *)b;
    return x->header_offset < y->header_offset ? -1 : x->header_offset > y->header_offset;
}

/* Reads the zip64 extended-information extra field: only the values whose
 * 32-bit field was saturated are present, in this order. */
static int zip64_extra(const unsigned char *extra, size_t len, bool need_u, bool need_c,
                       bool need_o, bool need_d, uint64_t *u, uint64_t *c, uint64_t *o,
                       bool *found)
{
    size_t i = 0;
    *found = false;
    while (i < len) {
        if (len - i < 4)
            return -1;
        uint16_t id = le16(extra + i), sz = le16(extra + i + 2);
        if (sz > len - i - 4)
            return -1;
        if (id == 0x0001) {
            if (*found)
                return -1; /* twice */
            *found = true;
            size_t need = 8u * (need_u + need_c + need_o) + 4u * need_d, k = i + 4;
            if (sz < need)
                return -1;
            if (need_u) { *u = le64(extra + k); k += 8; }
            if (need_c) { *c = le64(extra + k); k += 8; }
            if (need_o) { *o = le64(extra + k); k += 8; }
            if (need_d && le32(extra + k) != 0)
                return -1;
        }
        i += 4u + sz;
    }
    return 0;
}

int st_zip_open(int fd, uint64_t size, st_zip *zip, st_error *err)
{
    memset(zip, 0, sizeof *zip);
    unsigned char tail[EOCD_SIZE + 65535];
    if (size < EOCD_SIZE)
        return zfail(err, 0, "file too short for an end of central directory record", NULL);
    size_t tlen = size < sizeof tail ? (size_t)size : sizeof tail;
    uint64_t tstart = size - tlen;
    if (st_pread_full(fd, tail, tlen, tstart))
        return st_fail(err, ST_E_IO, tstart, "read error at offset %llu", (unsigned long long)tstart);

    /* The end record must end exactly at end of file, its comment included. */
    size_t e = SIZE_MAX;
    for (size_t i = tlen - EOCD_SIZE + 1; i-- > 0;) {
        if (le32(tail + i) == SIG_EOCD && (size_t)le16(tail + i + 20) == tlen - i - EOCD_SIZE) {
            e = i;
            break;
        }
    }
    if (e == SIZE_MAX)
        return zfail(err, size, "no end of central directory record at the end of the file", NULL);
    uint64_t eocd_off = tstart + e;
    const unsigned char *r = tail + e;
    uint64_t disk = le16(r + 4), cd_disk = le16(r + 6), n_disk = le16(r + 8), n_total = le16(r + 10);
    uint64_t cd_size = le32(r + 12), cd_off = le32(r + 16);
    uint64_t cd_end_limit = eocd_off; /* where the central directory must end */

    bool has_loc = false;
    unsigned char loc[LOC64_SIZE];
    if (eocd_off >= LOC64_SIZE) {
        if (st_pread_full(fd, loc, LOC64_SIZE, eocd_off - LOC64_SIZE))
            return st_fail(err, ST_E_IO, eocd_off - LOC64_SIZE, "read error");
        has_loc = le32(loc) == SIG_LOC64;
    }
    bool saturated = n_disk == 0xffff || n_total == 0xffff || cd_size == 0xffffffffu ||
                     cd_off == 0xffffffffu || disk == 0xffff || cd_disk == 0xffff;
    if (saturated && !has_loc)
        return zfail(err, eocd_off, "zip64 values announced but no zip64 locator", NULL);
    if (has_loc) {
        uint64_t loc_off = eocd_off - LOC64_SIZE;
        uint64_t rec = le64(loc + 8);
        uint32_t ndisks = le32(loc + 16);
        if (le32(loc + 4) != 0 || ndisks > 1)
            return zfail(err, loc_off, "multi-disk zip64 archive", NULL);
        if (rec > loc_off || loc_off - rec < EOCD64_MIN)
            return zfail(err, loc_off, "zip64 end record offset out of range", NULL);
        unsigned char z[EOCD64_MIN];
        if (st_pread_full(fd, z, EOCD64_MIN, rec))
            return st_fail(err, ST_E_IO, rec, "read error");
        uint64_t rsize = le64(z + 4);
        if (le32(z) != SIG_EOCD64 || rsize < EOCD64_MIN - 12 || rsize > loc_off - rec - 12 ||
            rec + 12 + rsize != loc_off)
            return zfail(err, rec, "bad zip64 end of central directory record", NULL);
        uint64_t d64 = le32(z + 16), cdd64 = le32(z + 20), nd64 = le64(z + 24),
                 nt64 = le64(z + 32), cs64 = le64(z + 40), co64 = le64(z + 48);
        /* Saturated 32-bit values defer to zip64; the others must agree. */
        if ((disk != 0xffff && disk != d64) || (cd_disk != 0xffff && cd_disk != cdd64) ||
            (n_disk != 0xffff && n_disk != nd64) || (n_total != 0xffff && n_total != nt64) ||
            (cd_size != 0xffffffffu && cd_size != cs64) || (cd_off != 0xffffffffu && cd_off != co64))
            return zfail(err, rec, "zip64 end record disagrees with the end record", NULL);
        disk = d64, cd_disk = cdd64, n_disk = nd64, n_total = nt64, cd_size = cs64, cd_off = co64;
        cd_end_limit = rec;
    }
    if (disk != 0 || cd_disk != 0 || n_disk != n_total)
        return zfail(err, eocd_off, "multi-disk archive", NULL);
    if (cd_off > cd_end_limit || cd_size != cd_end_limit - cd_off)
        return zfail(err, eocd_off, "central directory does not end where the end record begins", NULL);
    if (cd_size > MAX_CD_BYTES)
        return zfail(err, cd_off, "central directory over 256 MiB", NULL);
    if (n_total > cd_size / CENTRAL_SIZE)
        return zfail(err, cd_off, "more entries than the central directory can hold", NULL);
    if (n_total == 0)
        return zfail(err, cd_off, "empty archive", NULL);

    unsigned char *cd = malloc(cd_size ? (size_t)cd_size : 1);
    zip->entries = calloc((size_t)n_total, sizeof *zip->entries);
    st_zip_entry **by_off = calloc((size_t)n_total, sizeof *by_off);
    int rc = ST_OK;
    if (!cd || !zip->entries || !by_off) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory reading the zip directory");
        goto out;
    }
    if (st_pread_full(fd, cd, (size_t)cd_size, cd_off)) {
        rc = st_fail(err, ST_E_IO, cd_off, "read error in the central directory");
        goto out;
    }
    size_t pos = 0;
    for (uint64_t i = 0; i < n_total; i++) {
        st_zip_entry *en = &zip->entries[i];
        uint64_t here = cd_off + pos;
        if (cd_size - pos < CENTRAL_SIZE || le32(cd + pos) != SIG_CENTRAL) {
            rc = zfail(err, here, "bad central directory header", NULL);
            goto out;
        }
        const unsigned char *h = cd + pos;
        uint16_t flags = le16(h + 8), method = le16(h + 10);
        uint32_t crc = le32(h + 16);
        uint64_t csize = le32(h + 20), usize = le32(h + 24);
        size_t nl = le16(h + 28), xl = le16(h + 30), cl = le16(h + 32);
        uint64_t dstart = le16(h + 34), lho = le32(h + 42);
        if (cd_size - pos - CENTRAL_SIZE < nl + xl + cl) {
            rc = zfail(err, here, "central directory header runs past the directory", NULL);
            goto out;
        }
        bool over = false;
        char *name = st_arena_strdup(&zip->arena, (const char *)h + CENTRAL_SIZE, nl, &over);
        if (!name) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            goto out;
        }
        if (nl == 0 || memchr(name, 0, nl)) {
            rc = zfail(err, here, "empty name or NUL byte in a name", NULL);
            goto out;
        }
        if (flags & (1u | 64u | 8192u)) {
            rc = zfail(err, here, "encrypted entry", name);
            goto out;
        }
        if (method != 0 && method != 8) {
            rc = zfail(err, here, "compression method other than stored or deflate", name);
            goto out;
        }
        bool fu = usize == 0xffffffffu, fc = csize == 0xffffffffu, fo = lho == 0xffffffffu,
             fd_ = dstart == 0xffff, found;
        if (zip64_extra(h + CENTRAL_SIZE + nl, xl, fu, fc, fo, fd_, &usize, &csize, &lho, &found) ||
            ((fu || fc || fo || fd_) && !found)) {
            rc = zfail(err, here, "malformed extra field (zip64)", name);
            goto out;
        }
        if (fd_)
            dstart = 0;
        if (dstart != 0) {
            rc = zfail(err, here, "entry on another disk", name);
            goto out;
        }
        if (method == 0 && csize != usize) {
            rc = zfail(err, here, "stored entry whose sizes differ", name);
            goto out;
        }
        en->name = name;
        en->name_len = nl;
        en->header_offset = lho;
        en->size = usize;
        en->csize = csize;
        en->crc32 = crc;
        en->method = method;
        /* flags bit 3: crc and sizes follow the data; keep for the local check */
        en->data_offset = flags & 8u ? 1 : 0;
        by_off[i] = en;
        pos += CENTRAL_SIZE + nl + xl + cl;
    }
    if (pos != cd_size) {
        rc = zfail(err, cd_off + pos, "bytes left over in the central directory", NULL);
        goto out;
    }
    zip->count = (size_t)n_total;

    /* Local headers: each must repeat the central directory. */
    for (size_t i = 0; i < zip->count; i++) {
        st_zip_entry *en = &zip->entries[i];
        bool descriptor = en->data_offset == 1;
        unsigned char lh[LOCAL_SIZE];
        if (en->header_offset > cd_off || cd_off - en->header_offset < LOCAL_SIZE) {
            rc = zfail(err, en->header_offset, "local header outside the archive data", en->name);
            goto out;
        }
        if (st_pread_full(fd, lh, LOCAL_SIZE, en->header_offset)) {
            rc = st_fail(err, ST_E_IO, en->header_offset, "read error");
            goto out;
        }
        size_t nl = le16(lh + 26), xl = le16(lh + 28);
        if (le32(lh) != SIG_LOCAL || le16(lh + 8) != en->method || (le16(lh + 6) & (1u | 64u)) ||
            nl != en->name_len) {
            rc = zfail(err, en->header_offset, "local header disagrees with the central directory", en->name);
            goto out;
        }
        uint64_t data = en->header_offset + LOCAL_SIZE + nl + xl;
        if (data > cd_off) {
            rc = zfail(err, en->header_offset, "local header runs into the central directory", en->name);
            goto out;
        }
        unsigned char *var = malloc(nl + xl + 1);
        if (!var) {
            rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
            goto out;
        }
        if (st_pread_full(fd, var, nl + xl, en->header_offset + LOCAL_SIZE)) {
            free(var);
            rc = st_fail(err, ST_E_IO, en->header_offset, "read error");
            goto out;
        }
        bool same = memcmp(var, en->name, nl) == 0;
        if (same && !descriptor) {
            uint64_t lc = le32(lh + 18), lu = le32(lh + 22), dummy = 0;
            bool fu = lu == 0xffffffffu, fc = lc == 0xffffffffu, found;
            if (le32(lh + 14) != en->crc32 ||
                zip64_extra(var + nl, xl, fu, fc, false, false, &lu, &lc, &dummy, &found) ||
                ((fu || fc) && !found) || lu != en->size || lc != en->csize)
                same = false;
        }
        free(var);
        if (!same) {
            rc = zfail(err, en->header_offset, "local header disagrees with the central directory", en->name);
            goto out;
        }
        if (en->csize > cd_off - data) {
            rc = zfail(err, data, "entry data runs past the start of the central directory", en->name);
            goto out;
        }
        en->data_offset = data;
    }
    /* No two entries may share bytes. */
    qsort(by_off, zip->count, sizeof *by_off, cmp_offset);
    for (size_t i = 0; i + 1 < zip->count; i++) {
        const st_zip_entry *a = by_off[i], *b = by_off[i + 1];
        if (a->data_offset + a->csize > b->header_offset) {
            rc = zfail(err, b->header_offset, "entries overlap", b->name);
            goto out;
        }
    }
    /* One top-level folder, taken from the first entry as PyTorch does. */
    const char *slash = memchr(zip->entries[0].name, '/', zip->entries[0].name_len);
    if (!slash || slash == zip->entries[0].name) {
        rc = zfail(err, zip->entries[0].header_offset, "first entry is not inside a top-level folder",
                   zip->entries[0].name);
        goto out;
    }
    zip->prefix = zip->entries[0].name;
    zip->prefix_len = (size_t)(slash - zip->entries[0].name) + 1;
    for (size_t i = 0; i < zip->count; i++) {
        const st_zip_entry *en = &zip->entries[i];
        if (en->name_len < zip->prefix_len || memcmp(en->name, zip->prefix, zip->prefix_len)) {
            rc = zfail(err, en->header_offset, "entry outside the archive's top-level folder", en->name);
            goto out;
        }
    }
    char *pfx = st_arena_strdup(&zip->arena, zip->prefix, zip->prefix_len, NULL);
    if (!pfx) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto out;
    }
    zip->prefix = pfx;
    qsort(zip->entries, zip->count, sizeof *zip->entries, cmp_name);
    for (size_t i = 0; i + 1 < zip->count; i++) {
        if (cmp_name(&zip->entries[i], &zip->entries[i + 1]) == 0) {
            rc = zfail(err, zip->entries[i + 1].header_offset, "duplicate entry name", zip->entries[i].name);
            goto out;
        }
    }
out:
    free(cd);
    free(by_off);
    if (rc)
        st_zip_free(zip);
    return rc;
}

void st_zip_free(st_zip *zip)
{
    free(zip->entries);
    st_arena_free(&zip->arena);
    memset(zip, 0, sizeof *zip);
}

const st_zip_entry *st_zip_find(const st_zip *zip, const char *name, size_t len)
{
    size_t lo = 0, hi = zip->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = st_name_cmp(zip->entries[mid].name, zip->entries[mid].name_len, name, len);
        if (c == 0)
            return &zip->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
