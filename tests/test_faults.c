/* Faults while writing and while reading.
 *
 * Writing (st_writer_write, and the CLI's convert when ST_BIN is set):
 *  - the file size limit (RLIMIT_FSIZE, set in a child, SIGXFSZ ignored):
 *    ST_E_IO, the destination untouched (absent, or the old file byte for
 *    byte), no temporary file left;
 *  - a read callback that fails mid-stream: ST_E_CALLBACK, same checks;
 *  - a rename that cannot happen (the destination is a folder) and a folder
 *    that does not exist: ST_E_IO, no temporary file;
 *  - SIGKILL mid-write (a slow callback, killed once the temporary file has
 *    data): the destination is the old file; the only thing left is the
 *    dead process's temporary file ".NAME.XXXXXX.tmp" (documented in
 *    SECURITY.md);
 *  - SIGKILL at random moments of repeated rewrites: the destination is
 *    always one complete version, old or new;
 *  - a process killed by SIGXFSZ (the default action) mid-write: like
 *    SIGKILL.
 * Reading:
 *  - a file truncated after st_open in ST_OPEN_PREAD mode: st_tensor_read
 *    and st_slice_read fail with ST_E_IO, data still present reads fine;
 *  - the same in mmap mode raises SIGBUS on access to the lost pages (the
 *    documented risk; checked in a child so the doc stays true);
 *  - a file replaced (renamed over) after open: both modes keep reading the
 *    old, complete file. */
#include "safetensors.h"
#include "test.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_dir[64];

/* ---- helpers ----------------------------------------------------------- */

static unsigned char *g_data; /* 8 MiB of pattern bytes */
#define DATA_BYTES (8u << 20)

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

/* Names in the folder other than `keep` (comma-separated), for messages;
 * returns how many. */
static int leftovers(const char *keep1, const char *keep2, char *names, size_t cap)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    names[0] = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if ((keep1 && !strcmp(e->d_name, keep1)) || (keep2 && !strcmp(e->d_name, keep2)))
            continue;
        n++;
        size_t l = strlen(names);
        snprintf(names + l, cap - l, "%s%s", l ? "," : "", e->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

static void remove_all_but(const char *keep)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (keep && !strcmp(e->d_name, keep)))
            continue;
        path_in(p, sizeof p, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    if (d)
        closedir(d);
}

static int write_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, p, n);
    close(fd);
    return w == (ssize_t)n ? 0 : -1;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    fstat(fd, &st);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    ssize_t r = read(fd, b, (size_t)st.st_size);
    close(fd);
    if (r != st.st_size) {
        free(b);
        return NULL;
    }
    *len = (size_t)st.st_size;
    return b;
}

static int same_file(const char *path, const void *want, size_t want_len)
{
    size_t len = 0;
    unsigned char *b = read_all(path, &len);
    int same = b && len == want_len && memcmp(b, want, len) == 0;
    free(b);
    return same;
}

/* A writer for `version` (the tensors' bytes differ by version), with
 * `nbytes` of data in one U8 tensor, by pointer or by callback. */
typedef struct cb_ctx {
    int fail_at_call; /* 0: never */
    int calls;
    int slow_fd;      /* >= 0: write one byte here after the first call, then sleep */
} cb_ctx;

static int cb_read(void *ctx, uint64_t offset, void *buf, size_t len)
{
    cb_ctx *c = ctx;
    c->calls++;
    if (c->fail_at_call && c->calls >= c->fail_at_call)
        return 1;
    memcpy(buf, g_data + offset, len);
    if (c->slow_fd >= 0 && c->calls == 2) {
        /* The first chunk has reached the temporary file by now. */
        if (write(c->slow_fd, "x", 1) != 1)
            _exit(9);
        for (;;)
            pause();
    }
    return 0;
}

static st_writer *make_writer(uint64_t nbytes, int version, cb_ctx *cb)
{
    st_writer *w = st_writer_new();
    uint64_t shape[1] = {nbytes};
    char v[16];
    snprintf(v, sizeof v, "%d", version);
    if (cb)
        st_writer_add_stream(w, "big", 3, ST_U8, shape, 1, nbytes, cb_read, cb, NULL);
    else
        st_writer_add(w, "big", 3, ST_U8, shape, 1, g_data + version, nbytes, NULL);
    st_writer_set_metadata(w, "version", 7, v, strlen(v), NULL);
    return w;
}

