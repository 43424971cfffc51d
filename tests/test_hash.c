/* Hashing: BLAKE3 against the official test vectors (BLAKE3-team/BLAKE3
 * test_vectors/test_vectors.json: input byte i is i % 251; the 32-byte hash
 * of each length), every SIMD level and update split; SHA-256 and CRC-32
 * check values; the autov1/autov3 rules; text styles; fd and pipe input. */
#include "test.h"

#include "sd/blake3.h"
#include "safetensors.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

static const struct {
    size_t len;
    const char *hash;
} vectors[] = {
    {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
    {2, "7b7015bb92cf0b318037702a6cdd81dee41224f734684c2c122cd6359cb1ee63"},
    {3, "e1be4d7a8ab5560aa4199eea339849ba8e293d55ca0a81006726d184519e647f"},
    {4, "f30f5ab28fe047904037f77b6da4fea1e27241c5d132638d8bedce9d40494f32"},
    {5, "b40b44dfd97e7a84a996a91af8b85188c66c126940ba7aad2e7ae6b385402aa2"},
    {6, "06c4e8ffb6872fad96f9aaca5eee1553eb62aed0ad7198cef42e87f6a616c844"},
    {7, "3f8770f387faad08faa9d8414e9f449ac68e6ff0417f673f602a646a891419fe"},
    {8, "2351207d04fc16ade43ccab08600939c7c1fa70a5c0aaca76063d04c3228eaeb"},
    {63, "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b"},
    {64, "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98"},
    {65, "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee"},
    {127, "d81293fda863f008c09e92fc382a81f5a0b4a1251cba1634016a0f86a6bd640d"},
    {128, "f17e570564b26578c33bb7f44643f539624b05df1a76c81f30acd548c44b45ef"},
    {129, "683aaae9f3c5ba37eaaf072aed0f9e30bac0865137bae68b1fde4ca2aebdcb12"},
    {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
    {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
    {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
    {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
    {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
    {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
    {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
    {4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
    {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
    {5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
    {6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
    {6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
    {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
    {7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
    {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
    {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
    {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
    {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
    {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
};
#define NVEC (sizeof vectors / sizeof vectors[0])

static void tohex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i % 251);
    return p;
}

static void blake3_of(const uint8_t *p, size_t n, int level, size_t split, char hex[65])
{
    st_blake3 h;
    st_blake3_init(&h);
    st_blake3_set_simd(&h, level);
    for (size_t off = 0; off < n;) {
        size_t t = n - off < split ? n - off : split;
        st_blake3_update(&h, p + off, t);
        off += t;
    }
    uint8_t out[32];
    st_blake3_final(&h, out);
    tohex(out, 32, hex);
}

static void test_blake3_vectors(void)
{
    static const size_t splits[] = {SIZE_MAX, 1, 63, 64, 1000, 1024, 1025, 65536};
    for (size_t v = 0; v < NVEC; v++) {
        uint8_t *p = pattern(vectors[v].len);
        for (int level = 0; level <= 2; level++)
            for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
                char hex[65];
                blake3_of(p, vectors[v].len, level, splits[s], hex);
                CHECK(strcmp(hex, vectors[v].hash) == 0, "len %zu level %d split %zu: %s",
                      vectors[v].len, level, splits[s], hex);
            }
        st_hashes h;
        char txt[ST_HASH_TEXT_MAX];
        CHECK_EQ_INT(st_hash_memory(p, vectors[v].len, ST_HASH_BLAKE3, NULL, &h, NULL), ST_OK);
        CHECK_EQ_INT(st_hash_text(&h, ST_HASH_BLAKE3, ST_HASH_STYLE_PLAIN, txt), ST_OK);
        CHECK(strcmp(txt, vectors[v].hash) == 0, "st_hash_memory len %zu", vectors[v].len);
        free(p);
    }
}

/* Bigger inputs: every level and split agrees (several 64-chunk subtrees,
 * an odd tail). */
static void test_blake3_consistency(void)
{
    size_t n = 3 * 1024 * 1024 + 5;
    uint8_t *p = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 24);
    }
    char ref[65], hex[65];
    blake3_of(p, n, 0, SIZE_MAX, ref);
    static const size_t splits[] = {SIZE_MAX, 4096, 65537, 1 << 20};
    for (int level = 0; level <= 2; level++)
        for (size_t s = 0; s < sizeof splits / sizeof splits[0]; s++) {
            blake3_of(p, n, level, splits[s], hex);
            CHECK(strcmp(hex, ref) == 0, "level %d split %zu", level, splits[s]);
        }
    free(p);
}

static void test_known_values(void)
{
    st_hashes h;
    char txt[ST_HASH_TEXT_MAX];
    CHECK_EQ_INT(st_hash_memory("abc", 3, ST_HASH_ALL, NULL, &h, NULL), ST_OK);
    st_hash_text(&h, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, txt);
    CHECK(strcmp(txt, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0, "%s", txt);
    st_hash_text(&h, ST_HASH_AUTOV2, ST_HASH_STYLE_PLAIN, txt);
    CHECK(strcmp(txt, "ba7816bf8f") == 0, "%s", txt);
    st_hash_text(&h, ST_HASH_AUTOV2, ST_HASH_STYLE_CIVITAI, txt);
    CHECK(strcmp(txt, "BA7816BF8F") == 0, "%s", txt);
    CHECK_EQ_INT(h.size, 3);
    /* "abc" as a length prefix is too short: no autov3 */
    CHECK(!(h.computed & ST_HASH_AUTOV3), "-");
    CHECK_EQ_INT(st_hash_text(&h, ST_HASH_AUTOV3, ST_HASH_STYLE_PLAIN, txt), ST_E_NOT_FOUND);

    /* CRC-32 check value; Civitai writes the bytes little-endian. */
    CHECK_EQ_INT(st_hash_memory("123456789", 9, ST_HASH_CRC32, NULL, &h, NULL), ST_OK);
    CHECK(h.crc32 == 0xCBF43926u, "%08x", h.crc32);
    st_hash_text(&h, ST_HASH_CRC32, ST_HASH_STYLE_PLAIN, txt);
    CHECK(strcmp(txt, "cbf43926") == 0, "%s", txt);
    st_hash_text(&h, ST_HASH_CRC32, ST_HASH_STYLE_CIVITAI, txt);
    CHECK(strcmp(txt, "2639F4CB") == 0, "%s", txt);
    CHECK(h.computed == ST_HASH_CRC32, "only what was asked: %x", h.computed);

    /* Empty input. */
    CHECK_EQ_INT(st_hash_memory(NULL, 0, ST_HASH_ALL, NULL, &h, NULL), ST_OK);
    st_hash_text(&h, ST_HASH_SHA256, ST_HASH_STYLE_PLAIN, txt);
    CHECK(strcmp(txt, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0, "%s", txt);
    CHECK(h.crc32 == 0, "-");
}

static void test_autov1(void)
{
    size_t sizes[] = {0, 100, 0x100000, 0x100000 + 10, 0x110000, 0x1FFFFF, 0x200000, 0x250000};
    size_t maxn = 0x250000;
    uint8_t *p = pattern(maxn);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        st_hashes h, w;
        char a[ST_HASH_TEXT_MAX], b[ST_HASH_TEXT_MAX];
        st_hash_options o = {.threads = 2, .chunk_size = 64 * 1024}; /* the window spans reads */
        CHECK_EQ_INT(st_hash_memory(p, n, ST_HASH_AUTOV1, &o, &h, NULL), ST_OK);
        /* The rule: SHA-256 of what read(0x10000) after seek(0x100000) gives. */
        size_t from = n < 0x100000 ? n : 0x100000;
        size_t to = n < 0x110000 ? n : 0x110000;
        CHECK_EQ_INT(st_hash_memory(p + from, to - from, ST_HASH_SHA256, NULL, &w, NULL), ST_OK);
        CHECK(memcmp(h.autov1, w.sha256, 32) == 0, "autov1 window at size %zu", n);
        CHECK_EQ_INT(st_hash_text(&h, ST_HASH_AUTOV1, ST_HASH_STYLE_PLAIN, a), ST_OK);
        CHECK(strlen(a) == 8, "-");
        int civ = st_hash_text(&h, ST_HASH_AUTOV1, ST_HASH_STYLE_CIVITAI, b);
        if (n < 0x200000) {
            CHECK(civ == ST_E_NOT_FOUND, "Civitai: null under 2 MiB (%zu)", n);
        } else {
            CHECK(civ == ST_OK, "-");
            for (int k = 0; k < 8; k++)
                CHECK(b[k] == (char)toupper((unsigned char)a[k]), "-");
        }
    }
    free(p);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void test_autov3(void)
{
    size_t n = 300000;
    uint8_t *p = pattern(n);
    st_hashes h, w;
    uint64_t hdrs[] = {0, 8, 1000, 150000, n - 8};
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        put_u64(p, hdrs[i]);
        st_hash_options o = {.chunk_size = 64 * 1024};
        CHECK_EQ_INT(st_hash_memory(p, n, ST_HASH_AUTOV3 | ST_HASH_SHA256, &o, &h, NULL), ST_OK);
        CHECK(h.computed & ST_HASH_AUTOV3, "-");
        CHECK_EQ_INT(h.autov3_offset, 8 + hdrs[i]);
        st_hash_memory(p + 8 + hdrs[i], n - 8 - hdrs[i], ST_HASH_SHA256, NULL, &w, NULL);
        CHECK(memcmp(h.autov3, w.sha256, 32) == 0, "autov3 with N = %llu",
              (unsigned long long)hdrs[i]);
    }
    put_u64(p, n); /* 8 + N past the end */
    CHECK_EQ_INT(st_hash_memory(p, n, ST_HASH_AUTOV3, NULL, &h, NULL), ST_OK);
    CHECK(!(h.computed & ST_HASH_AUTOV3), "-");
    put_u64(p, 100000001); /* above the format's header limit */
    CHECK_EQ_INT(st_hash_memory(p, n, ST_HASH_AUTOV3, NULL, &h, NULL), ST_OK);
    CHECK(!(h.computed & ST_HASH_AUTOV3), "-");
    free(p);
}

/* Every option combination gives the same digests as one plain pass. */
static void test_pipeline(void)
{
    size_t n = 5 * 1024 * 1024 + 333;
    uint8_t *p = pattern(n);
    put_u64(p, 4096);
    st_hashes ref, h;
    st_hash_options one = {.threads = 1};
    CHECK_EQ_INT(st_hash_memory(p, n, ST_HASH_ALL, &one, &ref, NULL), ST_OK);
    CHECK(ref.computed == ST_HASH_ALL, "-");
    unsigned threads[] = {0, 1, 2, 3, 8};
    size_t chunks[] = {0, 64 * 1024, 100000, 1 << 20};
    char path[] = "/tmp/st_hash_test_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "-");
    CHECK(write(fd, p, n) == (ssize_t)n, "-");
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++)
        for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
            st_hash_options o = {.threads = threads[t], .chunk_size = chunks[c]};
            CHECK_EQ_INT(st_hash_memory(p, n, ST_HASH_ALL, &o, &h, NULL), ST_OK);
            CHECK(memcmp(&h, &ref, sizeof h) == 0, "memory, threads %u chunk %zu", threads[t], chunks[c]);
            memset(&h, 0, sizeof h);
            CHECK_EQ_INT(st_hash_path(path, ST_HASH_ALL, &o, &h, NULL), ST_OK);
            CHECK(memcmp(&h, &ref, sizeof h) == 0, "file, threads %u chunk %zu", threads[t], chunks[c]);
        }
    /* An fd is read from offset 0 whatever its position. */
    lseek(fd, 1000, SEEK_SET);
    CHECK_EQ_INT(st_hash_fd(fd, ST_HASH_ALL, NULL, &h, NULL), ST_OK);
    CHECK(memcmp(&h, &ref, sizeof h) == 0, "-");
    close(fd);
    unlink(path);

    /* A pipe (unseekable): read as a stream. */
    int pfd[2];
    CHECK(pipe(pfd) == 0, "-");
    size_t m = 40000;
    CHECK(write(pfd[1], p, m) == (ssize_t)m, "-");
    close(pfd[1]);
    st_hashes ph, mh;
    CHECK_EQ_INT(st_hash_fd(pfd[0], ST_HASH_ALL, NULL, &ph, NULL), ST_OK);
    close(pfd[0]);
    st_hash_memory(p, m, ST_HASH_ALL, NULL, &mh, NULL);
    CHECK(memcmp(&ph, &mh, sizeof ph) == 0, "pipe = memory");
    free(p);
}

static void test_args_and_names(void)
{
    st_hashes h;
    st_error err;
    CHECK_EQ_INT(st_hash_memory("x", 1, 0, NULL, &h, &err), ST_E_ARG);
    CHECK_EQ_INT(st_hash_memory("x", 1, 0x40, NULL, &h, &err), ST_E_ARG);
    st_hash_options bad = {.chunk_size = 1000};
    CHECK_EQ_INT(st_hash_memory("x", 1, ST_HASH_SHA256, &bad, &h, &err), ST_E_ARG);
    CHECK_EQ_INT(st_hash_memory("x", 1, ST_HASH_SHA256, NULL, NULL, &err), ST_E_ARG);
    CHECK_EQ_INT(st_hash_fd(-1, ST_HASH_SHA256, NULL, &h, &err), ST_E_ARG);
    CHECK_EQ_INT(st_hash_path("/nonexistent/file", ST_HASH_SHA256, NULL, &h, &err), ST_E_IO);
    CHECK_EQ_INT(err.code, ST_E_IO);
    CHECK_EQ_INT(st_hash_path("/tmp", ST_HASH_SHA256, NULL, &h, &err), ST_E_IO);
    char txt[ST_HASH_TEXT_MAX];
    st_hash_memory("x", 1, ST_HASH_SHA256, NULL, &h, NULL);
    CHECK_EQ_INT(st_hash_text(&h, 3, 0, txt), ST_E_ARG);
    CHECK_EQ_INT(st_hash_text(&h, ST_HASH_SHA256, 7, txt), ST_E_ARG);
    CHECK_EQ_INT(st_hash_text(&h, ST_HASH_BLAKE3, 0, txt), ST_E_NOT_FOUND);
    const char *names[] = {"sha256", "autov1", "autov2", "autov3", "crc32", "blake3"};
    for (unsigned i = 0; i < 6; i++) {
        unsigned a = 0;
        CHECK(strcmp(st_hash_name(1u << i), names[i]) == 0, "-");
        CHECK_EQ_INT(st_hash_from_name(names[i], strlen(names[i]), &a), ST_OK);
        CHECK_EQ_INT(a, 1u << i);
    }
    unsigned a;
    CHECK_EQ_INT(st_hash_from_name("SHA256", 6, &a), ST_OK);
    CHECK_EQ_INT(st_hash_from_name("sha25", 5, &a), ST_E_NOT_FOUND);
    CHECK_EQ_INT(st_hash_from_name("md5", 3, &a), ST_E_NOT_FOUND);
    CHECK(st_hash_name(0) == NULL && st_hash_name(3) == NULL, "-");
}

int main(void)
{
    test_blake3_vectors();
    test_blake3_consistency();
    test_known_values();
    test_autov1();
    test_autov3();
    test_pipeline();
    test_args_and_names();
    TEST_END();
}
