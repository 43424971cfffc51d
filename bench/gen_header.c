/*
 * gen_header - writes a safetensors file with many small tensors, for
 * timing st_open on big headers.
 *
 *   gen_header OUT COUNT [short]
 *
 * Names look like a Stable Diffusion checkpoint's or a LoRA's (40 to 80
 * bytes; with `short`, 20 to 40 bytes so that a million tensors still fit
 * under the format's 100,000,000-byte header cap). Dtypes are mixed, shapes
 * are small (scalars, vectors, 2-D and 4-D), the data is a few bytes per
 * tensor. The layout is what the reference writer produces: "__metadata__"
 * first, tensors by descending dtype then name bytes, data in that order,
 * header padded with spaces to a multiple of 8. Output is deterministic.
 * The file is written to OUT.tmp and renamed, so a killed run never leaves
 * a half-written OUT behind for the next run to reuse.
 *
 * Self-contained on purpose (no library writer): the benchmark inputs must
 * not depend on the code being measured.
 */
#include "bench_util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER 100000000ull

/* '#' is replaced by a number. Slot values are a mixed-radix split of a
 * per-template counter, the last slot unbounded, and every slot is fenced
 * by separators, so all names of a template are distinct. */
typedef struct name_template {
    const char *text;
    unsigned radix[3]; /* for the first slots; the last one is unbounded */
} name_template;

static const name_template long_names[] = {
    {"model.diffusion_model.input_blocks.#.#.transformer_blocks.#.attn1.to_q.weight", {12, 2, 0}},
    {"model.diffusion_model.output_blocks.#.#.emb_layers.#.bias", {12, 3, 0}},
    {"model.diffusion_model.middle_block.#.proj_in.weight", {3, 0, 0}},
    {"model.diffusion_model.input_blocks.#.#.norm.weight", {12, 0, 0}},
    {"model.diffusion_model.time_embed.#.weight", {0, 0, 0}},
    {"first_stage_model.decoder.up.#.block.#.conv#.weight", {4, 3, 0}},
    {"first_stage_model.encoder.down.#.block.#.norm#.bias", {4, 2, 0}},
    {"cond_stage_model.transformer.text_model.encoder.layers.#.mlp.fc#.bias", {12, 0, 0}},
    {"lora_unet_down_blocks_#_attentions_#_proj_in.lora_up.weight", {3, 0, 0}},
    {"lora_te_text_model_encoder_layers_#_self_attn_v_proj.alpha", {0, 0, 0}},
};

static const name_template short_names[] = {
    {"unet.in.#.#.tb.#.attn1.q.weight", {12, 2, 0}},
    {"unet.out.#.#.tb.#.attn2.k.bias", {12, 3, 0}},
    {"unet.mid.#.ff.net.#.proj.weight", {3, 0, 0}},
    {"vae.dec.up.#.block.#.conv#.weight", {4, 3, 0}},
    {"te.layers.#.attn.q_proj.bias", {0, 0, 0}},
    {"te.layers.#.mlp.fc#.weight", {12, 0, 0}},
    {"lora_unet_#_#_#_to_v.alpha", {3, 2, 0}},
};

/* dtype name, reference order (the canonical sort key), bytes per element */
typedef struct dtype_info {
    const char *name;
    int order;
    unsigned size;
    unsigned weight; /* relative frequency, out of 100 */
} dtype_info;

