/* A strict reader for the ustar archives torch.save wrote before torch
 * 0.4 (members sys_info, pickle, tensors, storages). Only what that
 * writer produces is accepted: 512-byte ustar headers (POSIX or GNU magic)
 * with a correct checksum, octal fields, regular files, names that fit the
 * name field (no prefix, no pax or GNU long-name records), data inside
 * the file, no repeated name, then zero blocks to the end of the file
 * (at most the two end blocks and the record padding). The checkpoint
 * reader then parses each member's pickles and raw data with the same
 * checks as the legacy stream. */
#include "ckpt/ckpt_internal.h"

#include <string.h>

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

int st_tar_list(int fd, uint64_t size, st_tar_member *out, size_t cap, size_t *count, st_error *err)
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
