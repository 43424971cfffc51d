/* Checkpoint (PyTorch pickle/zip) input for `safetensors convert`. */
#ifndef ST_CONVERT_CKPT_H
#define ST_CONVERT_CKPT_H

#include "cli.h"

/* Converts a checkpoint at in_path to a safetensors file at out_path.
 * Refuses (exit 1, no output) when a pickle of the file names a dangerous
 * global, unless allow_unsafe. Returns the CLI exit code. */
int convert_ckpt(const char *in_path, const char *out_path, bool allow_unsafe);

#endif