static void *serialize_version(uint64_t nbytes, int version, size_t *len)
{
    st_writer *w = make_writer(nbytes, version, NULL);
    void *p = NULL;
    st_writer_serialize(w, &p, len, NULL);
    st_writer_free(w);
    return p;
}

/* ---- writing ----------------------------------------------------------- */

/* In a child: RLIMIT_FSIZE of `limit` bytes, SIGXFSZ ignored, write
 * DATA_BYTES; exit status = the st_code. */
static int write_with_fsize_limit(const char *dst, rlim_t limit)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(100);
        st_writer *w = make_writer(DATA_BYTES, 1, NULL);
        st_error err;
        int rc = st_writer_write(w, dst, &err);
        if (rc)
            fprintf(stderr, "  (expected) %s\n", err.message);
        st_writer_free(w);
        _exit(rc);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 200;
}

static void test_fsize(void)
{
    char dst[256], names[1024];
    path_in(dst, sizeof dst, "out.safetensors");
    /* No file before. */
    int rc = write_with_fsize_limit(dst, 1 << 20);
    CHECK(rc == ST_E_IO, "RLIMIT_FSIZE, new file: code %d, want io", rc);
    CHECK(access(dst, F_OK) != 0, "RLIMIT_FSIZE: destination created");
    CHECK(leftovers(NULL, NULL, names, sizeof names) == 0, "RLIMIT_FSIZE left: %s", names);
    /* An old file stays as it was. */
    size_t old_len = 0;
    void *old = serialize_version(1000, 7, &old_len);
    CHECK(write_bytes(dst, old, old_len) == 0, "write old");
    rc = write_with_fsize_limit(dst, 1 << 20);
    CHECK(rc == ST_E_IO, "RLIMIT_FSIZE, old file: code %d", rc);
    CHECK(same_file(dst, old, old_len), "RLIMIT_FSIZE: old file changed");
    CHECK(leftovers("out.safetensors", NULL, names, sizeof names) == 0, "left: %s", names);
    /* A limit just below the size, so the last write is the short one. */
    size_t new_len = 0;
    void *nw = serialize_version(DATA_BYTES, 1, &new_len);
    rc = write_with_fsize_limit(dst, (rlim_t)new_len - 1);
    CHECK(rc == ST_E_IO, "RLIMIT_FSIZE one byte short: code %d", rc);
    CHECK(same_file(dst, old, old_len), "one byte short: old file changed");
    CHECK(leftovers("out.safetensors", NULL, names, sizeof names) == 0, "left: %s", names);
    /* And exactly the size succeeds (the limit is not off by one). */
    rc = write_with_fsize_limit(dst, (rlim_t)new_len);
    CHECK(rc == ST_OK, "RLIMIT_FSIZE exactly the size: code %d", rc);
    CHECK(same_file(dst, nw, new_len), "exact limit: new file wrong");
    free(old);
    free(nw);
    remove_all_but(NULL);
}

static void test_callback_failure(void)
{
    char dst[256], names[1024];
    path_in(dst, sizeof dst, "out.safetensors");
    size_t old_len = 0;
    void *old = serialize_version(1000, 3, &old_len);
    CHECK(write_bytes(dst, old, old_len) == 0, "write old");
    for (int at = 1; at <= 3; at++) {
        cb_ctx cb = {at, 0, -1};
        st_writer *w = make_writer(DATA_BYTES, 1, &cb);
        st_error err;
        int rc = st_writer_write(w, dst, &err);
        st_writer_free(w);
        CHECK(rc == ST_E_CALLBACK, "callback failing at call %d: %s", at, st_code_name(rc));
        CHECK(same_file(dst, old, old_len), "callback failure changed the old file");
        CHECK(leftovers("out.safetensors", NULL, names, sizeof names) == 0, "left: %s", names);
    }
    free(old);
    remove_all_but(NULL);
}

