/* Installing a model file where a UI looks for files of its kind
 * (st_identify tells the kind), with its sidecar files. Nothing is
 * ever overwritten: every destination is checked before anything is done,
 * and each file is put in place with an operation that fails if the name
 * exists (renameat2 RENAME_NOREPLACE, link, symlink), so a file that
 * appears meanwhile is not clobbered either. A copy is written to a
 * temporary file in the destination folder, synced, then renamed. If any
 * step fails, what this run already installed is removed again.
 *
 * Folders, from the UIs' sources:
 *  A1111 (modules/paths, shared options): models/Stable-diffusion,
 *    models/Lora, models/VAE, embeddings, models/ControlNet (sd-webui-
 *    controlnet's folder).
 *  Forge: as A1111, plus models/text_encoder (modules/sd_models.py module
 *    paths); UNet/DiT-only files load from models/Stable-diffusion.
 *  ComfyUI (folder_paths.py): models/checkpoints, models/diffusion_models,
 *    models/vae, models/text_encoders, models/loras, models/embeddings,
 *    models/controlnet.
 *  SD.Next (modules/shared.py options ckpt_dir, unet_dir, te_dir,
 *    lora_dir, vae_dir, embeddings_dir, control_dir + "controlnet"):
 *    models/Stable-diffusion, models/UNET, models/Text-encoder, models/Lora,
 *    models/VAE, models/embeddings, models/control/controlnet.
 */
#include "common/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const ui_names[ST_UI_COUNT] = {"a1111", "forge", "comfyui", "sdnext"};
#define UI_COMFYUI ST_UI_COMFYUI
#define UI_COUNT ST_UI_COUNT

/* Folder per kind (st_model_kind order) and UI; NULL: the UI has none. */
static const char *const folders[][UI_COUNT] = {
    [ST_KIND_CHECKPOINT] = {"models/Stable-diffusion", "models/Stable-diffusion",
                            "models/checkpoints", "models/Stable-diffusion"},
    [ST_KIND_DIFFUSION_MODEL] = {NULL, "models/Stable-diffusion", "models/diffusion_models",
                                 "models/UNET"},
    [ST_KIND_VAE] = {"models/VAE", "models/VAE", "models/vae", "models/VAE"},
    [ST_KIND_TEXT_ENCODER] = {NULL, "models/text_encoder", "models/text_encoders",
                              "models/Text-encoder"},
    [ST_KIND_LORA] = {"models/Lora", "models/Lora", "models/loras", "models/Lora"},
    [ST_KIND_EMBEDDING] = {"embeddings", "embeddings", "models/embeddings", "models/embeddings"},
    [ST_KIND_CONTROLNET] = {"models/ControlNet", "models/ControlNet", "models/controlnet",
                            "models/control/controlnet"},
};
#define NKINDS (sizeof folders / sizeof folders[0])

static const char *const sidecars[] = {
    ".yaml", ".json", ".civitai.info", ".preview.png", ".preview.jpg", ".preview.jpeg",
    ".preview.webp",
};
#define NSIDECARS (sizeof sidecars / sizeof sidecars[0])

#define MAX_ITEMS (1 + NSIDECARS)

struct st_install_plan {
    st_install_item items[MAX_ITEMS];
    size_t n;
    char *dir;          /* destination folder */
    st_model_kind kind;
    st_identity id;     /* what st_identify said (kind forced: zeroed) */
    int method;         /* set by st_install_execute, for undo */
    st_output_hooks hooks;
    bool done[MAX_ITEMS];
};

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    size_t o = la;
    if (o && s[o - 1] != '/')
        s[o++] = '/';
    memcpy(s + o, b, lb + 1);
    return s;
}

/* mkdir -p below root (root itself must exist). Returns 0 or errno. */
static int make_dirs(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return ENOMEM;
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                rc = errno;
                break;
            }
            *s = c;
            if (c == 0)
                break;
        }
    }
    if (rc == 0) {
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
            rc = ENOTDIR;
    }
    free(p);
    return rc;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int rc = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return rc;
}

