/*
 * _safetensors_c: the CPython side of the safetensors_c package.
 *
 * Only raw bytes cross this boundary: a _Handle is an open, validated file
 * (or caller's buffer), a _View is a buffer-protocol window on one tensor's
 * bytes that keeps its _Handle alive. Turning bytes into numpy arrays and
 * torch tensors is done in Python (safetensors_c/_core.py), where each
 * framework's own constructors do it without copies.
 *
 * The mmap backend maps the file MAP_PRIVATE and writable: writes through a
 * tensor land in private copy-on-write pages and never reach the file (as
 * the reference does with torch's from_file(shared=False)). Views handed to
 * numpy from safe_open are exported read-only all the same; only load_file
 * asks for writable ones, each over its own tensor's bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

static PyObject *SafetensorError; /* set once at module init, never changed */

/* ------------------------------------------------------------------------ */
/* Errors                                                                     */
/* ------------------------------------------------------------------------ */

/* Raises SafetensorError(message) with .code, .code_name and .offset. */
static PyObject *raise_st(const char *prefix, const char *path, int rc, const st_error *err)
{
    int code = (err && err->code) ? err->code : rc;
    const char *msg = (err && err->message[0]) ? err->message : st_code_description(code);
    PyObject *text;
    if (path)
        text = PyUnicode_FromFormat("%s%s: %s", prefix ? prefix : "", path, msg);
    else
        text = PyUnicode_FromFormat("%s%s", prefix ? prefix : "", msg);
    if (!text)
        return NULL;
    PyObject *exc = PyObject_CallOneArg(SafetensorError, text);
    Py_DECREF(text);
    if (!exc)
        return NULL;
    PyObject *c = PyLong_FromLong(code);
    PyObject *n = PyUnicode_FromString(st_code_name(code));
    PyObject *o = (err && err->offset != ST_NO_OFFSET) ? PyLong_FromUnsignedLongLong(err->offset)
                                                       : Py_NewRef(Py_None);
    if (c && n && o) {
        PyObject_SetAttrString(exc, "code", c);
        PyObject_SetAttrString(exc, "code_name", n);
        PyObject_SetAttrString(exc, "offset", o);
    }
    Py_XDECREF(c);
    Py_XDECREF(n);
    Py_XDECREF(o);
    PyErr_SetObject(SafetensorError, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *raise_msg(const char *msg)
{
    PyErr_SetString(SafetensorError, msg);
    return NULL;
}

/* ---- first access to a mapping's pages, in parallel ---- */

typedef struct {
    const volatile unsigned char *p;
    size_t len;
    unsigned sum;
} TouchJob;

static void *touch_job(void *arg)
{
    TouchJob *j = arg;
    unsigned s = 0;
    for (size_t i = 0; i < j->len; i += 4096)
        s += j->p[i];
    j->sum = s;
    return NULL;
}

/* Reads one byte of every page of [p, p + len) with up to 4 threads.
 * Measured (a VM, file on tmpfs, so 4 KiB pages): the first access to each
 * page of a fresh mapping costs about 1 us even after MADV_POPULATE_READ
 * mapped it, and that cost is per CPU, so spreading it lowers it. Where
 * the page cache holds large folios (ext4) the pages come mapped 2 MiB at
 * a time and this pass costs next to nothing. */
static void touch_parallel(const void *p, size_t len)
{
    enum { MAXT = 4 };
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = cpus > 1 ? (size_t)cpus : 1;
    if (nt > MAXT)
        nt = MAXT;
    if (nt > len / ((size_t)16 << 20))
        nt = len / ((size_t)16 << 20) ? len / ((size_t)16 << 20) : 1;
    TouchJob jobs[MAXT];
    pthread_t tids[MAXT];
    int started[MAXT] = {0};
    size_t share = (len / nt + 4095) & ~(size_t)4095, at = 0;
    for (size_t i = 0; i < nt; i++) {
        size_t n = (i + 1 == nt || len - at < share) ? len - at : share;
        jobs[i] = (TouchJob){.p = (const volatile unsigned char *)p + at, .len = n};
        at += n;
    }
    for (size_t i = 1; i < nt; i++)
        started[i] = pthread_create(&tids[i], NULL, touch_job, &jobs[i]) == 0;
    touch_job(&jobs[0]);
    for (size_t i = 1; i < nt; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            touch_job(&jobs[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* _Handle                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    st_file *file;
    void *map;          /* our private mapping, or NULL                        */
    size_t map_len;
    Py_buffer src;      /* the caller's buffer (open_memory)                  */
    int has_src;
    int pread;          /* opened with ST_OPEN_PREAD: no pointers to hand out */
    PyObject *path;     /* str, or None                                       */
} Handle;

static PyTypeObject HandleType;

static void handle_dealloc(Handle *self)
{
    st_close(self->file);
    if (self->map)
        munmap(self->map, self->map_len);
    if (self->has_src)
        PyBuffer_Release(&self->src);
    Py_XDECREF(self->path);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Handle *handle_alloc(void)
{
    Handle *h = PyObject_New(Handle, &HandleType);
    if (!h)
        return NULL;
    h->file = NULL;
    h->map = NULL;
    h->map_len = 0;
    h->has_src = 0;
    h->pread = 0;
    h->path = NULL;
    return h;
}

static const char *handle_path(const Handle *h)
{
    return (h->path && PyUnicode_Check(h->path)) ? PyUnicode_AsUTF8(h->path) : NULL;
}

/* The reference's message for a file that cannot be opened. */
static PyObject *raise_open_errno(int e, PyObject *path)
{
    if (e == ENOENT)
        return PyErr_Format(PyExc_FileNotFoundError, "No such file or directory: %U", path);
    errno = e;
    return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
}

/* open_file(path: str, pread=False, populate=0) -> _Handle
 * populate 1: map every page in now (load_file wants them all): one
 * MADV_POPULATE_READ costs far less than a page fault per 64 KiB, and
 * unlike MAP_POPULATE it does not break copy-on-write (copy every page).
 * populate 2: then read one byte of each page, in parallel (touch_parallel
 * says why). */
static PyObject *mod_open_file(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *path;
    int use_pread = 0, populate = 0;
    if (!PyArg_ParseTuple(args, "U|pi:open_file", &path, &use_pread, &populate))
        return NULL;
    const char *cpath = PyUnicode_AsUTF8(path);
    if (!cpath)
        return NULL;
    Handle *h = handle_alloc();
    if (!h)
        return NULL;
    h->path = Py_NewRef(path);
    st_error err;
    memset(&err, 0, sizeof err);
    int rc;
    if (use_pread) {
        h->pread = 1;
        Py_BEGIN_ALLOW_THREADS
        rc = st_open(cpath, ST_OPEN_PREAD, &h->file, &err);
        Py_END_ALLOW_THREADS
        if (rc != ST_OK) {
            Py_DECREF(h);
            if (rc == ST_E_IO && access(cpath, F_OK) != 0)
                return raise_open_errno(ENOENT, path);
            return raise_st("Error while deserializing header: ", cpath, rc, &err);
        }
        return (PyObject *)h;
    }
    int fd = open(cpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        Py_DECREF(h);
        return raise_open_errno(e, path);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno ? errno : EINVAL;
        close(fd);
        Py_DECREF(h);
        if (e == EINVAL)
            return PyErr_Format(PyExc_OSError, "%U: not a regular file", path);
        return raise_open_errno(e, path);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        Py_DECREF(h);
        return PyErr_Format(PyExc_OSError, "%U: file too large to map", path);
    }
    static const char empty[1] = {0};
    const void *data = empty;
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            Py_DECREF(h);
            errno = e;
            return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        }
        h->map = m;
        h->map_len = (size_t)st.st_size;
        data = m;
    }
    close(fd);
    Py_BEGIN_ALLOW_THREADS
    rc = st_open_memory(data, (size_t)st.st_size, 0, &h->file, &err);
    /* The first reads only follow a populate that succeeded: one that
     * failed with EFAULT means the file shrank since st_open, and reading
     * would be SIGBUS (old kernels say EINVAL: no reads either). */
    int populated = 0;
#ifdef MADV_POPULATE_READ
    if (rc == ST_OK && populate && h->map)
        populated = madvise(h->map, h->map_len, MADV_POPULATE_READ) == 0;
#endif
    if (populated && populate > 1)
        touch_parallel(h->map, h->map_len);
    Py_END_ALLOW_THREADS
    if (rc != ST_OK) {
        Py_DECREF(h);
        return raise_st("Error while deserializing header: ", cpath, rc, &err);
    }
    return (PyObject *)h;
}

/* open_memory(buffer) -> _Handle; the buffer stays exported (so a bytearray
 * cannot be resized under us) until the handle goes. */
static PyObject *mod_open_memory(PyObject *mod, PyObject *obj)
{
    (void)mod;
    Handle *h = handle_alloc();
    if (!h)
        return NULL;
    h->path = Py_NewRef(Py_None);
    if (PyObject_GetBuffer(obj, &h->src, PyBUF_C_CONTIGUOUS) != 0) {
        Py_DECREF(h);
        return NULL;
    }
    h->has_src = 1;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_open_memory(h->src.buf, (size_t)h->src.len, 0, &h->file, &err);
    Py_END_ALLOW_THREADS
    if (rc != ST_OK) {
        Py_DECREF(h);
        return raise_st("Error while deserializing: ", NULL, rc, &err);
    }
    return (PyObject *)h;
}

static PyObject *decode_name(const char *s, size_t n)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "surrogateescape");
}

static PyObject *handle_metadata(Handle *self, PyObject *unused)
{
    (void)unused;
    if (!st_metadata_present(self->file))
        Py_RETURN_NONE;
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    size_t n = st_metadata_count(self->file);
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (st_metadata_at(self->file, i, &k, &kl, &v, &vl) != ST_OK)
            break;
        PyObject *pk = decode_name(k, kl);
        PyObject *pv = pk ? decode_name(v, vl) : NULL;
        if (!pv || PyDict_SetItem(d, pk, pv) != 0) {
            Py_XDECREF(pk);
            Py_XDECREF(pv);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(pk);
        Py_DECREF(pv);
    }
    return d;
}

static PyObject *name_list(Handle *self, const st_tensor *(*at)(const st_file *, size_t))
{
    size_t n = st_tensor_count(self->file);
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = at(self->file, i);
        PyObject *s = decode_name(t->name, t->name_len);
        if (!s) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, s);
    }
    return l;
}

