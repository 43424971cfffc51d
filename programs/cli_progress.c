/* The progress line of long commands: on stderr when it is a terminal
 * (or with --progress), never with --quiet, so scripts and --json output
 * are unaffected. One line, redrawn at most 10 times a second, cleared at
 * the end: "convert  42%  1.2 GiB / 2.9 GiB  850 MiB/s  ETA 2s". */
#include "cli.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct cli_progress {
    const char *label;
    const char *unit;   /* counted things ("layers"); NULL: bytes */
    double start, last;
    bool drawn;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

cli_progress *cli_progress_new(const char *label, const cli_common *common)
{
    if (common->quiet || (!common->progress && isatty(STDERR_FILENO) != 1))
        return NULL;
    cli_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL; /* no progress line is no failure */
    p->label = label;
    p->start = now();
    return p;
}

void cli_progress_set_unit(cli_progress *p, const char *unit)
{
    if (p)
        p->unit = unit;
}

int cli_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    cli_progress *p = ctx;
    if (!p)
        return 0;
    double t = now();
    if (t - p->last < 0.1 && done != total)
        return 0;
    p->last = t;
    char a[32], b[32], r[32];
    double secs = t - p->start;
    double rate = secs > 0 ? (double)done / secs : 0;
    fprintf(stderr, "\r\033[K%s", p->label);
    if (total)
        fprintf(stderr, " %3u%%", (unsigned)(done >= total ? 100 : done * 100 / total));
    if (p->unit) {
        fprintf(stderr, "  %llu", (unsigned long long)done);
        if (total)
            fprintf(stderr, " / %llu", (unsigned long long)total);
        fprintf(stderr, " %s", p->unit);
        if (rate > 0)
            fprintf(stderr, "  %.1f/s", rate);
    } else {
        fprintf(stderr, "  %s", cli_human_size(done, a, sizeof a));
        if (total)
            fprintf(stderr, " / %s", cli_human_size(total, b, sizeof b));
        if (rate > 0)
            fprintf(stderr, "  %s/s", cli_human_size((uint64_t)rate, r, sizeof r));
    }
    if (total && rate > 0 && done < total)
        fprintf(stderr, "  ETA %.0fs", (double)(total - done) / rate);
    fflush(stderr);
    p->drawn = true;
    return 0;
}

st_output_hooks cli_output_hooks(cli_progress *p)
{
    st_output_hooks h = {.progress = cli_progress_cb, .progress_ctx = p, .temp = cli_temp_hook};
    return h;
}

void cli_progress_clear(cli_progress *p)
{
    if (p && p->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->drawn = false;
        p->last = 0;
    }
    if (p)
        p->start = now();
}

void cli_progress_done(cli_progress *p)
{
    cli_progress_clear(p);
    free(p);
}
