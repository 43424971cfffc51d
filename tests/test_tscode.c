/* The TorchScript lexer (lib/ckpt/tscode.c) and the numpy array reader of
 * the pickle machine (lib/ckpt/pickle.c), on hand-written inputs: which
 * calls, classes and parameter names are found, that comments and string
 * literals hide calls, that any chunking gives the same answer, and that
 * ndarray pickles become PK_ARRAY values with the right dtype, order,
 * shape and bytes (or stay out with a reason). */
#include "ckpt/ckpt_internal.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

typedef struct rec {
    char text[4096];
    size_t len;
} rec;

static void put(rec *r, const char *tag, const char *s, size_t n)
{
    int k = snprintf(r->text + r->len, sizeof r->text - r->len, "%s:%.*s;", tag, (int)n, s);
    if (k > 0 && (size_t)k < sizeof r->text - r->len)
        r->len += (size_t)k;
}
static int on_call(void *c, const char *s, size_t n) { put(c, "call", s, n); return 0; }
static int on_class(void *c, const char *s, size_t n) { put(c, "class", s, n); return 0; }
static int on_attr(void *c, int kind, const char *s, size_t n)
{
    put(c, kind == 1 ? "param" : "buffer", s, n);
    return 0;
}

static void lex(const char *src, size_t chunk, rec *r)
{
    memset(r, 0, sizeof *r);
    st_ts_lexer lx;
    st_ts_sink sink = {r, on_call, on_class, on_attr};
    st_ts_lex_init(&lx);
    size_t n = strlen(src);
    for (size_t at = 0; at < n; at += chunk)
        st_ts_lex(&lx, src + at, n - at < chunk ? n - at : chunk, &sink);
}

static void expect(const char *src, const char *want)
{
    rec r;
    for (size_t chunk = 1; chunk <= 64; chunk = chunk < 8 ? chunk + 1 : chunk * 2) {
        lex(src, chunk, &r);
        CHECK(strcmp(r.text, want) == 0, "chunk %zu:\n  source %s\n  got  %s\n  want %s", chunk, src, r.text, want);
    }
}

static void test_lexer(void)
{
    expect("x = torch.relu(y)\n", "call:torch.relu;");
    expect("return torch.add(a, ops.aten.mul(b, c))\n", "call:torch.add;call:ops.aten.mul;");
    expect("torch.ops.my_ns.op (x)\n", "call:torch.ops.my_ns.op;");
    expect("torch.relu\nx = torch.float32\n", "");              /* not calls */
    expect("torchx.relu(x) + self.torch.relu(x) + notorch.a(b)\n", ""); /* not the torch module */
    expect("# torch.relu(x)\n'torch.a(x)' \"torch.b(\\\"x\" '''torch.c(\n''' torch.d(1)\n", "call:torch.d;");
    expect("s = '' + torch.e(1)\n", "call:torch.e;");
    expect("s = \"\"\"a\"b\"\"c\"\"\" + torch.f(1)\n", "call:torch.f;");
    expect("torch..bad(x) torch.(y) ops.(z)\n", "");
    expect("class M(Module):\n  __parameters__ = [\"weight\", \"bias\", ]\n  __buffers__ = [\"running_mean\", ]\n"
           "  def forward(self):\n    return torch.linear(x)\n",
           "class:M;param:weight;param:bias;buffer:running_mean;call:torch.linear;");
    expect("class ___torch_mangle_3(Module):\n  __parameters__ = []\n  __buffers__ = []\n",
           "class:___torch_mangle_3;");
    /* only at the start of a line, and only as the list TorchScript prints */
    expect("  x = class_(1)\n  y.__parameters__ = [\"no\"]\n  __parameters__ = f([\"no\"])\n"
           "  __buffers__ = [\"a\" \"b\"]\n",
           "buffer:a;buffer:b;");
    char longname[600] = "torch.";
    memset(longname + 6, 'a', 400);
    strcpy(longname + 406, "(x) + torch.ok(y)\n");
    expect(longname, "call:torch.ok;"); /* a name over 256 bytes is dropped */
}

/* numpy arrays: pickles made by CPython 3.11 + numpy 1.24 */
static pk_value *first_value(pk_value *d)
{
    return d && d->kind == PK_DICT && d->u.seq.n ? d->u.seq.v[1] : NULL;
}