/* Sorted as the reference sorts Rust Strings: by UTF-8 bytes. */
static PyObject *handle_keys(Handle *self, PyObject *unused)
{
    (void)unused;
    return name_list(self, st_tensor_by_name_order);
}

static PyObject *handle_offset_keys(Handle *self, PyObject *unused)
{
    (void)unused;
    return name_list(self, st_tensor_at);
}

/* Looks a tensor up; raises the reference's error when there is none. */
static const st_tensor *find_tensor(Handle *self, PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "tensor name must be str, not %.100s",
                     Py_TYPE(name)->tp_name);
        return NULL;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(name, &len);
    if (!s) {
        PyErr_Clear();
        PyErr_Format(SafetensorError, "File does not contain tensor %R", name);
        return NULL;
    }
    const st_tensor *t = st_find(self->file, s, (size_t)len);
    if (!t)
        PyErr_Format(SafetensorError, "File does not contain tensor %U", name);
    return t;
}

static PyObject *shape_tuple(const uint64_t *shape, uint32_t rank)
{
    PyObject *t = PyTuple_New(rank);
    if (!t)
        return NULL;
    for (uint32_t i = 0; i < rank; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(shape[i]);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* info(name) -> (dtype: str, shape: tuple, nbytes: int, begin: int) */
static PyObject *handle_info(Handle *self, PyObject *name)
{
    const st_tensor *t = find_tensor(self, name);
    if (!t)
        return NULL;
    PyObject *shape = shape_tuple(t->shape, t->rank);
    if (!shape)
        return NULL;
    return Py_BuildValue("(sNKK)", st_dtype_name(t->dtype), shape,
                         (unsigned long long)st_tensor_nbytes(t),
                         (unsigned long long)t->begin);
}

/* tensors() -> [(name, dtype, shape, nbytes, begin)] in file order: one
 * call for load_file instead of one per tensor. */
static PyObject *handle_tensors(Handle *self, PyObject *unused)
{
    (void)unused;
    size_t n = st_tensor_count(self->file);
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(self->file, i);
        PyObject *name = decode_name(t->name, t->name_len);
        PyObject *shape = name ? shape_tuple(t->shape, t->rank) : NULL;
        PyObject *item = shape ? Py_BuildValue("(NsNKK)", name, st_dtype_name(t->dtype), shape,
                                               (unsigned long long)st_tensor_nbytes(t),
                                               (unsigned long long)t->begin)
                               : NULL;
        if (!item) {
            if (!shape)
                Py_XDECREF(name);
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, item);
    }
    return l;
}

static PyObject *handle_sizes(Handle *self, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("(KKK)", (unsigned long long)st_file_size(self->file),
                         (unsigned long long)st_header_size(self->file),
                         (unsigned long long)st_tensor_count(self->file));
}

/* ---- _View: one tensor's bytes, buffer protocol ---- */

typedef struct {
    PyObject_HEAD
    PyObject *owner;  /* the _Handle whose memory this is, or NULL           */
    char *ptr;
    Py_ssize_t len;
    int readonly;
    size_t map_len;   /* owner NULL: our own anonymous mapping of this size  */
} View;

static PyTypeObject ViewType;

static void view_dealloc(View *self)
{
    Py_XDECREF(self->owner);
    if (!self->owner && self->map_len)
        munmap(self->ptr, self->map_len);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int view_getbuffer(View *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->ptr, self->len, self->readonly, flags);
}

static PyBufferProcs view_as_buffer = {
    .bf_getbuffer = (getbufferproc)view_getbuffer,
    .bf_releasebuffer = NULL,
};

static PyObject *view_address(View *self, void *closure)
{
    (void)closure;
    return PyLong_FromVoidPtr(self->ptr);
}

static PyObject *view_readonly(View *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->readonly);
}

