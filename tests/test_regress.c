/* Replays every input kept in tests/regress/ (listed in tests/regress/MANIFEST)
 * through the fuzz target that once failed on it, in a child process so a
 * crash or a failed property (abort) counts as one failure and the others
 * still run. For the header target the manifest also gives the verdict
 * st_open_memory must return. Under the ASan+UBSan build this catches the
 * original bugs (most were memory errors or undefined behaviour).
 *
 * Adding a case: copy the crashing input to tests/regress/NAME (small files
 * only) and add a line "target NAME verdict" to MANIFEST. */
#include "safetensors.h"
#include "test.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

/* The fuzz targets, built in here with their entry points renamed. */
#define LLVMFuzzerTestOneInput fuzz_header_one
#include "../fuzz/fuzz_header.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_roundtrip_one
#include "../fuzz/fuzz_roundtrip.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_slice_one
#include "../fuzz/fuzz_slice.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_identify_one
#include "../fuzz/fuzz_identify.c"
#undef LLVMFuzzerTestOneInput
#define HAVE_CKPT 1
#define LLVMFuzzerTestOneInput fuzz_pickle_one
#include "../fuzz/fuzz_pickle.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_ckpt_one
#include "../fuzz/fuzz_ckpt.c"
#undef LLVMFuzzerTestOneInput

/* A replay longer than this is a hang (libFuzzer's limit was 20 s). */
#define REPLAY_SECONDS 10.0

typedef int (*target_fn)(const uint8_t *, size_t);

static target_fn target_of(const char *name)
{
    if (!strcmp(name, "header"))
        return fuzz_header_one;
    if (!strcmp(name, "roundtrip"))
        return fuzz_roundtrip_one;
    if (!strcmp(name, "slice"))
        return fuzz_slice_one;
    if (!strcmp(name, "identify"))
        return fuzz_identify_one;
#ifdef HAVE_CKPT
    if (!strcmp(name, "pickle"))
        return fuzz_pickle_one;
    if (!strcmp(name, "ckpt"))
        return fuzz_ckpt_one;
#endif
    return NULL;
}

static bool target_known(const char *name)
{
    return !strcmp(name, "pickle") || !strcmp(name, "ckpt") || target_of(name) != NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(fp);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0)
            break;
    }
    fclose(fp);
    *len = n;
    return buf;
}

int main(void)
{
    const char *root = getenv("ST_ROOT");
    char dir[4096], path[8192];
    snprintf(dir, sizeof dir, "%s/tests/regress", root && *root ? root : ".");
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    /* The whole manifest is read before any fork: a child shares the
     * descriptor's offset, and under valgrind its exit runs glibc's stdio
     * clean-up (__libc_freeres), which seeks the parent's read stream back:
     * the manifest was then read twice. */
    size_t mlen = 0;
    unsigned char *mtext = slurp(path, &mlen);
    CHECK(mtext != NULL, "cannot read %s: %s", path, strerror(errno));
    if (!mtext)
        TEST_END();
    FILE *m = fmemopen(mtext, mlen, "r");
    CHECK(m != NULL, "fmemopen");
    if (!m) {
        free(mtext);
        TEST_END();
    }
    char line[1024];
    int cases = 0;
    while (fgets(line, sizeof line, m)) {
        char target[64], file[512], verdict[64];
        if (line[0] == '#' || sscanf(line, "%63s %511s %63s", target, file, verdict) != 3)
            continue;
        cases++;
        target_fn fn = target_of(target);
        CHECK(target_known(target), "unknown target %s for %s", target, file);
        if (!fn) {
            printf("%s: target %s not built here (branch not merged): skipped\n", file, target);
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, file);
        size_t len = 0;
        unsigned char *data = slurp(path, &len);
        CHECK(data != NULL, "cannot read %s", path);
        if (!fn || !data) {
            free(data);
            continue;
        }
        if (strcmp(verdict, "-") != 0) {
            st_file *f = NULL;
            int rc = st_open_memory(data, len, 0, &f, NULL);
            CHECK(!strcmp(st_code_name(rc), verdict), "%s: verdict %s, want %s", file,
                  st_code_name(rc), verdict);
            st_close(f);
        }
        fflush(NULL);
        double t0 = now_s();
        pid_t pid = fork();
        if (pid == 0) {
            fn(data, len);
            _exit(0);
        }
        int status = 0;
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/wait");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s (target %s): child ended with status 0x%x", file, target, status);
        CHECK(now_s() - t0 < REPLAY_SECONDS, "%s (target %s): %.1f s", file, target, now_s() - t0);
        free(data);
    }
    fclose(m);
    free(mtext);
    CHECK(cases > 0, "no cases in the manifest");
    printf("%d regression inputs replayed\n", cases);
    TEST_END();
}