/* Progress over every byte an execution copies. */
typedef struct copy_progress {
    const st_output_hooks *hooks;
    uint64_t done, total;
} copy_progress;

#define COPY_STEP ((uint64_t)64 << 20) /* bytes between progress reports */

static int report(copy_progress *p, st_error *err)
{
    if (p && p->hooks && p->hooks->progress &&
        p->hooks->progress(p->hooks->progress_ctx, p->done, p->total) != 0)
        return st_fail(err, ST_E_CALLBACK, ST_NO_OFFSET, "stopped by the progress callback");
    return ST_OK;
}

/* Copies src to dst through the library's atomic output file (temporary
 * file in dst's folder, reported to the temp hook, synced, renamed without
 * replacing: EEXIST if dst appeared meanwhile). */
static int copy_atomic(const char *src, const char *dst, copy_progress *p, st_error *err)
{
    char eb[128];
    int in = open(src, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) != 0) {
        int e = errno;
        if (in >= 0)
            close(in);
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot read '%s': %s", src,
                       st_errno_text(e, eb, sizeof eb));
    }
    const st_output_hooks *h = p ? p->hooks : NULL;
    st_outfile o;
    uint64_t size = (uint64_t)st.st_size;
    int rc = st_outfile_open(&o, dst, size, h ? h->temp : NULL, h ? h->temp_ctx : NULL, err);
    if (rc != ST_OK) {
        close(in);
        return rc;
    }
    mode_t um = umask(0);
    umask(um);
    /* the mode cp(1) gives a new file */
    if (fchmod(o.fd, 0666 & ~um) != 0) {
        int e = errno;
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot set the mode of '%s': %s", o.tmp,
                     st_errno_text(e, eb, sizeof eb));
    }
    for (uint64_t off = 0; rc == ST_OK && off < size;) {
        uint64_t n = size - off < COPY_STEP ? size - off : COPY_STEP;
        rc = st_outfile_copy_range(&o, in, off, n, err);
        off += n;
        if (rc == ST_OK && p) {
            p->done += n;
            rc = report(p, err);
        }
    }
    close(in);
    if (rc != ST_OK) {
        st_outfile_abort(&o);
        return rc;
    }
    return st_outfile_commit_noreplace(&o, err);
}

static int item_failed(const char *verb, const st_install_item *it, int e, st_error *err)
{
    char eb[128];
    return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot %s '%s' to '%s': %s", verb, it->src,
                   it->dst, st_errno_text(e, eb, sizeof eb));
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0 ? (uint64_t)st.st_size : 0;
}

static int do_item(const st_install_plan *ins, const st_install_item *it, copy_progress *p,
                   st_error *err)
{
    switch (ins->method) {
    case ST_INSTALL_COPY:
        return copy_atomic(it->src, it->dst, p, err);
    case ST_INSTALL_MOVE: {
        uint64_t size = file_size(it->src);
        int e = st_rename_noreplace(it->src, it->dst);
        if (e == 0) {
            p->done += size;
            return report(p, err);
        }
        if (e != EXDEV)
            return item_failed("move", it, e, err);
        int rc = copy_atomic(it->src, it->dst, p, err);
        if (rc != ST_OK)
            return rc;
        if (unlink(it->src) != 0) {
            e = errno;
            unlink(it->dst); /* keep one copy, the original */
            return item_failed("move", it, e, err);
        }
        return ST_OK;
    }
    case ST_INSTALL_LINK: {
        char *abs = realpath(it->src, NULL);
        int e = !abs ? errno : symlink(abs, it->dst) == 0 ? 0 : errno;
        free(abs);
        return e ? item_failed("link", it, e, err) : ST_OK;
    }
    }
    return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_install_execute: bad method");
}

