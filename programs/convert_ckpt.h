/* Checkpoint (PyTorch pickle/zip) input for `safetensors convert`. */
#ifndef ST_CONVERT_CKPT_H
#define ST_CONVERT_CKPT_H

#include "cli.h"

/* Converts a checkpoint at in_path to a safetensors file at out_path.
 * Refuses (exit 1, no output) when a pickle of the file names a dangerous
 * global, unless allow_unsafe. pad: spare header bytes (--pad); common:
 * the progress flags. Returns the CLI exit code. */
int convert_ckpt(const char *in_path, const char *out_path, bool allow_unsafe, uint64_t pad,
                 const cli_common *common);

/* True when path is a pickle-based file (zip or legacy checkpoint, bare
 * pickle), by content. */
bool ckpt_is_pickle_file(const char *path);

/* `ls` of a checkpoint: sort 0 pickle order, 1 name, 2 size (largest
 * first); glob may be NULL. Returns the exit code. */
int ckpt_ls(const char *path, bool json, int sort, const char *glob);

/* `info` of a checkpoint. Returns the exit code. */
int ckpt_info(const char *path, bool json);

/* `identify` of a checkpoint: the same rules as for safetensors files, on
 * the tensors and top-level scalars the pickle holds. Returns an st_code. */
int ckpt_identify(const char *path, st_identity *id, st_error *err);

#endif
