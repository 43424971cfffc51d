/* Lexical scan of TorchScript source (the code/ folder of a torch.jit.save
 * archive) for the operators it calls. torch.jit.load compiles and runs
 * this code; here it is only tokenised, never parsed into anything that
 * could run: a call is a dotted name whose first part is `torch` or `ops`
 * (`torch.relu`, `ops.aten.add`, `torch.ops.myns.op`) followed by `(`.
 * Comments and string literals (quotes, triple quotes, escapes) are
 * skipped so text inside them is not counted.
 *
 * Two facts about the module classes are also read, because state_dict()
 * depends on them: each `class NAME` at the start of a line, and the
 * string lists TorchScript prints as a class's first lines,
 * `  __parameters__ = ["weight", "bias", ]` and `  __buffers__ = [...]`.
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

/* A name token ended (the name is still in lx->name). */
static int name_done(st_ts_lexer *lx, const st_ts_sink *sink)
{
    bool want = lx->want_class;
    lx->want_class = false;
    if (lx->overflow)
        return 0;
    if (want) {
        if (!memchr(lx->name, '.', lx->len) && sink->cls)
            return sink->cls(sink->ctx, lx->name, lx->len);
        return 0;
    }
    if (lx->tok_col == 0 && lx->len == 5 && memcmp(lx->name, "class", 5) == 0)
        lx->want_class = true;
    else if (lx->tok_first && lx->tok_col > 0 && lx->len == 14 && memcmp(lx->name, "__parameters__", 14) == 0)
        lx->attr_kind = 1, lx->attr_stage = 0;
    else if (lx->tok_first && lx->tok_col > 0 && lx->len == 11 && memcmp(lx->name, "__buffers__", 11) == 0)
        lx->attr_kind = 2, lx->attr_stage = 0;
    return 0;
}

/* One byte; returns the callback's non-zero result, if any. */
static int step(st_ts_lexer *lx, unsigned c, const st_ts_sink *sink)
{
    int rc;
    for (;;) {
        switch (lx->state) {
        case LX_NORMAL:
            if (lx->attr_kind && c != ' ') { /* `__parameters__ = ["a", "b", ]` */
                if (c == '=' && lx->attr_stage == 0)
                    lx->attr_stage = 1;
                else if (c == '[' && lx->attr_stage == 1)
                    lx->attr_stage = 2;
                else if (!(lx->attr_stage == 2 && (c == ',' || c == '\'' || c == '"')))
                    lx->attr_kind = 0; /* the list ends (']') or was no list */
            }
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                lx->tok_first = !lx->line_tok;
                lx->line_tok = true;
            }
            if (c == '#') {
                lx->state = LX_COMMENT;
            } else if (c == '\'' || c == '"') {
                lx->quote = (char)c;
                lx->qrun = 1;
                lx->state = LX_QUOTES;
            } else if (ident_start(c) && !ident_char(lx->prev) && lx->prev != '.') {
                lx->tok_col = lx->col;
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
            if ((rc = name_done(lx, sink)))
                return rc;
            continue; /* this byte ends the name; see what follows */
        case LX_AFTER:
            if (c == ' ' || c == '\t') {
                lx->prev = (unsigned char)c;
                return 0;
            }
            lx->state = LX_NORMAL;
            if (c == '(' && !lx->overflow && lx->len && lx->name[lx->len - 1] != '.' &&
                is_call_name(lx->name, lx->len)) {
                if (sink->call && (rc = sink->call(sink->ctx, lx->name, lx->len)))
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
            lx->len = 0; /* an attribute name is collected here */
            lx->overflow = false;
            continue;
        case LX_STRING:
            if (lx->escape) {
                lx->escape = false;
                lx->qrun = 0;
                return 0;
            }
            if (c == '\\') {
                lx->escape = true;
                lx->overflow = true; /* no escapes in attribute names */
                lx->qrun = 0;
                return 0;
            }
            if (c == (unsigned char)lx->quote) {
                if (!lx->triple || ++lx->qrun == 3) {
                    lx->state = LX_NORMAL;
                    lx->prev = (unsigned char)c;
                    if (!lx->triple && lx->attr_kind && lx->attr_stage == 2 && !lx->overflow && lx->len &&
                        sink->attr && (rc = sink->attr(sink->ctx, lx->attr_kind, lx->name, lx->len)))
                        return rc;
                }
                return 0;
            }
            lx->qrun = 0;
            if (!lx->triple) {
                if (lx->len < sizeof lx->name)
                    lx->name[lx->len++] = (char)c;
                else
                    lx->overflow = true;
            }
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

int st_ts_lex(st_ts_lexer *lx, const void *data, size_t n, const st_ts_sink *sink)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        int rc = step(lx, p[i], sink);
        if (rc)
            return rc;
        if (p[i] == '\n') {
            lx->col = 0;
            lx->line_tok = false;
        } else if (lx->col < UINT32_MAX) {
            lx->col++;
        }
    }
    return 0;
}
