/* What an interrupted run leaves behind: nothing but the old file. Every
 * temporary file the library creates for this process is reported through
 * an st_temp_fn into a fixed table; SIGINT, SIGTERM and SIGHUP unlink every
 * file in it, then the signal is raised again with its default action, so
 * the exit status still says which signal ended the run (as zstd's CLI
 * does for its partial output). SIGXFSZ is ignored, so a file-size limit
 * makes write() fail with EFBIG and the normal error path runs (message,
 * temporary file removed, exit 2) instead of the process being killed.
 *
 * The handler only reads the table and calls unlink and raise, which are
 * async-signal-safe. A slot is filled with the signals blocked, then
 * marked used; it is marked free before its path may change. */
#include "cli.h"

#include <limits.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#define TEMP_SLOTS 64

static char temp_paths[TEMP_SLOTS][PATH_MAX];
static volatile sig_atomic_t temp_used[TEMP_SLOTS];

static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP};

static void on_signal(int sig)
{
    for (int i = 0; i < TEMP_SLOTS; i++)
        if (temp_used[i])
            unlink(temp_paths[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void block_signals(sigset_t *old)
{
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof cleanup_signals / sizeof cleanup_signals[0]; i++)
        sigaddset(&set, cleanup_signals[i]);
    sigprocmask(SIG_BLOCK, &set, old);
}

void cli_temp_hook(void *ctx, const char *path, int created)
{
    (void)ctx;
    size_t len = strlen(path);
    if (len >= PATH_MAX)
        return; /* cannot happen for a path the kernel accepted */
    sigset_t old;
    block_signals(&old);
    for (int i = 0; i < TEMP_SLOTS; i++) {
        if (created && !temp_used[i]) {
            memcpy(temp_paths[i], path, len + 1);
            temp_used[i] = 1;
            break;
        }
        if (!created && temp_used[i] && strcmp(temp_paths[i], path) == 0) {
            temp_used[i] = 0;
            break;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
}

void cli_signals_init(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof cleanup_signals / sizeof cleanup_signals[0]; i++)
        sigaddset(&sa.sa_mask, cleanup_signals[i]);
    for (size_t i = 0; i < sizeof cleanup_signals / sizeof cleanup_signals[0]; i++) {
        struct sigaction prev;
        /* A signal ignored by whoever started us (nohup) stays ignored. */
        if (sigaction(cleanup_signals[i], NULL, &prev) == 0 && prev.sa_handler == SIG_IGN)
            continue;
        sigaction(cleanup_signals[i], &sa, NULL);
    }
    signal(SIGXFSZ, SIG_IGN);
}
