/* An operation's input, a file or a model (sd_input.h). */
#include "sd/sd_input.h"

#include <string.h>
#include <sys/stat.h>

bool sd_is_model_path(const char *path)
{
    size_t n = strlen(path);
    struct stat sb;
    return (n >= 5 && strcmp(path + n - 5, ".json") == 0) ||
           (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
}

size_t sd_in_count(const st_op_input *in, const st_model *m)
{
    return m ? st_model_tensor_count(m) : st_tensor_count(in->file);
}

const st_tensor *sd_in_at(const st_op_input *in, const st_model *m, size_t k)
{
    return m ? st_model_tensor_at(m, k) : st_tensor_at(in->file, k);
}

const st_tensor *sd_in_find(const st_op_input *in, const st_model *m, const char *name,
                            size_t len)
{
    return m ? st_model_find(m, name, len) : st_find(in->file, name, len);
}

int sd_in_read(st_op_input *in, const st_model *m, const st_tensor *t, uint64_t off, void *buf,
               size_t len)
{
    st_error err;
    memset(&err, 0, sizeof err);
    int rc = m ? st_model_tensor_read(m, t, off, buf, len, &err)
               : st_tensor_read(in->file, t, off, buf, len, &err);
    return st_op_input_fail(in, rc, &err);
}

size_t sd_in_meta_count(const st_op_input *in, const st_model *m)
{
    return m ? st_model_metadata_count(m) : st_metadata_count(in->file);
}

int sd_in_meta_at(const st_op_input *in, const st_model *m, size_t k, const char **key,
                  size_t *kl, const char **v, size_t *vl)
{
    return m ? st_model_metadata_at(m, k, key, kl, v, vl)
             : st_metadata_at(in->file, k, key, kl, v, vl);
}

const char *sd_in_meta_get(const st_op_input *in, const st_model *m, const char *key,
                           size_t *vl)
{
    return m ? st_model_metadata_get(m, key, strlen(key), vl)
             : st_metadata_get(in->file, key, strlen(key), vl);
}

int sd_in_meta_present(const st_op_input *in, const st_model *m)
{
    return m ? st_model_metadata_present(m) : st_metadata_present(in->file);
}

bool sd_in_is_file_of(const st_op_input *in, const st_model *m, const char *path)
{
    if (!m)
        return st_op_same_file(in->path, path);
    for (size_t s = 0; s < st_model_shard_count(m); s++)
        if (st_op_same_file(st_model_shard_path(m, s), path))
            return true;
    return st_model_index_path(m) && st_op_same_file(st_model_index_path(m), path);
}