static PyGetSetDef view_getset[] = {
    {"address", (getter)view_address, NULL, "address of the first byte", NULL},
    {"readonly", (getter)view_readonly, NULL, "whether writes are refused", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static Py_ssize_t view_length(View *self)
{
    return self->len;
}

static PySequenceMethods view_as_sequence = {.sq_length = (lenfunc)view_length};

static PyTypeObject ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safetensors_c._safetensors_c._View",
    .tp_basicsize = sizeof(View),
    .tp_dealloc = (destructor)view_dealloc,
    .tp_as_buffer = &view_as_buffer,
    .tp_as_sequence = &view_as_sequence,
    .tp_getset = view_getset,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Zero-copy window on one tensor's bytes; keeps its file open.",
};

/* view(name, writable=False) -> _View, or None when there is no memory to
 * point at (pread backend). Writable only over our private mapping. */
static PyObject *handle_view(Handle *self, PyObject *args)
{
    PyObject *name;
    int writable = 0;
    if (!PyArg_ParseTuple(args, "O|p:view", &name, &writable))
        return NULL;
    const st_tensor *t = find_tensor(self, name);
    if (!t)
        return NULL;
    if (self->pread)
        Py_RETURN_NONE;
    uint64_t n = st_tensor_nbytes(t);
    if (n > (uint64_t)PY_SSIZE_T_MAX)
        return raise_msg("tensor too large for this platform");
    const void *p = st_tensor_data(self->file, t);
    if (!p)
        Py_RETURN_NONE;
    View *v = PyObject_New(View, &ViewType);
    if (!v)
        return NULL;
    v->owner = Py_NewRef((PyObject *)self);
    v->ptr = (char *)(uintptr_t)p;
    v->len = (Py_ssize_t)n;
    v->readonly = !(writable && self->map);
    v->map_len = 0;
    return (PyObject *)v;
}

/* alloc(nbytes) -> writable _View over fresh zeroed memory of its own.
 * Large copies land here rather than in malloc'ed memory: the mapping asks
 * for transparent huge pages, and where the kernel gives them (THP
 * "madvise" mode) the first touch costs one fault per 2 MiB, not per 4 KiB. */
static PyObject *mod_alloc(PyObject *mod, PyObject *arg)
{
    (void)mod;
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "alloc: negative size");
        return NULL;
    }
    size_t len = n ? (size_t)n : 1;
    void *m;
    Py_BEGIN_ALLOW_THREADS
    m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
#ifdef MADV_HUGEPAGE
    if (m != MAP_FAILED && len >= (2u << 20))
        (void)madvise(m, len, MADV_HUGEPAGE);
#endif
    Py_END_ALLOW_THREADS
    if (m == MAP_FAILED)
        return PyErr_NoMemory();
    View *v = PyObject_New(View, &ViewType);
    if (!v) {
        munmap(m, len);
        return NULL;
    }
    v->owner = NULL;
    v->ptr = m;
    v->len = n;
    v->readonly = 0;
    v->map_len = len;
    return (PyObject *)v;
}

/* ---- read_data: the whole data section into memory of its own ---- */

#define HUGE_PAGE ((size_t)2 << 20)
#define READ_PIECE ((size_t)64 << 20)   /* bytes per pread: bounded, and a */
                                        /* thread's progress is fine-grained */
#define READ_MAX_THREADS 4
#define READ_MIN_PER_THREAD ((size_t)32 << 20)

/* Whether anonymous memory can get transparent huge pages on request
 * ("always" or "madvise"). Read on every call: it is a sysfs file, cheap,
 * and an administrator may change it. */
static int thp_on_request(void)
{
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    if (!f)
        return 0;
    char line[128] = {0};
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    return ok && strstr(line, "[never]") == NULL && strchr(line, '[') != NULL;
}

typedef struct {
    const st_file *file;
    uint64_t file_off;
    char *dst;
    size_t len;
    int rc;
    st_error err;
} ReadJob;

static void *read_job(void *arg)
{
    ReadJob *j = arg;
    for (size_t done = 0; done < j->len && j->rc == ST_OK;) {
        size_t n = j->len - done < READ_PIECE ? j->len - done : READ_PIECE;
        j->rc = st_file_read(j->file, j->file_off + done, j->dst + done, n, &j->err);
        done += n;
    }
    return NULL;
}

/* Reads [offset, offset + len) of the file into dst with up to
 * READ_MAX_THREADS threads, each over its own run of huge pages (so the
 * page faults of zeroing them run in parallel too). Returns the first
 * failure in file order. */
static int read_parallel(const st_file *file, uint64_t offset, char *dst, size_t len,
                         st_error *err)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nt = cpus > 1 ? (size_t)cpus : 1;
    if (nt > READ_MAX_THREADS)
        nt = READ_MAX_THREADS;
    if (nt > len / READ_MIN_PER_THREAD)
        nt = len / READ_MIN_PER_THREAD ? len / READ_MIN_PER_THREAD : 1;
    ReadJob jobs[READ_MAX_THREADS];
    pthread_t tids[READ_MAX_THREADS];
    int started[READ_MAX_THREADS] = {0};
    size_t share = (len / nt + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    size_t at = 0;
    for (size_t i = 0; i < nt; i++) {
        size_t n = (i + 1 == nt || len - at < share) ? len - at : share;
        jobs[i] = (ReadJob){.file = file, .file_off = offset + at, .dst = dst + at, .len = n,
                            .rc = ST_OK};
        memset(&jobs[i].err, 0, sizeof jobs[i].err);
        at += n;
    }
    /* Thread 0 is this one; a thread that cannot start is read here too. */
    for (size_t i = 1; i < nt; i++)
        started[i] = pthread_create(&tids[i], NULL, read_job, &jobs[i]) == 0;
    read_job(&jobs[0]);
    for (size_t i = 1; i < nt; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            read_job(&jobs[i]);
    }
    for (size_t i = 0; i < nt; i++) {
        if (jobs[i].rc != ST_OK) {
            *err = jobs[i].err;
            return jobs[i].rc;
        }
    }
    return ST_OK;
}

/* read_data() -> writable _View of the data section (the file's bytes
 * after the header) in an anonymous mapping of its own, on transparent
 * huge pages where the system gives them: measured, a fresh 4 KiB-page
 * buffer costs ~25x more in page faults under a hypervisor. */
