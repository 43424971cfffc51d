/* Hostile inputs with bounded cost.
 *
 * Each case builds a hostile file in memory in a child process, then opens
 * it (st_open_memory, and for some cases ST_OPEN_PREAD through a memfd) and
 * checks the verdict. The child reports the time the open took and how much
 * its peak RSS grew during the open (getrusage ru_maxrss after minus before;
 * the input is already resident before). The parent asserts:
 *   - the verdict;
 *   - extra peak RSS <= the bound of the case's class (SECURITY.md lists
 *     them; a linear factor of the header size plus a constant);
 *   - the open finished in under HANG_SECONDS (a generous limit meant to
 *     catch hangs and quadratic blow-ups, not to time speed); a child that
 *     runs past 4x that is killed and fails.
 * Each line printed is one measurement, for SECURITY.md.
 *
 * Under the ASan build (ST_SAN=1) the inputs are 10x smaller and the RSS
 * bounds are not checked (ASan's redzones and quarantine change them). */
#include "safetensors.h"
#include "test.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HANG_SECONDS 20.0
#define MB (1024.0 * 1024.0)

static int g_san;     /* ASan build: smaller inputs, no RSS bounds */
static size_t g_scale; /* 1 or 10 */

/* ---- building inputs ---------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 1 << 20;
        while (nc < b->len + n)
            nc *= 2;
        b->p = realloc(b->p, nc);
        if (!b->p)
            abort();
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_rep(buf *b, const char *s, size_t times)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < times; i++)
        put(b, s, n);
}

/* The file: 8-byte length, header, then data_len bytes of data (+ extra
 * bytes of slack, to make "incomplete" files), in one exact-size mapping
 * that is touched before the measurement starts. */
static unsigned char *frame(buf *h, uint64_t data_len, size_t *file_len)
{
    size_t n = 8 + h->len + data_len;
    unsigned char *f = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
    if (f == MAP_FAILED)
        abort();
    uint64_t hl = h->len;
    for (int i = 0; i < 8; i++)
        f[i] = (unsigned char)(hl >> (8 * i));
    memcpy(f + 8, h->p, h->len);
    memset(f + 8 + h->len, 0x3c, data_len);
    free(h->p);
    h->p = NULL;
    *file_len = n;
    return f;
}

/* ---- the cases ---------------------------------------------------------- */

typedef struct result {
    int code;
    size_t tensors, meta;
    size_t name_len; /* of the first tensor */
    double seconds;
    long extra_kb;  /* peak RSS growth during the open */
    uint64_t header_len;
} result;

typedef struct hcase {
    const char *name;
    const char *cls;  /* class in SECURITY.md */
    int want;         /* expected code; -1: header_json or header_schema */
    /* expected tensors, metadata pairs, first name's length (0: any) */
    size_t (*tensors)(void), (*meta)(void), (*name_len)(void);
    int pread;        /* also the file through ST_OPEN_PREAD */
    double factor;    /* RSS bound: factor x header bytes + 64 MiB */
    unsigned char *(*make)(size_t *len);
} hcase;

static size_t n_tensors(void)
{
    return 1100000 / g_scale;
}

/* 1.1 M one-byte tensors (about 77 MB of header). */
static unsigned char *make_many_tensors(size_t *len)
{
    buf h = {0};
    char e[160];
    size_t n = n_tensors();
    puts_(&h, "{");
    for (size_t i = 0; i < n; i++) {
        int k = snprintf(e, sizeof e, "%s\"t%07zu\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%zu,%zu]}",
                         i ? "," : "", i, i, i + 1);
        put(&h, e, (size_t)k);
    }
    puts_(&h, "}");
    return frame(&h, n, len);
}

/* The same with one data byte missing: fails after all the work. */
static unsigned char *make_many_tensors_incomplete(size_t *len)
{
    unsigned char *f = make_many_tensors(len);
    (*len)--; /* the mapping stays, the file is one byte shorter */
    return f;
}

/* A header of exactly 100,000,000 bytes: {} and spaces. */
static unsigned char *make_cap_whitespace(size_t *len)
{
    buf h = {0};
    size_t n = (size_t)ST_MAX_HEADER_SIZE / g_scale;
    h.p = malloc(n);
    if (!h.p)
        abort();
    h.cap = h.len = n;
    memset(h.p, ' ', n);
    h.p[0] = '{';
    h.p[1] = '}';
    return frame(&h, 0, len);
}

