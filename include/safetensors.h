/*
 * safetensors.h - libsafetensors, a strict, zero-copy reader and canonical
 * writer for the safetensors tensor file format.
 *
 * File layout (little-endian):
 *   bytes 0..8        u64 N, the header length
 *   bytes 8..8+N      UTF-8 JSON object: tensor name -> {dtype, shape,
 *                     data_offsets}, and an optional "__metadata__" object of
 *                     string -> string
 *   bytes 8+N..EOF    tensor data; every data_offsets pair is relative here
 *
 * The reader validates a file exactly as the reference implementation (the
 * Rust crate `safetensors`) does, in the same order, and is stricter in one
 * way the format's own README asks for: a repeated key in any JSON object of
 * the header is rejected with ST_E_DUPLICATE_KEY.
 *
 * Conventions
 *  - Functions that can fail return an int: ST_OK (0) or a positive st_code.
 *    Where an `st_error *err` argument is taken it may be NULL; when not NULL
 *    it receives the code, a message and the byte offset the error refers to.
 *  - Names and strings carry explicit lengths (a tensor name may contain NUL).
 *    Strings the library hands out are also NUL-terminated for convenience.
 *  - No global mutable state. Every read-only function on an st_file may be
 *    called from many threads at once.
 */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define ST_API __attribute__((visibility("default")))
#else
#define ST_API
#endif

#define ST_VERSION_MAJOR 0
#define ST_VERSION_MINOR 1
#define ST_VERSION_PATCH 0
#define ST_VERSION_STRING "0.1.0"

/** The library's version string, e.g. "0.1.0". */
ST_API const char *st_version(void);

/* ------------------------------------------------------------------------ */
/* Error codes                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Stable codes. The values never change; new codes are only appended.
 * Codes 1..12 are the validation verdicts of a file (their names are those
 * `safetensors check --json` prints); the others are usage and I/O errors.
 */
typedef enum st_code {
    ST_OK = 0,
    ST_E_HEADER_TOO_SMALL = 1, /* "header_too_small": fewer than 8 bytes     */
    ST_E_HEADER_TOO_LARGE = 2, /* "header_too_large": N > 100,000,000        */
    ST_E_HEADER_LENGTH = 3,    /* "header_length": 8 + N past end of file    */
    ST_E_HEADER_UTF8 = 4,      /* "header_utf8": header is not UTF-8         */
    ST_E_HEADER_JSON = 5,      /* "header_json": JSON syntax or nesting      */
    ST_E_HEADER_SCHEMA = 6,    /* "header_schema": valid JSON, wrong shape   */
    ST_E_DUPLICATE_KEY = 7,    /* "duplicate_key": repeated key, any object  */
    ST_E_OFFSETS = 8,          /* "offsets": hole, overlap, end < begin      */
    ST_E_OVERFLOW = 9,         /* "overflow": element/bit count > 64 bits    */
    ST_E_MISALIGNED = 10,      /* "misaligned": sub-byte tensor not whole    */
    ST_E_SIZE_MISMATCH = 11,   /* "size_mismatch": byte range != shape size  */
    ST_E_INCOMPLETE = 12,      /* "incomplete": data does not end at EOF     */

    ST_E_IO = 32,              /* "io": open/read/write/mmap/rename failed   */
    ST_E_NOMEM = 33,           /* "nomem": out of memory                     */
    ST_E_ARG = 34,             /* "invalid_argument": bad call or input      */
    ST_E_NOT_FOUND = 35,       /* "not_found": no such tensor or key         */
    ST_E_SLICE = 36,           /* "slice": slice out of range or misaligned  */
    ST_E_RANGE = 37,           /* "range": read past the tensor's bytes      */
    ST_E_UNSUPPORTED = 38,     /* "unsupported": operation not possible      */
    ST_E_CALLBACK = 39         /* "callback": a caller's callback failed     */
} st_code;

/** Short stable name of a code ("header_json", "io", ...); "unknown" if none. */
ST_API const char *st_code_name(int code);

/** One-line English description of a code. */
ST_API const char *st_code_description(int code);

#define ST_ERROR_MESSAGE_MAX 512
#define ST_NO_OFFSET UINT64_MAX

/* Filled in by functions that fail. */
typedef struct st_error {
    int code;             /* st_code                                           */
    uint64_t offset;      /* absolute byte offset in the file the error is     */
                          /* about, or ST_NO_OFFSET                            */
    char message[ST_ERROR_MESSAGE_MAX]; /* names the tensor and the offset     */
} st_error;

/* ------------------------------------------------------------------------ */
/* Data types                                                                */
/* ------------------------------------------------------------------------ */

/*
 * The numeric values are the reference's dtype order; the canonical writer
 * sorts tensors by descending value, then by name bytes.
 */
