/* Concurrency: many threads reading one open file give identical results.
 *
 * A file of a few hundred tensors (random names, dtypes, shapes, bytes) is
 * written, then opened in each mode (mmap, pread, memory). For each handle,
 * THREADS threads start together at a barrier and each computes a digest of
 * everything it can read: the by-name order (its lazy first use races on a
 * fresh handle), st_find of every name, st_tensor_read of every tensor in
 * pieces, st_tensor_data, a slice of each tensor and the metadata. Every
 * thread's digest must equal the single-threaded digest computed from the
 * data the test generated. Built normally, with ASan, and with
 * ThreadSanitizer by tests/tsan_test.sh. */
#include "safetensors.h"
#include "test.h"

#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#define NT 300
#define THREADS 8
#define ROUNDS 6

typedef struct gen {
    char name[40];
    size_t name_len;
    st_dtype dtype;
    uint64_t shape[3];
    uint32_t rank;
    unsigned char *data;
    uint64_t nbytes;
} gen;

static gen g_tensors[NT];

static uint64_t rng = 0x853c49e6748fea9bull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* What a reader should see, from the generated data (order-independent
 * parts are folded in name order, which the test knows). */
typedef struct job {
    const st_file *file;
    pthread_barrier_t *barrier;
    uint64_t digest;
    int errors;
} job;

static int cmp_gen(const void *a, const void *b)
{
    const gen *x = *(const gen *const *)a, *y = *(const gen *const *)b;
    size_t m = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, m);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static uint64_t expected_digest(int with_data_ptr)
{
    const gen *order[NT];
    for (int i = 0; i < NT; i++)
        order[i] = &g_tensors[i];
    qsort(order, NT, sizeof *order, cmp_gen);
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < NT; i++) {
        const gen *t = order[i];
        h = mix(h, t->name, t->name_len);
        h = mix(h, &t->dtype, sizeof t->dtype);
        h = mix(h, t->data, t->nbytes); /* st_tensor_read */
        if (with_data_ptr)
            h = mix(h, t->data, t->nbytes); /* st_tensor_data */
        /* slice: first index of dimension 0 (whole tensor for scalars) */
        uint64_t first = t->nbytes;
        if (t->rank > 0)
            first = t->shape[0] ? t->nbytes / t->shape[0] : 0;
        h = mix(h, t->data, first);
    }
    h = mix(h, "v", 1);
    return h;
}

static void *reader(void *arg)
{
    job *j = arg;
    const st_file *f = j->file;
    pthread_barrier_wait(j->barrier);
    uint64_t h = 0xcbf29ce484222325ull;
    size_t n = st_tensor_count(f);
    unsigned char *buf = malloc(1 << 16);
    if (!buf) {
        j->errors++;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_by_name_order(f, i);
        if (!t || st_find(f, t->name, t->name_len) != t) {
            j->errors++;
            continue;
        }
        h = mix(h, t->name, t->name_len);
        h = mix(h, &t->dtype, sizeof t->dtype);
        uint64_t nb = st_tensor_nbytes(t);
        /* in odd-sized pieces, so reads interleave across threads */
        for (uint64_t off = 0; off < nb;) {
            size_t piece = (size_t)(nb - off < 777 ? nb - off : 777);
            if (st_tensor_read(f, t, off, buf, piece, NULL) != ST_OK) {
                j->errors++;
                break;
            }
            h = mix(h, buf, piece);
            off += piece;
        }
        const void *d = st_tensor_data(f, t);
        if (d)
            h = mix(h, d, nb);
        st_slice_dim first = {ST_SLICE_INDEX, 0, 0};
        uint64_t snb = 0;
        size_t nd = t->rank > 0 ? 1 : 0;
        if (t->rank > 0 && t->shape[0] == 0) {
            /* nothing to index: the model folds no bytes */
        } else if (st_slice_info(t, &first, nd, &snb, NULL, NULL, NULL) == ST_OK &&
                   snb <= (1 << 16) && st_slice_read(f, t, &first, nd, buf, snb, NULL) == ST_OK) {
            h = mix(h, buf, snb);
        } else {
            j->errors++;
        }
    }
    size_t vl = 0;
    const char *v = st_metadata_get(f, "k", 1, &vl);
    h = mix(h, v ? v : "", vl);
    j->digest = h;
    free(buf);
    return NULL;
}