static const dtype_info dtypes[] = {
    {"F16", 13, 2, 50}, {"F32", 17, 4, 20}, {"BF16", 14, 2, 14}, {"I64", 20, 8, 3},
    {"U8", 4, 1, 3},    {"F8_E4M3", 7, 1, 4}, {"BOOL", 0, 1, 2},  {"I32", 15, 4, 4},
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

typedef struct entry {
    uint64_t name_off;
    uint32_t name_len;
    uint8_t dtype; /* index into dtypes */
    uint8_t rank;
    uint8_t dims[4];
} entry;

/* The name arena, for the qsort comparator. */
static const char *g_names;

static int entry_cmp(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int oa = dtypes[a->dtype].order, ob = dtypes[b->dtype].order;
    if (oa != ob)
        return ob - oa; /* descending dtype */
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(g_names + a->name_off, g_names + b->name_off, n);
    if (c)
        return c;
    return (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void buf_reserve(buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        fprintf(stderr, "gen_header: out of memory\n");
        exit(1);
    }
    b->p = p;
    b->cap = cap;
}

static void buf_add(buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_str(buf *b, const char *s) { buf_add(b, s, strlen(s)); }

static void buf_u64(buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_add(b, tmp + i, sizeof tmp - i);
}

/* Appends template t with its slots filled from counter k. */
static void expand(buf *b, const name_template *t, uint64_t k)
{
    int slot = 0;
    for (const char *s = t->text; *s; s++) {
        if (*s != '#') {
            buf_add(b, s, 1);
            continue;
        }
        int last = 1;
        for (const char *r = s + 1; *r; r++)
            if (*r == '#')
                last = 0;
        if (last || t->radix[slot] == 0) {
            buf_u64(b, k);
            k = 0;
        } else {
            buf_u64(b, k % t->radix[slot]);
            k /= t->radix[slot];
        }
        slot++;
    }
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "short") != 0)) {
        fprintf(stderr, "usage: gen_header OUT COUNT [short]\n");
        return 2;
    }
    const char *out = argv[1];
    char *endp;
    errno = 0;
    unsigned long long count = strtoull(argv[2], &endp, 10);
    if (errno || *endp || count == 0 || count > 10000000ull) {
        fprintf(stderr, "gen_header: bad COUNT %s\n", argv[2]);
        return 2;
    }
    const name_template *tpl = argc == 4 ? short_names : long_names;
    size_t ntpl = argc == 4 ? sizeof short_names / sizeof short_names[0]
                            : sizeof long_names / sizeof long_names[0];

    entry *ents = calloc(count, sizeof *ents);
    buf names = {0};
    if (!ents) {
        fprintf(stderr, "gen_header: out of memory\n");
        return 1;
    }
    uint64_t rng = 0x5afe7e5ull ^ count;
    for (uint64_t i = 0; i < count; i++) {
        entry *e = &ents[i];
        e->name_off = names.len;
        expand(&names, &tpl[i % ntpl], i / ntpl);
        e->name_len = (uint32_t)(names.len - e->name_off);

        unsigned pick = (unsigned)(bench_rand(&rng) % 100), acc = 0;
        e->dtype = 0;
        for (size_t d = 0; d < NDTYPES; d++) {
            acc += dtypes[d].weight;
            if (pick < acc) {
                e->dtype = (uint8_t)d;
                break;
            }
        }
        /* Shapes: 5% scalars, 50% vectors, 30% matrices, 15% 4-D convs. */
        uint64_t r = bench_rand(&rng);
        unsigned kind = (unsigned)(r % 100);
        r >>= 8;
        if (kind < 5) {
            e->rank = 0;
        } else if (kind < 55) {
            e->rank = 1;
            e->dims[0] = (uint8_t)(1 + r % 8);
        } else if (kind < 85) {
            e->rank = 2;
            e->dims[0] = (uint8_t)(1 + r % 4);
            e->dims[1] = (uint8_t)(1 + (r >> 8) % 4);
        } else {
            e->rank = 4;
            e->dims[0] = (uint8_t)(1 + r % 4);
            e->dims[1] = (uint8_t)(1 + (r >> 8) % 3);
            e->dims[2] = 1;
            e->dims[3] = 1;
        }
    }
    g_names = names.p;
    qsort(ents, count, sizeof *ents, entry_cmp);

    buf h = {0};
    buf_str(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (uint64_t i = 0; i < count; i++) {
        const entry *e = &ents[i];
        uint64_t nel = 1;
        buf_str(&h, ",\"");
        buf_add(&h, names.p + e->name_off, e->name_len);
        buf_str(&h, "\":{\"dtype\":\"");
        buf_str(&h, dtypes[e->dtype].name);
        buf_str(&h, "\",\"shape\":[");
        for (unsigned d = 0; d < e->rank; d++) {
            if (d)
                buf_str(&h, ",");
            buf_u64(&h, e->dims[d]);
            nel *= e->dims[d];
        }
        uint64_t end = off + nel * dtypes[e->dtype].size;
        buf_str(&h, "],\"data_offsets\":[");
        buf_u64(&h, off);
        buf_str(&h, ",");
        buf_u64(&h, end);
        buf_str(&h, "]}");
        off = end;
    }
    buf_str(&h, "}");
    while (h.len % 8)
        buf_str(&h, " ");
    if (h.len > MAX_HEADER) {
        fprintf(stderr, "gen_header: header of %zu bytes exceeds the %llu-byte cap\n",
                h.len, MAX_HEADER);
        return 1;
    }

    size_t plen = strlen(out) + 5;
    char *tmp = malloc(plen);
    if (!tmp)
        return 1;
    snprintf(tmp, plen, "%s.tmp", out);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        perror(tmp);
        return 1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.len, f) == h.len;
    /* Data: deterministic non-zero bytes, small enough to write in one go. */
    unsigned char chunk[65536];
    for (uint64_t done = 0; ok && done < off;) {
        size_t n = off - done < sizeof chunk ? (size_t)(off - done) : sizeof chunk;
        for (size_t i = 0; i < n; i++)
            chunk[i] = (unsigned char)(bench_rand(&rng) | 1);
        ok = fwrite(chunk, 1, n, f) == n;
        done += n;
    }
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, out) != 0) {
        perror(out);
        remove(tmp);
        return 1;
    }
    printf("%s: %llu tensors, header %zu bytes, data %llu bytes, mean name %.1f bytes\n",
           out, count, h.len, (unsigned long long)off, (double)names.len / (double)count);
    free(tmp);
    free(h.p);
    free(names.p);
    free(ents);
    return 0;
}