static PyObject *handle_read_data(Handle *self, PyObject *unused)
{
    (void)unused;
    int thp = thp_on_request();
    uint64_t off = st_data_offset(self->file), size = st_file_size(self->file);
    uint64_t n64 = size - off; /* st_open checked the data section lies in the file */
    if (n64 > (uint64_t)PY_SSIZE_T_MAX - 2 * HUGE_PAGE)
        return raise_msg("data section too large for this platform");
    size_t n = (size_t)n64;
    size_t len = n ? (n + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1) : 1;
    char *m;
    size_t map_len = len;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = ST_OK;
    Py_BEGIN_ALLOW_THREADS
    /* Over-map by one huge page and trim, so the buffer starts on a huge
     * page boundary and every 2 MiB of it can be one page. */
    size_t raw_len = len >= HUGE_PAGE ? len + HUGE_PAGE : len;
    char *raw = mmap(NULL, raw_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        m = NULL;
    } else if (raw_len != len) {
        uintptr_t a = ((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
        m = (char *)a;
        if (m > raw)
            munmap(raw, (size_t)(m - raw));
        if (m + len < raw + raw_len)
            munmap(m + len, (size_t)(raw + raw_len - (m + len)));
    } else {
        m = raw;
    }
#ifdef MADV_HUGEPAGE
    if (m && thp && len >= HUGE_PAGE)
        (void)madvise(m, len, MADV_HUGEPAGE);
#endif
    if (m && n)
        rc = read_parallel(self->file, off, m, n, &err);
    Py_END_ALLOW_THREADS
    if (!m)
        return PyErr_NoMemory();
    if (rc != ST_OK) {
        munmap(m, map_len);
        return raise_st(NULL, handle_path(self), rc, &err);
    }
    View *v = PyObject_New(View, &ViewType);
    if (!v) {
        munmap(m, map_len);
        return NULL;
    }
    v->owner = NULL;
    v->ptr = m;
    v->len = (Py_ssize_t)n;
    v->readonly = 0;
    v->map_len = map_len;
    return (PyObject *)v;
}

/* read_into(name, buffer): the whole tensor into a writable buffer. */
static PyObject *handle_read_into(Handle *self, PyObject *args)
{
    PyObject *name, *dst;
    if (!PyArg_ParseTuple(args, "OO:read_into", &name, &dst))
        return NULL;
    const st_tensor *t = find_tensor(self, name);
    if (!t)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(dst, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0)
        return NULL;
    uint64_t n = st_tensor_nbytes(t);
    if ((uint64_t)b.len != n) {
        PyBuffer_Release(&b);
        return PyErr_Format(PyExc_ValueError, "buffer holds %zd bytes, tensor %U has %llu",
                            b.len, name, (unsigned long long)n);
    }
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = ST_OK;
    if (n) {
        Py_BEGIN_ALLOW_THREADS
        rc = st_tensor_read(self->file, t, 0, b.buf, (size_t)n, &err);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&b);
    if (rc != ST_OK)
        return raise_st(NULL, handle_path(self), rc, &err);
    Py_RETURN_NONE;
}

/* Parses [(kind, start, stop), ...] into st_slice_dim. */
static st_slice_dim *parse_dims(PyObject *seq, size_t *ndims)
{
    PyObject *fast = PySequence_Fast(seq, "slice dims must be a sequence");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    st_slice_dim *d = PyMem_Calloc(n ? (size_t)n : 1, sizeof *d);
    if (!d) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int kind;
        unsigned long long start, stop;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iKK", &kind, &start, &stop)) {
            PyMem_Free(d);
            Py_DECREF(fast);
            return NULL;
        }
        d[i].kind = (st_slice_kind)kind;
        d[i].start = start;
        d[i].stop = stop;
    }
    Py_DECREF(fast);
    *ndims = (size_t)n;
    return d;
}

/* slice_info(name, dims) -> (nbytes, shape) */
static PyObject *handle_slice_info(Handle *self, PyObject *args)
{
    PyObject *name, *dims;
    if (!PyArg_ParseTuple(args, "OO:slice_info", &name, &dims))
        return NULL;
    const st_tensor *t = find_tensor(self, name);
    if (!t)
        return NULL;
    size_t nd;
    st_slice_dim *d = parse_dims(dims, &nd);
    if (!d)
        return NULL;
    uint64_t *shape = PyMem_Calloc(t->rank ? t->rank : 1, sizeof *shape);
    if (!shape) {
        PyMem_Free(d);
        return PyErr_NoMemory();
    }
    uint64_t nbytes = 0;
    uint32_t rank = 0;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = st_slice_info(t, d, nd, &nbytes, shape, &rank, &err);
    PyMem_Free(d);
    PyObject *res = NULL;
    if (rc != ST_OK) {
        raise_st(NULL, NULL, rc, &err);
    } else {
        PyObject *s = shape_tuple(shape, rank);
        if (s)
            res = Py_BuildValue("(KN)", (unsigned long long)nbytes, s);
    }
    PyMem_Free(shape);
    return res;
}

