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
    ST_E_CALLBACK = 39,        /* "callback": a caller's callback failed     */

    /* Checkpoint import (PyTorch pickle/zip files) */
    ST_E_CKPT_FORMAT = 40,     /* "ckpt_format": not a known checkpoint      */
    ST_E_ZIP = 41,             /* "zip": malformed zip container             */
    ST_E_PICKLE = 42,          /* "pickle": malformed or unsupported pickle  */
    ST_E_PICKLE_LIMIT = 43,    /* "pickle_limit": a pickle exceeds a limit   */
    ST_E_UNSAFE = 44,          /* "unsafe": the pickle names a dangerous global */
    ST_E_CKPT_TENSOR = 45,     /* "ckpt_tensor": tensor/storage inconsistent */

    /* LoRA (lib/lora/) */
    ST_E_LORA = 46,            /* "lora": adapter inconsistent with itself   */
                               /* or with the model (shapes, rank, alpha,    */
                               /* keys that match no model weight)           */

    /* GGUF (lib/gguf/) */
    ST_E_GGUF = 47             /* "gguf": malformed GGUF file (a count,      */
                               /* length, offset, type or alignment that     */
                               /* does not hold)                             */
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
 * The descriptor and absolute file offset of a tensor's bytes, for
 * st_writer_add_file_range: ST_OK for files opened with ST_OPEN_PREAD (the
 * descriptor stays the st_file's: do not close it), ST_E_UNSUPPORTED for
 * mapped or in-memory files, ST_E_ARG for a tensor of another file.
 */
ST_API int st_tensor_file_range(const st_file *file, const st_tensor *tensor, int *fd,
                                uint64_t *offset);

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

/**
 * Progress of long work (anything that reads or writes tensor data): called
 * from the thread doing the work with the bytes done so far and the total
 * expected (0 when not known), after each piece of work (from every few
 * MiB to a few times a second: a display should limit its redraws) and
 * once at the end. Return 0 to go on, non-zero to stop the work, which then fails with
 * ST_E_CALLBACK and leaves no partial output. Every operation that takes
 * one accepts NULL for "no progress".
 */
typedef int (*st_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/**
 * Told of each temporary file an operation creates (created = 1, right
 * after it exists and before any byte is written) and of its end (created =
 * 0: renamed into place or removed). A program keeps these paths in a fixed
 * table that its SIGINT/SIGTERM handler unlinks, so an interrupted run
 * leaves nothing behind. Called on the thread doing the work.
 */
typedef void (*st_temp_fn)(void *ctx, const char *path, int created);

/* What an operation that writes a file reports while it works. Zeroed
 * (or a NULL pointer where one is taken): no reports. */
typedef struct st_output_hooks {
    st_progress_fn progress; /* bytes written of the output's total size     */
    void *progress_ctx;
    st_temp_fn temp;         /* the temporary file beside the target         */
    void *temp_ctx;
} st_output_hooks;

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
 * Like st_writer_add_stream, with the bytes at [offset, offset + nbytes) of
 * the open file fd (which must stay open, and those bytes unchanged, until
 * the write ends). Written to a file, they are moved inside the kernel
 * (copy_file_range: no copy through this process, and shared extents where
 * the file system can), falling back to pread/write where it refuses; to a
 * sink or memory, they are read with pread. The output bytes are the same
 * either way. A short file is ST_E_IO.
 */
ST_API int st_writer_add_file_range(st_writer *writer, const char *name, size_t name_len,
                                    st_dtype dtype, const uint64_t *shape, uint32_t rank,
                                    int fd, uint64_t offset, uint64_t nbytes, st_error *err);

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
 * Leaves at least `bytes` spaces after the header's JSON (then pads to a
 * multiple of 8 as usual), so a later metadata edit can rewrite the header
 * in place instead of the whole file (`convert --pad`, `meta --pad`). Such
 * a file is valid (readers accept trailing spaces in the header) but not
 * canonical. 0, the default: the reference writer's layout. The padded
 * header is still limited to ST_MAX_HEADER_SIZE (ST_E_HEADER_TOO_LARGE).
 */
ST_API void st_writer_set_header_padding(st_writer *writer, uint64_t bytes);

/**
 * Sets the hooks st_writer_write, st_writer_write_to and
 * st_writer_serialize report through (copied; NULL clears them). Progress
 * counts bytes of the serialized file; a progress callback returning
 * non-zero stops the write with ST_E_CALLBACK and no output.
 */
ST_API void st_writer_set_hooks(st_writer *writer, const st_output_hooks *hooks);

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

/* ------------------------------------------------------------------------ */
/* Dtype conversion                                                          */
/* ------------------------------------------------------------------------ */

/*
 * st_convert turns n elements of one dtype into n elements of another.
 * Every result is defined bit for bit, whatever the CPU: the SIMD paths
 * (F16C, AVX2, AVX-512, chosen at run time) give exactly the bits of the
 * portable scalar path, and nothing depends on the floating-point
 * environment (rounding mode, FTZ/DAZ) of the calling thread.
 *
 * Supported pairs
 *  - Between any two of F64, F32, F16, BF16, F8_E4M3, F8_E5M2,
 *    F8_E4M3FNUZ, F8_E5M2FNUZ, F8_E8M0.
 *  - From F4, F6_E2M3, F6_E3M2 to any of the above (decoding only; there is
 *    no encoder to the sub-byte kinds: they have no NaN and need a scale).
 *  - Between any integer kind (I8..U64) or BOOL and any of the above, and
 *    between integer kinds. C64 is not supported (ST_E_UNSUPPORTED).
 *  - Same dtype to same dtype is a plain copy.
 *
 * Floating formats (sign, exponent, mantissa bits; bias; specials)
 *   F64  1.11.52 bias 1023   F32 1.8.23 bias 127   IEEE 754, Inf and NaN
 *   F16  1.5.10 bias 15 (IEEE binary16)    BF16 1.8.7 bias 127 (top of F32)
 *   F8_E5M2      1.5.2 bias 15: IEEE-like, Inf = S.11111.00, NaN S.11111.xx,
 *                max 57344
 *   F8_E4M3      1.4.3 bias 7, OCP "fn": no Inf, NaN = S.1111.111 only,
 *                max 448
 *   F8_E4M3FNUZ  1.4.3 bias 8: no Inf, no -0, one NaN 0x80, max 240
 *   F8_E5M2FNUZ  1.5.2 bias 16: no Inf, no -0, one NaN 0x80, max 57344
 *   F8_E8M0      0.8.0 bias 127: 2^(code-127), unsigned, no zero, NaN 0xFF
 *   F4           1.2.1 bias 1 (MX E2M1): no Inf/NaN, max 6
 *   F6_E2M3      1.2.3 bias 1: no Inf/NaN, max 7.5
 *   F6_E3M2      1.3.2 bias 3: no Inf/NaN, max 28
 *
 * Sub-byte packing (the format leaves it open). Elements form an LSB-first
 * bit stream: element i occupies bits [b*i, b*i + b) where bit k is bit
 * k % 8 of byte k / 8 (b = 4 or 6). For F4 this is "first element in the
 * low nibble", the layout of PyTorch's float4_e2m1fn_x2 and of the MX
 * kernels that store two E2M1 values per byte; F6 extends the same rule so
 * that four elements fill three bytes: byte0 = e0 | e1 << 6, byte1 =
 * e1 >> 2 | e2 << 4, byte2 = e2 >> 4 | e3 << 2. Element counts for F4 must
 * be even and for F6 a multiple of 4 (whole bytes), else ST_E_MISALIGNED.
 *
 * Semantics between floating kinds
 *  - Exact when the value is representable (every widening, e.g. F16->F32,
 *    any FP8->F16/BF16/F32, F32->F64). Subnormals are exact in and out: no
 *    flush to zero anywhere.
 *  - Otherwise rounded once, to nearest, ties to even (also from F64 and
 *    from 64-bit integers: never a double rounding through F32).
 *  - Zero keeps its sign, except in the FNUZ kinds, which have no -0 (a
 *    result that rounds to -0 is +0).
 *  - NaN stays NaN. Into F32 and F64 from a kind with no more mantissa
 *    bits, the sign and the payload (left-aligned) are kept and the quiet
 *    bit is set (as PyTorch and F16C do for F16->F32). Exception: BF16->F32
 *    is the exact bit extension (BF16 is the top half of F32), so a
 *    signalling BF16 NaN stays signalling, as in PyTorch. Into any other
 *    kind NaN becomes the target's canonical NaN with the sign kept where
 *    the target has one: F16 0x7E00, BF16 0x7FC0, F32 0x7FC00000, F64
 *    0x7FF8000000000000, F8_E4M3 and F8_E5M2 0x7F (as c10), FNUZ kinds 0x80,
 *    F8_E8M0 0xFF. PyTorch 1.13 agrees bit for bit for F32->F16; for
 *    F32->BF16 its vectorised CPU kernel writes 0xFFFF for every NaN, which
 *    loses the sign: this library writes 0x7FC0 | sign.
 *  - Overflow (the value rounds to a magnitude above the target's largest
 *    finite value), by default as PyTorch's Tensor.to() / c10:
 *      F64, F32, F16, BF16, F8_E5M2: +-Inf.
 *      F8_E4M3: NaN with the sign (c10: |x| >= 480 gives 0x7F | sign;
 *      with rounding, everything above 464).
 *      F8_E4M3FNUZ, F8_E5M2FNUZ: NaN 0x80 (c10: |x| >= 256 / 65536; with
 *      rounding, >= 248 / 61440).
 *      F8_E8M0: NaN 0xFF.
 *    +-Inf in: Inf where the target has it, else the same result as an
 *    overflow.
 *  - With ST_CONVERT_SATURATE, finite values that overflow become the
 *    largest finite value of their sign (F8_E8M0: 2^127), and an infinite
 *    input becomes it too when the target has no Inf; Inf stays Inf where
 *    the target has Inf. NaN is unchanged by the flag.
 *  - F8_E8M0 encoding, as c10's Float8_e8m0fnu: it has no sign and no
 *    zero, so the magnitude is used and 0 gives code 0x00 (2^-127); values
 *    round to the nearest power of two, ties (1.5 * 2^k) upward; Inf and
 *    NaN give 0xFF. One difference: c10 sends every F32 subnormal above
 *    2^-127 to 2^-126; here they round to the nearer of the two as well.
 *    Decoding 0xFF gives the quiet NaN 0x7FC00000 (c10: 0x7F800001).
 *
 * Semantics with integers and BOOL
 *  - Integer -> float: exact when representable, else rounded once to
 *    nearest even (so U64/I64 into F32 or BF16 are correctly rounded);
 *    overflow as above (e.g. 70000 -> F16 is Inf, or 65504 saturated).
 *  - Float -> integer: truncation toward zero, like PyTorch (C casts).
 *    Where C/PyTorch are undefined this library defines: NaN -> 0, values
 *    beyond the integer's range (and +-Inf) clamp to its min/max. The
 *    ST_CONVERT_SATURATE flag makes no difference here.
 *  - Float -> BOOL: 1 for any non-zero value, NaN included (as PyTorch);
 *    +-0 -> 0. Integer -> BOOL: 1 if non-zero.
 *  - BOOL -> anything: any non-zero byte reads as true (1).
 *  - Integer -> integer: two's-complement wrap-around (C and PyTorch
 *    semantics), e.g. 300 -> U8 is 44, -1 -> U32 is 0xFFFFFFFF.
 *
 * Threads: st_convert runs on the calling thread; st_convert_mt splits a
 * large array over worker threads it creates and joins before returning.
 * Both are reentrant (no global state). dst and src must not overlap.
 */

/* st_convert flags */
#define ST_CONVERT_SATURATE 1u /* clamp overflow to the largest finite value */
#define ST_CONVERT_SCALAR 2u   /* do not use SIMD (tests, benchmarks): the   */
                               /* bits are the same either way               */

/** 1 if st_convert can convert from `from` to `to`, else 0. */
ST_API int st_convert_supported(st_dtype from, st_dtype to);

/**
 * Converts n elements at src (dtype `from`) to dst (dtype `to`), on the
 * calling thread. src holds st_dtype_bits(from) * n / 8 bytes and dst
 * st_dtype_bits(to) * n / 8 bytes; neither needs any alignment. Returns
 * ST_OK, ST_E_UNSUPPORTED for a pair st_convert_supported rejects,
 * ST_E_MISALIGNED for a sub-byte count that is not whole bytes, ST_E_ARG
 * for NULL pointers with n > 0, unknown flags or sizes past SIZE_MAX.
 */
ST_API int st_convert(st_dtype to, void *dst, st_dtype from, const void *src,
                      uint64_t n, unsigned flags, st_error *err);

/**
 * Like st_convert, spread over up to `threads` threads (0: one per online
 * CPU, at most 64). Small arrays (under about 1 MiB per thread) use fewer
 * threads. The result is identical to st_convert's. If a thread cannot be
 * created its share is done on the calling thread (never an error).
 */
ST_API int st_convert_mt(st_dtype to, void *dst, st_dtype from, const void *src,
                         uint64_t n, unsigned flags, unsigned threads,
                         st_error *err);

/**
 * Which SIMD path st_convert uses on this CPU: "avx512", "avx2+f16c" or
 * "scalar". For reports and benchmarks.
 */
ST_API const char *st_convert_simd_name(void);

/* ------------------------------------------------------------------------ */
/* Hashing (lib/sd/hash.c, lib/sd/blake3.c)                                  */
/* ------------------------------------------------------------------------ */

/*
 * The digests model sites and UIs use to name a file, all computed in one
 * read pass over any file (not only safetensors files):
 *   sha256  SHA-256 of the whole file.
 *   autov1  A1111's old "model hash" (modules/sd_models.py model_hash,
 *           kohya's addnet_hash_legacy): SHA-256 of the bytes at
 *           [0x100000, 0x110000), fewer (or none) when the file is
 *           shorter; shown as the first 8 hex digits.
 *   autov2  the first 10 hex digits of the SHA-256 (A1111's "shorthash").
 *   autov3  kohya / A1111 "addnet" hash (A1111 modules/hashes.py
 *           addnet_hash_safetensors, kohya train_util.py): SHA-256 of the
 *           bytes after the 8 + N byte header. kohya stores it in a LoRA's
 *           metadata as "sshs_model_hash"; A1111 shows its first 12 digits.
 *   crc32   CRC-32 (zlib's; as `python3 -c zlib.crc32`).
 *   blake3  BLAKE3, 32 bytes.
 */
#define ST_HASH_SHA256 0x01u
#define ST_HASH_AUTOV1 0x02u
#define ST_HASH_AUTOV2 0x04u
#define ST_HASH_AUTOV3 0x08u
#define ST_HASH_CRC32 0x10u
#define ST_HASH_BLAKE3 0x20u
#define ST_HASH_ALL 0x3fu

typedef struct st_hashes {
    unsigned computed;       /* ST_HASH_* bits whose fields below are valid  */
    uint64_t size;           /* bytes read: the file's size                  */
    uint8_t sha256[32];      /* set for ST_HASH_SHA256 and ST_HASH_AUTOV2    */
    uint8_t autov1[32];      /* the whole SHA-256 of autov1's window         */
    uint8_t autov3[32];      /* SHA-256 of bytes [autov3_offset, size)       */
    uint64_t autov3_offset;  /* 8 + N                                        */
    uint32_t crc32;
    uint8_t blake3[32];
} st_hashes;

typedef struct st_hash_options {
    unsigned threads;        /* hashing threads besides the reading one;     */
                             /* 0 = as many as help (CPU count), 1 = read    */
                             /* and hash in the calling thread only          */
    size_t chunk_size;       /* bytes per read, 0 = 8 MiB (64 KiB..1 GiB)    */
    st_progress_fn progress; /* bytes read of the file's size (0: a pipe);  */
    void *progress_ctx;      /* non-zero return stops with ST_E_CALLBACK     */
} st_hash_options;

/**
 * Computes the digests in `algos` (ST_HASH_* bits) of everything read from
 * fd, from offset 0 to end of file (pread; a pipe or other unseekable fd is
 * read from its current position instead). opt may be NULL. The file is
 * read once, in large chunks by one thread while others hash the previous
 * chunks. autov3 is computed only when the first 8 bytes give a header
 * length N <= ST_MAX_HEADER_SIZE with 8 + N <= size; whether the file is
 * otherwise a valid safetensors file is st_open's business. Returns ST_OK,
 * ST_E_IO (read error), ST_E_NOMEM, ST_E_ARG (no algorithm, bad options).
 */
ST_API int st_hash_fd(int fd, unsigned algos, const st_hash_options *opt,
                      st_hashes *out, st_error *err);

/** st_hash_fd on a file opened read-only by path. */
ST_API int st_hash_path(const char *path, unsigned algos,
                        const st_hash_options *opt, st_hashes *out,
                        st_error *err);

/** The same digests of a buffer (no copy). */
ST_API int st_hash_memory(const void *data, size_t len, unsigned algos,
                          const st_hash_options *opt, st_hashes *out,
                          st_error *err);

/* st_hash_text styles */
#define ST_HASH_STYLE_PLAIN 0u   /* lower-case hex as sha256sum / A1111 show: */
                                 /* autov1 8 digits, autov2 10, crc32 the    */
                                 /* value's 8 digits, others 64              */
#define ST_HASH_STYLE_CIVITAI 1u /* as Civitai lists them (civitai/model-    */
                                 /* scanner HashTask.cs): upper-case, CRC-32 */
                                 /* bytes in little-endian order, autov1     */
                                 /* absent for files under 2 MiB             */
#define ST_HASH_TEXT_MAX 65

/**
 * Writes one digest (a single ST_HASH_* bit) as NUL-terminated text into
 * out. Returns ST_OK, ST_E_NOT_FOUND when the digest was not computed or
 * has no value in that style (Civitai's null AutoV1), ST_E_ARG otherwise.
 */
ST_API int st_hash_text(const st_hashes *hashes, unsigned algo, unsigned style,
                        char out[ST_HASH_TEXT_MAX]);

/** Name of one digest ("sha256", "autov1", ...); NULL for anything else. */
ST_API const char *st_hash_name(unsigned algo);

/** The ST_HASH_* bit for a name (case-insensitive); ST_E_NOT_FOUND if none. */
ST_API int st_hash_from_name(const char *name, size_t len, unsigned *algo);

/* ---- end of Hashing ---- */

/* ------------------------------------------------------------------------ */
/* Identifying Stable Diffusion files (lib/sd/identify.c)                    */
/* ------------------------------------------------------------------------ */

/*
 * What a model file is, from tensor names, shapes, dtypes and metadata (and
 * at most one small tensor's values: ComfyUI's SD2 v-prediction test). The
 * ordered rules are the UIs' (ComfyUI comfy/model_detection.py and
 * supported_models.py, A1111 modules/sd_models_config.py, kohya sd-scripts);
 * metadata hints (modelspec.architecture, ss_base_model_version) come last
 * and decide only what the tensors leave open.
 */
typedef enum st_model_kind {
    ST_KIND_UNKNOWN = 0,
    ST_KIND_CHECKPOINT,      /* diffusion model + text encoder(s) + VAE       */
    ST_KIND_DIFFUSION_MODEL, /* UNet or DiT alone                             */
    ST_KIND_VAE,
    ST_KIND_TEXT_ENCODER,
    ST_KIND_LORA,            /* LoRA and LyCORIS adapters                     */
    ST_KIND_EMBEDDING,       /* textual inversion                             */
    ST_KIND_CONTROLNET
} st_model_kind;

typedef enum st_model_family {
    ST_FAMILY_UNKNOWN = 0,
    ST_FAMILY_SD1,
    ST_FAMILY_SD2,
    ST_FAMILY_SDXL,
    ST_FAMILY_SDXL_REFINER,
    ST_FAMILY_SD3,
    ST_FAMILY_FLUX,
    ST_FAMILY_STABLE_CASCADE,
    ST_FAMILY_CLIP_L,        /* text encoders                                 */
    ST_FAMILY_CLIP_G,
    ST_FAMILY_T5XXL
} st_model_family;

/* st_identity.variants bits */
#define ST_VARIANT_INPAINTING 0x01u       /* UNet with 9 input channels      */
#define ST_VARIANT_INSTRUCT_PIX2PIX 0x02u /* 8 input channels                */
#define ST_VARIANT_DEPTH 0x04u            /* 5 input channels (SD2 depth)    */
#define ST_VARIANT_DEV 0x08u              /* Flux with guidance_in           */
#define ST_VARIANT_SCHNELL 0x10u          /* Flux without guidance_in        */
#define ST_VARIANT_FILL 0x20u             /* Flux with 384 img_in features   */
#define ST_VARIANT_V_PREDICTION 0x40u     /* a v-prediction marker           */

typedef enum st_lora_format {
    ST_LORA_NONE = 0,
    ST_LORA_KOHYA,           /* lora_unet_* / lora_te*_ with lora_down/up     */
    ST_LORA_LYCORIS_LOHA,    /* hada_w1_a ...                                 */
    ST_LORA_LYCORIS_LOKR,    /* lokr_w1 ...                                   */
    ST_LORA_PEFT,            /* lora_A / lora_B                               */
    ST_LORA_DIFFUSERS        /* diffusers' older .lora.down / .lora.up        */
} st_lora_format;

typedef enum st_confidence {
    ST_CONFIDENCE_NONE = 0,  /* unknown                                       */
    ST_CONFIDENCE_LOW,       /* from metadata or naming alone                 */
    ST_CONFIDENCE_MEDIUM,    /* shapes, but the family is ambiguous/contested */
    ST_CONFIDENCE_HIGH       /* the keys and shapes the UIs decide by         */
} st_confidence;

#define ST_IDENTIFY_MAX_REASONS 16
#define ST_IDENTIFY_REASON_MAX 200

typedef struct st_identity {
    st_model_kind kind;
    st_model_family family;  /* for adapters: the base model they fit         */
    unsigned variants;       /* ST_VARIANT_* bits                             */
    st_lora_format format;   /* ST_LORA_NONE unless kind is ST_KIND_LORA      */
    int ema;                 /* 1 if EMA weights (model_ema.*) are present    */
    int precision;           /* dominant floating st_dtype by parameters, -1  */
    st_confidence confidence;
    /* Parameters (elements) per component; they add up to `total`. */
    struct {
        uint64_t total;
        uint64_t diffusion_model; /* UNet / DiT, or an adapter's part of it   */
        uint64_t text_encoder;
        uint64_t vae;
        uint64_t ema;
        uint64_t controlnet;
        uint64_t other;           /* embeddings, alphas, anything else        */
    } params;
    /* Why: the keys, shapes and metadata the verdict rests on, in order. */
    size_t reason_count;
    char reasons[ST_IDENTIFY_MAX_REASONS][ST_IDENTIFY_REASON_MAX];
} st_identity;

/**
 * Identifies an open file. Always fills *out (kind ST_KIND_UNKNOWN when no
 * rule matches); returns ST_OK, or ST_E_ARG / ST_E_NOMEM.
 */
ST_API int st_identify(const st_file *file, st_identity *out, st_error *err);

/* A tensor described to st_identify_tensors (from any container: a
 * PyTorch checkpoint, a diffusers folder's index, ...). */
typedef struct st_tensor_desc {
    const char *name;
    size_t name_len;
    st_dtype dtype;
    uint32_t rank;
    const uint64_t *shape;
} st_tensor_desc;

/* Reads the first len bytes of the data of tensors[index] into buf; returns
 * 0, or non-zero when it cannot. */
typedef int (*st_tensor_read_fn)(void *ctx, size_t index, void *buf, size_t len);

/**
 * st_identify on a list of tensors and metadata pairs (metadata[2i] the
 * key, metadata[2i+1] the value, NUL-terminated; metadata_count pairs).
 * read may be NULL: the one rule that looks at values (SD2 v-prediction)
 * is then skipped. The list is not modified and need not be sorted.
 */
ST_API int st_identify_tensors(const st_tensor_desc *tensors, size_t count,
                               const char *const *metadata, size_t metadata_count,
                               st_tensor_read_fn read, void *read_ctx,
                               st_identity *out, st_error *err);

/** Stable lower-case names ("checkpoint", "sdxl_refiner", "inpainting",
 * "lycoris_loha", "high", ...) for printing and JSON; "unknown" / NULL for
 * values out of range. st_variant_name takes one ST_VARIANT_* bit. */
ST_API const char *st_kind_name(st_model_kind kind);
ST_API const char *st_family_name(st_model_family family);
ST_API const char *st_variant_name(unsigned variant_bit);
ST_API const char *st_lora_format_name(st_lora_format format);
ST_API const char *st_confidence_name(st_confidence confidence);

/* ---- end of Identifying ---- */

/* ======================================================================== */
/* Checkpoints (PyTorch pickle/zip)                                          */
/* ======================================================================== */

/*
 * Reads PyTorch checkpoints (.ckpt/.pt/.pth/.bin) without running them.
 * A restricted pickle machine written in C builds an inert object graph:
 * it never imports, calls or resolves anything. The torch rebuild functions
 * (torch._utils._rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter,
 * _rebuild_parameter_with_state, torch._tensor._rebuild_from_type_v2),
 * collections.OrderedDict, _codecs.encode and the torch storage classes
 * are interpreted by what they mean; every other global becomes a recorded,
 * unresolved placeholder. Every global the pickles reference is listed with
 * a safety class (see st_ckpt_classify).
 *
 * Containers: PyTorch's zip archive (torch >= 1.6; any top-level folder,
 * data.pkl, data/<key>, byteorder, zip64), the legacy stream (magic
 * number, protocol, sys info, object, storage keys, raw storages), and the
 * TorchScript and tar forms described after st_ckpt_metadata_at. Raw
 * pickle files can be scanned (they hold no storages).
 *
 * Tensor names: a top-level "state_dict" entry is unwrapped (twice when
 * nested again); dicts, lists and tuples are flattened with '.', integer
 * keys as decimal text; other values are dropped. A checkpoint that is a
 * single tensor yields one tensor named "tensor". Top-level int, float,
 * bool and short str values become metadata.
 */

typedef enum st_format {
    ST_FORMAT_UNKNOWN = 0,
    ST_FORMAT_SAFETENSORS = 1,   /* cannot hold code                          */
    ST_FORMAT_ZIP_PICKLE = 2,    /* torch.save, torch >= 1.6                  */
    ST_FORMAT_LEGACY_PICKLE = 3, /* torch.save(_use_new_zipfile_serialization=False) */
    ST_FORMAT_RAW_PICKLE = 4,    /* a bare pickle stream                      */
    ST_FORMAT_TORCHSCRIPT = 5,   /* torch.jit.save: a zip with code/ (code    */
                                 /* that torch.jit.load runs)                 */
    ST_FORMAT_TAR_PICKLE = 6     /* torch.save of torch < 0.4: a tar of       */
                                 /* storages, tensors, pickle                 */
} st_format;

/**
 * Detects a file's format by content (never by extension). Reads a few
 * kilobytes, and a zip's central directory (TorchScript or not). Returns
 * ST_OK and sets *out (ST_FORMAT_UNKNOWN for anything else), or ST_E_IO.
 */
ST_API int st_ckpt_detect(const char *path, st_format *out, st_error *err);

/** "safetensors", "zip-pickle", "legacy-pickle", "raw-pickle",
 *  "torchscript", "tar-pickle", "unknown". */
ST_API const char *st_format_name(st_format format);

typedef enum st_safety {
    ST_SAFETY_SAFE = 0,      /* known torch/numpy/collections building blocks */
    ST_SAFETY_UNKNOWN = 1,   /* not known either way (e.g. a class of a       */
                             /* training framework): recorded, never resolved */
    ST_SAFETY_DANGEROUS = 2  /* can run code, touch files, processes or the   */
                             /* network when a pickle is loaded in Python     */
} st_safety;

/** "safe", "unknown", "dangerous". */
ST_API const char *st_safety_name(st_safety safety);

/**
 * Classifies a global (module, qualified name) the way picklescan and
 * modelscan do. A whole module listed as dangerous covers its submodules
 * (os.path, subprocess.x...). The lists are documented in lib/ckpt/scan.c.
 */
ST_API st_safety st_ckpt_classify(const char *module, size_t module_len,
                                  const char *name, size_t name_len);

/* Limits against hostile pickles. st_ckpt_default_limits fills defaults. */
typedef struct st_ckpt_limits {
    uint64_t max_pickle_bytes; /* one pickle stream (default 1 GiB)           */
    uint64_t max_memory;       /* object graph bytes per pickle (256 MiB)     */
    uint64_t max_objects;      /* values created per pickle (16 Mi)           */
    uint64_t max_memo;         /* memo entries (1 Mi)                         */
    uint64_t max_string;       /* one str/bytes value (256 MiB)               */
    uint32_t max_int_bytes;    /* one LONG1/LONG4/LONG value (256 bytes)      */
    uint32_t max_depth;        /* MARK nesting and container nesting (1000)  */
    uint64_t max_visits;       /* container entries walked naming tensors (4 Mi) */
    uint64_t max_tensors;      /* tensors in one checkpoint (4 Mi)            */
} st_ckpt_limits;

ST_API void st_ckpt_default_limits(st_ckpt_limits *limits);

typedef struct st_ckpt st_ckpt;

/* st_ckpt_open flags */
#define ST_CKPT_SCAN 1u  /* scan only: run every pickle of the file inertly */
                         /* and record its globals; no tensors. Succeeds    */
                         /* whenever the file can be read and is a pickle   */
                         /* container; a pickle that stops early is kept as */
                         /* st_ckpt_scan_error (globals up to it are kept). */

/**
 * Opens a checkpoint (ST_FORMAT_ZIP_PICKLE, _LEGACY_PICKLE or, with
 * ST_CKPT_SCAN, _RAW_PICKLE). Without ST_CKPT_SCAN every tensor is checked
 * against its storage (dtype known, offset/shape/strides inside it) and any
 * problem fails the open. limits may be NULL for the defaults. Never runs
 * anything from the file, whatever its globals.
 */
ST_API int st_ckpt_open(const char *path, unsigned flags,
                        const st_ckpt_limits *limits, st_ckpt **out,
                        st_error *err);

/** Releases a handle (NULL is allowed). */
ST_API void st_ckpt_close(st_ckpt *ckpt);

ST_API st_format st_ckpt_format(const st_ckpt *ckpt);

typedef struct st_ckpt_write_options {
    st_output_hooks hooks;   /* progress of the write, temporary file        */
    uint64_t pad;            /* spaces after the header JSON                 */
} st_ckpt_write_options;

typedef struct st_ckpt_write_report {
    size_t tensors;          /* tensors written                              */
    size_t metadata;         /* metadata keys written (format=pt included)   */
    uint64_t output_size;
    int failed_input;        /* on error: 0 when reading the checkpoint      */
                             /* failed, -1 when the output did               */
} st_ckpt_write_report;

/**
 * Writes the tensors of a checkpoint opened without ST_CKPT_SCAN to
 * out_path as one safetensors file in the canonical layout (atomic:
 * temporary file, fsync, rename), with the checkpoint's metadata and
 * format=pt. Tensors that are one little-endian run of the file are moved
 * inside the kernel (copy_file_range); the others stream through
 * st_ckpt_tensor_read, so memory does not grow with the checkpoint. This
 * call does not judge globals: scan the file first (ST_CKPT_SCAN) and
 * refuse dangerous ones as `convert` does. opt and report may be NULL.
 */
ST_API int st_ckpt_write_safetensors(const st_ckpt *ckpt, const char *out_path,
                                     const st_ckpt_write_options *opt,
                                     st_ckpt_write_report *report, st_error *err);

/** In ST_CKPT_SCAN mode: why a pickle could not be read to its end, or NULL. */
ST_API const st_error *st_ckpt_scan_error(const st_ckpt *ckpt);

/* A tensor found in the checkpoint. Owned by the st_ckpt. */
typedef struct st_ckpt_tensor {
    const char *name;          /* flattened name, NUL-terminated              */
    size_t name_len;
    st_dtype dtype;
    uint32_t rank;
    const uint64_t *shape;
    const uint64_t *strides;   /* in elements, as pickled                     */
    uint64_t storage_offset;   /* in elements                                 */
    uint64_t nelements;
    uint64_t nbytes;           /* bytes of the materialised C-order data      */
    const char *storage_key;   /* the storage's key in the file               */
    int contiguous;            /* 1 if the bytes are one run of the storage   */
} st_ckpt_tensor;

ST_API size_t st_ckpt_tensor_count(const st_ckpt *ckpt);

/** The i-th tensor, in the order the pickle's containers hold them. */
ST_API const st_ckpt_tensor *st_ckpt_tensor_at(const st_ckpt *ckpt, size_t i);

/**
 * Copies len bytes, starting at byte `offset`, of a tensor's materialised
 * data (C order, little-endian, views/transposes resolved) into buf.
 * Thread-safe; memory use does not depend on the tensor's size (a
 * non-contiguous tensor is gathered through an 8 MiB block cache per call).
 */
ST_API int st_ckpt_tensor_read(const st_ckpt *ckpt, const st_ckpt_tensor *tensor,
                               uint64_t offset, void *buf, size_t len,
                               st_error *err);

/* A global a pickle of the file references. Owned by the st_ckpt. */
typedef struct st_ckpt_global {
    const char *module;        /* NUL-terminated                              */
    size_t module_len;
    const char *name;
    size_t name_len;
    st_safety safety;
    uint64_t count;            /* references                                  */
    const char *pickle;        /* where first seen: zip entry or "pickle N"   */
    uint64_t offset;           /* file offset of the first reference's opcode */
                               /* (in a deflated zip entry: offset within the */
                               /* inflated pickle)                            */
} st_ckpt_global;

/** Distinct globals, in order of first reference. */
ST_API size_t st_ckpt_global_count(const st_ckpt *ckpt);
ST_API const st_ckpt_global *st_ckpt_global_at(const st_ckpt *ckpt, size_t i);

/** Number of globals classified ST_SAFETY_DANGEROUS. */
ST_API size_t st_ckpt_dangerous_count(const st_ckpt *ckpt);

/** Top-level scalars kept as metadata (key order = pickle order). */
ST_API size_t st_ckpt_metadata_count(const st_ckpt *ckpt);
ST_API int st_ckpt_metadata_at(const st_ckpt *ckpt, size_t i,
                               const char **key, size_t *key_len,
                               const char **value, size_t *value_len);

/*
 * TorchScript (ST_FORMAT_TORCHSCRIPT). torch.jit.load compiles and runs the
 * Python-like code in the archive's code/ folder, so such a file is
 * dangerous whatever its pickles name (st_ckpt_safety). The code is only
 * scanned lexically, never interpreted: the files and the operators they
 * call (a dotted name starting with `torch.` or `ops.` followed by `(`,
 * outside comments and strings). Every pickle of the archive (data.pkl,
 * constants.pkl, code/ *.debug_pkl, pickles under extra/) runs on the inert
 * machine. Importing reads the tensors of data.pkl named by attribute path
 * as state_dict() names them ("fc.weight"): of a module whose class the
 * code declares, the tensors its `__parameters__` / `__buffers__` lists
 * name (read lexically too) and its submodules; of any other, every tensor
 * attribute and container. Those of
 * constants.pkl are named "CONSTANTS.c0", "CONSTANTS.c1", ... (the code's
 * names).
 *
 * Tar checkpoints (ST_FORMAT_TAR_PICKLE, torch < 0.4): the members
 * storages, tensors and pickle (and sys_info) of a ustar archive, each
 * checked (header checksum, sizes inside the file, no other or repeated
 * member, every count and length) as the legacy stream is.
 *
 * numpy arrays inside a pickle (numpy.core.multiarray._reconstruct of
 * numpy.ndarray, then BUILD with (version, shape, dtype, is_fortran,
 * data)) are read inertly: dtype, byte order, shape, bytes (Fortran order
 * is read back in C order). Those of a tensor dtype are imported as
 * tensors where a tensor would be; others (object arrays, strings) are
 * listed with the reason and left out.
 */

/** A TorchScript code file. Owned by the st_ckpt. */
typedef struct st_ckpt_code {
    const char *path;          /* the zip entry's name, NUL-terminated        */
    size_t path_len;
    uint64_t size;             /* bytes of source                             */
    uint64_t calls;            /* operator calls found in it                  */
} st_ckpt_code;

ST_API size_t st_ckpt_code_count(const st_ckpt *ckpt);
ST_API const st_ckpt_code *st_ckpt_code_at(const st_ckpt *ckpt, size_t i);

/** An operator TorchScript code calls ("torch.relu", "ops.aten.add"). */
typedef struct st_ckpt_op {
    const char *name;          /* NUL-terminated                              */
    size_t name_len;
    uint64_t count;            /* calls, over all code files                  */
    size_t first_code;         /* index (st_ckpt_code_at) of the first caller */
} st_ckpt_op;

/** Distinct operators, in order of first call (at most 65,536 kept). */
ST_API size_t st_ckpt_op_count(const st_ckpt *ckpt);
ST_API const st_ckpt_op *st_ckpt_op_at(const st_ckpt *ckpt, size_t i);

/**
 * The file's verdict: ST_SAFETY_DANGEROUS when a pickle names a dangerous
 * global or the file holds code (TorchScript), else ST_SAFETY_UNKNOWN when
 * a global is unknown, else ST_SAFETY_SAFE.
 */
ST_API st_safety st_ckpt_safety(const st_ckpt *ckpt);

/** A numpy array found in a pickle. Owned by the st_ckpt. */
typedef struct st_ckpt_array {
    const char *pickle;        /* where: zip entry or "pickle N"              */
    uint64_t offset;           /* of its BUILD opcode (as st_ckpt_global)     */
    const char *numpy_dtype;   /* numpy's text with byte order: "<f8", "|O8"  */
    int dtype;                 /* st_dtype, or -1 when no tensor dtype        */
    uint32_t rank;
    const uint64_t *shape;
    int fortran;               /* stored in Fortran order                     */
    const char *name;          /* imported as this tensor, or NULL (scan      */
    size_t name_len;           /* mode, not reached, or refused)              */
    const char *refused;       /* why it cannot be a tensor, or NULL          */
} st_ckpt_array;

ST_API size_t st_ckpt_array_count(const st_ckpt *ckpt);
ST_API const st_ckpt_array *st_ckpt_array_at(const st_ckpt *ckpt, size_t i);

/* ======================== end of Checkpoints ============================ */

/* ------------------------------------------------------------------------ */
/* Model operations (lib/sd/): merge, diff, convert with selection           */
/* ------------------------------------------------------------------------ */

/*
 * What the CLI's merge, diff and convert commands do, as library calls: a C
 * program or the Python package gets the same results. Each streams: memory
 * is a few fixed buffers whatever the model size. Outputs are written
 * atomically (temporary file beside the target, fsync, rename); an input
 * is never overwritten (OUT naming an input is ST_E_ARG).
 */

typedef enum st_merge_mode {
    ST_MERGE_WEIGHTED = 0,   /* (1 - M) * A + M * B          (A, B)          */
    ST_MERGE_ADD_DIFF = 1    /* A + M * (B - C)              (A, B, C)       */
} st_merge_mode;

typedef struct st_merge_options {
    st_merge_mode mode;
    double alpha;            /* M, finite                                    */
    int set_dtype;           /* non-zero: floating tensors written as dtype  */
    st_dtype dtype;          /* ST_F16, ST_BF16, ST_F32 or ST_F64            */
    const char *vae_path;    /* bake in this VAE file (NULL: none)           */
    const char *discard;     /* POSIX ERE: leave out matching names (NULL)   */
    st_output_hooks hooks;   /* progress of the write, temporary file        */
} st_merge_options;

typedef struct st_merge_report {
    size_t tensors;          /* A's tensors                                  */
    size_t merged;           /* computed from A and B (and C)                */
    size_t baked;            /* replaced by the VAE's                        */
    size_t discarded;        /* left out by the discard pattern              */
    size_t written;          /* tensors in the output                        */
    int inpainting;          /* an inpainting A merged on 4 channels         */
    int pix2pix;             /* an instruct-pix2pix A merged on 4 channels   */
    uint64_t output_size;    /* bytes of the output file                     */
    int failed_input;        /* on error: the input it is about (0..2 = A, B,*/
                             /* C; 3 = the VAE), -1 when none                */
} st_merge_report;

/**
 * A1111's Checkpoint Merger (modules/extras.py run_modelmerger) on
 * safetensors files: inputs[0..ninputs) are A, B (and C for add-diff).
 * The output has A's tensors; those whose name contains "model" and that B
 * has are merged in float32 (CLIP's position_ids never); an inpainting (9
 * input channels) or instruct-pix2pix (8) A merges with a normal B on its
 * first 4 channels. Metadata: A's, B's, C's (later wins), then format=pt
 * and A1111's sd_merge_recipe and sd_merge_models (the inputs' SHA-256,
 * which takes a read of each input). report may be NULL. Errors: the
 * input's st_open code (report->failed_input says which), ST_E_ARG for bad
 * options and incompatible models (the message names the tensor), ST_E_IO.
 * An input or opt->vae_path naming an index (a name ending in ".json") or
 * a folder is opened with st_model_open and merged as st_merge_models
 * does (see there for how a sharded model is recorded); other paths are
 * opened with st_open, unchanged tensors moving by copy_file_range.
 */
ST_API int st_merge(const char *const *inputs, size_t ninputs, const char *out_path,
                    const st_merge_options *opt, st_merge_report *report,
                    st_error *err);

/* Diff statuses (st_tensor_diff.status and the metadata callback's). */
#define ST_DIFF_SAME 0      /* same dtype, shape and bytes                   */
#define ST_DIFF_CHANGED 1   /* in both, different dtype, shape or bytes      */
#define ST_DIFF_ONLY_A 2
#define ST_DIFF_ONLY_B 3

typedef struct st_tensor_diff {
    int status;              /* ST_DIFF_*                                    */
    const st_tensor *a, *b;  /* NULL where absent                            */
    int same_shape;          /* both present with the same shape: compared   */
    int bytes_equal;         /* compared and byte for byte equal             */
    int numeric;             /* max_abs and cosine are meaningful (both      */
                             /* dtypes decode to numbers; C64 does not)      */
    double max_abs;          /* max |a - b| in double precision (NaN if any  */
                             /* difference is NaN)                           */
    double cosine;           /* a.b / (|a| |b|); NaN when a norm is zero     */
} st_tensor_diff;

typedef struct st_diff_options {
    /* Called for each tensor that differs (and each identical one too when
     * report_identical), in name-byte order; non-zero return stops the
     * diff with ST_E_CALLBACK. */
    int (*on_tensor)(void *ctx, const st_tensor_diff *diff);
    /* Called for each metadata key only in one file or with another value,
     * in key-byte order (status ST_DIFF_CHANGED / ONLY_A / ONLY_B). */
    int (*on_metadata)(void *ctx, int status, const char *key, size_t key_len);
    void *ctx;
    int report_identical;
    st_progress_fn progress; /* bytes of A's compared tensors                */
    void *progress_ctx;
} st_diff_options;

typedef struct st_diff_summary {
    size_t identical, changed, only_a, only_b; /* tensors                    */
    size_t metadata;         /* metadata differences                         */
    int identical_files;     /* same tensors (names, dtypes, shapes, bytes)  */
                             /* and metadata                                 */
    int failed_input;        /* on a read error: 0 = A, 1 = B; else -1       */
} st_diff_summary;

/**
 * Compares two open files: tensors by name (values of same-shape pairs in
 * double precision, any numeric dtype), then metadata. opt and summary may
 * be NULL. Returns ST_OK whether or not they differ (see
 * summary->identical_files), or the read error met (summary->failed_input
 * says in which file).
 */
ST_API int st_diff(const st_file *a, const st_file *b, const st_diff_options *opt,
                   st_diff_summary *summary, st_error *err);

/** The metadata half of st_diff alone (no tensor data is read). */
ST_API int st_diff_metadata(const st_file *a, const st_file *b, const st_diff_options *opt,
                            st_diff_summary *summary, st_error *err);

/** Compares one pair of tensors as st_diff does (status ST_DIFF_SAME or
 * ST_DIFF_CHANGED). */
ST_API int st_tensor_compare(const st_file *a, const st_tensor *ta, const st_file *b,
                             const st_tensor *tb, st_tensor_diff *out, st_error *err);

/**
 * Glob match of a tensor name (name_len bytes, may contain NUL) against a
 * NUL-terminated pattern: `*` any run of bytes (dots and slashes too), `?`
 * one byte, `[abc]`, `[a-z]`, `[!x]` or `[^x]` one byte of a set, `\c` a
 * literal c. Linear-time: no pattern can make it slow. Returns 1 or 0.
 */
ST_API int st_name_glob_match(const char *pattern, const char *name, size_t name_len);

/* EMA handling of st_convert_file (LDM checkpoints' model_ema.* shadows). */
#define ST_EMA_KEEP 0 /* write every tensor                                  */
#define ST_EMA_DROP 1 /* leave out model_ema.*: a pruned checkpoint          */
#define ST_EMA_ONLY 2 /* write each model.X's EMA twin under model.X's name  */
                      /* (LitEma naming: model_ema. + X without its dots)    */
                      /* and leave out model_ema.*                           */

typedef struct st_convert_file_options {
    int set_dtype;              /* non-zero: convert floating tensors to dtype */
    st_dtype dtype;             /* a floating dtype of whole bytes             */
    unsigned convert_flags;     /* ST_CONVERT_SATURATE                         */
    const char *const *only;    /* convert only names matching one of these    */
    size_t nonly;               /* (0: all; MX kinds only when named here)     */
    const char *const *exclude; /* never convert names matching these          */
    size_t nexclude;
    int ema;                    /* ST_EMA_*                                    */
    const char *const *drop;    /* leave out names matching these              */
    size_t ndrop;
    st_output_hooks hooks;
    uint64_t pad;               /* spaces after the header's JSON (see         */
                                /* st_writer_set_header_padding)               */
    const char *variant;        /* IN a folder: its weight variant (as         */
                                /* st_model_open_variant); NULL: plain weights */
} st_convert_file_options;

typedef struct st_convert_file_report {
    size_t written;             /* tensors in the output                       */
    size_t converted;           /* of those, converted to the dtype            */
    size_t already;             /* kept: already of the dtype                  */
    size_t kept;                /* written unconverted                         */
    size_t from_count[ST_DTYPE_COUNT]; /* converted, by their input dtype      */
    size_t dropped;             /* left out by a drop pattern                  */
    size_t ema_dropped;         /* model_ema.* left out                        */
    size_t ema_used;            /* model.* weights replaced by their EMA       */
    size_t metadata;            /* metadata pairs carried over                 */
    uint64_t input_size, output_size;
    int failed_input;           /* 0 when the error is about IN, else -1       */
} st_convert_file_report;

/**
 * Rewrites the safetensors file in_path as out_path in the canonical
 * layout, streaming: tensors copied or converted (dtype, only, exclude,
 * flags), selected (drop, ema), metadata kept (an empty "__metadata__"
 * too). in_path may also be a sharded model (an index, or a folder, opened
 * with st_model_open_variant): its tensors and metadata become one file.
 * OUT may not be IN, nor a shard or the index (ST_E_ARG). report may be
 * NULL. Errors: IN's st_open / st_model_open code (report->failed_input =
 * 0), ST_E_ARG (options, EMA twins of another shape, no EMA to keep),
 * ST_E_IO.
 */
ST_API int st_convert_file(const char *in_path, const char *out_path,
                           const st_convert_file_options *opt,
                           st_convert_file_report *report, st_error *err);

/* ---- Installing a model where a UI looks for it ---- */

typedef enum st_ui {
    ST_UI_A1111 = 0, /* AUTOMATIC1111 stable-diffusion-webui               */
    ST_UI_FORGE,     /* stable-diffusion-webui-forge                        */
    ST_UI_COMFYUI,
    ST_UI_SDNEXT,
    ST_UI_COUNT
} st_ui;

#define ST_INSTALL_COPY 0 /* temporary file in the folder, fsync, rename      */
#define ST_INSTALL_MOVE 1 /* rename (copy + delete across file systems)       */
#define ST_INSTALL_LINK 2 /* symbolic link to the file's absolute path        */

/** "a1111", "forge", "comfyui", "sdnext"; NULL for anything else. */
ST_API const char *st_ui_name(int ui);
/** The st_ui of a name; ST_E_NOT_FOUND if none. */
ST_API int st_ui_from_name(const char *name, int *ui);
/** The folder (relative to the UI's root) where `ui` reads files of `kind`
 * ("models/Lora", ...); NULL when the UI has none for that kind. */
ST_API const char *st_install_folder(int ui, st_model_kind kind);
/** The installable kind named as st_kind_name names it; ST_E_NOT_FOUND. */
ST_API int st_install_kind_from_name(const char *name, st_model_kind *kind);

typedef struct st_install_item {
    const char *src;  /* the file, or a sidecar next to it (same stem:      */
                      /* .yaml .json .civitai.info .preview.png/.jpg/...)   */
    const char *dst;  /* where it goes                                      */
    int exists;       /* dst exists now: the plan cannot be executed        */
} st_install_item;

typedef struct st_install_plan st_install_plan;

/**
 * Plans the installation of `file` (which must pass st_open's checks) for
 * `ui` under `root` (an existing folder): the kind is `kind`, or
 * st_identify's when ST_KIND_UNKNOWN; the items are the file and its
 * sidecars. Nothing is changed. Errors: the file's st_open code,
 * ST_E_UNSUPPORTED (unknown kind, or the UI has no folder for it), ST_E_IO
 * (root missing: "no such folder", or not a folder).
 */
ST_API int st_install_plan_new(const char *file, int ui, const char *root,
                               st_model_kind kind, st_install_plan **out,
                               st_error *err);
ST_API size_t st_install_plan_count(const st_install_plan *plan);
ST_API const st_install_item *st_install_plan_item(const st_install_plan *plan, size_t i);
/** The destination folder (root + st_install_folder). */
ST_API const char *st_install_plan_dir(const st_install_plan *plan);
ST_API st_model_kind st_install_plan_kind(const st_install_plan *plan);
/** What st_identify said (zeroed when the kind was given). */
ST_API const st_identity *st_install_plan_identity(const st_install_plan *plan);

/**
 * Carries a plan out with ST_INSTALL_COPY, _MOVE or _LINK: all or nothing.
 * Every destination is checked first and nothing is ever overwritten (each
 * file is put in place by an operation that fails if the name exists); if
 * a step fails, what was already installed is taken back. Missing folders
 * under root are created.
 */
ST_API int st_install_execute(st_install_plan *plan, int method, st_error *err);

/**
 * Reports for the next st_install_execute (copied from *hooks; NULL: none):
 * progress over the bytes copied or moved (a copy reports every 64 MiB; a
 * non-zero return stops it, ST_E_CALLBACK, and what was installed is taken
 * back), and each temporary file a copy creates and ends.
 */
ST_API void st_install_plan_set_hooks(st_install_plan *plan, const st_output_hooks *hooks);
ST_API void st_install_plan_free(st_install_plan *plan);

/* ---- Editing metadata ---- */

/* One change of st_metadata_edit: set key to value, or remove the key
 * (value NULL; no error when it is absent). Both are byte strings with
 * lengths; a value set must be valid UTF-8. */
typedef struct st_meta_change {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} st_meta_change;

typedef struct st_meta_edit_options {
    int in_place;          /* replace in_path (the file a link points to)   */
    st_output_hooks hooks;
    uint64_t pad;          /* spaces to leave after the header's JSON       */
} st_meta_edit_options;

typedef struct st_meta_edit_report {
    size_t set, removed, kept; /* keys set by a change, removed, unchanged  */
    uint64_t output_size;
    int failed_input;          /* 0 when the error is about in_path, else -1 */
    int header_only;           /* the file was cloned, only its header written */
    int kept_layout;           /* the header's size kept, tensors copied     */
} st_meta_edit_report;

/**
 * Writes in_path with its "__metadata__" changed by changes[0..n) (in
 * order: the last word on a key wins) to out_path, or over in_path with
 * opt->in_place (out_path then ignored), atomically (temporary file,
 * fsync, rename): a failure leaves no output and an untouched input.
 * When the new header's JSON fits in the old header's space with opt->pad
 * bytes to spare, and the tensors lie where the canonical writer puts them,
 * the header keeps its size (trailing spaces) and no tensor byte moves: on
 * file systems that share extents (FICLONE: XFS, btrfs) the output is a
 * clone of the input with only its header written (report->header_only),
 * elsewhere the same bytes are written by copying (report->kept_layout).
 * Otherwise the result is the canonical layout plus opt->pad spaces.
 * out_path naming in_path without in_place is ST_E_ARG. opt and report may
 * be NULL.
 */
ST_API int st_metadata_edit(const char *in_path, const char *out_path,
                            const st_meta_change *changes, size_t n,
                            const st_meta_edit_options *opt,
                            st_meta_edit_report *report, st_error *err);

/* ======================= end of Model operations ======================== */

/* ------------------------------------------------------------------------ */
/* GGUF quantization (lib/gguf/quants.c)                                    */
/* ------------------------------------------------------------------------ */

/*
 * ggml's block quantizations, byte for byte. st_ggml_quantize gives exactly
 * the bytes of ggml's reference quantizers (quantize_row_<type>_ref in
 * ggml's src/ggml-quants.c, what llama.cpp's quantize writes without an
 * importance matrix) for every input, Inf and overflowing scales included
 * (there as ggml on x86). Blocks holding NaN follow ggml's code too, but
 * ggml's own bytes for them depend on its compiler (which of two NaN
 * payloads an operation propagates); ours match a gcc build. F16 and BF16
 * are ggml's own conversions (round to nearest even; F16: NaN -> 0x7E00
 * with the sign; BF16: NaN -> the top half with the quiet bit set).
 * st_ggml_dequantize uses ggml's dequantize_row_<type> formulas, so it gives
 * ggml's floats, NaN payloads included.
 *
 * SIMD kernels (x86 AVX2, chosen at run time) and the portable code give
 * identical bytes; ST_GGML_PORTABLE=1 in the environment makes both calls
 * use the portable code only (for tests and benchmarks). Both calls split large arrays over threads they create
 * and join before returning (threads: 0 = one per CPU); they are reentrant
 * and use no global state. Buffers must not overlap.
 */

/* ggml's enum ggml_type, values exactly (gaps are types ggml removed). */
typedef enum st_ggml_type {
    ST_GGML_F32 = 0, ST_GGML_F16 = 1, ST_GGML_Q4_0 = 2, ST_GGML_Q4_1 = 3,
    ST_GGML_Q5_0 = 6, ST_GGML_Q5_1 = 7, ST_GGML_Q8_0 = 8, ST_GGML_Q8_1 = 9,
    ST_GGML_Q2_K = 10, ST_GGML_Q3_K = 11, ST_GGML_Q4_K = 12, ST_GGML_Q5_K = 13,
    ST_GGML_Q6_K = 14, ST_GGML_Q8_K = 15, ST_GGML_IQ2_XXS = 16,
    ST_GGML_IQ2_XS = 17, ST_GGML_IQ3_XXS = 18, ST_GGML_IQ1_S = 19,
    ST_GGML_IQ4_NL = 20, ST_GGML_IQ3_S = 21, ST_GGML_IQ2_S = 22,
    ST_GGML_IQ4_XS = 23, ST_GGML_I8 = 24, ST_GGML_I16 = 25, ST_GGML_I32 = 26,
    ST_GGML_I64 = 27, ST_GGML_F64 = 28, ST_GGML_IQ1_M = 29, ST_GGML_BF16 = 30,
    ST_GGML_TQ1_0 = 34, ST_GGML_TQ2_0 = 35, ST_GGML_MXFP4 = 39,
    ST_GGML_NVFP4 = 40, ST_GGML_Q1_0 = 41, ST_GGML_Q2_0 = 42
} st_ggml_type;

/** ggml's name of a type ("f32", "q4_K", "iq2_xxs", ...); NULL if unknown. */
ST_API const char *st_ggml_type_name(int type);

/** Elements per block (1 for F32, F16, BF16 and the integer types); 0 if
 * the type is unknown. Every type of the enum has a size. */
ST_API uint32_t st_ggml_block_elements(int type);

/** Bytes per block; 0 if the type is unknown. */
ST_API uint32_t st_ggml_block_bytes(int type);

/** 1 for the types st_ggml_quantize writes: F32, F16, BF16, Q8_0, Q5_1,
 * Q5_0, Q4_1, Q4_0, Q6_K, Q5_K, Q4_K, Q3_K, Q2_K; else 0. */
ST_API int st_ggml_can_quantize(int type);

/** 1 for the types st_ggml_dequantize reads: those of st_ggml_can_quantize
 * plus Q8_1 and Q8_K; else 0. */
ST_API int st_ggml_can_dequantize(int type);

/**
 * Quantizes nrows rows of n_per_row floats (n_per_row a multiple of the
 * block size) into dst, rows back to back (st_ggml_row_bytes(type,
 * n_per_row) bytes each), bytes identical to ggml's
 * quantize_row_<type>_ref. Errors: ST_E_ARG (unknown type, n_per_row not
 * a multiple of the block size, NULL buffer), ST_E_UNSUPPORTED (a type
 * that cannot be quantized), ST_E_OVERFLOW (size does not fit).
 */
ST_API int st_ggml_quantize(int type, const float *src, void *dst, uint64_t nrows,
                            uint64_t n_per_row, unsigned threads, st_error *err);

/**
 * st_ggml_quantize with progress: the work is done in pieces of about
 * 4 MiB of input, and progress(ctx, input bytes done, input bytes total)
 * is called between pieces (at most every 200 ms) and at the end; a
 * non-zero return stops the work with ST_E_CALLBACK (dst then holds a
 * prefix of the result). progress may be NULL.
 */
ST_API int st_ggml_quantize_progress(int type, const float *src, void *dst, uint64_t nrows,
                                     uint64_t n_per_row, unsigned threads,
                                     st_progress_fn progress, void *ctx, st_error *err);

/**
 * Dequantizes n elements (a multiple of the block size) of `type` from src
 * (n / block elements * block bytes) into dst, with ggml's
 * dequantize_row_<type> formulas. Errors as st_ggml_quantize's.
 */
ST_API int st_ggml_dequantize(int type, const void *src, float *dst, uint64_t n,
                              unsigned threads, st_error *err);

/** Bytes of a row of n_per_row elements; 0 if n_per_row is not a multiple
 * of the block size, the type is unknown or the size overflows. */
ST_API uint64_t st_ggml_row_bytes(int type, uint64_t n_per_row);

/* ===================== end of GGUF quantization ========================= */

/* ======================================================================== */
/* Multi-file models (lib/model/)                                            */
/* ======================================================================== */

/*
 * A model is one tensor table over one or more .safetensors files. It is
 * opened from:
 *  - a single .safetensors file (one shard, no index);
 *  - an index, `NAME.safetensors.index.json` as transformers,
 *    huggingface_hub and diffusers write it: {"metadata": {"total_size": N,
 *    ...}, "weight_map": {tensor name: shard file name}} (a path whose name
 *    ends in ".json" is taken as an index, anything else as a shard);
 *  - a folder holding exactly one `*.safetensors.index.json`, or, when it
 *    holds none, exactly one `*.safetensors` file, weight variants aside
 *    (see st_model_open_variant): with several, ST_E_ARG listing them.
 *
 * Opening validates the whole model strictly, and fails on the first
 * problem:
 *  - the index is UTF-8 JSON (the header's strict syntax rules and limits:
 *    ST_E_HEADER_UTF8, ST_E_HEADER_JSON, size cap ST_E_HEADER_TOO_LARGE),
 *    an object with an object "weight_map" of string values and, if
 *    present, an object "metadata" (ST_E_HEADER_SCHEMA); a key repeated in
 *    any of these objects, a tensor listed twice included, is
 *    ST_E_DUPLICATE_KEY;
 *  - a shard name is a relative path inside the index's folder: no
 *    absolute path, no "." / ".." / empty component, no backslash or NUL,
 *    and after resolving symbolic links it must still lie inside the folder
 *    (ST_E_HEADER_SCHEMA). One exception, for the Hugging Face cache
 *    layout: below a `REPO/snapshots/REV/` folder a link may point into
 *    `REPO/blobs/`;
 *  - every shard exists (else ST_E_IO naming it) and passes st_open's
 *    validation (its code; the message names the shard);
 *  - every tensor of a shard is listed in weight_map with that shard, every
 *    weight_map entry is found in the shard it names, and no name is in two
 *    shards (ST_E_HEADER_SCHEMA, ST_E_DUPLICATE_KEY);
 *  - metadata.total_size, when present, is a non-negative integer equal to
 *    the sum of the tensors' byte sizes (ST_E_HEADER_SCHEMA), unless
 *    ST_MODEL_IGNORE_TOTAL_SIZE. Other index metadata is not interpreted.
 * Shards are validated one after another (one shard open at a time) and
 * their headers are not kept: the model holds its own table. Tensor data is
 * read with pread through file descriptors opened on first use and kept in
 * a small cache (at most ST_MODEL_MAX_OPEN at once, least recently used
 * closed first); a shard reopened later must be the same file (device,
 * inode, size and modification time), else ST_E_IO.
 *
 * The model's metadata is the union of its shards' "__metadata__" pairs;
 * when two shards give a key different values, the first shard's value (in
 * shard order) is kept.
 *
 * Shards are in order of their names (bytewise); tensors are in shard
 * order, then in file order within a shard. The st_tensor records are the
 * shards' own: begin/end are relative to the data start of the shard the
 * tensor is in, header_offset is a byte offset in that shard.
 *
 * A model is immutable once open: every call below that takes a const
 * st_model * may run from many threads at once.
 */
typedef struct st_model st_model;

/* st_model_open flags */
#define ST_MODEL_IGNORE_TOTAL_SIZE 1u /* accept an index whose total_size   */
                                      /* disagrees (older writers)          */
#define ST_MODEL_VARIANT_FALLBACK 2u  /* st_model_open_variant: a folder  */
                                      /* without the variant opens its      */
                                      /* plain weights                      */

/* Longest weight-variant name. */
#define ST_MODEL_VARIANT_MAX 64

/* Shard file descriptors a model keeps open at most. */
#define ST_MODEL_MAX_OPEN 16

/** Opens and validates a model (see above). *out is NULL on failure. */
ST_API int st_model_open(const char *path, unsigned flags, st_model **out,
                         st_error *err);

/**
 * st_model_open choosing a weight variant in a folder, as diffusers'
 * from_pretrained(variant=...) and transformers' do. A component folder of
 * a diffusers pipeline often holds, next to its plain weights
 * (diffusion_pytorch_model.safetensors, model.safetensors, or
 * STEM-00001-of-0000N.safetensors shards with STEM.safetensors.index.json),
 * variants of them: STEM.VARIANT.safetensors, shards
 * STEM.VARIANT-00001-of-0000N.safetensors (older:
 * STEM-00001-of-0000N.VARIANT.safetensors) with the index
 * STEM.safetensors.index.VARIANT.json (older: STEM.safetensors.VARIANT.index.json,
 * STEM.VARIANT.safetensors.index.json), where STEM is one of
 * diffusion_pytorch_model, model, pytorch_model and VARIANT ("fp16", "ema",
 * "non_ema", "bf16", ...) is 1 to ST_MODEL_VARIANT_MAX of A-Z a-z 0-9 _ - +
 * (else ST_E_ARG). Other names are never variants.
 *  - variant NULL: variant files are ignored; the folder's one plain index
 *    or, without one, its one plain .safetensors file is opened. Two or
 *    more are ST_E_ARG, the message listing them and the variants present;
 *    a folder holding only variants is ST_E_NOT_FOUND naming them.
 *  - variant given: the variant's index (today's spelling first, then the
 *    older ones), else its STEM.VARIANT.safetensors; two of a kind are
 *    ST_E_ARG. A folder without the variant is ST_E_NOT_FOUND naming it and
 *    the variants present, unless flags has ST_MODEL_VARIANT_FALLBACK: then
 *    its plain weights are opened as with variant NULL (what diffusers'
 *    pipeline loading does for a component lacking the variant).
 * A path naming a file or an index is opened as named, whatever variant.
 * flags: ST_MODEL_IGNORE_TOTAL_SIZE, ST_MODEL_VARIANT_FALLBACK.
 */
ST_API int st_model_open_variant(const char *path, const char *variant,
                                 unsigned flags, st_model **out,
                                 st_error *err);

/** The weight variant whose files the model was opened from, NULL when
 * the plain weights (or a file named directly) were. Lives as long as the
 * model. */
ST_API const char *st_model_variant(const st_model *model);

/** Releases a model (NULL is allowed). */
ST_API void st_model_close(st_model *model);

/** The index file's path as given or found, NULL for a single file. */
ST_API const char *st_model_index_path(const st_model *model);

/** Number of shards (1 for a single file). */
ST_API size_t st_model_shard_count(const st_model *model);

/** The i-th shard's name as the index gives it (the file name for a
 * single file); NULL if out of range. */
ST_API const char *st_model_shard_name(const st_model *model, size_t i);

/** The i-th shard's path (folder + name); NULL if out of range. */
ST_API const char *st_model_shard_path(const st_model *model, size_t i);

/** The i-th shard's file size in bytes, and its data offset (8 + N). */
ST_API uint64_t st_model_shard_size(const st_model *model, size_t i);
ST_API uint64_t st_model_shard_data_offset(const st_model *model, size_t i);

/** Sum of the tensors' byte sizes (what an index's total_size means). */
ST_API uint64_t st_model_total_size(const st_model *model);

/** Number of tensors over all shards. */
ST_API size_t st_model_tensor_count(const st_model *model);

/** The i-th tensor (shard order, then file order); NULL if out of range. */
ST_API const st_tensor *st_model_tensor_at(const st_model *model, size_t i);

/** The i-th tensor in name order (bytewise, shorter first on a tie). */
ST_API const st_tensor *st_model_tensor_by_name_order(const st_model *model,
                                                      size_t i);

/** Looks a tensor up by name in O(1); NULL if there is none. */
ST_API const st_tensor *st_model_find(const st_model *model, const char *name,
                                      size_t name_len);

/** The shard a tensor of this model is in; SIZE_MAX for a foreign one. */
ST_API size_t st_model_tensor_shard(const st_model *model,
                                    const st_tensor *tensor);

/**
 * Copies len bytes of a tensor, from byte `offset` of its data, into buf,
 * with pread on its shard. Thread-safe. ST_E_RANGE past the tensor, ST_E_ARG
 * for a tensor of another model, ST_E_IO naming the shard on a read error,
 * a shard that got shorter or was replaced since the model was opened.
 */
ST_API int st_model_tensor_read(const st_model *model, const st_tensor *tensor,
                                uint64_t offset, void *buf, size_t len,
                                st_error *err);

/** 1 if any shard has a "__metadata__" object, else 0. */
ST_API int st_model_metadata_present(const st_model *model);

/** Number of metadata pairs (the union over shards). */
ST_API size_t st_model_metadata_count(const st_model *model);

/** The i-th pair in key order; ST_E_NOT_FOUND if out of range. */
ST_API int st_model_metadata_at(const st_model *model, size_t i,
                                const char **key, size_t *key_len,
                                const char **value, size_t *value_len);

/** The value for a key, NUL-terminated, or NULL. */
ST_API const char *st_model_metadata_get(const st_model *model, const char *key,
                                         size_t key_len, size_t *value_len);

/* ---- Split and join (lib/model/split.c) ---- */

/* Index layouts st_model_split writes. */
#define ST_SPLIT_TRANSFORMERS 0u /* transformers' save_pretrained: keys     */
                                 /* sorted, metadata {total_parameters,     */
                                 /* total_size}, indent 2, final newline    */
#define ST_SPLIT_HUB 1u          /* huggingface_hub save_torch_state_dict:  */
                                 /* weight_map in shard order, metadata     */
                                 /* {total_size, then the model's pairs},   */
                                 /* indent 2, no final newline              */

typedef struct st_split_options {
    uint64_t max_shard_size; /* bytes of tensor data per shard; 0 = the    */
                             /* default, 5,000,000,000 ("5GB")             */
    const char *prefix;      /* file names PREFIX-00001-of-00003.safetensors, */
                             /* PREFIX.safetensors.index.json; NULL = "model" */
    unsigned style;          /* ST_SPLIT_TRANSFORMERS or ST_SPLIT_HUB       */
} st_split_options;

/* huggingface_hub's default max_shard_size. */
#define ST_SPLIT_DEFAULT_MAX 5000000000ull

/**
 * Parses a shard size as huggingface_hub's parse_size_to_int does: a
 * decimal number (fractions allowed) and a unit, "KB" 10^3, "MB" 10^6,
 * "GB" 10^9, "TB" 10^12 (any case), the product truncated to an integer;
 * also "KiB".."TiB" (powers of 1024, as transformers accepts) and a plain
 * integer of bytes. ST_E_ARG for anything else, zero and negative sizes.
 */
ST_API int st_parse_size(const char *text, uint64_t *out, st_error *err);

/**
 * Writes the model's tensors as shards into the folder outdir (created if
 * missing), with the rules of huggingface_hub's
 * split_state_dict_into_shards: tensors in name order fill the current
 * shard until the next one would take it past max_shard_size, then a new
 * shard starts; a tensor larger than max_shard_size gets a shard of its
 * own, placed in the shard list when it is met (before the shard being
 * filled). One shard is written as PREFIX.safetensors with no index;
 * several as PREFIX-0000k-of-0000n.safetensors plus the index
 * PREFIX.safetensors.index.json (total_size = the tensors' bytes,
 * total_parameters = their elements, weight_map as opt->style says; names
 * are escaped as Python's json.dumps does, ASCII only).
 * Each shard is a canonical file carrying the model's metadata, with
 * "format": "pt" added when the model has no "format" key (transformers
 * refuses shards without it). All files are written under temporary names
 * first and renamed into place only when every one is complete: a failure
 * leaves outdir as it was. Files of an earlier split with other names are
 * not removed. opt may be NULL.
 */
ST_API int st_model_split(const st_model *model, const char *outdir,
                          const st_split_options *opt, const st_output_hooks *hooks, st_error *err);

/**
 * Writes every tensor of the model and its metadata into one canonical
 * file (atomically, as st_writer_write): the same bytes as writing the
 * same tensors and metadata with st_writer. Tensor data is read with
 * pread from each shard in turn, 1 MiB at a time, in the calling thread:
 * memory stays bounded whatever the tensor sizes.
 */
ST_API int st_model_join(const st_model *model, const char *out_path,
                         const st_output_hooks *hooks,
                         st_error *err);

/* ---- Diffusers folders (lib/model/diffusers.c) ---- */

/*
 * Stable Diffusion 1.x, 2.x, SDXL base and SDXL refiner between the
 * single-file layout A1111, ComfyUI and Forge load (LDM/SGM names:
 * model.diffusion_model.*, first_stage_model.*, and
 * cond_stage_model.transformer.* (SD1: CLIP-L), cond_stage_model.model.*
 * (SD2: OpenCLIP ViT-H, all 24 layers and text_projection kept although
 * diffusers' SD2 text encoder uses 23) or conditioner.embedders.N.* (SDXL:
 * 0 = CLIP-L transformer.*, 1 = OpenCLIP bigG model.*; the refiner has only
 * OpenCLIP as embedders.0)), and the Flux transformer (BFL's names:
 * double_blocks.N.*, single_blocks.N.*, bare or under
 * model.diffusion_model.), and a
 * diffusers pipeline folder (unet/diffusion_pytorch_model.safetensors,
 * vae/..., text_encoder/model.safetensors, text_encoder_2/..., each possibly
 * sharded). The family is told by the text encoders' prefixes (a single
 * file) or by the folders present (text_encoder_2/ means SDXL, without
 * text_encoder/ the refiner; a UNet attending to 1024 features SD2;
 * transformer/ without unet/ Flux, needing no model_index.json).
 * The names follow diffusers'
 * convert_diffusers_to_original_stable_diffusion.py / _sdxl.py and
 * single_file_utils.py. Changes beyond names: the VAE's attention
 * q/k/v/proj_out weights are 1x1 convolutions [o, i, 1, 1] in LDM and linear
 * [o, i] in diffusers (the same bytes); OpenCLIP's fused attn.in_proj_weight
 * / _bias [3d, ...] are split by rows into q_proj, k_proj, v_proj (and fused
 * back); Flux's fused qkv are split by rows 1:1:1 into to_q/k/v
 * (add_q/k/v_proj for text), a single block's linear1 1:1:1:4 into
 * to_q/k/v and proj_mlp, and the final adaLN modulation's halves are
 * swapped ((shift, scale) <-> (scale, shift)), all following
 * convert_flux_transformer_checkpoint_to_diffusers; OpenCLIP's
 * text_projection [w, p] is transposed into text_projection.weight
 * [p, w]. Tensor values and dtypes never change, so single -> diffusers ->
 * single gives back the same tensors. Every key must have a name on the
 * other side: an unknown key, EMA weights (model_ema.*), a missing
 * component or a UNet of another family (by its cross-attention width and
 * proj_in) is ST_E_UNSUPPORTED naming the file
 * and the key. Memory stays bounded (one text projection is held to
 * transpose it); outputs are written atomically (all files renamed into
 * place at the end).
 */

/**
 * Writes the diffusers pipeline in `folder` (model_index.json, unet/, vae/,
 * text_encoder/ and/or text_encoder_2/) as one single file at out_path,
 * without metadata. HF's text_model.embeddings.position_ids of an OpenCLIP
 * encoder has no single-file name and is left out.
 */
ST_API int st_diffusers_to_single(const char *folder, const char *out_path,
                                  const st_output_hooks *hooks,
                                  st_error *err);

/**
 * st_diffusers_to_single reading weight variant `variant` ("fp16", "ema",
 * ...; NULL: the plain weights, variants ignored) of each component, as
 * diffusers' DiffusionPipeline.from_pretrained(variant=...) does: a
 * component without the variant contributes its plain weights (see
 * st_model_open_variant, ST_MODEL_VARIANT_FALLBACK); when no component has
 * it, ST_E_NOT_FOUND naming the variant. The tensors keep the variant's
 * dtypes.
 */
ST_API int st_diffusers_to_single_variant(const char *folder,
                                          const char *variant,
                                          const char *out_path,
                                          const st_output_hooks *hooks,
                                          st_error *err);

/** st_single_to_diffusers flags: the scheduler's prediction_type is
 * "v_prediction" (what st_identify's ST_VARIANT_V_PREDICTION says; the
 * weights alone do not tell), else "epsilon". */
#define ST_DIFFUSERS_V_PREDICTION 1u

/**
 * Writes an SD1.x, SD2.x or SDXL checkpoint as a diffusers folder outdir
 * (a Flux transformer as outdir/transformer/ with its config.json, the
 * layer counts, in_channels and guidance from the weights, and nothing
 * else: the rest of a Flux pipeline is other models): the
 * weight files (metadata {"format": "pt"}), model_index.json, the
 * components' config.json (SD1.5's, SD2.1's, SDXL base 1.0's or refiner 1.0's values;
 * the UNet's in_channels from its conv_in, so inpainting models get 9) and
 * scheduler/scheduler_config.json. The tokenizer files are not written (copy
 * tokenizer/ from the base model's repository). The noise-schedule buffers
 * of LDM checkpoints (betas, alphas_cumprod, ...), the EMA counters and
 * OpenCLIP's logit_scale have no place in diffusers' weights: they are left
 * out and counted in *left_out (may be NULL).
 */
ST_API int st_single_to_diffusers(const st_model *model, const char *outdir,
                                  unsigned flags, const st_output_hooks *hooks,
                                  size_t *left_out, st_error *err);

/**
 * st_diff and st_diff_metadata on two models (each a single file, an index
 * or a folder, as st_model_open takes them): the same matching, comparison,
 * callbacks and summary, reads going to the right shard. A model and a
 * single file compare as equals when they hold the same tensors and
 * metadata, however the tensors are split into files.
 */
ST_API int st_model_diff(const st_model *a, const st_model *b, const st_diff_options *opt,
                         st_diff_summary *summary, st_error *err);
ST_API int st_model_diff_metadata(const st_model *a, const st_model *b,
                                  const st_diff_options *opt, st_diff_summary *summary,
                                  st_error *err);

/**
 * st_hash_fd on every shard file of a model (lib/sd/model_hash.c): out has
 * st_model_shard_count(model) entries, out[i] the digests of shard i's
 * whole file. Shards are independent, so up to opt->threads of them
 * (0: one per CPU; 1: one after another, in the calling thread) are hashed
 * at once, largest first; each shard's pass gets the threads the others
 * leave (a single shard is hashed as st_hash_fd would). This is what uses
 * every core when the shards are in page cache: one file's SHA-256 is
 * serial. With opt->chunk_size 0, the read buffers of all shards' passes
 * together stay within 32 MiB (chunks of 1 to 8 MiB each).
 * opt->progress (called from one thread at a time, under a lock)
 * gets the bytes read of all shards together, of the sum of their sizes;
 * stopping it stops every shard (ST_E_CALLBACK). The first error stops the
 * others and is returned with its shard in *failed_shard (may be NULL;
 * SIZE_MAX when none): ST_E_IO naming the shard when it cannot be read, or
 * when its size is not the size it had when the model was opened.
 */
ST_API int st_model_hash(const st_model *model, unsigned algos, const st_hash_options *opt,
                         st_hashes *out, size_t *failed_shard, st_error *err);

/**
 * st_merge on models (each a single file, an index or a folder, as
 * st_model_open takes them): inputs[0..ninputs) are A, B (and C), vae the
 * VAE to bake in (NULL: none; opt->vae_path is ignored), with the same
 * rules, report and output. Tensors are read with st_model_tensor_read
 * (unchanged ones too: no kernel copies), memory stays a few fixed buffers.
 * OUT may be none of the inputs' files (shards and index included).
 * In the metadata an input that is one file is recorded as st_merge
 * records it. A sharded input (opened from an index) is recorded as the
 * files A1111 would have hashed had it merged them: sd_merge_models gets
 * one entry per shard, keyed by the shard file's SHA-256, {"name": the
 * shard's name in the index, "legacy_hash": its autov1, "sd_merge_recipe":
 * the model's}, and sd_merge_recipe's primary/secondary/tertiary_model_hash
 * is the JSON list of the shards' SHA-256 in shard order instead of one
 * string. The shards are hashed with st_model_hash. Tensor data and the
 * other metadata are those of merging the joined model. The recipe's
 * bake_in_vae is the VAE's file name (its index's for a sharded VAE).
 */
ST_API int st_merge_models(const st_model *const *inputs, size_t ninputs, const st_model *vae,
                           const char *out_path, const st_merge_options *opt,
                           st_merge_report *report, st_error *err);

/* ======================== end of Multi-file models ======================= */

/* ======================================================================== */
/* LoRA (lib/lora/)                                                          */
/* ======================================================================== */

/*
 * Baking LoRA adapters into a model, extracting one from a fine-tune, and
 * resizing one, on single-file Stable Diffusion checkpoints (SD1.x, SD2.x,
 * SDXL; LDM/SGM key names as the original checkpoints have them) and, for
 * baking, Flux transformers (BFL keys, with or without the
 * "model.diffusion_model." prefix).
 *
 * Adapter formats read: kohya LoRA / LoCon ("lora_unet_...", "lora_te_",
 * "lora_te1_" / "lora_te2_" with ".lora_down.weight", ".lora_up.weight",
 * ".alpha"; LoCon with a Tucker ".lora_mid.weight"), LyCORIS LoHa
 * (".hada_w1_a" ...; Tucker cores ".hada_t1"/".hada_t2") and LoKr
 * (".lokr_w1" ...; Tucker core ".lokr_t2"), each optionally DoRA
 * (".dora_scale", applied as ComfyUI's weight_decompose),
 * PEFT ("unet.X.lora_A.weight", "text_encoder.X.lora_B.weight", ...) and
 * diffusers' older layouts (".lora.down.weight", "lora_linear_layer",
 * "attn1.processor.to_q_lora.down.weight"), whose names are read as the
 * kohya names of the same modules. The format is the one st_identify names.
 *
 * Name mapping (kohya sd-scripts networks/lora.py and merge_lora.py,
 * ComfyUI comfy/lora.py model_lora_keys_unet/_clip, comfy/utils.py
 * unet_to_diffusers): a UNet weight "model.diffusion_model.X.weight" is the
 * target of "lora_unet_" + X with '.' -> '_' (SDXL LoRAs) and of the same
 * built from X's diffusers name (SD1/SD2 LoRAs: "down_blocks_0_attentions_0
 * ..."). CLIP-L weights (HF naming) are "lora_te_" / "lora_te1_" +
 * "text_model_encoder_layers_N_..."; an OpenCLIP tower (SD2, SDXL's second
 * encoder) takes the HF names too: q_proj/k_proj/v_proj patch the three row
 * blocks of attn.in_proj_weight, out_proj -> attn.out_proj, mlp_fc1 ->
 * mlp.c_fc, mlp_fc2 -> mlp.c_proj. Flux: kohya names are the BFL keys
 * ("lora_unet_double_blocks_0_img_attn_qkv"); diffusers/PEFT names
 * ("transformer.transformer_blocks.0.attn.to_q", "lora_transformer_...")
 * patch row blocks of the fused img_attn.qkv / txt_attn.qkv / linear1 as
 * kohya's flux_merge_lora.py splits them; XLabs' "double_blocks.N.processor.
 * qkv_lora1/proj_lora1" (img) and "..._lora2" (txt) patch the same layers.
 * Text encoders of ComfyUI's all-in-one Flux files: "text_encoders.clip_l."
 * is "lora_te1_", "text_encoders.t5xxl.transformer.X" is "lora_te3_" + X
 * (kohya) or "lora_te2_" + X (OneTrainer). The SDXL refiner's OpenCLIP
 * (conditioner.embedders.0.model.) takes "lora_te_" (ComfyUI).
 *
 * Math (f32 throughout, matrices flattened to [out, in * kh * kw]):
 *   LoRA   W += strength * (alpha / rank) * up @ down   (linear, conv 1x1
 *          and 3x3 as kohya merge_lora.py; no alpha: alpha = rank)
 *   LoHa   W += strength * (alpha / rank) * (w1a @ w1b) * (w2a @ w2b)
 *   LoKr   W += strength * s * kron(w1, w2), w1 = lokr_w1 or w1_a @ w1_b (same
 *          for w2); s = alpha / rank of the decomposed factor, else 1
 *   Tucker (LoHa hada_t1/t2, LoKr lokr_t2): a factor is the LyCORIS einsum
 *          "i j k l, j r, i p -> p r k l"(core, w_b [R, in], w_a [R, out])
 *   DoRA   (dora_scale) W' = (W + s dW) * mag / (norm + eps), then
 *          W + strength (W' - W); mag per output row: norms of the original
 *          W's rows; per input column: column norms of W + s dW (ComfyUI)
 * Linear algebra is BLAS (products) and LAPACK (QR, SVD) from OpenBLAS,
 * which uses every core.
 */

/* One adapter to bake. */
typedef struct st_lora_input {
    const char *path;        /* a .safetensors adapter                        */
    float strength;          /* multiplier ("ratio"); 1 for as trained        */
} st_lora_input;

typedef struct st_lora_bake_options {
    int dtype;               /* output dtype of the floating tensors; -1:     */
                             /* each tensor keeps the model's dtype           */
    int allow_unmatched;     /* 1: adapter modules that match no model weight */
                             /* are counted (report) instead of failing       */
    st_progress_fn progress; /* may be NULL; bytes of output written          */
    void *progress_ctx;
    st_temp_fn temp;         /* told of the temporary output file (NULL ok)   */
    void *temp_ctx;
    unsigned threads;        /* computing threads; 0: one per CPU             */
} st_lora_bake_options;

#define ST_LORA_REPORT_NAMES 8
#define ST_LORA_NAME_MAX 160

/* What a bake did (any pointer to it may be NULL). */
typedef struct st_lora_bake_report {
    size_t modules;          /* adapter modules applied, all adapters         */
    size_t tensors_patched;  /* model tensors changed                         */
    size_t unmatched;        /* adapter modules with no model weight          */
    size_t unmatched_listed; /* how many of them are named below              */
    char unmatched_names[ST_LORA_REPORT_NAMES][ST_LORA_NAME_MAX];
} st_lora_bake_report;

/** Fills defaults: dtype -1, allow_unmatched 0, no progress, threads 0. */
ST_API void st_lora_bake_defaults(st_lora_bake_options *opt);

/**
 * Writes model + the adapters to out_path (atomically, streaming: the
 * patched tensors are computed in f32 by opt->threads workers, a block of
 * rows at a time for low-rank modules and whole for LoHa/LoKr/DoRA ones,
 * and written to their place in the file; the others are copied through
 * or converted). The bytes do not depend on the number of threads. The model is a single-file checkpoint or a bare UNet; the
 * adapters are applied in order and add up. The output metadata is the
 * model's plus "lora_baked": a JSON list of {"name", "strength",
 * "sha256"} for the adapters. Errors: ST_E_LORA for an adapter that is
 * not a LoRA this can bake, names no model weight (unless
 * allow_unmatched; the message lists the first few), or whose shapes,
 * rank or alpha are wrong (rank 0, rank above the layer's dimensions,
 * NaN or infinite alpha or strength); reader and writer errors as
 * st_open / st_writer_write.
 */
ST_API int st_lora_bake(const char *model_path, const char *out_path,
                        const st_lora_input *loras, size_t n,
                        const st_lora_bake_options *opt,
                        st_lora_bake_report *report, st_error *err);

typedef struct st_lora_extract_options {
    unsigned rank;           /* rank of linear and 1x1 conv layers (>= 1)    */
    unsigned conv_rank;      /* rank of 3x3 convs; 0: they are not extracted  */
                             /* (nor the rest of the ResNet blocks), as kohya */
    float alpha;             /* 0: alpha = rank                               */
    float conv_alpha;        /* 0: conv_alpha = conv_rank                     */
    float min_diff;          /* layers with max |tuned - base| below this are */
                             /* left out (kohya's default 0.01)               */
    float clamp_quantile;    /* kohya's clamp of up/down values to the given  */
                             /* quantile (0.99 in kohya); 0 or 1: no clamp    */
    int dtype;               /* dtype of the output (ST_F16, ST_BF16, ST_F32) */
    st_progress_fn progress; /* layers done / layers total; may be NULL       */
    void *progress_ctx;
    st_temp_fn temp;         /* told of the temporary output file (NULL ok)   */
    void *temp_ctx;
} st_lora_extract_options;

typedef struct st_lora_extract_report {
    size_t layers;           /* layers written                                */
    size_t skipped;          /* layers left out by min_diff                   */
    int family;              /* st_model_family of the base                   */
} st_lora_extract_report;

/** Fills defaults: rank 4, conv_rank 0, alpha 0, min_diff 0.01,
 * clamp_quantile 0, dtype ST_F32 (as kohya). */
ST_API void st_lora_extract_defaults(st_lora_extract_options *opt);

/**
 * Writes tuned - base as a kohya LoRA: every layer kohya's networks/lora.py
 * targets (UNet attention blocks' linear and 1x1 conv weights, CLIP
 * attention and MLP; with conv_rank also ResNet, down- and up-sampler
 * layers), flattened to [out, in*kh*kw], truncated to its rank by a
 * randomized SVD (Halko-Martinsson-Tropp range finder with oversampling and
 * power iterations, as torch.svd_lowrank; exact for a difference of lower
 * rank), up = U S, down = V^T, alpha = rank. Names as kohya writes them
 * (diffusers-style for SD1/SD2, LDM-style for SDXL); ss_* metadata as kohya's
 * extract_lora_from_models.py writes. ST_E_LORA when the two models do not
 * have the same layers and shapes.
 */
ST_API int st_lora_extract(const char *base_path, const char *tuned_path,
                           const char *out_path,
                           const st_lora_extract_options *opt,
                           st_lora_extract_report *report, st_error *err);

typedef enum st_lora_resize_method {
    ST_LORA_RESIZE_RANK = 0,       /* every layer to `rank` (at most its own) */
    ST_LORA_RESIZE_SV_RATIO,       /* keep singular values > max / param      */
    ST_LORA_RESIZE_SV_FRO,         /* keep the Frobenius-norm fraction param  */
    ST_LORA_RESIZE_SV_CUMULATIVE   /* keep the fraction param of sum(S)       */
} st_lora_resize_method;

/* One resized layer, for reports. */
typedef struct st_lora_layer_info {
    const char *name;        /* the module's key stem                         */
    unsigned old_rank;
    unsigned new_rank;
    float new_alpha;
    double sum_retained;     /* sum(S kept) / sum(S)                          */
    double fro_retained;     /* ||S kept|| / ||S||                            */
    double max_ratio;        /* S[0] / S[new_rank - 1]                        */
} st_lora_layer_info;

/* Called once per resized layer; non-zero stops the resize (ST_E_CALLBACK). */
typedef int (*st_lora_layer_fn)(void *ctx, const st_lora_layer_info *info);

typedef struct st_lora_resize_options {
    unsigned rank;           /* new rank, or the cap of a dynamic method      */
    unsigned conv_rank;      /* for 4-D (conv) layers; 0: same as rank        */
    st_lora_resize_method method;
    double param;            /* the dynamic method's target                   */
    int dtype;               /* -1: the adapter's dtype                       */
    st_lora_layer_fn layer;  /* may be NULL                                   */
    void *layer_ctx;
    st_temp_fn temp;         /* told of the temporary output file (NULL ok)   */
    void *temp_ctx;
    st_progress_fn progress; /* layers done of the adapter's; non-zero return */
    void *progress_ctx;      /* stops with ST_E_CALLBACK (NULL ok)            */
} st_lora_resize_options;

/** Fills defaults: rank 4, conv_rank 0, ST_LORA_RESIZE_RANK, dtype -1. */
ST_API void st_lora_resize_defaults(st_lora_resize_options *opt);

/**
 * Re-factorizes each kohya LoRA layer's up @ down by an exact SVD (QR of
 * both factors, then the SVD of the small core) and keeps the rank chosen
 * by the method, as kohya's networks/resize_lora.py: new alpha = (alpha /
 * old rank) * new rank, so the layer's scale is kept; a zero layer gets
 * rank 1. One difference: a rank above a layer's own is not padded with
 * zeros. Other tensors are copied; metadata gets kohya's ss_network_dim,
 * ss_network_alpha and ss_training_comment updates.
 */
ST_API int st_lora_resize(const char *lora_path, const char *out_path,
                          const st_lora_resize_options *opt, st_error *err);

/* =========================== end of LoRA ================================ */

/* ------------------------------------------------------------------------ */
/* GGUF files (lib/gguf/)                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Image models as GGUF v3 (ggml's docs/gguf.md), the way ComfyUI-GGUF,
 * stable-diffusion.cpp and Forge load them: what city96's tools/convert.py
 * and its patched llama-quantize (tools/lcpp.patch) would make, in one
 * streaming pass. File types are llama.cpp's (general.file_type).
 */

#define ST_GGUF_FTYPE_F32 0
#define ST_GGUF_FTYPE_F16 1
#define ST_GGUF_FTYPE_Q4_0 2
#define ST_GGUF_FTYPE_Q4_1 3
#define ST_GGUF_FTYPE_Q8_0 7
#define ST_GGUF_FTYPE_Q5_0 8
#define ST_GGUF_FTYPE_Q5_1 9
#define ST_GGUF_FTYPE_Q2_K 10
#define ST_GGUF_FTYPE_Q3_K_S 11
#define ST_GGUF_FTYPE_Q3_K_M 12
#define ST_GGUF_FTYPE_Q3_K_L 13
#define ST_GGUF_FTYPE_Q4_K_S 14
#define ST_GGUF_FTYPE_Q4_K_M 15
#define ST_GGUF_FTYPE_Q5_K_S 16
#define ST_GGUF_FTYPE_Q5_K_M 17
#define ST_GGUF_FTYPE_Q6_K 18
#define ST_GGUF_FTYPE_BF16 32

/**
 * A file type by its llama-quantize name, any case: f32, f16, bf16, q8_0,
 * q5_1, q5_0, q4_1, q4_0, q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_l,
 * q3_k_m, q3_k_s, q2_k (q5_k, q4_k, q3_k: the _m mixes). ST_E_NOT_FOUND
 * for anything else.
 */
ST_API int st_gguf_ftype_from_name(const char *name, int *ftype);
/** The canonical name of a file type ("q4_k_s"), NULL if unknown. */
ST_API const char *st_gguf_ftype_name(int ftype);

typedef struct st_gguf_write_options {
    int ftype;               /* ST_GGUF_FTYPE_*                              */
    const char *arch;        /* general.architecture; NULL: detected         */
    unsigned threads;        /* quantization threads; 0: every core          */
    st_output_hooks hooks;   /* progress over the output bytes, temp file    */
} st_gguf_write_options;

#define ST_GGUF_TYPE_SLOTS 64

typedef struct st_gguf_write_report {
    const char *arch;        /* the architecture written (static string)     */
    const char *prefix;      /* the name prefix removed ("" for none)        */
    size_t tensors;          /* tensors written                              */
    size_t ignored;          /* left out: other components' prefixes, and    */
                             /* convert.py's ignored keys                    */
    size_t quantized;        /* written in a block type                      */
    size_t fallback_f16;     /* rows not filling the type's blocks: F16      */
    size_t reshaped;         /* stored in another shape, the original in     */
                             /* comfy.gguf.orig_shape.<name>                 */
    size_t by_type[ST_GGUF_TYPE_SLOTS]; /* tensors per ggml type            */
    uint64_t input_size, output_size;
    int failed_input;        /* on error: 0 when about the input, else -1    */
} st_gguf_write_report;

/**
 * Writes the image model in_path (safetensors, single-file layout) to
 * out_path as GGUF v3, atomically and streaming (memory: a few 8 MiB
 * slices, whatever the model's size):
 *  - names: convert.py's prefix removal ("model.diffusion_model." or
 *    "model.": other names are left out; "net." when every name has it),
 *    the prefix kept in safetensors.name_prefix;
 *  - architecture: convert.py's key rules (flux, sd3, aura, hidream,
 *    cosmos, ltxv, hyvid, wan, sdxl, sd1, lumina2) unless opt->arch; a
 *    diffusers layout is refused (ST_E_UNSUPPORTED), as convert.py does;
 *  - types: F16 (BF16 from BF16) with F32 for 1-D, small (<= 1024
 *    elements) and high-precision tensors, then for a quantized file type
 *    the quantizable 2-D weights of over 1024 elements in its base type
 *    with llama-quantize's image-model bumps (attention v, fused qkv, ffn
 *    down) and exclusions;
 *    a row that does not fill the type's blocks stays F16 (counted in
 *    report->fallback_f16);
 *  - shapes: ggml order; SD1/SDXL tensors whose last dimension is not a
 *    multiple of 256 stored as rows of 256, more than four dimensions folded
 *    into four, each with comfy.gguf.orig_shape.<name> (ARRAY of INT32) so
 *    ComfyUI-GGUF restores them without a manual fix;
 *  - KV: general.architecture, general.quantization_version (2),
 *    general.file_type, general.alignment (32); data aligned to 32.
 * Integer and boolean tensors are refused (ST_E_UNSUPPORTED), out_path
 * naming in_path is ST_E_ARG. Quantized bytes are ggml's reference
 * quantizers' (st_ggml_quantize).
 */
ST_API int st_gguf_from_safetensors(const char *in_path, const char *out_path,
                                    const st_gguf_write_options *opt,
                                    st_gguf_write_report *report, st_error *err);

/* ---- reading GGUF ---- */

typedef struct st_gguf st_gguf;

/* GGUF metadata value types (gguf.md) */
#define ST_GGUF_UINT8 0
#define ST_GGUF_INT8 1
#define ST_GGUF_UINT16 2
#define ST_GGUF_INT16 3
#define ST_GGUF_UINT32 4
#define ST_GGUF_INT32 5
#define ST_GGUF_FLOAT32 6
#define ST_GGUF_BOOL 7
#define ST_GGUF_STRING 8
#define ST_GGUF_ARRAY 9
#define ST_GGUF_UINT64 10
#define ST_GGUF_INT64 11
#define ST_GGUF_FLOAT64 12

/* One metadata pair. Owned by the st_gguf. */
typedef struct st_gguf_kv {
    const char *key;         /* NUL-terminated, UTF-8                        */
    size_t key_len;
    int type;                /* ST_GGUF_UINT8 .. ST_GGUF_FLOAT64             */
    int array_type;          /* arrays: the elements' type                   */
    uint64_t count;          /* arrays: elements; 1 otherwise                */
    uint64_t value_offset;   /* absolute file offset of the value (arrays:   */
                             /* of the first element)                        */
    uint64_t u;              /* scalars: the value as unsigned, signed and   */
    int64_t i;               /* floating                                     */
    double f;
    const char *str;         /* strings up to 4096 bytes (NULL if longer)    */
    size_t str_len;
} st_gguf_kv;

/* One tensor. Owned by the st_gguf. */
typedef struct st_gguf_tensor {
    const char *name;        /* NUL-terminated, UTF-8                        */
    size_t name_len;
    int type;                /* st_ggml_type                                 */
    uint32_t n_dims;         /* 1..4                                         */
    uint64_t ne[4];          /* ggml order: ne[0] is the innermost           */
    uint64_t nelements;
    uint64_t offset;         /* in the data section                          */
    uint64_t size;           /* bytes                                        */
    uint64_t header_offset;  /* file offset of its tensor info               */
} st_gguf_tensor;

/**
 * Opens and validates a GGUF file (versions 2 and 3): magic, counts the
 * file can hold, every string UTF-8 and inside the file, known value and
 * tensor types, 1..4 dimensions without overflow, rows filling their
 * blocks, general.alignment a UINT32 power of two, every tensor aligned,
 * inside the file and overlapping no other, no tensor name or key twice.
 * ST_E_GGUF names what is wrong and where; memory grows with the header's
 * size only. Tensor data is read later, with pread.
 */
ST_API int st_gguf_open(const char *path, st_gguf **out, st_error *err);
ST_API void st_gguf_close(st_gguf *gguf);
ST_API uint32_t st_gguf_version(const st_gguf *gguf);
ST_API uint32_t st_gguf_alignment(const st_gguf *gguf);
/** Absolute file offset of the tensor data section. */
ST_API uint64_t st_gguf_data_offset(const st_gguf *gguf);
ST_API size_t st_gguf_kv_count(const st_gguf *gguf);
ST_API const st_gguf_kv *st_gguf_kv_at(const st_gguf *gguf, size_t i);
/** The pair whose key is `key`, or NULL. */
ST_API const st_gguf_kv *st_gguf_kv_find(const st_gguf *gguf, const char *key);
/** Element i of an array of integers. */
ST_API int st_gguf_kv_array_int(const st_gguf *gguf, const st_gguf_kv *kv, uint64_t i,
                                int64_t *value, st_error *err);
/**
 * A tensor's shape in safetensors' order (at most 8 dimensions): the one
 * comfy.gguf.orig_shape.<name> records (*restored = 1; it must be an
 * array of at most 8 non-negative integers whose product is the tensor's
 * element count, else ST_E_GGUF), or ggml's dimensions reversed.
 */
ST_API int st_gguf_tensor_shape(const st_gguf *gguf, const st_gguf_tensor *tensor,
                                uint64_t shape[8], uint32_t *rank, int *restored,
                                st_error *err);
ST_API size_t st_gguf_tensor_count(const st_gguf *gguf);
/** The i-th tensor, in the file's order. */
ST_API const st_gguf_tensor *st_gguf_tensor_at(const st_gguf *gguf, size_t i);

/**
 * Dequantizes elements [first, first + n) of a tensor (both multiples of
 * its block size) into dst with ggml's formulas; scratch holds the n
 * elements' raw bytes (n / block * block bytes). Thread-safe.
 */
ST_API int st_gguf_tensor_read_f32(const st_gguf *gguf, const st_gguf_tensor *tensor,
                                   uint64_t first, float *dst, uint64_t n, void *scratch,
                                   size_t scratch_len, st_error *err);

typedef struct st_gguf_read_options {
    st_dtype dtype;          /* ST_F32 (0 means F32 too), ST_F16 or ST_BF16  */
    st_output_hooks hooks;
} st_gguf_read_options;

typedef struct st_gguf_read_report {
    size_t tensors;
    size_t reshaped;         /* shapes restored from comfy.gguf.orig_shape    */
    uint64_t input_size, output_size;
    int failed_input;        /* on error: 0 when about the input, else -1    */
} st_gguf_read_report;

/**
 * Writes a GGUF file as safetensors (canonical layout, atomic, streaming):
 * every tensor dequantized to opt->dtype, its shape the one recorded in
 * comfy.gguf.orig_shape.<name> when present (5-D tensors included), else
 * ggml's dimensions reversed; names prefixed again with the
 * safetensors.name_prefix this library records. The GGUF's scalar and
 * string metadata become "gguf.<key>" metadata strings. Types that cannot
 * be dequantized are ST_E_UNSUPPORTED.
 */
ST_API int st_gguf_to_safetensors(const char *in_path, const char *out_path,
                                  const st_gguf_read_options *opt, st_gguf_read_report *report,
                                  st_error *err);

/* ========================= end of GGUF files ============================ */


#ifdef __cplusplus
}
#endif

#endif /* SAFETENSORS_H */