static void test_numpy(void)
{
    /* pickle.dumps({'a': np.array([[1, 2, 3], [4, 5, 6]], dtype='>i2', order='F')}, 4) */
    static const unsigned char p4[] =
        "\x80\x04\x95\x9d\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x8c\x01\x61\x94\x8c\x15\x6e\x75\x6d\x70\x79\x2e"
        "\x63\x6f\x72\x65\x2e\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x94\x8c\x0c\x5f\x72\x65\x63\x6f\x6e\x73"
        "\x74\x72\x75\x63\x74\x94\x93\x94\x8c\x05\x6e\x75\x6d\x70\x79\x94\x8c\x07\x6e\x64\x61\x72\x72\x61\x79"
        "\x94\x93\x94\x4b\x00\x85\x94\x43\x01\x62\x94\x87\x94\x52\x94\x28\x4b\x01\x4b\x02\x4b\x03\x86\x94\x68"
        "\x05\x8c\x05\x64\x74\x79\x70\x65\x94\x93\x94\x8c\x02\x69\x32\x94\x89\x88\x87\x94\x52\x94\x28\x4b\x03"
        "\x8c\x01\x3e\x94\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x00\x74\x94\x62\x88\x43\x0c"
        "\x00\x01\x00\x04\x00\x02\x00\x05\x00\x03\x00\x06\x94\x74\x94\x62\x73\x2e";
    for (int interpret = 0; interpret < 2; interpret++) {
        pk_machine *m = NULL;
        pk_value *res = NULL;
        st_error err;
        int rc = pk_run_memory(p4, sizeof p4 - 1, NULL, NULL, interpret, &m, &res, NULL, &err);
        CHECK(rc == ST_OK, "numpy pickle: %s", err.message);
        pk_value *a = first_value(res);
        CHECK(a && a->kind == PK_ARRAY, "an ndarray becomes PK_ARRAY");
        if (a && a->kind == PK_ARRAY) {
            CHECK(a->u.arr.dtype == ST_I16 && a->u.arr.elem == 2 && a->u.arr.order == '>', "dtype >i2");
            CHECK(a->u.arr.fortran && a->u.arr.rank == 2 && a->u.arr.shape[0] == 2 && a->u.arr.shape[1] == 3,
                  "Fortran 2x3");
            CHECK(a->u.arr.numel == 6 && a->u.arr.data && memcmp(a->u.arr.data, "\x00\x01\x00\x04", 4) == 0,
                  "raw bytes, column-major, big-endian");
        }
        pk_free(m);
    }
    /* pickle.dumps({'o': np.array([1, None], dtype=object)}, 2): no tensor */
    static const unsigned char po[] =
        "\x80\x02\x7d\x71\x00\x58\x01\x00\x00\x00\x6f\x71\x01\x63\x6e\x75\x6d\x70\x79\x2e\x63\x6f\x72\x65\x2e"
        "\x6d\x75\x6c\x74\x69\x61\x72\x72\x61\x79\x0a\x5f\x72\x65\x63\x6f\x6e\x73\x74\x72\x75\x63\x74\x0a\x71"
        "\x02\x63\x6e\x75\x6d\x70\x79\x0a\x6e\x64\x61\x72\x72\x61\x79\x0a\x71\x03\x4b\x00\x85\x71\x04\x63\x5f"
        "\x63\x6f\x64\x65\x63\x73\x0a\x65\x6e\x63\x6f\x64\x65\x0a\x71\x05\x58\x01\x00\x00\x00\x62\x71\x06\x58"
        "\x06\x00\x00\x00\x6c\x61\x74\x69\x6e\x31\x71\x07\x86\x71\x08\x52\x71\x09\x87\x71\x0a\x52\x71\x0b\x28"
        "\x4b\x01\x4b\x02\x85\x71\x0c\x63\x6e\x75\x6d\x70\x79\x0a\x64\x74\x79\x70\x65\x0a\x71\x0d\x58\x02\x00"
        "\x00\x00\x4f\x38\x71\x0e\x89\x88\x87\x71\x0f\x52\x71\x10\x28\x4b\x03\x58\x01\x00\x00\x00\x7c\x71\x11"
        "\x4e\x4e\x4e\x4a\xff\xff\xff\xff\x4a\xff\xff\xff\xff\x4b\x3f\x74\x71\x12\x62\x89\x5d\x71\x13\x28\x4b"
        "\x01\x4e\x65\x74\x71\x14\x62\x73\x2e";
    pk_machine *m = NULL;
    pk_value *res = NULL;
    st_error err;
    int rc = pk_run_memory(po, sizeof po - 1, NULL, NULL, true, &m, &res, NULL, &err);
    CHECK(rc == ST_OK, "object array pickle: %s", err.message);
    pk_value *a = first_value(res);
    CHECK(a && a->kind == PK_ARRAY && a->u.arr.dtype < 0 && a->u.arr.why && strstr(a->u.arr.why, "object"),
          "an object array is no tensor, with the reason");
    pk_free(m);
    /* the same int16 array with one data byte missing: a malformed pickle */
    unsigned char bad[sizeof p4];
    memcpy(bad, p4, sizeof p4);
    unsigned char *c = NULL;
    for (size_t i = 0; i + 1 < sizeof p4 - 1; i++)
        if (bad[i] == 'C' && bad[i + 1] == 12)
            c = bad + i;
    CHECK(c != NULL, "found the data's SHORT_BINBYTES");
    if (c) {
        c[1] = 11;
        bad[3]--; /* the FRAME's length */
        memmove(c + 13, c + 14, (size_t)(bad + sizeof p4 - 1 - (c + 14)));
        rc = pk_run_memory(bad, sizeof p4 - 2, NULL, NULL, true, &m, &res, NULL, &err);
        CHECK(rc == ST_E_PICKLE && strstr(err.message, "numpy array"), "short data: %d %s", rc, err.message);
        pk_free(m);
    }
}

int main(void)
{
    test_lexer();
    test_numpy();
    CHECK(strcmp(st_format_name(ST_FORMAT_TORCHSCRIPT), "torchscript") == 0 &&
              strcmp(st_format_name(ST_FORMAT_TAR_PICKLE), "tar-pickle") == 0,
          "format names");
    CHECK(st_ckpt_classify("torch.jit._pickle", 17, "build_intlist", 13) == ST_SAFETY_SAFE &&
              st_ckpt_classify("torch.jit._pickle", 17, "restore_type_tag", 16) == ST_SAFETY_SAFE &&
              st_ckpt_classify("__torch__", 9, "M", 1) == ST_SAFETY_UNKNOWN,
          "TorchScript globals classified");
    TEST_END();
}