/* slice_into(name, dims, buffer) */
static PyObject *handle_slice_into(Handle *self, PyObject *args)
{
    PyObject *name, *dims, *dst;
    if (!PyArg_ParseTuple(args, "OOO:slice_into", &name, &dims, &dst))
        return NULL;
    const st_tensor *t = find_tensor(self, name);
    if (!t)
        return NULL;
    size_t nd;
    st_slice_dim *d = parse_dims(dims, &nd);
    if (!d)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(dst, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
        PyMem_Free(d);
        return NULL;
    }
    st_error err;
    memset(&err, 0, sizeof err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_slice_read(self->file, t, d, nd, b.buf, (size_t)b.len, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    PyMem_Free(d);
    if (rc != ST_OK)
        return raise_st(NULL, NULL, rc, &err);
    Py_RETURN_NONE;
}

static PyMethodDef handle_methods[] = {
    {"metadata", (PyCFunction)handle_metadata, METH_NOARGS, "metadata dict or None"},
    {"keys", (PyCFunction)handle_keys, METH_NOARGS, "names in name order"},
    {"offset_keys", (PyCFunction)handle_offset_keys, METH_NOARGS, "names in file order"},
    {"info", (PyCFunction)handle_info, METH_O, "(dtype, shape, nbytes, begin)"},
    {"tensors", (PyCFunction)handle_tensors, METH_NOARGS,
     "[(name, dtype, shape, nbytes, begin)] in file order"},
    {"sizes", (PyCFunction)handle_sizes, METH_NOARGS, "(file size, header size, tensors)"},
    {"view", (PyCFunction)handle_view, METH_VARARGS, "zero-copy _View or None"},
    {"read_into", (PyCFunction)handle_read_into, METH_VARARGS, "copy a tensor"},
    {"read_data", (PyCFunction)handle_read_data, METH_NOARGS,
     "read_data() -> writable _View of the data section, of its own"},
    {"slice_info", (PyCFunction)handle_slice_info, METH_VARARGS, "(nbytes, shape)"},
    {"slice_into", (PyCFunction)handle_slice_into, METH_VARARGS, "copy a slice"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "safetensors_c._safetensors_c._Handle",
    .tp_basicsize = sizeof(Handle),
    .tp_dealloc = (destructor)handle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = handle_methods,
    .tp_doc = "An open, validated safetensors file (use safetensors_c.safe_open).",
};

/* ------------------------------------------------------------------------ */
/* Writing                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    Py_buffer *bufs;
    size_t nbufs;
} held_buffers;

static void release_all(held_buffers *h)
{
    for (size_t i = 0; i < h->nbufs; i++)
        PyBuffer_Release(&h->bufs[i]);
    PyMem_Free(h->bufs);
}

static int set_metadata(st_writer *w, PyObject *metadata)
{
    if (metadata == Py_None)
        return 0;
    if (!PyDict_Check(metadata)) {
        PyErr_Format(PyExc_TypeError, "metadata must be a dict of str to str, not %.100s",
                     Py_TYPE(metadata)->tp_name);
        return -1;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    st_writer_set_metadata_present(w, 1);
    while (PyDict_Next(metadata, &pos, &k, &v)) {
        if (!PyUnicode_Check(k) || !PyUnicode_Check(v)) {
            PyErr_Format(PyExc_TypeError,
                         "metadata must be a dict of str to str: %R: %R is not", k, v);
            return -1;
        }
        Py_ssize_t kl, vl;
        const char *ks = PyUnicode_AsUTF8AndSize(k, &kl);
        const char *vs = ks ? PyUnicode_AsUTF8AndSize(v, &vl) : NULL;
        if (!vs)
            return -1;
        st_error err;
        memset(&err, 0, sizeof err);
        int rc = st_writer_set_metadata(w, ks, (size_t)kl, vs, (size_t)vl, &err);
        if (rc != ST_OK) {
            raise_st("Error while serializing: ", NULL, rc, &err);
            return -1;
        }
    }
    return 0;
}

/* Adds one (name, dtype, shape, data) item; data is a C-contiguous buffer
 * or a (address, length) pair (the reference's TensorSpec). */
static int add_item(st_writer *w, PyObject *item, held_buffers *held)
{
    PyObject *name, *shape, *data;
    const char *dtype_name;
    if (!PyArg_ParseTuple(item, "UsOO", &name, &dtype_name, &shape, &data))
        return -1;
    st_dtype dt;
    if (st_dtype_from_name(dtype_name, strlen(dtype_name), &dt) != ST_OK) {
        PyErr_Format(SafetensorError, "Unknown dtype %s", dtype_name);
        return -1;
    }
    PyObject *fast = PySequence_Fast(shape, "shape must be a sequence of ints");
    if (!fast)
        return -1;
    Py_ssize_t rank = PySequence_Fast_GET_SIZE(fast);
    if (rank > ST_MAX_RANK) {
        Py_DECREF(fast);
        PyErr_Format(SafetensorError, "tensor %U has %zd dimensions (at most %d)", name, rank,
                     ST_MAX_RANK);
        return -1;
    }
    uint64_t dims[64];
    uint64_t *shp = rank <= 64 ? dims : PyMem_Calloc((size_t)rank, sizeof *shp);
    if (!shp) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    int ok = 1;
    for (Py_ssize_t i = 0; i < rank && ok; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        unsigned long long v = PyLong_Check(o) ? PyLong_AsUnsignedLongLong(o) : (unsigned long long)-1;
        if (!PyLong_Check(o) || PyErr_Occurred()) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "shape of %U must hold ints", name);
            ok = 0;
        }
        shp[i] = v;
    }
    Py_DECREF(fast);
    const void *ptr = NULL;
    uint64_t nbytes = 0;
    if (ok && PyTuple_Check(data)) {
        unsigned long long addr, len;
        if (!PyArg_ParseTuple(data, "KK", &addr, &len)) {
            ok = 0;
        } else {
            ptr = (const void *)(uintptr_t)addr;
            nbytes = len;
        }
    } else if (ok) {
        Py_buffer *b = &held->bufs[held->nbufs];
        if (PyObject_GetBuffer(data, b, PyBUF_C_CONTIGUOUS) != 0) {
            ok = 0;
        } else {
            held->nbufs++;
            ptr = b->buf;
            nbytes = (uint64_t)b->len;
        }
    }
    if (ok) {
        Py_ssize_t nl;
        const char *ns = PyUnicode_AsUTF8AndSize(name, &nl);
        st_error err;
        memset(&err, 0, sizeof err);
        int rc = ns ? st_writer_add(w, ns, (size_t)nl, dt, shp, (uint32_t)rank,
                                    nbytes ? ptr : NULL, nbytes, &err)
                    : ST_E_ARG;
        if (!ns)
            ok = 0;
        else if (rc != ST_OK) {
            raise_st("Error while serializing: ", NULL, rc, &err);
            ok = 0;
        }
    }
    if (shp != dims)
        PyMem_Free(shp);
    return ok ? 0 : -1;
}

typedef struct {
    char *out;
    size_t cap;
    size_t len;
} bytes_sink;

static int sink_bytes(void *ctx, const void *buf, size_t len)
{
    bytes_sink *s = ctx;
    if (len > s->cap - s->len)
        return 1;
    memcpy(s->out + s->len, buf, len);
    s->len += len;
    return 0;
}

/* write(items, metadata, path or None) -> None, or bytes when path is None */
static PyObject *mod_write(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *items, *metadata, *path;
    if (!PyArg_ParseTuple(args, "OOO:write", &items, &metadata, &path))
        return NULL;
    PyObject *fast = PySequence_Fast(items, "tensors must be a sequence of items");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    held_buffers held = {PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer)), 0};
    st_writer *w = st_writer_new();
    PyObject *res = NULL;
    if (!held.bufs || !w) {
        PyErr_NoMemory();
        goto done;
    }
    if (set_metadata(w, metadata) != 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++)
        if (add_item(w, PySequence_Fast_GET_ITEM(fast, i), &held) != 0)
            goto done;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc;
    if (path == Py_None) {
        uint64_t size;
        Py_BEGIN_ALLOW_THREADS
        size = st_writer_output_size(w);
        Py_END_ALLOW_THREADS
        if (size == 0 || size > (uint64_t)PY_SSIZE_T_MAX) {
            rc = st_writer_write_to(w, sink_bytes, &(bytes_sink){NULL, 0, 0}, &err);
            raise_st("Error while serializing: ", NULL, rc ? rc : ST_E_NOMEM, &err);
            goto done;
        }
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (!b)
            goto done;
        bytes_sink s = {PyBytes_AS_STRING(b), (size_t)size, 0};
        Py_BEGIN_ALLOW_THREADS
        rc = st_writer_write_to(w, sink_bytes, &s, &err);
        Py_END_ALLOW_THREADS
        if (rc != ST_OK || s.len != s.cap) {
            Py_DECREF(b);
            raise_st("Error while serializing: ", NULL, rc ? rc : ST_E_IO, &err);
            goto done;
        }
        res = b;
    } else {
        PyObject *fspath = PyOS_FSPath(path);
        if (!fspath)
            goto done;
        PyObject *encoded = NULL;
        if (!PyUnicode_FSConverter(fspath, &encoded)) {
            Py_DECREF(fspath);
            goto done;
        }
        Py_DECREF(fspath);
        const char *cpath = PyBytes_AS_STRING(encoded);
        Py_BEGIN_ALLOW_THREADS
        rc = st_writer_write(w, cpath, &err);
        Py_END_ALLOW_THREADS
        if (rc != ST_OK)
            raise_st("Error while serializing: ", NULL, rc, &err);
        else
            res = Py_NewRef(Py_None);
        Py_DECREF(encoded);
    }