/* One byte over the cap, in an 8-byte file: rejected before any read. */
static unsigned char *make_over_cap(size_t *len)
{
    unsigned char *f = malloc(8);
    uint64_t n = ST_MAX_HEADER_SIZE + 1;
    for (int i = 0; i < 8; i++)
        f[i] = (unsigned char)(n >> (8 * i));
    *len = 8;
    return f;
}

/* 100,000 nested arrays in an ignored field of a tensor entry. */
static unsigned char *make_deep_arrays(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":");
    put_rep(&h, "[", 100000);
    put_rep(&h, "]", 100000);
    puts_(&h, "}}");
    return frame(&h, 1, len);
}

/* 100,000 nested objects in __metadata__ (unterminated, as an attacker
 * would not bother to close them). */
static unsigned char *make_deep_objects(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"__metadata__\":");
    put_rep(&h, "{\"k\":", 100000);
    puts_(&h, "1");
    return frame(&h, 0, len);
}

/* A 10-million-digit integer as a dimension. */
static unsigned char *make_giant_integer(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"a\":{\"dtype\":\"U8\",\"shape\":[");
    put_rep(&h, "9", 10000000 / g_scale);
    puts_(&h, "],\"data_offsets\":[0,1]}}");
    return frame(&h, 1, len);
}

/* A float with a 10-million-digit mantissa and exponent, ignored field. */
static unsigned char *make_giant_float(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1.");
    put_rep(&h, "1", 5000000 / g_scale);
    puts_(&h, "e");
    put_rep(&h, "9", 5000000 / g_scale);
    puts_(&h, "}}");
    return frame(&h, 1, len);
}

/* A valid tensor whose name is 10 MB of \u00e9 escapes. */
static unsigned char *make_long_escaped_name(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"");
    put_rep(&h, "\\u00e9", 10000000 / 6 / g_scale);
    puts_(&h, "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
    return frame(&h, 1, len);
}

/* A valid tensor with a 10 MB plain name, and a 10 MB metadata value. */
static unsigned char *make_long_plain(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"__metadata__\":{\"k\":\"");
    put_rep(&h, "v", 10000000 / g_scale);
    puts_(&h, "\"},\"");
    put_rep(&h, "n", 10000000 / g_scale);
    puts_(&h, "\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
    return frame(&h, 1, len);
}




/* The same classes with the smallest possible items (the worst ratio of
 * memory to header bytes), about 24 MB of header each. */
#define TINY_BYTES (24000000 / g_scale)

static size_t tiny_count(size_t item_bytes)
{
    return TINY_BYTES / item_bytes;
}

