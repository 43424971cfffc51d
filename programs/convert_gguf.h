/* GGUF output (and input) for `safetensors convert`. */
#ifndef ST_CONVERT_GGUF_H
#define ST_CONVERT_GGUF_H

#include "cli.h"

typedef struct gguf_args {
    const char *quant;   /* --quant TYPE (NULL: f16) */
    const char *arch;    /* --arch NAME (NULL: detected) */
    unsigned threads;    /* --threads N (0: every core) */
    bool to_gguf;        /* --format gguf */
} gguf_args;

/* True when path ends in ".gguf" (any case). */
bool gguf_path(const char *path);

/* convert IN.safetensors OUT.gguf: prints the summary, returns the exit
 * code. */
int convert_to_gguf(const char *in_path, const char *out_path, const gguf_args *g,
                    const cli_common *common);

/* True when the file at path starts with the "GGUF" magic. */
bool gguf_is_file(const char *path);

/* convert IN.gguf OUT.safetensors [--dtype f16|bf16|f32]. */
int convert_from_gguf(const char *in_path, const char *out_path, st_dtype dtype, bool set_dtype,
                      const cli_common *common);

/* `check`: st_gguf_open's verdict and the tensor count. */
int gguf_check(const char *path, size_t *ntensors, st_error *err);

/* `identify` of a GGUF file: an st_code. */
int gguf_identify(const char *path, st_identity *id, st_error *err);

/* `info` and `ls` of a GGUF file; return the exit code. */
int gguf_info(const char *path, bool json);
int gguf_ls(const char *path, bool json);

#endif