/* THREADS readers on one handle, released together. */
static void race(const st_file *f, uint64_t want, const char *what)
{
    pthread_t th[THREADS];
    job jobs[THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){f, &barrier, 0, 0};
        CHECK(pthread_create(&th[i], NULL, reader, &jobs[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);
    for (int i = 0; i < THREADS; i++) {
        CHECK(jobs[i].errors == 0, "%s: thread %d had %d errors", what, i, jobs[i].errors);
        CHECK(jobs[i].digest == want, "%s: thread %d digest differs", what, i);
    }
}

int main(void)
{
    static const st_dtype dts[] = {ST_F32, ST_F16, ST_BF16, ST_U8, ST_I64, ST_F64, ST_BOOL, ST_F4};
    st_writer *w = st_writer_new();
    CHECK(w != NULL, "w != NULL");
    for (int i = 0; i < NT; i++) {
        gen *t = &g_tensors[i];
        t->name_len = (size_t)snprintf(t->name, sizeof t->name, "layer.%d.w%llu", i,
                                       (unsigned long long)(rnd() % 1000));
        t->dtype = dts[rnd() % (sizeof dts / sizeof dts[0])];
        t->rank = (uint32_t)(rnd() % 4);
        uint64_t ne = 1;
        for (uint32_t k = 0; k < t->rank; k++) {
            t->shape[k] = 2 * (rnd() % 12); /* even: F4 stays whole bytes */
            ne *= t->shape[k];
        }
        /* F4 only with an even inner dimension, so indexing dimension 0
         * stays on byte boundaries. */
        if (t->dtype == ST_F4 && t->rank < 2)
            t->dtype = ST_U8;
        t->nbytes = ne * st_dtype_bits(t->dtype) / 8;
        t->data = malloc(t->nbytes ? t->nbytes : 1);
        for (uint64_t k = 0; k < t->nbytes; k++)
            t->data[k] = (unsigned char)rnd();
        CHECK(st_writer_add(w, t->name, t->name_len, t->dtype, t->shape, t->rank, t->data,
                            t->nbytes, NULL) == ST_OK, "add %s", t->name);
    }
    CHECK(st_writer_set_metadata(w, "k", 1, "v", 1, NULL) == ST_OK, "set metadata");
    char dir[] = "/tmp/st_threads_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp(dir) != NULL");
    char path[128];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    CHECK(st_writer_write(w, path, NULL) == ST_OK, "st_writer_write(w, path, NULL) == ST_OK");
    void *mem = NULL;
    size_t mem_len = 0;
    CHECK(st_writer_serialize(w, &mem, &mem_len, NULL) == ST_OK, "st_writer_serialize(w, &mem, &mem_len, NULL) == ST_OK");
    st_writer_free(w);

    uint64_t want_mapped = expected_digest(1), want_pread = expected_digest(0);
    for (int round = 0; round < ROUNDS; round++) {
        /* A fresh handle each round: the lazy by-name order is built by
         * whichever thread gets there first. */
        st_file *f = NULL;
        CHECK(st_open(path, ST_OPEN_MMAP, &f, NULL) == ST_OK, "st_open(path, ST_OPEN_MMAP, &f, NULL) == ST_OK");
        if (f) {
            race(f, want_mapped, "mmap");
            st_close(f);
        }
        f = NULL;
        CHECK(st_open(path, ST_OPEN_PREAD, &f, NULL) == ST_OK, "st_open(path, ST_OPEN_PREAD, &f, NULL) == ST_OK");
        if (f) {
            race(f, want_pread, "pread");
            st_close(f);
        }
        f = NULL;
        CHECK(st_open_memory(mem, mem_len, 0, &f, NULL) == ST_OK, "st_open_memory(mem, mem_len, 0, &f, NULL) == ST_OK");
        if (f) {
            race(f, want_mapped, "memory");
            st_close(f);
        }
    }
    free(mem);
    for (int i = 0; i < NT; i++)
        free(g_tensors[i].data);
    unlink(path);
    rmdir(dir);
    TEST_END();
}