/* Takes back what this run installed (a move is moved back). */
static void undo(st_install_plan *ins)
{
    for (size_t i = ins->n; i-- > 0;) {
        if (!ins->done[i])
            continue;
        if (ins->method == ST_INSTALL_MOVE) {
            const char *src = ins->items[i].src, *dst = ins->items[i].dst;
            int rc = st_rename_noreplace(dst, src);
            if (rc == EXDEV) {
                /* moved across file systems: copy it back, then remove */
                st_error ignored;
                rc = copy_atomic(dst, src, NULL, &ignored) == ST_OK ? 0 : EIO;
                if (rc == 0)
                    unlink(dst);
            }
            if (rc != 0)
                continue; /* leave it where it is rather than lose it */
        } else {
            unlink(ins->items[i].dst);
        }
        ins->done[i] = false;
    }
}

static bool exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

static bool is_regular(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Fills ins->items: FILE and the sidecars next to it. */
static int plan_items(st_install_plan *ins, const char *file, const char *dir)
{
    const char *slash = strrchr(file, '/');
    const char *base = slash ? slash + 1 : file;
    size_t srcdir_len = slash ? (size_t)(slash - file + 1) : 0;
    size_t stem_len = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base)
        stem_len = (size_t)(dot - base);
    ins->items[0].src = strdup(file);
    ins->items[0].dst = join(dir, base);
    ins->n = 1;
    if (!ins->items[0].src || !ins->items[0].dst)
        return ENOMEM;
    for (size_t i = 0; i < NSIDECARS; i++) {
        size_t sl = strlen(sidecars[i]);
        char *src = malloc(srcdir_len + stem_len + sl + 1);
        char *name = malloc(stem_len + sl + 1);
        if (!src || !name) {
            free(src);
            free(name);
            return ENOMEM;
        }
        memcpy(src, file, srcdir_len);
        memcpy(src + srcdir_len, base, stem_len);
        memcpy(src + srcdir_len + stem_len, sidecars[i], sl + 1);
        memcpy(name, base, stem_len);
        memcpy(name + stem_len, sidecars[i], sl + 1);
        if (!is_regular(src) || strcmp(src, file) == 0) {
            free(src);
            free(name);
            continue;
        }
        char *dst = join(dir, name);
        free(name);
        if (!dst) {
            free(src);
            return ENOMEM;
        }
        ins->items[ins->n].src = src;
        ins->items[ins->n].dst = dst;
        ins->n++;
    }
    return 0;
}

const char *st_ui_name(int ui)
{
    return ui >= 0 && ui < ST_UI_COUNT ? ui_names[ui] : NULL;
}

int st_ui_from_name(const char *name, int *ui)
{
    for (int i = 0; name && i < ST_UI_COUNT; i++)
        if (strcmp(name, ui_names[i]) == 0) {
            *ui = i;
            return ST_OK;
        }
    return ST_E_NOT_FOUND;
}

const char *st_install_folder(int ui, st_model_kind kind)
{
    if (ui < 0 || ui >= ST_UI_COUNT || (size_t)kind >= NKINDS)
        return NULL;
    return folders[kind][ui];
}

int st_install_kind_from_name(const char *name, st_model_kind *kind)
{
    for (size_t k = 1; name && k < NKINDS; k++)
        if (folders[k][UI_COMFYUI] && strcmp(name, st_kind_name((st_model_kind)k)) == 0) {
            *kind = (st_model_kind)k;
            return ST_OK;
        }
    return ST_E_NOT_FOUND;
}