static void test_rename_and_folder_errors(void)
{
    char dst[256], names[1024];
    path_in(dst, sizeof dst, "adir");
    CHECK(mkdir(dst, 0755) == 0, "mkdir");
    char inner[300];
    snprintf(inner, sizeof inner, "%s/keep", dst);
    CHECK(write_bytes(inner, "x", 1) == 0, "write keep");
    st_writer *w = make_writer(4096, 1, NULL);
    st_error err;
    int rc = st_writer_write(w, dst, &err);
    CHECK(rc == ST_E_IO, "destination is a folder: %s", st_code_name(rc));
    CHECK(leftovers("adir", NULL, names, sizeof names) == 0, "rename failure left: %s", names);
    char missing[300];
    path_in(missing, sizeof missing, "no/such/dir/out.safetensors");
    rc = st_writer_write(w, missing, &err);
    CHECK(rc == ST_E_IO, "missing folder: %s", st_code_name(rc));
    st_writer_free(w);
    unlink(inner);
    remove_all_but(NULL);
}

/* SIGKILL while the temporary file is being written. */
static void test_sigkill_mid_write(void)
{
    char dst[256], names[1024];
    path_in(dst, sizeof dst, "out.safetensors");
    size_t old_len = 0;
    void *old = serialize_version(1000, 5, &old_len);
    CHECK(write_bytes(dst, old, old_len) == 0, "write old");
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        cb_ctx cb = {0, 0, p[1]};
        st_writer *w = make_writer(DATA_BYTES, 1, &cb);
        st_writer_write(w, dst, NULL);
        _exit(0); /* not reached: the callback waits to be killed */
    }
    close(p[1]);
    char c;
    CHECK(read(p[0], &c, 1) == 1, "child did not start writing");
    close(p[0]);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child not killed");
    CHECK(same_file(dst, old, old_len), "SIGKILL mid-write changed the destination");
    /* What remains: exactly one ".out.safetensors.XXXXXX.tmp", partial. */
    int n = leftovers("out.safetensors", NULL, names, sizeof names);
    CHECK(n == 1, "SIGKILL left %d files: %s", n, names);
    CHECK(n != 1 || (strncmp(names, ".out.safetensors.", 17) == 0 && strlen(names) == 17 + 6 + 4 &&
                     strcmp(names + 23, ".tmp") == 0),
          "temporary file named %s", names);
    printf("SIGKILL mid-write leaves: %s (the destination is the old file)\n", names);
    free(old);
    remove_all_but(NULL);
}

/* Kill repeated rewrites at random moments: the destination is always one
 * complete version. */
static void test_sigkill_random(void)
{
    char dst[256], names[1024];
    path_in(dst, sizeof dst, "out.safetensors");
    const uint64_t nb = 2u << 20;
    size_t len_a = 0, len_b = 0;
    void *va = serialize_version(nb, 1, &len_a);
    void *vb = serialize_version(nb, 2, &len_b);
    CHECK(write_bytes(dst, va, len_a) == 0, "write first version");
    uint64_t seed = (uint64_t)getpid() * 2654435761u;
    int outcomes[2] = {0, 0};
    for (int round = 0; round < 12; round++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            for (int k = 0;; k++) {
                st_writer *w = make_writer(nb, k % 2 ? 1 : 2, NULL);
                st_writer_write(w, dst, NULL);
                st_writer_free(w);
            }
        }
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        struct timespec ts = {0, (long)((seed >> 33) % 40000000)}; /* 0-40 ms */
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        int is_a = same_file(dst, va, len_a), is_b = same_file(dst, vb, len_b);
        CHECK(is_a || is_b, "round %d: destination is neither version", round);
        outcomes[is_b]++;
        remove_all_but("out.safetensors"); /* the killed writer's temp file */
    }
    printf("random SIGKILLs: destination old/new version %d/%d times, never partial\n",
           outcomes[0], outcomes[1]);
    CHECK(leftovers("out.safetensors", NULL, names, sizeof names) == 0, "left: %s", names);
    free(va);
    free(vb);
    remove_all_but(NULL);
}

/* The CLI's convert under the file size limit: ignored SIGXFSZ gives an
 * I/O error (exit 2) and no output; the default SIGXFSZ kills it and leaves
 * only its temporary file. */