typedef enum st_dtype {
    ST_BOOL = 0,
    ST_F4 = 1,          /* MX FP4 E2M1, 4 bits                               */
    ST_F6_E2M3 = 2,     /* MX FP6, 6 bits                                    */
    ST_F6_E3M2 = 3,     /* MX FP6, 6 bits                                    */
    ST_U8 = 4,
    ST_I8 = 5,
    ST_F8_E5M2 = 6,
    ST_F8_E4M3 = 7,
    ST_F8_E8M0 = 8,
    ST_F8_E4M3FNUZ = 9,
    ST_F8_E5M2FNUZ = 10,
    ST_I16 = 11,
    ST_U16 = 12,
    ST_F16 = 13,
    ST_BF16 = 14,
    ST_I32 = 15,
    ST_U32 = 16,
    ST_F32 = 17,
    ST_C64 = 18,        /* complex, two F32                                  */
    ST_F64 = 19,
    ST_I64 = 20,
    ST_U64 = 21,
    ST_DTYPE_COUNT = 22
} st_dtype;

/** The format's name of a dtype ("F32", "F8_E4M3", ...); NULL if invalid. */
ST_API const char *st_dtype_name(st_dtype dtype);

/**
 * Parses a dtype name (exact, case-sensitive, as the format spells it).
 * Returns ST_OK and sets *out, or ST_E_NOT_FOUND.
 */
ST_API int st_dtype_from_name(const char *name, size_t len, st_dtype *out);

/** Bits per element: 4, 6, 8, 16, 32 or 64; 0 for an invalid dtype. */
ST_API unsigned st_dtype_bits(st_dtype dtype);

/** 1 for the floating kinds (F*, BF16, C64 is not), else 0. */
ST_API int st_dtype_is_float(st_dtype dtype);

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct st_file st_file;

/* st_open flags */
#define ST_OPEN_MMAP 0u        /* default: map the file read-only (zero-copy) */
#define ST_OPEN_PREAD 1u       /* never map: read the header with pread and  */
                               /* tensor data only through st_tensor_read     */

/* Limits the reader enforces (the first two are the reference's). */
#define ST_MAX_HEADER_SIZE 100000000ull
#define ST_MAX_NESTING 127    /* arrays and objects, the outer object counted */
/* Dimensions of one tensor the writer accepts. The reader, like the
 * reference, takes any rank: a header under the size cap bounds it. */
#define ST_MAX_RANK 4096

/**
 * Opens and validates a file. On success *out is a handle to close with
 * st_close. On failure returns the first error, in the reference's order
 * (length prefix, UTF-8, JSON syntax, schema, tensors in offset order, file
 * coverage), and *out is NULL.
 *
 * With ST_OPEN_MMAP, a file that is truncated by another process while
 * mapped raises SIGBUS on access to the lost pages: use ST_OPEN_PREAD for
 * files that may change underneath you.
 */
ST_API int st_open(const char *path, unsigned flags, st_file **out, st_error *err);

/**
 * Like st_open, from a caller's buffer, without copying it: the buffer must
 * outlive the handle. flags are ignored (pass 0).
 */
ST_API int st_open_memory(const void *data, size_t len, unsigned flags,
                          st_file **out, st_error *err);

/** Releases a handle (NULL is allowed). */
ST_API void st_close(st_file *file);

/** Total file size in bytes. */
ST_API uint64_t st_file_size(const st_file *file);

/** N, the header length (the JSON text, padding included). */
ST_API uint64_t st_header_size(const st_file *file);

/** Absolute file offset where tensor data starts (8 + N). */
ST_API uint64_t st_data_offset(const st_file *file);

/** The raw header JSON bytes (N of them; not NUL-terminated). */
ST_API const char *st_header_json(const st_file *file);

/* A tensor, as described by the header. Owned by the st_file. */
typedef struct st_tensor {
    const char *name;     /* decoded name bytes, NUL-terminated               */
    size_t name_len;      /* length in bytes (the name may contain NUL)       */
    st_dtype dtype;
    uint32_t rank;        /* number of dimensions; 0 for a scalar             */
    const uint64_t *shape;/* rank dimensions                                  */
    uint64_t nelements;   /* product of shape (1 for a scalar)                */
    uint64_t begin;       /* data_offsets[0], relative to st_data_offset()    */
    uint64_t end;         /* data_offsets[1]; end - begin bytes               */
    uint64_t header_offset; /* absolute file offset of the tensor's name     */
} st_tensor;

/** Number of tensors. */
ST_API size_t st_tensor_count(const st_file *file);

/** The i-th tensor in file order (ascending data offsets); NULL if out of range. */
ST_API const st_tensor *st_tensor_at(const st_file *file, size_t i);