int st_install_plan_new(const char *file, int ui, const char *root, st_model_kind kind,
                        st_install_plan **out, st_error *err)
{
    if (!out || !file || !root || ui < 0 || ui >= ST_UI_COUNT)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_install_plan_new: bad argument");
    *out = NULL;
    st_install_plan *p = calloc(1, sizeof *p);
    if (!p)
        return st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
    st_file *f;
    int rc = st_open(file, ST_OPEN_PREAD, &f, err);
    if (rc != ST_OK) {
        free(p);
        return rc;
    }
    if (kind == ST_KIND_UNKNOWN) {
        rc = st_identify(f, &p->id, err);
        kind = p->id.kind;
    }
    st_close(f);
    if (rc != ST_OK)
        goto fail;
    if (kind == ST_KIND_UNKNOWN || (size_t)kind >= NKINDS) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET,
                     "cannot tell what kind of model this is; nothing installed (use --as KIND)");
        goto fail;
    }
    const char *sub = folders[kind][ui];
    if (!sub) {
        rc = st_fail(err, ST_E_UNSUPPORTED, ST_NO_OFFSET, "%s has no folder for a %s",
                     ui_names[ui], st_kind_name(kind));
        goto fail;
    }
    struct stat st;
    if (stat(root, &st) != 0) {
        int e = errno;
        char eb[128];
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "root '%s': %s", root,
                     e == ENOENT ? "no such folder" : st_errno_text(e, eb, sizeof eb));
        goto fail;
    }
    if (!S_ISDIR(st.st_mode)) {
        rc = st_fail(err, ST_E_IO, ST_NO_OFFSET, "root '%s': not a folder", root);
        goto fail;
    }
    p->kind = kind;
    p->dir = join(root, sub);
    if (!p->dir || plan_items(p, file, p->dir) != 0) {
        rc = st_fail(err, ST_E_NOMEM, ST_NO_OFFSET, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < p->n; i++)
        p->items[i].exists = exists(p->items[i].dst);
    *out = p;
    return ST_OK;
fail:
    st_install_plan_free(p);
    return rc;
}

size_t st_install_plan_count(const st_install_plan *plan)
{
    return plan ? plan->n : 0;
}

const st_install_item *st_install_plan_item(const st_install_plan *plan, size_t i)
{
    return plan && i < plan->n ? &plan->items[i] : NULL;
}

const char *st_install_plan_dir(const st_install_plan *plan)
{
    return plan ? plan->dir : NULL;
}

st_model_kind st_install_plan_kind(const st_install_plan *plan)
{
    return plan ? plan->kind : ST_KIND_UNKNOWN;
}

const st_identity *st_install_plan_identity(const st_install_plan *plan)
{
    return plan ? &plan->id : NULL;
}

void st_install_plan_set_hooks(st_install_plan *plan, const st_output_hooks *hooks)
{
    if (plan) {
        if (hooks)
            plan->hooks = *hooks;
        else
            memset(&plan->hooks, 0, sizeof plan->hooks);
    }
}

int st_install_execute(st_install_plan *plan, int method, st_error *err)
{
    char eb[128];
    if (!plan || method < ST_INSTALL_COPY || method > ST_INSTALL_LINK)
        return st_fail(err, ST_E_ARG, ST_NO_OFFSET, "st_install_execute: bad argument");
    /* Every destination first: all or nothing. */
    for (size_t i = 0; i < plan->n; i++)
        if (exists(plan->items[i].dst))
            return st_fail(err, ST_E_IO, ST_NO_OFFSET,
                           "'%s' exists; nothing installed (files are never overwritten)",
                           plan->items[i].dst);
    plan->method = method;
    int e = make_dirs(plan->dir);
    if (e)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "cannot create '%s': %s", plan->dir,
                       st_errno_text(e, eb, sizeof eb));
    copy_progress progress = {&plan->hooks, 0, 0};
    for (size_t i = 0; i < plan->n; i++)
        if (method != ST_INSTALL_LINK)
            progress.total += file_size(plan->items[i].src);
    for (size_t i = 0; i < plan->n; i++) {
        int rc = do_item(plan, &plan->items[i], &progress, err);
        if (rc != ST_OK) {
            if (i && err) {
                char first[ST_ERROR_MESSAGE_MAX];
                memcpy(first, err->message, sizeof first);
                st_fail(err, rc, err->offset, "%s; what was installed is removed again", first);
            }
            undo(plan);
            return rc;
        }
        plan->done[i] = true;
    }
    e = fsync_dir(plan->dir);
    if (e)
        return st_fail(err, ST_E_IO, ST_NO_OFFSET, "syncing '%s': %s (the files are in place)",
                       plan->dir, st_errno_text(e, eb, sizeof eb));
    return ST_OK;
}

void st_install_plan_free(st_install_plan *plan)
{
    if (!plan)
        return;
    for (size_t i = 0; i < plan->n; i++) {
        free((char *)plan->items[i].src);
        free((char *)plan->items[i].dst);
    }
    free(plan->dir);
    free(plan);
}