/* Short distinct keys: base-36 with a fixed width of 5. */
static void key36(char *out, size_t i)
{
    static const char d[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    for (int k = 4; k >= 0; k--) {
        out[k] = d[i % 36];
        i /= 36;
    }
    out[5] = 0;
}

static size_t tiny_tensors_n(void)
{
    return tiny_count(48);
}

/* "xxxxx":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}, is 55 bytes */
static unsigned char *make_tiny_tensors(size_t *len)
{
    buf h = {0};
    char e[96], k[8];
    size_t n = tiny_tensors_n();
    puts_(&h, "{");
    for (size_t i = 0; i < n; i++) {
        key36(k, i);
        int m = snprintf(e, sizeof e, "%s\"%s\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}",
                         i ? "," : "", k);
        put(&h, e, (size_t)m);
    }
    puts_(&h, "}");
    return frame(&h, 0, len);
}

static size_t tiny_meta_n(void)
{
    return tiny_count(11);
}

/* "xxxxx":"", is 11 bytes */
static unsigned char *make_tiny_metadata(size_t *len)
{
    buf h = {0};
    char e[32], k[8];
    puts_(&h, "{\"__metadata__\":{");
    for (size_t i = 0; i < tiny_meta_n(); i++) {
        key36(k, i);
        int m = snprintf(e, sizeof e, "%s\"%s\":\"\"", i ? "," : "", k);
        put(&h, e, (size_t)m);
    }
    puts_(&h, "}}");
    return frame(&h, 0, len);
}

/* "xxxxx":0, is 10 bytes; the last key repeats the first */
static unsigned char *make_tiny_keys_duplicate(size_t *len)
{
    buf h = {0};
    char e[32], k[8];
    puts_(&h, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":{");
    for (size_t i = 0; i < tiny_count(10); i++) {
        key36(k, i);
        int m = snprintf(e, sizeof e, "\"%s\":0,", k);
        put(&h, e, (size_t)m);
    }
    puts_(&h, "\"00000\":1}}}");
    return frame(&h, 1, len);
}

static size_t huge_rank_n(void)
{
    return 12000000 / g_scale;
}

/* One tensor of rank 12 M ("1," per dimension): the reader, like the
 * reference, accepts any rank. */
static unsigned char *make_huge_rank(size_t *len)
{
    buf h = {0};
    puts_(&h, "{\"r\":{\"dtype\":\"U8\",\"data_offsets\":[0,1],\"shape\":[1");
    put_rep(&h, ",1", huge_rank_n() - 1);
    puts_(&h, "]}}");
    return frame(&h, 1, len);
}

static size_t zero(void)
{
    return 0;
}
static size_t one(void)
{
    return 1;
}
static size_t escaped_name_len(void)
{
    return 10000000 / 6 / g_scale * 2; /* U+00E9 is two bytes */
}
static size_t plain_name_len(void)
{
    return 10000000 / g_scale;
}

static const hcase cases[] = {
    {"1.1M tensors (valid)", "many tensors", ST_OK, n_tensors, zero, NULL, 1, 5.0,
     make_many_tensors},
    {"1.1M tensors, 1 byte short", "many tensors", ST_E_INCOMPLETE, NULL, NULL, NULL, 0, 5.0,
     make_many_tensors_incomplete},
    {"header of 100,000,000 bytes, {} + spaces", "whitespace", ST_OK, zero, zero, NULL, 1, 1.5,
     make_cap_whitespace},
    {"header length 100,000,001", "over the cap", ST_E_HEADER_TOO_LARGE, NULL, NULL, NULL, 0, 0.0,
     make_over_cap},
    {"100,000 nested arrays", "deep nesting", ST_E_HEADER_JSON, NULL, NULL, NULL, 0, 1.0,
     make_deep_arrays},
    {"100,000 nested objects", "deep nesting", ST_E_HEADER_JSON, NULL, NULL, NULL, 0, 1.0,
     make_deep_objects},
    {"10M-digit integer dimension", "giant numbers", -1, NULL, NULL, NULL, 0, 1.0,
     make_giant_integer},
    {"10M-digit float, ignored field", "giant numbers", -1, NULL, NULL, NULL, 0, 1.0,
     make_giant_float},
    {"10 MB name of \\u escapes", "long strings", ST_OK, one, zero, escaped_name_len, 1, 2.0,
     make_long_escaped_name},
    {"10 MB name + 10 MB metadata value", "long strings", ST_OK, one, one, plain_name_len, 1, 2.0,
     make_long_plain},
    {"tiny tensors (55 B each)", "many tensors", ST_OK, tiny_tensors_n, zero, NULL, 1, 5.0,
     make_tiny_tensors},
    {"tiny metadata pairs (11 B each)", "many keys", ST_OK, zero, tiny_meta_n, NULL, 0, 10.0,
     make_tiny_metadata},
    {"tiny ignored keys (10 B each), last repeated", "many keys", ST_E_DUPLICATE_KEY, NULL, NULL,
     NULL, 0, 10.0, make_tiny_keys_duplicate},
    {"one tensor of rank 12,000,000", "max rank", ST_OK, one, zero, NULL, 0, 5.0, make_huge_rank},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long status_kb(const char *field)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fp && fgets(line, sizeof line, fp))
        if (!strncmp(line, field, n) && line[n] == ':')
            v = atol(line + n + 1);
    if (fp)
        fclose(fp);
    return v;
}

/* Resets the peak RSS to the current RSS ("5" to /proc/self/clear_refs,
 * Linux 4.0+) and returns the current RSS in KiB: the input built before
 * is then counted once, and the builder's temporary buffers not at all. */
static long reset_peak_kb(void)
{
    FILE *fp = fopen("/proc/self/clear_refs", "w");
    if (fp) {
        fputs("5", fp);
        fclose(fp);
    }
    return status_kb("VmRSS");
}

/* Peak RSS since the reset (VmHWM), or getrusage's if /proc is missing. */
static long peak_kb(void)
{
    long v = status_kb("VmHWM");
    if (v < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        v = ru.ru_maxrss;
    }
    return v;
}

