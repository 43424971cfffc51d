/* Error codes, their stable names, and message formatting. */
#include "common/internal.h"

#include <stdio.h>
#include <string.h>

static const struct {
    int code;
    const char *name;
    const char *description;
} code_table[] = {
    {ST_OK, "ok", "success"},
    {ST_E_HEADER_TOO_SMALL, "header_too_small", "file is shorter than the 8-byte header length"},
    {ST_E_HEADER_TOO_LARGE, "header_too_large", "header length is over 100,000,000 bytes"},
    {ST_E_HEADER_LENGTH, "header_length", "header length runs past the end of the file"},
    {ST_E_HEADER_UTF8, "header_utf8", "header is not valid UTF-8"},
    {ST_E_HEADER_JSON, "header_json", "header is not valid JSON"},
    {ST_E_HEADER_SCHEMA, "header_schema", "header JSON does not describe tensors and metadata"},
    {ST_E_DUPLICATE_KEY, "duplicate_key", "a key is repeated in a JSON object of the header"},
    {ST_E_OFFSETS, "offsets", "tensor data offsets leave a hole, overlap or run backwards"},
    {ST_E_OVERFLOW, "overflow", "element or bit count overflows 64 bits"},
    {ST_E_MISALIGNED, "misaligned", "sub-byte tensor does not fill a whole number of bytes"},
    {ST_E_SIZE_MISMATCH, "size_mismatch", "tensor byte range does not match its shape and dtype"},
    {ST_E_INCOMPLETE, "incomplete", "tensor data does not end exactly at the end of the file"},
    {ST_E_IO, "io", "input/output error"},
    {ST_E_NOMEM, "nomem", "out of memory"},
    {ST_E_ARG, "invalid_argument", "invalid argument"},
    {ST_E_NOT_FOUND, "not_found", "not found"},
    {ST_E_SLICE, "slice", "slice out of range or not on a byte boundary"},
    {ST_E_RANGE, "range", "read past the end of the tensor"},
    {ST_E_UNSUPPORTED, "unsupported", "operation not supported"},
    {ST_E_CALLBACK, "callback", "a callback reported failure"},
    {ST_E_CKPT_FORMAT, "ckpt_format", "not a recognised checkpoint format"},
    {ST_E_ZIP, "zip", "malformed zip container"},
    {ST_E_PICKLE, "pickle", "malformed or unsupported pickle"},
    {ST_E_PICKLE_LIMIT, "pickle_limit", "pickle exceeds a safety limit"},
    {ST_E_UNSAFE, "unsafe", "pickle references a dangerous global"},
    {ST_E_CKPT_TENSOR, "ckpt_tensor", "checkpoint tensor does not fit its storage"},
    {ST_E_LORA, "lora", "LoRA adapter inconsistent with itself or the model"},
    {ST_E_GGUF, "gguf", "malformed GGUF file"},
};

const char *st_code_name(int code)
{
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].code == code)
            return code_table[i].name;
    return "unknown";
}

const char *st_code_description(int code)
{
    for (size_t i = 0; i < sizeof code_table / sizeof code_table[0]; i++)
        if (code_table[i].code == code)
            return code_table[i].description;
    return "unknown error";
}

const char *st_version(void)
{
    return ST_VERSION_STRING;
}

int st_fail(st_error *err, int code, uint64_t offset, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        err->offset = offset;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}