done:
    st_writer_free(w);
    if (held.bufs)
        release_all(&held);
    Py_DECREF(fast);
    return res;
}

/* ------------------------------------------------------------------------ */
/* Tools                                                                      */
/* ------------------------------------------------------------------------ */

static int fs_path(PyObject *path, PyObject **encoded)
{
    PyObject *p = PyOS_FSPath(path);
    if (!p)
        return -1;
    int ok = PyUnicode_FSConverter(p, encoded);
    Py_DECREF(p);
    return ok ? 0 : -1;
}

/* check(path) -> dict; never raises for an invalid file (that is a verdict). */
static PyObject *mod_check(PyObject *mod, PyObject *path)
{
    (void)mod;
    PyObject *enc = NULL;
    if (fs_path(path, &enc) != 0)
        return NULL;
    st_error err;
    memset(&err, 0, sizeof err);
    st_file *f = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_open(PyBytes_AS_STRING(enc), ST_OPEN_PREAD, &f, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(enc);
    PyObject *d;
    if (rc == ST_OK) {
        d = Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:n,s:K,s:K}", "valid", Py_True, "error", Py_None,
                          "code", Py_None, "message", Py_None, "offset", Py_None, "tensors",
                          (Py_ssize_t)st_tensor_count(f), "header_size",
                          (unsigned long long)st_header_size(f), "file_size",
                          (unsigned long long)st_file_size(f));
        st_close(f);
        return d;
    }
    int code = err.code ? err.code : rc;
    if (code > ST_E_INCOMPLETE) /* not a verdict: the file could not be read */
        return raise_st(NULL, NULL, rc, &err);
    PyObject *off = err.offset != ST_NO_OFFSET ? PyLong_FromUnsignedLongLong(err.offset)
                                               : Py_NewRef(Py_None);
    if (!off)
        return NULL;
    return Py_BuildValue("{s:O,s:s,s:i,s:s,s:N,s:O,s:O,s:O}", "valid", Py_False, "error",
                         st_code_name(code), "code", code, "message", err.message, "offset", off,
                         "tensors", Py_None, "header_size", Py_None, "file_size", Py_None);
}

static PyObject *str_or_none(const char *s)
{
    return s ? PyUnicode_FromString(s) : Py_NewRef(Py_None);
}

static int dict_set_new(PyObject *d, const char *k, PyObject *v)
{
    if (!v)
        return -1;
    int r = PyDict_SetItemString(d, k, v);
    Py_DECREF(v);
    return r;
}

static PyObject *identity_dict(const st_identity *id)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    PyObject *variants = PyList_New(0);
    if (!variants)
        goto fail;
    for (unsigned bit = 1; bit && bit <= ST_VARIANT_V_PREDICTION; bit <<= 1) {
        if (!(id->variants & bit) || !st_variant_name(bit))
            continue;
        PyObject *s = PyUnicode_FromString(st_variant_name(bit));
        if (!s || PyList_Append(variants, s) != 0) {
            Py_XDECREF(s);
            Py_DECREF(variants);
            goto fail;
        }
        Py_DECREF(s);
    }
    PyObject *reasons = PyList_New((Py_ssize_t)id->reason_count);
    if (!reasons) {
        Py_DECREF(variants);
        goto fail;
    }
    for (size_t i = 0; i < id->reason_count; i++) {
        PyObject *s = PyUnicode_DecodeUTF8(id->reasons[i], (Py_ssize_t)strlen(id->reasons[i]),
                                           "replace");
        if (!s) {
            Py_DECREF(reasons);
            Py_DECREF(variants);
            goto fail;
        }
        PyList_SET_ITEM(reasons, (Py_ssize_t)i, s);
    }
    PyObject *params = Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "total", (unsigned long long)id->params.total,
        "diffusion_model", (unsigned long long)id->params.diffusion_model, "text_encoder",
        (unsigned long long)id->params.text_encoder, "vae", (unsigned long long)id->params.vae,
        "ema", (unsigned long long)id->params.ema, "controlnet",
        (unsigned long long)id->params.controlnet, "other", (unsigned long long)id->params.other);
    if (dict_set_new(d, "kind", PyUnicode_FromString(st_kind_name(id->kind))) ||
        dict_set_new(d, "family", PyUnicode_FromString(st_family_name(id->family))) ||
        dict_set_new(d, "variant", variants) ||
        dict_set_new(d, "format", str_or_none(id->kind == ST_KIND_LORA
                                                  ? st_lora_format_name(id->format)
                                                  : NULL)) ||
        dict_set_new(d, "ema", PyBool_FromLong(id->ema)) ||
        dict_set_new(d, "precision",
                     str_or_none(id->precision >= 0 ? st_dtype_name((st_dtype)id->precision)
                                                    : NULL)) ||
        dict_set_new(d, "parameters", params) ||
        dict_set_new(d, "confidence", PyUnicode_FromString(st_confidence_name(id->confidence))) ||
        dict_set_new(d, "reasons", reasons))
        goto fail;
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* identify(path) -> dict (safetensors files) */
static PyObject *mod_identify(PyObject *mod, PyObject *path)
{
    (void)mod;
    PyObject *enc = NULL;
    if (fs_path(path, &enc) != 0)
        return NULL;
    st_identity *id = PyMem_Calloc(1, sizeof *id);
    if (!id) {
        Py_DECREF(enc);
        return PyErr_NoMemory();
    }
    st_error err;
    memset(&err, 0, sizeof err);
    st_file *f = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_open(PyBytes_AS_STRING(enc), ST_OPEN_PREAD, &f, &err);
    if (rc == ST_OK)
        rc = st_identify(f, id, &err);
    st_close(f);
    Py_END_ALLOW_THREADS
    PyObject *res = rc == ST_OK ? identity_dict(id)
                                : raise_st(NULL, PyBytes_AS_STRING(enc), rc, &err);
    Py_DECREF(enc);
    PyMem_Free(id);
    return res;
}