/** The i-th tensor in name order (bytewise, shorter first on a tie). */
ST_API const st_tensor *st_tensor_by_name_order(const st_file *file, size_t i);

/** Looks a tensor up by name in O(1); NULL if there is none. */
ST_API const st_tensor *st_find(const st_file *file, const char *name, size_t name_len);

/** Byte size of a tensor's data (end - begin). */
ST_API uint64_t st_tensor_nbytes(const st_tensor *tensor);

/**
 * Pointer to a tensor's bytes: into the mapping (ST_OPEN_MMAP) or the
 * caller's buffer (st_open_memory). NULL in ST_OPEN_PREAD mode, and for a
 * zero-byte tensor may be any non-NULL pointer.
 */
ST_API const void *st_tensor_data(const st_file *file, const st_tensor *tensor);

/**
 * Copies len bytes of a tensor starting at byte `offset` of its data into
 * buf. Works in every mode; thread-safe. ST_E_RANGE if the range is past
 * the tensor, ST_E_IO on a read error or a file that got shorter.
 */
ST_API int st_tensor_read(const st_file *file, const st_tensor *tensor,
                          uint64_t offset, void *buf, size_t len, st_error *err);

/**
 * Reads len bytes at an absolute file offset (any mode). Used for hashing
 * and copying whole files through the handle.
 */
ST_API int st_file_read(const st_file *file, uint64_t offset, void *buf,
                        size_t len, st_error *err);

/* ---- Metadata (the "__metadata__" object) ---- */

/** 1 if the header has a "__metadata__" object (even empty), 0 if absent or null. */
ST_API int st_metadata_present(const st_file *file);

/** Number of metadata pairs. */
ST_API size_t st_metadata_count(const st_file *file);

/**
 * The i-th pair in key order (bytewise). Returns ST_OK, or ST_E_NOT_FOUND
 * if i is out of range. Any out pointer may be NULL.
 */
ST_API int st_metadata_at(const st_file *file, size_t i,
                          const char **key, size_t *key_len,
                          const char **value, size_t *value_len);

/** The value for a key, NUL-terminated, or NULL. *value_len may be NULL. */
ST_API const char *st_metadata_get(const st_file *file, const char *key,
                                   size_t key_len, size_t *value_len);

/* ------------------------------------------------------------------------ */
/* Slicing                                                                   */
/* ------------------------------------------------------------------------ */

/* One dimension of a slice request. */
typedef enum st_slice_kind {
    ST_SLICE_ALL = 0,     /* the whole dimension (kept)                       */
    ST_SLICE_RANGE = 1,   /* [start, stop) (kept, length stop - start)        */
    ST_SLICE_INDEX = 2    /* the single index `start` (dimension dropped)     */
} st_slice_kind;

typedef struct st_slice_dim {
    st_slice_kind kind;
    uint64_t start;
    uint64_t stop;
} st_slice_dim;

/**
 * Describes the result of slicing `tensor` with ndims requests (ndims <=
 * rank; missing trailing dimensions are taken whole). As in the reference:
 * no clamping; start >= dim, stop > dim and start > stop are errors
 * (ST_E_SLICE); for sub-byte dtypes every contiguous run must start and end
 * on a byte boundary (ST_E_SLICE). On success sets *nbytes to the result's
 * byte size, and, when out_shape is not NULL (room for tensor->rank
 * entries), its shape and *out_rank.
 *
 * The rules, exactly the reference's (safetensors slice.rs):
 *  - a requested dimension is [0, dim) for ALL, [start, stop) for RANGE,
 *    [start, start + 1) for INDEX (then dropped from the shape). It must
 *    have start < dim and stop <= dim, so ALL or any RANGE on a
 *    zero-length dimension is ST_E_SLICE; a zero-length dimension left
 *    unrequested is fine (the result is then empty). An empty RANGE
 *    [s, s) with s < dim is allowed.
 *  - sub-byte dtypes (F4, F6_*): walking the dimensions from the last one,
 *    let span be the dtype's bits times the sizes of the dimensions already
 *    walked. The first requested dimension that is not whole needs
 *    start x span and stop x span to be multiples of 8; every requested
 *    dimension further out needs n x span to be a multiple of 8 for every
 *    index n it takes. This can reject a slice whose bytes happen to line
 *    up (F4 [2,3] sliced [1, 1:3]); the reference rejects it too.
 * ST_E_ARG for a bad kind, NULL dims with ndims > 0, or a tensor whose
 * shape, dtype and byte range disagree.
 */
ST_API int st_slice_info(const st_tensor *tensor, const st_slice_dim *dims,
                         size_t ndims, uint64_t *nbytes, uint64_t *out_shape,
                         uint32_t *out_rank, st_error *err);

