/* Lexical scan of TorchScript source (the code/ folder of a torch.jit.save
 * archive) for the operators it calls. torch.jit.load compiles and runs
 * this code; here it is only tokenised, never parsed into anything that
 * could run: a call is a dotted name whose first part is `torch` or `ops`
 * (`torch.relu`, `ops.aten.add`, `torch.ops.myns.op`) followed by `(`.
 * Comments and string literals (quotes, triple quotes, escapes) are
 * skipped so text inside them is not counted.
 *
 * The lexer is a byte-at-a-time state machine fed in chunks of any size
 * (the archive's entries are inflated in 64 KiB pieces), so memory is the
 * lexer struct whatever the file; a name longer than its buffer is
 * dropped, not grown. Feeding the same bytes in different chunkings gives
 * the same calls (fuzz_tscode checks it). */
#include "ckpt/ckpt_internal.h"

#include <string.h>

enum { LX_NORMAL, LX_NAME, LX_AFTER, LX_COMMENT, LX_QUOTES, LX_STRING };

void st_ts_lex_init(st_ts_lexer *lx)
{
    memset(lx, 0, sizeof *lx);
    lx->state = LX_NORMAL;
}

static bool ident_start(unsigned c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool ident_char(unsigned c)
{
    return ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_call_name(const char *s, size_t n)
{
    return (n > 6 && memcmp(s, "torch.", 6) == 0) || (n > 4 && memcmp(s, "ops.", 4) == 0);
}

/* One byte; returns the callback's non-zero result, if any. */
static int step(st_ts_lexer *lx, unsigned c, st_ts_call_fn fn, void *ctx)
{
    for (;;) {
        switch (lx->state) {
        case LX_NORMAL:
            if (c == '#') {
                lx->state = LX_COMMENT;
            } else if (c == '\'' || c == '"') {
                lx->quote = (char)c;
                lx->qrun = 1;
                lx->state = LX_QUOTES;
            } else if (ident_start(c) && !ident_char(lx->prev) && lx->prev != '.') {
                lx->len = 0;
                lx->overflow = false;
                lx->name[lx->len++] = (char)c;
                lx->state = LX_NAME;
            }
            lx->prev = (unsigned char)c;
            return 0;
        case LX_NAME:
            if (ident_char(c) || (c == '.' && lx->len && lx->name[lx->len - 1] != '.')) {
                if (lx->len < sizeof lx->name)
                    lx->name[lx->len++] = (char)c;
                else
                    lx->overflow = true;
                lx->prev = (unsigned char)c;
                return 0;
            }
            lx->state = LX_AFTER;
            continue; /* this byte ends the name; see what follows */
        case LX_AFTER:
            if (c == ' ' || c == '\t')
                return 0;
            lx->state = LX_NORMAL;
            if (c == '(' && !lx->overflow && lx->len && lx->name[lx->len - 1] != '.' &&
                is_call_name(lx->name, lx->len)) {
                int rc = fn(ctx, lx->name, lx->len);
                if (rc)
                    return rc;
            }
            continue;
        case LX_COMMENT:
            if (c == '\n') {
                lx->state = LX_NORMAL;
                lx->prev = '\n';
            }
            return 0;
        case LX_QUOTES: /* 1 or 2 quotes so far: which kind of literal? */
            if (c == (unsigned char)lx->quote && lx->qrun < 3) {
                if (++lx->qrun == 3) {
                    lx->triple = true;
                    lx->qrun = 0;
                    lx->escape = false;
                    lx->state = LX_STRING;
                }
                return 0;
            }
            if (lx->qrun == 2) { /* '' : an empty literal, then this byte */
                lx->state = LX_NORMAL;
                lx->prev = (unsigned char)lx->quote;
                continue;
            }
            lx->triple = false;
            lx->qrun = 0;
            lx->escape = false;
            lx->state = LX_STRING;
            continue;
        case LX_STRING:
            if (lx->escape) {
                lx->escape = false;
                lx->qrun = 0;
                return 0;
            }
            if (c == '\\') {
                lx->escape = true;
                lx->qrun = 0;
                return 0;
            }
            if (c == (unsigned char)lx->quote) {
                if (!lx->triple || ++lx->qrun == 3) {
                    lx->state = LX_NORMAL;
                    lx->prev = (unsigned char)c;
                }
                return 0;
            }
            lx->qrun = 0;
            if (c == '\n' && !lx->triple) { /* unterminated: the line ends it */
                lx->state = LX_NORMAL;
                lx->prev = '\n';
            }
            return 0;
        default:
            lx->state = LX_NORMAL;
            return 0;
        }
    }
}

int st_ts_lex(st_ts_lexer *lx, const void *data, size_t n, st_ts_call_fn fn, void *ctx)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        int rc = step(lx, p[i], fn, ctx);
        if (rc)
            return rc;
    }
    return 0;
}