/* hash(path, algos: list of names, style: "plain"|"civitai") -> dict */
static PyObject *mod_hash(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *path, *names;
    const char *style_name = "plain";
    if (!PyArg_ParseTuple(args, "OO|s:hash", &path, &names, &style_name))
        return NULL;
    unsigned style;
    if (strcmp(style_name, "plain") == 0)
        style = ST_HASH_STYLE_PLAIN;
    else if (strcmp(style_name, "civitai") == 0)
        style = ST_HASH_STYLE_CIVITAI;
    else
        return PyErr_Format(PyExc_ValueError, "style must be 'plain' or 'civitai', not %R",
                            PyTuple_GET_ITEM(args, 2));
    PyObject *fast = PySequence_Fast(names, "algos must be a sequence of names");
    if (!fast)
        return NULL;
    unsigned algos = 0;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        Py_ssize_t l;
        const char *s = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &l) : NULL;
        unsigned bit;
        if (!s || st_hash_from_name(s, (size_t)l, &bit) != ST_OK) {
            Py_DECREF(fast);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "unknown hash %R", o);
            return NULL;
        }
        algos |= bit;
    }
    Py_DECREF(fast);
    if (!algos)
        return PyErr_Format(PyExc_ValueError, "no hash asked for");
    PyObject *enc = NULL;
    if (fs_path(path, &enc) != 0)
        return NULL;
    st_hashes h;
    st_error err;
    memset(&h, 0, sizeof h);
    memset(&err, 0, sizeof err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_hash_path(PyBytes_AS_STRING(enc), algos, NULL, &h, &err);
    Py_END_ALLOW_THREADS
    if (rc != ST_OK) {
        PyObject *r = raise_st(NULL, PyBytes_AS_STRING(enc), rc, &err);
        Py_DECREF(enc);
        return r;
    }
    Py_DECREF(enc);
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    for (unsigned bit = 1; bit & ST_HASH_ALL; bit <<= 1) {
        if (!(algos & bit))
            continue;
        char text[ST_HASH_TEXT_MAX];
        PyObject *v = st_hash_text(&h, bit, style, text) == ST_OK ? PyUnicode_FromString(text)
                                                                   : Py_NewRef(Py_None);
        if (dict_set_new(d, st_hash_name(bit), v) != 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* convert and merge: the library's operations (st_convert_file, st_merge),
 * run with the GIL released. */
/* ---- progress callbacks from the library's working thread ---- */

typedef struct {
    PyObject *fn;        /* callable(done, total), or NULL                   */
    PyObject *exc_type;  /* what fn raised (or a signal's exception), kept   */
    PyObject *exc_value; /* to raise once the library call has returned      */
    PyObject *exc_tb;
} PyProgress;

/* st_progress_fn: takes the GIL, runs pending signal handlers (so Ctrl-C
 * stops a long write, which then leaves nothing behind) and the caller's
 * callable; an exception or a true result stops the work. */
static int py_progress(void *ctx, uint64_t done, uint64_t total)
{
    PyProgress *pp = ctx;
    PyGILState_STATE g = PyGILState_Ensure();
    int stop = 0;
    if (PyErr_CheckSignals() != 0) {
        stop = 1;
    } else if (pp->fn) {
        PyObject *r = PyObject_CallFunction(pp->fn, "KK", (unsigned long long)done,
                                            (unsigned long long)total);
        if (!r) {
            stop = 1;
        } else {
            stop = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (stop < 0)
                stop = 1; /* its truth raised: that exception is kept */
        }
    }
    if (stop && PyErr_Occurred() && !pp->exc_type)
        PyErr_Fetch(&pp->exc_type, &pp->exc_value, &pp->exc_tb);
    PyErr_Clear();
    PyGILState_Release(g);
    return stop;
}

/* Fills patterns[] with the UTF-8 of a tuple of str (no NUL inside). The
 * pointers live as long as the tuple. */
static int glob_list(PyObject *tuple, const char ***out, size_t *n, const char *what)
{
    *out = NULL;
    *n = 0;
    if (tuple == Py_None)
        return 0;
    if (!PyTuple_Check(tuple)) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of str", what);
        return -1;
    }
    Py_ssize_t k = PyTuple_GET_SIZE(tuple);
    if (!k)
        return 0;
    const char **v = PyMem_Calloc((size_t)k, sizeof *v);
    if (!v) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        Py_ssize_t len;
        const char *u = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &len) : NULL;
        if (!u || strlen(u) != (size_t)len) {
            if (!PyErr_Occurred())
                PyErr_Format(PyUnicode_Check(item) ? PyExc_ValueError : PyExc_TypeError,
                             "%s: each pattern must be a str without NUL", what);
            PyMem_Free(v);
            return -1;
        }
        v[i] = u;
    }
    *out = v;
    *n = (size_t)k;
    return 0;
}

