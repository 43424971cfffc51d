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

#endif