/* In the child: build, measure one open, write the result to fd. */
static void child(const hcase *c, int use_pread, int fd)
{
    size_t len = 0;
    unsigned char *data = c->make(&len);
    result r;
    memset(&r, 0, sizeof r);
    int mfd = -1;
    char path[64];
    if (use_pread) {
        mfd = memfd_create("hostile", MFD_CLOEXEC);
        size_t off = 0;
        while (mfd >= 0 && off < len) {
            ssize_t w = write(mfd, data + off, len - off);
            if (w <= 0)
                _exit(3);
            off += (size_t)w;
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
        /* The input is not needed in this mode: drop it from RSS. */
        munmap(data, len ? len : 1);
    }
    long before = reset_peak_kb();
    double t0 = now();
    st_file *f = NULL;
    st_error err;
    r.code = use_pread ? st_open(path, ST_OPEN_PREAD, &f, &err)
                       : st_open_memory(data, len, 0, &f, &err);
    if (f) {
        r.tensors = st_tensor_count(f);
        r.meta = st_metadata_count(f);
        const st_tensor *t = st_tensor_at(f, 0);
        r.name_len = t ? t->name_len : 0;
        r.header_len = st_header_size(f);
        st_close(f);
    }
    r.seconds = now() - t0;
    r.extra_kb = peak_kb() - before;
    if (!r.header_len && len >= 8) {
        const unsigned char *p = use_pread ? NULL : data;
        if (p)
            for (int i = 7; i >= 0; i--)
                r.header_len = r.header_len << 8 | p[i];
    }
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(2);
    _exit(0);
}

static void run_case(const hcase *c, int use_pread)
{
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        child(c, use_pread, p[1]);
    }
    close(p[1]);
    /* A watchdog: kill a child that hangs. */
    double start = now();
    int status = 0;
    pid_t done = 0;
    while ((done = waitpid(pid, &status, WNOHANG)) == 0 && now() - start < 4 * HANG_SECONDS)
        usleep(20000);
    if (done == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        CHECK(0, "%s: killed after %.0f s (hang)", c->name, 4 * HANG_SECONDS);
        close(p[0]);
        return;
    }
    result r;
    ssize_t got = read(p[0], &r, sizeof r);
    close(p[0]);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == (ssize_t)sizeof r,
          "%s: child failed (status 0x%x)", c->name, status);
    if (got != (ssize_t)sizeof r)
        return;
    const char *mode = use_pread ? "pread " : "memory";
    if (c->want == -1)
        CHECK(r.code == ST_E_HEADER_JSON || r.code == ST_E_HEADER_SCHEMA,
              "%s: got %s, want header_json or header_schema", c->name, st_code_name(r.code));
    else
        CHECK(r.code == c->want, "%s: got %s, want %s", c->name, st_code_name(r.code),
              st_code_name(c->want));
    if (c->tensors)
        CHECK(r.tensors == c->tensors(), "%s: %zu tensors", c->name, r.tensors);
    if (c->meta)
        CHECK(r.meta == c->meta(), "%s: %zu metadata pairs", c->name, r.meta);
    if (c->name_len)
        CHECK(r.name_len == c->name_len(), "%s: name of %zu bytes", c->name, r.name_len);
    CHECK(r.seconds < HANG_SECONDS, "%s: %.1f s", c->name, r.seconds);
    double hdr_mb = (double)r.header_len / MB;
    double bound_mb = c->factor * hdr_mb + 64.0;
    printf("%-42s %s %-20s header %7.1f MiB  open %6.3f s  peak RSS +%7.1f MiB (%.2fx header)  bound %.0f MiB\n",
           c->name, mode, st_code_name(r.code), hdr_mb, r.seconds, (double)r.extra_kb / 1024.0,
           hdr_mb > 0 ? (double)r.extra_kb / 1024.0 / hdr_mb : 0.0, bound_mb);
    if (!g_san)
        CHECK((double)r.extra_kb / 1024.0 <= bound_mb, "%s (%s): peak RSS +%.1f MiB over %.1f MiB",
              c->name, mode, (double)r.extra_kb / 1024.0, bound_mb);
}

int main(void)
{
    const char *san = getenv("ST_SAN");
    g_san = san && !strcmp(san, "1");
    g_scale = g_san ? 10 : 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], 0);
        if (cases[i].pread)
            run_case(&cases[i], 1);
    }
    TEST_END();
}