static void test_cli_convert_fsize(void)
{
    const char *bin = getenv("ST_BIN");
    if (!bin || access(bin, X_OK) != 0) {
        printf("ST_BIN not set: CLI convert fault checks skipped\n");
        return;
    }
    char in[256], dst[256], names[1024];
    path_in(in, sizeof in, "in.safetensors");
    path_in(dst, sizeof dst, "out.safetensors");
    size_t len = 0;
    void *v = serialize_version(DATA_BYTES, 1, &len);
    CHECK(write_bytes(in, v, len) == 0, "write input");
    for (int ignore = 1; ignore >= 0; ignore--) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGXFSZ, ignore ? SIG_IGN : SIG_DFL);
            struct rlimit rl = {1 << 20, 1 << 20};
            setrlimit(RLIMIT_FSIZE, &rl);
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 1);
            dup2(devnull, 2);
            execl(bin, bin, "convert", in, dst, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(access(dst, F_OK) != 0, "convert under RLIMIT_FSIZE created the output");
        int n = leftovers("in.safetensors", NULL, names, sizeof names);
        if (ignore) {
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2, "convert: status 0x%x, want exit 2",
                  status);
            CHECK(n == 0, "convert after a clean failure left: %s", names);
        } else {
            /* The CLI ignores SIGXFSZ itself: even with the default action
             * inherited, the limit is a clean error (EFBIG), not a kill. */
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2,
                  "convert with SIGXFSZ at its default: status 0x%x, want exit 2", status);
            CHECK(n == 0, "convert under a size limit left: %s", names);
        }
        remove_all_but("in.safetensors");
    }
    CHECK(same_file(in, v, len), "convert modified its input");
    free(v);
    remove_all_but(NULL);
}

/* The CLI's hash on a file truncated while it is read: an error (exit 2,
 * "changed size"), not the digest of bytes that were never the file. */
static int has_open(pid_t pid, const char *path)
{
    char dir[64], link[600], target[600];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d)) && !found) {
        snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        if (n > 0) {
            target[n] = 0;
            found = strcmp(target, path) == 0;
        }
    }
    if (d)
        closedir(d);
    return found;
}

static void test_cli_hash_truncated(void)
{
    const char *bin = getenv("ST_BIN");
    if (!bin || access(bin, X_OK) != 0)
        return;
    char path[256], errp[256], real[4096];
    path_in(path, sizeof path, "big.bin");
    path_in(errp, sizeof errp, "hash.err");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)4 << 30) == 0, "sparse 4 GiB file");
    close(fd);
    CHECK(realpath(path, real) != NULL, "realpath");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        int ef = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(devnull, 1);
        dup2(ef, 2);
        execl(bin, bin, "hash", "--threads", "1", path, (char *)NULL);
        _exit(127);
    }
    /* Truncate once the child has the file open (and has taken its size). */
    for (int i = 0; i < 2000 && !has_open(pid, real); i++)
        usleep(1000);
    usleep(50000);
    CHECK(truncate(path, 1 << 20) == 0, "truncate");
    int status = 0;
    waitpid(pid, &status, 0);
    size_t elen = 0;
    unsigned char *e = read_all(errp, &elen);
    int said = e && memmem(e, elen, "changed size", 12) != NULL;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 2 && said,
          "hash of a file truncated while read: status 0x%x, stderr: %.*s", status, (int)elen,
          e ? (const char *)e : "");
    free(e);
    remove_all_but(NULL);
}

/* ---- reading ----------------------------------------------------------- */

static void test_truncated_pread(void)
{
    char path[256];
    path_in(path, sizeof path, "r.safetensors");
    st_writer *w = st_writer_new();
    uint64_t shape[1] = {DATA_BYTES / 2};
    st_writer_add(w, "a", 1, ST_U8, shape, 1, g_data, DATA_BYTES / 2, NULL);
    st_writer_add(w, "b", 1, ST_U8, shape, 1, g_data + 1, DATA_BYTES / 2, NULL);
    CHECK(st_writer_write(w, path, NULL) == ST_OK, "write");
    st_writer_free(w);
    st_file *f = NULL;
    CHECK(st_open(path, ST_OPEN_PREAD, &f, NULL) == ST_OK, "open pread");
    if (!f)
        return;
    const st_tensor *a = st_find(f, "a", 1), *b = st_find(f, "b", 1);
    /* Cut the file in the middle of the second tensor. */
    uint64_t cut = st_data_offset(f) + b->begin + 1000;
    CHECK(truncate(path, (off_t)cut) == 0, "truncate");
    unsigned char *buf = malloc(DATA_BYTES / 2);
    st_error err;
    int rc = st_tensor_read(f, b, 0, buf, DATA_BYTES / 2, &err);
    CHECK(rc == ST_E_IO, "read across the cut: %s", st_code_name(rc));
    CHECK(rc != ST_E_IO || strstr(err.message, "truncated") != NULL, "message: %s", err.message);
    rc = st_tensor_read(f, b, 2000, buf, 10, &err);
    CHECK(rc == ST_E_IO, "read past the cut: %s", st_code_name(rc));
    st_slice_dim d = {ST_SLICE_RANGE, 10, 5000};
    rc = st_slice_read(f, b, &d, 1, buf, DATA_BYTES / 2, &err);
    CHECK(rc == ST_E_IO, "slice across the cut: %s", st_code_name(rc));
    /* What is still there reads correctly. */
    rc = st_tensor_read(f, a, 0, buf, DATA_BYTES / 2, &err);
    CHECK(rc == ST_OK && memcmp(buf, g_data, DATA_BYTES / 2) == 0, "tensor before the cut");
    rc = st_tensor_read(f, b, 0, buf, 1000, &err);
    CHECK(rc == ST_OK && memcmp(buf, g_data + 1, 1000) == 0, "bytes before the cut");
    st_close(f);
    free(buf);
    remove_all_but(NULL);
}