/**
 * Copies the slice into buf (buf_len must be at least the size that
 * st_slice_info gives, else ST_E_ARG), in C order. Works in every open
 * mode: contiguous runs are copied with one st_tensor_read each. Errors as
 * st_slice_info, and st_tensor_read's.
 */
ST_API int st_slice_read(const st_file *file, const st_tensor *tensor,
                         const st_slice_dim *dims, size_t ndims,
                         void *buf, size_t buf_len, st_error *err);

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct st_writer st_writer;

/**
 * Supplies a tensor's bytes when the writer streams it: fill buf with len
 * bytes starting at byte `offset` of the tensor's data. Return 0 on success,
 * non-zero to abort the write (the target file is then left untouched).
 */
typedef int (*st_read_fn)(void *ctx, uint64_t offset, void *buf, size_t len);

/** Creates an empty writer. Returns NULL only when out of memory. */
ST_API st_writer *st_writer_new(void);

/** Frees a writer (NULL is allowed). */
ST_API void st_writer_free(st_writer *writer);

/**
 * Adds a tensor whose bytes are at `data` (nbytes of them; must stay valid
 * until the write ends). Fails with ST_E_ARG for the name "__metadata__",
 * a name already added (checked in O(1)), a name that is not valid UTF-8
 * (it may contain NUL), a bad dtype, rank > ST_MAX_RANK, NULL data with
 * nbytes > 0, or nbytes not matching the shape (ST_E_SIZE_MISMATCH,
 * ST_E_MISALIGNED, ST_E_OVERFLOW as for reading). Name and shape are copied.
 */
ST_API int st_writer_add(st_writer *writer, const char *name, size_t name_len,
                         st_dtype dtype, const uint64_t *shape, uint32_t rank,
                         const void *data, uint64_t nbytes, st_error *err);

/** Like st_writer_add, with bytes supplied by a callback while writing. */
ST_API int st_writer_add_stream(st_writer *writer, const char *name,
                                size_t name_len, st_dtype dtype,
                                const uint64_t *shape, uint32_t rank,
                                uint64_t nbytes, st_read_fn read, void *ctx,
                                st_error *err);

/**
 * Sets a metadata pair (replacing an earlier value for the key). Any call
 * makes the "__metadata__" object present in the output. Key and value
 * must be valid UTF-8 (ST_E_ARG); both are copied.
 */
ST_API int st_writer_set_metadata(st_writer *writer, const char *key,
                                  size_t key_len, const char *value,
                                  size_t value_len, st_error *err);

/**
 * Makes the output carry "__metadata__" even when it has no pairs
 * (present = 1), or omit it when there are none (present = 0, the default).
 * Pairs already set are always written.
 */
ST_API void st_writer_set_metadata_present(st_writer *writer, int present);

/**
 * Writes the file atomically: a temporary file in the target's folder
 * (".NAME.XXXXXX.tmp"), written, fsync'ed, then renamed over `path` (and
 * the folder fsync'ed). If anything fails (ST_E_CALLBACK when a read
 * callback returns non-zero, ST_E_IO naming the path and the system's
 * reason otherwise), `path` is untouched and the temporary file removed.
 * The space is reserved up front (fallocate, where the file system has
 * it), so a full disk fails before any data is written.
 * The new file gets mode 0644, or the mode of the regular file it
 * replaces. A symbolic link at `path` is replaced, not followed. An error
 * from fsync'ing the folder after the rename is reported but the new file
 * stays.
 * Header larger than 100,000,000 bytes: ST_E_HEADER_TOO_LARGE.
 * Output is byte for byte the reference writer's for the same tensors:
 * tensors by descending dtype then name bytes, compact JSON, "__metadata__"
 * first (keys sorted bytewise), header padded with spaces to a multiple
 * of 8. Memory use is the header plus a fixed buffer.
 */
ST_API int st_writer_write(st_writer *writer, const char *path, st_error *err);

/**
 * Serializes to a freshly malloc'ed buffer (*out, *out_len; free() it).
 * For small files and tests.
 */
ST_API int st_writer_serialize(st_writer *writer, void **out, size_t *out_len,
                               st_error *err);

/**
 * Streams the serialized file to a sink (called with consecutive chunks of
 * at most 1 GiB, usually 1 MiB; return non-zero to abort, which returns
 * ST_E_CALLBACK).
 */
typedef int (*st_write_fn)(void *ctx, const void *buf, size_t len);
ST_API int st_writer_write_to(st_writer *writer, st_write_fn sink, void *ctx,
                              st_error *err);

/** Size in bytes the serialized file will have; 0 if it cannot be built
 * (header too large, out of memory). */
ST_API uint64_t st_writer_output_size(st_writer *writer);

#ifdef __cplusplus
}
#endif

#endif /* SAFETENSORS_H */
