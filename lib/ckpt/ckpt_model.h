/* The checkpoint model shared by the importer's files: checkpoint.c (zip,
 * TorchScript, legacy, naming, reads), torchscript.c (the archive's code)
 * and tar.c (tar checkpoints). Not installed. */
#ifndef ST_CKPT_MODEL_H
#define ST_CKPT_MODEL_H

#include "ckpt/ckpt_internal.h"

typedef struct ck_storage {
    const char *key;
    size_t key_len;
    const char *type_name; /* e.g. "FloatStorage"                          */
    int dtype;             /* st_dtype, or -1 when safetensors has none      */
    unsigned elem;         /* bytes per element                              */
    unsigned swap;         /* byte-swap unit for big-endian data, 0 = none   */
    uint64_t numel;
    uint64_t offset;       /* absolute file offset of element 0              */
    bool located;
    int64_t root;          /* legacy views: index of the root storage, or -1 */
    uint64_t view_off;     /* elements into the root                         */
    const unsigned char *mem; /* numpy arrays: the bytes, in a kept pickle  */
    bool be;               /* big-endian data                                */
} ck_storage;

typedef struct ck_array {
    st_ckpt_array pub;
} ck_array;

/* tar checkpoints: a tensor of the "tensors" member, by its key */
typedef struct ck_tar_tensor {
    const char *key;
    pk_value value;        /* a PK_TENSOR                                    */
    pk_value storage;      /* its PK_STORAGE                                 */
} ck_tar_tensor;

#define MAX_OPS 65536u

typedef struct ck_tensor {
    st_ckpt_tensor pub;
    uint32_t storage;
} ck_tensor;

/* Open-addressing index of strings (storage keys, global names, tensor
 * names) to positions; keys compared in full. */
typedef struct ck_index {
    uint32_t *slots; /* position + 1; 0 = empty */
    size_t cap, n;
} ck_index;

struct st_ckpt {
    int fd;
    uint64_t size;
    st_format format;
    bool big_endian;
    st_ckpt_limits lim;
    st_arena arena;
    st_zip zip;
    bool scan_only;
    ck_storage *st;
    size_t nst, stcap;
    ck_index st_index;
    ck_tensor *t;
    size_t nt, tcap;
    ck_index t_index;
    st_ckpt_global *g;
    size_t ng, gcap, ndanger;
    ck_index g_index;
    struct ck_meta { const char *k, *v; size_t kl, vl; } *meta;
    size_t nmeta, mcap;
    const char *pickle_label;
    st_error scan_err;
    bool has_scan_err;
    /* flattening */
    char *name;
    size_t name_len, name_cap;
    uint64_t visits;
    uint64_t visit_limit; /* of this walk: scaled to the pickle's size */
    uint64_t name_limit;  /* tensors it may name, likewise */
    uint64_t hash_seed; /* the indexes hash names the file chose: seeded */
    /* TorchScript */
    const char *rec_dir;   /* records of the pickle being read: "data/"...  */
    bool const_keys;       /* storage keys get "constants/" (not data's)    */
    st_ckpt_code *code;
    size_t ncode, codecap;
    st_ckpt_op *ops;
    size_t nops, opscap;
    ck_index op_index;
    /* TorchScript classes ("module.Class") and their parameters and
     * buffers ("module.Class\nname"), from the code's __parameters__ and
     * __buffers__ lists; full: too many to trust the set, no filtering */
    struct ck_str { const char *s; size_t n; } *tsn;
    size_t ntsn, tsncap;
    ck_index tsn_index;
    size_t tsn_bytes;
    bool tsn_full;
    /* numpy arrays and the pickles whose arenas hold their bytes */
    ck_array *arr;
    size_t narr, arrcap;
    pk_machine **keep;
    size_t nkeep, keepcap;
    /* tar */
    ck_tar_tensor **tt;    /* entries in the arena, sorted by key when read */
    size_t ntt, ttcap;
};

/* ---- helpers (checkpoint.c) ---- */

typedef bool (*ck_eq_fn)(const st_ckpt *ck, uint32_t pos, const void *key, size_t len);
/* The index stores hashes implicitly: on growth every entry is re-hashed
 * through the ck_hash_fn. */
typedef uint64_t (*ck_hash_fn)(const st_ckpt *ck, uint32_t pos);

typedef struct ck_storage_type {
    const char *name;  /* e.g. "FloatStorage"                          */
    int dtype;         /* st_dtype, or -1 when safetensors has none    */
    unsigned elem;     /* bytes per element                            */
} ck_storage_type;

ST_INTERNAL extern const ck_storage_type ck_storage_types[];
ST_INTERNAL extern const size_t ck_storage_type_count;

ST_INTERNAL int ck_nomem(st_error *err);
/* Grows *p (an array of elem-sized items) to hold need; ST_E_NOMEM if not. */
ST_INTERNAL int ck_grow(void **p, size_t *cap, size_t need, size_t elem);
ST_INTERNAL uint64_t ck_hash(const st_ckpt *ck, const void *data, size_t len);
/* The slot of key (*slot != 0: found at *slot - 1), or NULL for an empty index. */
ST_INTERNAL uint32_t *ck_index_slot(const ck_index *ix, const st_ckpt *ck, uint64_t h, const void *key, size_t len,
                                    ck_eq_fn eqf);
ST_INTERNAL int ck_index_grow(ck_index *ix, const st_ckpt *ck, ck_hash_fn hf);
ST_INTERNAL int ck_index_insert(ck_index *ix, uint64_t h, uint32_t pos);
/* storages by key */
ST_INTERNAL bool ck_st_eq(const st_ckpt *ck, uint32_t pos, const void *key, size_t len);
ST_INTERNAL uint64_t ck_st_hash(const st_ckpt *ck, uint32_t pos);
ST_INTERNAL int ck_pid_error(st_error *err, const char *what);
/* The hooks every pickle of a checkpoint runs with (globals, storages, arrays). */
ST_INTERNAL const pk_hooks *ck_hooks_for(st_ckpt *ck, pk_hooks *h);
ST_INTERNAL pk_value *ck_dict_get(pk_value *d, const char *key);
/* Names the tensors of the object a checkpoint holds (metadata too). */
ST_INTERNAL int ck_name_tensors(st_ckpt *ck, pk_value *root, uint64_t pickle_bytes,
                                st_error *err);
/* Keeps a pickle's machine with the checkpoint when numpy arrays were
 * recorded since narr_before (their bytes are in its arena); else frees it. */
ST_INTERNAL int ck_keep_machine(st_ckpt *ck, pk_machine *m, size_t narr_before, st_error *err);
/* Scan mode: remembers the first reason a pickle could not be read to its end. */
ST_INTERNAL void ck_scan_note(st_ckpt *ck, const st_error *e);

/* ---- TorchScript code (torchscript.c) ---- */

/* A code/ *.py entry of the archive. */
ST_INTERNAL bool ck_ts_is_code(const st_ckpt *ck, const st_zip_entry *en);
/* Records the entry as a code file and lexes it: its calls, its classes'
 * __parameters__ and __buffers__ (bounded: MAX_OPS entries, 16 MiB). */
ST_INTERNAL int ck_ts_scan_code(st_ckpt *ck, const st_zip_entry *en, st_error *err);
/* "module.Class" (the class is declared), or "module.Class\nname" (name is
 * one of its parameters or buffers). */
ST_INTERNAL bool ck_ts_declared(const st_ckpt *ck, const char *s, size_t n);

/* ---- tar checkpoints (tar.c) ---- */

ST_INTERNAL int ck_open_tar(st_ckpt *ck, st_error *err);

#endif