static void test_truncated_mmap_sigbus(void)
{
    char path[256];
    path_in(path, sizeof path, "m.safetensors");
    st_writer *w = st_writer_new();
    uint64_t shape[1] = {DATA_BYTES};
    st_writer_add(w, "a", 1, ST_U8, shape, 1, g_data, DATA_BYTES, NULL);
    CHECK(st_writer_write(w, path, NULL) == ST_OK, "write");
    st_writer_free(w);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* The default action, also under ASan (which would catch it). */
        signal(SIGBUS, SIG_DFL);
        st_file *f = NULL;
        if (st_open(path, ST_OPEN_MMAP, &f, NULL) != ST_OK)
            _exit(3);
        if (truncate(path, 4096) != 0)
            _exit(4);
        const st_tensor *t = st_tensor_at(f, 0);
        unsigned char b[16];
        st_tensor_read(f, t, DATA_BYTES - 16, b, 16, NULL); /* SIGBUS here */
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
          "mmap mode, file truncated after open: status 0x%x (SIGBUS documented)", status);
    remove_all_but(NULL);
}

static void test_replaced_after_open(void)
{
    char path[256], other[256];
    path_in(path, sizeof path, "x.safetensors");
    path_in(other, sizeof other, "y.safetensors");
    size_t la = 0, lb = 0;
    void *va = serialize_version(1 << 20, 1, &la);
    void *vb = serialize_version(1000, 2, &lb);
    CHECK(write_bytes(path, va, la) == 0 && write_bytes(other, vb, lb) == 0, "write");
    for (int m = 0; m < 2; m++) {
        st_file *f = NULL;
        CHECK(st_open(path, m ? ST_OPEN_PREAD : ST_OPEN_MMAP, &f, NULL) == ST_OK, "open");
        if (!f)
            continue;
        char cp[300];
        snprintf(cp, sizeof cp, "%s.copy", other);
        CHECK(write_bytes(cp, vb, lb) == 0 && rename(cp, path) == 0, "replace");
        const st_tensor *t = st_find(f, "big", 3);
        unsigned char *buf = malloc(1 << 20);
        int rc = st_tensor_read(f, t, 0, buf, 1 << 20, NULL);
        CHECK(rc == ST_OK && memcmp(buf, g_data + 1, 1 << 20) == 0,
              "mode %d: replaced file: the open handle reads the old data", m);
        free(buf);
        st_close(f);
        CHECK(write_bytes(path, va, la) == 0, "restore");
    }
    free(va);
    free(vb);
    remove_all_but(NULL);
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/st_faults_XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL, "mkdtemp");
    g_data = malloc(DATA_BYTES + 16);
    for (size_t i = 0; i < DATA_BYTES + 16; i++)
        g_data[i] = (unsigned char)(i * 131 + (i >> 11));
    test_fsize();
    test_callback_failure();
    test_rename_and_folder_errors();
    test_sigkill_mid_write();
    test_sigkill_random();
    test_cli_convert_fsize();
    test_cli_hash_truncated();
    test_truncated_pread();
    test_truncated_mmap_sigbus();
    test_replaced_after_open();
    remove_all_but(NULL);
    rmdir(g_dir);
    free(g_data);
    TEST_END();
}
