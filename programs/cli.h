/*
 * Shared declarations of the `safetensors` command-line tool.
 *
 * Every command is `int cmd_NAME(int argc, char **argv)` in programs/cmd_NAME.c,
 * listed in the table of programs/main.c. argv[0] is "safetensors NAME" (so
 * getopt's own messages name the command); the return value is the exit code.
 *
 * Exit codes, the same for every command:
 *   0  success (for check: every file valid)
 *   1  an input file is not a valid safetensors file (a validation verdict)
 *   2  usage error, or an I/O or other error (file missing, unreadable, ...)
 */
#ifndef ST_CLI_H
#define ST_CLI_H

#include "safetensors.h"
#include "common/jsonval.h"
#include "format/stream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_INVALID 1
#define CLI_EXIT_ERROR 2

#define CLI_NAME "safetensors"

/* ---- commands (one file each) ---- */
int cmd_check(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_hash(int argc, char **argv);
int cmd_identify(int argc, char **argv);
int cmd_meta(int argc, char **argv);
int cmd_diff(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_install(int argc, char **argv);
int cmd_scan(int argc, char **argv);
int cmd_split(int argc, char **argv);
int cmd_join(int argc, char **argv);

/* ---- multi-file models (cli_model.c) ---- */

/* True for an argument the commands open with st_model_open: a folder, or
 * a name ending in ".json" (an index). */
bool cli_is_model_path(const char *path);

/* st_model_open; on failure prints the error as cli_open_file does and
 * returns its exit code (1 invalid, 2 I/O); 0 with *out set on success. */
int cli_open_model(const char *path, st_model **out);

/* cli_open_model choosing weight variant `variant` (NULL: none) in a
 * folder, as st_model_open_variant does. */
int cli_open_model_variant(const char *path, const char *variant, st_model **out);

/* st_identify_tensors over a model's whole tensor table and metadata (the
 * value rules read through st_model_tensor_read). */
int cli_identify_model(const st_model *m, st_identity *id, st_error *err);


int cmd_lora(int argc, char **argv);

/* ---- usage and errors ---- */

/* Prints `usage` to stdout and returns 0: what every `--help` does. */
int cli_help(const char *usage);

/* Prints "safetensors: <message>" and then `usage` on stderr; returns 2.
 * fmt may be NULL (getopt already said what is wrong). */
int cli_usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "safetensors: <message>" on stderr. */
void cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "safetensors: PATH: CODE_NAME: message" on stderr. */
void cli_print_error(const char *path, const st_error *err);

/* A library error's message, with " (at byte N)" appended when the error
 * has an offset the message does not already give. Writes to buf. */
const char *cli_error_message(const st_error *err, char *buf, size_t cap);

/* Opens and validates a file (st_open). On failure prints the error as
 * cli_print_error does and returns its exit code (1 invalid, 2 I/O);
 * returns 0 with *out set on success. */
int cli_open_file(const char *path, unsigned flags, st_file **out);

/* Exit code for an st_code: 1 for a verdict on a file (cli_is_validation_code),
 * else 2 (usage, I/O, memory, unsupported). */
int cli_exit_code(int code);

/* True for the codes that are a verdict on a file's contents, any format:
 * safetensors validation (1..12) and checkpoint (40..45: ckpt_format, zip,
 * pickle, pickle_limit, unsafe, ckpt_tensor). */
bool cli_is_validation_code(int code);

/* Resets getopt so a command can parse its own argv (optind = 0 also makes
 * glibc forget a previous scan). */
void cli_getopt_reset(void);

/* Flushes stdout; on a write error (disk full, closed pipe) prints it and
 * returns 2, else returns rc. Called by main after every command. */
int cli_finish_stdout(int rc);

/* ---- options (cli_options.c) ---- */

/* Shared flags a command takes (bits of cli_command.which); --help always. */
#define CLI_OPT_JSON 0x1u     /* --json                                    */
#define CLI_OPT_PROGRESS 0x2u /* -q/--quiet and --progress                 */
#define CLI_OPT_OUTPUT 0x4u   /* -o/--output OUT                           */
#define CLI_OPT_VARIANT 0x8u  /* --variant NAME (a folder's weight variant) */

/* The shared flags, as parsed. */
typedef struct cli_common {
    bool json;
    bool quiet;        /* no progress line                                 */
    bool progress;     /* a progress line even when stderr is no terminal  */
    const char *output;/* -o OUT, or NULL                                  */
    const char *variant;/* --variant NAME, or NULL                         */
    int first_arg;     /* argv index of the first operand                  */
} cli_common;

struct option;

/* A command's options: its usage text, the shared flags it takes, and its
 * own (a getopt_long table ending in a zeroed entry, plus short letters),
 * handed to on_option(ctx, val, optarg), which returns 0 or prints a usage
 * error and returns non-zero. */
typedef struct cli_command {
    const char *usage;
    unsigned which;
    const struct option *options;
    const char *shortopts;
    int (*on_option)(void *ctx, int val, const char *arg);
    bool in_order;     /* stop at the first operand (subcommands)          */
} cli_command;

/* Parses argv. Returns -1 to go on (operands from common->first_arg), or
 * the exit code to return now: 0 after --help, 2 after a usage error. */
int cli_parse_options(int argc, char **argv, const cli_command *cmd, cli_common *common,
                      void *ctx);

/* Prints a library error ("safetensors: PATH: CODE: message", or without
 * PATH when NULL) and returns its exit code (1 invalid input, else 2). */
int cli_report(const char *path, int rc, const st_error *err);

/* ---- the progress line (cli_progress.c) ---- */

typedef struct cli_progress cli_progress;

/* A progress line labelled `label` when stderr is a terminal or --progress
 * was given, and not --quiet; NULL (no line) otherwise. */
cli_progress *cli_progress_new(const char *label, const cli_common *common);

/* Counts things (unit, e.g. "layers") instead of bytes. NULL allowed. */
void cli_progress_set_unit(cli_progress *p, const char *unit);

/* An st_progress_fn drawing the line; ctx is the cli_progress (NULL: no-op). */
int cli_progress_cb(void *ctx, uint64_t done, uint64_t total);

/* The hooks every writing command passes to the library: the progress
 * line p (NULL: none) and the signal clean-up's temporary-file table. */
st_output_hooks cli_output_hooks(cli_progress *p);

/* Clears the line (before printing a result); the next draw starts a new
 * rate measurement. NULL allowed. */
void cli_progress_clear(cli_progress *p);

/* Clears the line and frees p (NULL allowed). */
void cli_progress_done(cli_progress *p);

/* ---- interrupted runs (cli_signals.c) ---- */

/* Installs the SIGINT/SIGTERM/SIGHUP handlers that remove this process's
 * temporary files, and ignores SIGXFSZ. Called once by main. */
void cli_signals_init(void);

/* An st_temp_fn recording temporary files for those handlers: put it in
 * the st_output_hooks (or options) of every library call that writes. */
void cli_temp_hook(void *ctx, const char *path, int created);

/* ---- JSON output ---- */

/* Writes bytes as a JSON string, quotes included. Valid UTF-8 is kept as is;
 * ", \ and control characters (NUL included) are escaped; each byte of an
 * invalid UTF-8 sequence becomes U+FFFD, so the output is always valid JSON. */
void cli_json_string(FILE *out, const char *s, size_t len);

/* Same for a NUL-terminated string; NULL prints null. */
void cli_json_cstr(FILE *out, const char *s);

/* Writes an unsigned integer (JSON numbers are exact up to 2^53 in most
 * parsers; Python's json reads every u64 exactly). */
void cli_json_u64(FILE *out, uint64_t v);

/* Writes a shape as a JSON array: [2,3]. */
void cli_json_shape(FILE *out, const uint64_t *shape, uint32_t rank);

/* ---- human-readable numbers ---- */

/* "512 B", "2.5 KiB", "1.9 MiB", "6.5 GiB", "1.2 TiB". Returns buf. */
const char *cli_human_size(uint64_t bytes, char *buf, size_t cap);

/* Parameter counts: "987", "12.3K", "859.5M", "2.6B", "1.1T". Returns buf. */
const char *cli_human_count(uint64_t n, char *buf, size_t cap);

/* Thousands separators: "1,234,567". Returns buf. */
const char *cli_grouped(uint64_t n, char *buf, size_t cap);

/* A shape as text: "[320, 4]", "[]" for a scalar. Returns a malloc'ed
 * string (NULL when out of memory). */
char *cli_shape_text(const uint64_t *shape, uint32_t rank);

/* ---- dtypes and shapes ---- */

/* A --dtype argument: a floating dtype's name in any case ("f16", "BF16",
 * "f8_e4m3"), or an alias ("fp16", "half", "bfloat16", "float", "double",
 * ...), that the conversion engine can produce from F32. */
bool cli_parse_dtype(const char *arg, st_dtype *out);

/* A --pad argument: 0, or a size as st_parse_size reads it (4096, 64KiB,
 * 1MB), at most the header limit (ST_MAX_HEADER_SIZE). */
bool cli_parse_pad(const char *arg, uint64_t *out);


/* ---- names and text ---- */

/* A tensor name or metadata string made printable for a terminal: control
 * bytes (C0, DEL, C1), backslash and invalid UTF-8 bytes become \xNN;
 * zero-width and bidirectional-control characters and the BOM become
 * \uXXXX (so a name cannot pass for another); other UTF-8 is kept. Every
 * backslash in the result starts an escape. Returns a malloc'ed
 * NUL-terminated string (NULL when out of memory). */
char *cli_printable(const char *s, size_t len);

/* The same for a message that already escapes (the library's messages
 * quote names with \xNN): backslashes are kept, the rest is made safe. */
char *cli_printable_message(const char *s);

/* Display columns of a printable string (UTF-8 characters count as one). */
size_t cli_text_columns(const char *s);

/* Shortens a printable string to at most `cols` columns by replacing its
 * middle with "...", keeping both ends (names differ at the end as often
 * as at the start). Modifies s in place; cols >= 5 is assumed. */
void cli_elide_middle(char *s, size_t cols);

/* Byte-wise glob match of `name` (name_len bytes, may contain NUL) against
 * the NUL-terminated `pattern`: `*` any run of bytes, `?` one byte,
 * `[abc]`, `[a-z]`, `[!x]` or `[^x]` one byte of a set, `\c` a literal c.
 * `*` also matches "." and "/" (tensor names are not paths). Linear-time
 * backtracking: no pattern can make it slow. */
bool cli_glob_match(const char *pattern, const char *name, size_t name_len);

/* ---- terminal ---- */

/* True when stdout is a terminal. */
bool cli_stdout_is_tty(void);

/* Width of the terminal on stdout, else $COLUMNS, else 80. */
int cli_terminal_width(void);

/* JSON values inside metadata: lib/common/jsonval.h (st_jv_*, st_span). */

/* 1 when both paths name the same existing file (the library's check). */
#define cli_same_file st_op_same_file

#endif
