/* Internal interfaces of the checkpoint importer's parts: the zip
 * container reader (zip.c), the restricted pickle machine (pickle.c) and
 * the TorchScript lexer (tscode.c). The checkpoint model they serve is in
 * ckpt_model.h. Not installed. */
#ifndef ST_CKPT_INTERNAL_H
#define ST_CKPT_INTERNAL_H

#include "common/arena.h"

/* ---- Zip container (PyTorch's "stored" archives) ---- */

typedef struct st_zip_entry {
    const char *name;      /* full name, NUL-terminated                    */
    size_t name_len;
    uint64_t header_offset;/* local header                                 */
    uint64_t data_offset;  /* first byte of the stored data                */
    uint64_t size;         /* uncompressed == compressed size for stored  */
    uint64_t csize;
    uint32_t crc32;
    uint16_t method;       /* 0 stored, 8 deflated (only pickles may be)   */
} st_zip_entry;

typedef struct st_zip {
    st_zip_entry *entries; /* sorted by name                               */
    size_t count;
    const char *prefix;    /* the common top-level folder, with its '/'   */
    size_t prefix_len;
    st_arena arena;
} st_zip;

ST_INTERNAL int st_zip_open(int fd, uint64_t file_size, st_zip *zip, st_error *err);
ST_INTERNAL void st_zip_free(st_zip *zip);
/* Exact name lookup (full name, prefix included). */
ST_INTERNAL const st_zip_entry *st_zip_find(const st_zip *zip, const char *name, size_t len);

/* ---- Pickle machine ---- */

typedef enum pk_kind {
    PK_NONE, PK_BOOL, PK_INT, PK_BIGINT, PK_FLOAT, PK_STR, PK_BYTES,
    PK_TUPLE, PK_LIST, PK_DICT, PK_SET, PK_GLOBAL, PK_OBJECT, PK_PERSID,
    PK_STORAGE, PK_TENSOR, PK_ARRAY
} pk_kind;

typedef struct pk_value pk_value;
struct pk_value {
    uint8_t kind;
    uint8_t visiting; /* set while a traversal is inside (cycle guard)    */
    union {
        int64_t i;    /* PK_INT, PK_BOOL                                   */
        double f;
        struct { const char *p; size_t n; } s; /* STR (UTF-8), BYTES,      */
                      /* BIGINT (little-endian two's complement)           */
        struct { pk_value **v; size_t n, cap; } seq; /* TUPLE LIST SET;    */
                      /* DICT: n pairs at v[2i], v[2i+1]                   */
        struct { const char *mod, *name; size_t modn, namen; uint32_t id; } g;
        struct { pk_value *cls, *args, *state, *list, *dict; } o;
        struct { pk_value *pid; } pid;
        struct { uint32_t index; } st;  /* into the checkpoint's storages   */
        struct {
            pk_value *storage;
            uint64_t offset;  /* elements                                  */
            uint32_t rank;
            uint64_t *shape, *stride;
        } t;
        struct {              /* numpy.ndarray rebuilt by _reconstruct+BUILD */
            const char *code; /* numpy's type text, e.g. "f8", "O8"        */
            size_t coden;
            char order;       /* '<', '>', '|' or '='                      */
            int dtype;        /* st_dtype, or -1 (not a tensor dtype)      */
            unsigned elem;    /* bytes per element                         */
            bool fortran;
            uint32_t rank;
            uint64_t *shape;
            uint64_t numel;
            const unsigned char *data; /* numel * elem bytes, or NULL      */
            uint64_t offset;  /* the BUILD opcode                          */
            const char *why;  /* why it is no tensor (dtype -1), or NULL   */
            uint32_t rec;     /* the importer's record of it + 1, or 0     */
        } arr;
    } u;
};

typedef struct pk_hooks {
    void *ctx;
    /* Called for every global the pickle names (GLOBAL, STACK_GLOBAL, INST,
     * EXT*), before anything else happens with it. Sets *id. */
    int (*global)(void *ctx, const char *mod, size_t modn, const char *name,
                  size_t namen, uint64_t offset, uint32_t *id, st_error *err);
    /* Turns a persistent id into a value (a PK_STORAGE); NULL hook: the id
     * stays an inert PK_PERSID. */
    int (*persid)(void *ctx, pk_value *pid, uint32_t *storage_index, st_error *err);
    /* Called for every numpy array the pickle rebuilds (PK_ARRAY), in
     * both modes; may be NULL. */
    int (*array)(void *ctx, pk_value *arr, st_error *err);
    /* When set (interpret mode), replaces persid: fills *out (a PK_NONE on
     * entry) with whatever the id stands for (a storage or a tensor). */
    int (*persid_value)(void *ctx, pk_value *pid, pk_value *out, st_error *err);
} pk_hooks;

typedef struct pk_machine pk_machine;

/* Runs one pickle read from fd over [start, end) until STOP. *stop_end is
 * the offset just past the STOP opcode; *result the unpickled value. All
 * values live in the machine's arena until pk_free. With interpret == false
 * no torch call is interpreted (scan mode: every REDUCE is inert). */
/* min(configured, max(floor, 64 x pickle_bytes)): the budgets a pickle of
 * that size gets (graph memory here, container walks in checkpoint.c). */
ST_INTERNAL uint64_t pk_scaled_limit(uint64_t configured, uint64_t floor, uint64_t pickle_bytes);

ST_INTERNAL int pk_run(int fd, uint64_t start, uint64_t end,
                       const st_ckpt_limits *limits, const pk_hooks *hooks,
                       bool interpret, pk_machine **out_machine,
                       pk_value **result, uint64_t *stop_end, st_error *err);
ST_INTERNAL void pk_free(pk_machine *m);

/* Same, from memory (tests, deflated entries). */
ST_INTERNAL int pk_run_memory(const void *data, size_t len,
                              const st_ckpt_limits *limits, const pk_hooks *hooks,
                              bool interpret, pk_machine **out_machine,
                              pk_value **result, uint64_t *stop_end, st_error *err);

/* Equality of a str value with a C string. */
ST_INTERNAL bool pk_is_str(const pk_value *v, const char *s);

/* ---- TorchScript code, lexically (tscode.c) ---- */

typedef struct st_ts_lexer {
    int state;
    unsigned prev;   /* the byte before, outside literals and comments    */
    char quote;
    bool triple, escape, overflow;
    unsigned qrun;   /* quotes in a row                                   */
    uint32_t col, tok_col; /* column of this byte / of the name's start   */
    bool line_tok, tok_first; /* a token seen on this line / name is first */
    bool want_class; /* after `class` at column 0                        */
    int attr_kind, attr_stage; /* in __parameters__ (1) / __buffers__ (2) */
    size_t len;
    char name[256];  /* the name or literal being read; longer ones dropped */
} st_ts_lexer;

/* What the lexer reports; any callback may be NULL. Names are not
 * terminated. A non-zero return stops the lexer with that value. */
typedef struct st_ts_sink {
    void *ctx;
    int (*call)(void *ctx, const char *name, size_t len);   /* "torch.relu" */
    int (*cls)(void *ctx, const char *name, size_t len);    /* class NAME   */
    int (*attr)(void *ctx, int kind, const char *name, size_t len); /* 1 a  */
                     /* parameter, 2 a buffer of the last class          */
} st_ts_sink;

ST_INTERNAL void st_ts_lex_init(st_ts_lexer *lx);
/* Feeds n more bytes; returns the first non-zero callback result, else 0. */
ST_INTERNAL int st_ts_lex(st_ts_lexer *lx, const void *data, size_t n, const st_ts_sink *sink);

#endif
