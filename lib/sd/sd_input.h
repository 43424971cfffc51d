/* An operation's input in lib/sd: one safetensors file (st_op_input, its
 * file open) or a model st_model_open opened (an index, a folder). merge and
 * convert read tensors and metadata through these, whichever it is; a read
 * failure is recorded on the st_op_input, as st_op_write reports it. */
#ifndef ST_SD_INPUT_H
#define ST_SD_INPUT_H

#include "format/stream.h"

/* What st_model_open takes as a model rather than one file: an index (a
 * name ending in ".json") or a folder. */
ST_INTERNAL bool sd_is_model_path(const char *path);

ST_INTERNAL size_t sd_in_count(const st_op_input *in, const st_model *m);
ST_INTERNAL const st_tensor *sd_in_at(const st_op_input *in, const st_model *m, size_t k);
ST_INTERNAL const st_tensor *sd_in_find(const st_op_input *in, const st_model *m,
                                        const char *name, size_t len);
ST_INTERNAL int sd_in_read(st_op_input *in, const st_model *m, const st_tensor *t,
                           uint64_t off, void *buf, size_t len);
ST_INTERNAL size_t sd_in_meta_count(const st_op_input *in, const st_model *m);
ST_INTERNAL int sd_in_meta_at(const st_op_input *in, const st_model *m, size_t k,
                              const char **key, size_t *kl, const char **v, size_t *vl);
ST_INTERNAL const char *sd_in_meta_get(const st_op_input *in, const st_model *m,
                                       const char *key, size_t *vl);
ST_INTERNAL int sd_in_meta_present(const st_op_input *in, const st_model *m);

/* Whether path is the input's file, or one of a model's shards or its
 * index: an output there would overwrite an input. */
ST_INTERNAL bool sd_in_is_file_of(const st_op_input *in, const st_model *m, const char *path);

#endif