static PyObject *dtype_counts(const size_t *count)
{
    PyObject *d = PyDict_New();
    for (int i = 0; d && i < ST_DTYPE_COUNT; i++) {
        if (!count[i])
            continue;
        PyObject *v = PyLong_FromSize_t(count[i]);
        if (!v || PyDict_SetItemString(d, st_dtype_name((st_dtype)i), v) != 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

/* convert(src, dst, dtype|None, saturate, only, exclude, drop, ema, progress)
 * over st_convert_file: only/exclude/drop are tuples of globs (or None),
 * ema 0 keep / 1 drop / 2 only, progress a callable(done, total) or None. */
static PyObject *mod_convert(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *src, *dst, *only = Py_None, *exclude = Py_None, *drop = Py_None;
    PyObject *progress = Py_None;
    const char *dtype_name = NULL;
    int saturate = 0, ema = ST_EMA_KEEP;
    if (!PyArg_ParseTuple(args, "OOz|pOOOiO:convert", &src, &dst, &dtype_name, &saturate, &only,
                          &exclude, &drop, &ema, &progress))
        return NULL;
    st_convert_file_options opt;
    memset(&opt, 0, sizeof opt);
    if (dtype_name) {
        if (st_dtype_from_name(dtype_name, strlen(dtype_name), &opt.dtype) != ST_OK ||
            !st_dtype_is_float(opt.dtype) || st_dtype_bits(opt.dtype) < 8)
            return PyErr_Format(PyExc_ValueError, "cannot convert to dtype %s", dtype_name);
        opt.set_dtype = 1;
    }
    if (ema != ST_EMA_KEEP && ema != ST_EMA_DROP && ema != ST_EMA_ONLY)
        return PyErr_Format(PyExc_ValueError, "ema: %d is not 0, 1 or 2", ema);
    if (progress != Py_None && !PyCallable_Check(progress))
        return PyErr_Format(PyExc_TypeError, "progress must be callable, not %.100s",
                            Py_TYPE(progress)->tp_name);
    opt.ema = ema;
    opt.convert_flags = saturate ? ST_CONVERT_SATURATE : 0u;
    const char **vonly = NULL, **vexclude = NULL, **vdrop = NULL;
    PyObject *esrc = NULL, *edst = NULL, *res = NULL;
    if (glob_list(only, &vonly, &opt.nonly, "only") != 0 ||
        glob_list(exclude, &vexclude, &opt.nexclude, "exclude") != 0 ||
        glob_list(drop, &vdrop, &opt.ndrop, "drop") != 0 || fs_path(src, &esrc) != 0 ||
        fs_path(dst, &edst) != 0)
        goto done;
    opt.only = vonly;
    opt.exclude = vexclude;
    opt.drop = vdrop;
    PyProgress pp = {.fn = progress == Py_None ? NULL : progress};
    opt.hooks.progress = py_progress;
    opt.hooks.progress_ctx = &pp;
    const char *in_path = PyBytes_AS_STRING(esrc), *out_path = PyBytes_AS_STRING(edst);
    st_error err;
    memset(&err, 0, sizeof err);
    st_convert_file_report rep;
    memset(&rep, 0, sizeof rep);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_convert_file(in_path, out_path, &opt, &rep, &err);
    Py_END_ALLOW_THREADS
    if (pp.exc_type) {
        PyErr_Restore(pp.exc_type, pp.exc_value, pp.exc_tb); /* the callback's own */
        goto done;
    }
    if (rc != ST_OK) {
        raise_st(NULL, rep.failed_input == 0 ? in_path : out_path, rc, &err);
        goto done;
    }
    PyObject *from = dtype_counts(rep.from_count);
    if (from)
        res = Py_BuildValue(
            "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:K,s:K,s:N}", "written",
            (Py_ssize_t)rep.written, "converted", (Py_ssize_t)rep.converted, "copied",
            (Py_ssize_t)(rep.written - rep.converted), "already", (Py_ssize_t)rep.already, "kept",
            (Py_ssize_t)rep.kept, "dropped", (Py_ssize_t)rep.dropped, "ema_dropped",
            (Py_ssize_t)rep.ema_dropped, "ema_used", (Py_ssize_t)rep.ema_used, "metadata",
            (Py_ssize_t)rep.metadata, "input_size", (unsigned long long)rep.input_size,
            "output_size", (unsigned long long)rep.output_size, "from", from);
done:
    PyMem_Free(vonly);
    PyMem_Free(vexclude);
    PyMem_Free(vdrop);
    Py_XDECREF(esrc);
    Py_XDECREF(edst);
    return res;
}

static PyObject *mod_merge(PyObject *mod, PyObject *args)
{
    (void)mod;
    PyObject *inputs, *out;
    double alpha;
    const char *mode = "weighted", *dtype_name = NULL, *vae = NULL, *discard = NULL;
    if (!PyArg_ParseTuple(args, "OOd|szzz:merge", &inputs, &out, &alpha, &mode, &dtype_name,
                          &vae, &discard))
        return NULL;
    st_merge_options opt;
    memset(&opt, 0, sizeof opt);
    opt.alpha = alpha;
    opt.vae_path = vae;
    opt.discard = discard;
    if (strcmp(mode, "weighted") == 0)
        opt.mode = ST_MERGE_WEIGHTED;
    else if (strcmp(mode, "add-diff") == 0 || strcmp(mode, "add_diff") == 0)
        opt.mode = ST_MERGE_ADD_DIFF;
    else
        return PyErr_Format(PyExc_ValueError, "mode must be 'weighted' or 'add-diff', not %s",
                            mode);
    if (dtype_name) {
        if (st_dtype_from_name(dtype_name, strlen(dtype_name), &opt.dtype) != ST_OK)
            return PyErr_Format(PyExc_ValueError, "unknown dtype %s", dtype_name);
        opt.set_dtype = 1;
    }
    PyObject *seq = PySequence_Fast(inputs, "inputs must be a sequence of paths");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 2 || n > 3) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "merge takes 2 or 3 input files, not %zd", n);
    }
    PyObject *enc[3] = {NULL, NULL, NULL}, *eout = NULL;
    const char *paths[3];
    PyObject *res = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fs_path(PySequence_Fast_GET_ITEM(seq, i), &enc[i]) != 0)
            goto done;
        paths[i] = PyBytes_AS_STRING(enc[i]);
    }
    if (fs_path(out, &eout) != 0)
        goto done;
    const char *out_path = PyBytes_AS_STRING(eout);
    st_merge_report rep;
    st_error err;
    memset(&err, 0, sizeof err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = st_merge(paths, (size_t)n, out_path, &opt, &rep, &err);
    Py_END_ALLOW_THREADS
    if (rc != ST_OK) {
        const char *p = rep.failed_input < 0 ? out_path
                        : rep.failed_input == 3 ? vae
                                                : paths[rep.failed_input];
        res = raise_st(NULL, p, rc, &err);
    } else {
        res = Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:O,s:O,s:K}", "tensors",
                            (Py_ssize_t)rep.tensors, "merged", (Py_ssize_t)rep.merged, "baked",
                            (Py_ssize_t)rep.baked, "discarded", (Py_ssize_t)rep.discarded,
                            "written", (Py_ssize_t)rep.written,
                            "inpainting", rep.inpainting ? Py_True : Py_False,
                            "instruct_pix2pix", rep.pix2pix ? Py_True : Py_False,
                            "output_size", (unsigned long long)rep.output_size);
    }
done:
    for (int i = 0; i < 3; i++)
        Py_XDECREF(enc[i]);
    Py_XDECREF(eout);
    Py_DECREF(seq);
    return res;
}

static PyObject *mod_code_name(PyObject *mod, PyObject *arg)
{
    (void)mod;
    long c = PyLong_AsLong(arg);
    if (c == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(st_code_name((int)c));
}

/* ------------------------------------------------------------------------ */
/* Module                                                                     */
/* ------------------------------------------------------------------------ */

static PyMethodDef module_methods[] = {
    {"open_file", mod_open_file, METH_VARARGS, "open_file(path, pread=False, populate=0) -> _Handle"},
    {"open_memory", mod_open_memory, METH_O, "open_memory(buffer) -> _Handle"},
    {"alloc", mod_alloc, METH_O, "alloc(nbytes) -> writable _View of its own"},
    {"write", mod_write, METH_VARARGS, "write(items, metadata, path|None)"},
    {"check", mod_check, METH_O, "check(path) -> dict"},
    {"identify", mod_identify, METH_O, "identify(path) -> dict"},
    {"hash", mod_hash, METH_VARARGS, "hash(path, algos, style='plain') -> dict"},
    {"convert", mod_convert, METH_VARARGS,
     "convert(src, dst, dtype|None, saturate, only, exclude, drop, ema, progress) -> dict"},
    {"merge", mod_merge, METH_VARARGS,
     "merge(inputs, out, alpha, mode='weighted', dtype=None, vae=None, discard=None) -> dict"},
    {"code_name", mod_code_name, METH_O, "code_name(code) -> str"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "safetensors_c._safetensors_c",
    .m_doc = "libsafetensors bindings (use the safetensors_c package).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__safetensors_c(void);
PyMODINIT_FUNC PyInit__safetensors_c(void)
{
    if (PyType_Ready(&HandleType) < 0 || PyType_Ready(&ViewType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m)
        return NULL;
    if (!SafetensorError) {
        SafetensorError = PyErr_NewExceptionWithDoc(
            "safetensors_c.SafetensorError",
            "An invalid file or a failed library call; .code, .code_name and .offset "
            "say which check failed and where.",
            NULL, NULL);
        if (!SafetensorError) {
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddObjectRef(m, "SafetensorError", SafetensorError) < 0 ||
        PyModule_AddObjectRef(m, "_Handle", (PyObject *)&HandleType) < 0 ||
        PyModule_AddObjectRef(m, "_View", (PyObject *)&ViewType) < 0 ||
        PyModule_AddStringConstant(m, "library_version", st_version()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
