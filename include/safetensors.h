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
    ST_E_CKPT_TENSOR = 45      /* "ckpt_tensor": tensor/storage inconsistent */
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

/**
 * Progress of long work (anything that reads or writes tensor data): called
 * from the thread doing the work with the bytes done so far and the total
 * expected (0 when not known), at most a few times a second and once at the
 * end. Return 0 to go on, non-zero to stop the work, which then fails with
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
 * data.pkl, data/<key>, byteorder, zip64) and the legacy stream (magic
 * number, protocol, sys info, object, storage keys, raw storages). Raw
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
    ST_FORMAT_RAW_PICKLE = 4     /* a bare pickle stream                      */
} st_format;

/**
 * Detects a file's format by content (never by extension). Reads at most
 * a few kilobytes. Returns ST_OK and sets *out (ST_FORMAT_UNKNOWN for
 * anything else), or ST_E_IO.
 */
ST_API int st_ckpt_detect(const char *path, st_format *out, st_error *err);

/** "safetensors", "zip-pickle", "legacy-pickle", "raw-pickle", "unknown". */
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
 * too). OUT may not be IN (ST_E_ARG). report may be NULL. Errors: IN's
 * st_open code (report->failed_input = 0), ST_E_ARG (options, EMA twins of
 * another shape, no EMA to keep), ST_E_IO.
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
ST_API void st_install_plan_free(st_install_plan *plan);

/* ======================= end of Model operations ======================== */

#ifdef __cplusplus
}
#endif

#endif /* SAFETENSORS_H */
