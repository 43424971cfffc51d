/* `safetensors install`: puts a model file where a UI looks for files of
 * its kind (st_identify tells the kind), with its sidecar files. Nothing is
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
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "Usage: " CLI_NAME " install FILE --ui UI --root DIR [--copy | --move | --link]\n"
    "                   [--as KIND] [--dry-run]\n"
    "\n"
    "Put a model where a UI looks for its kind, as `identify` tells it:\n"
    "  a1111    checkpoint: models/Stable-diffusion, lora: models/Lora,\n"
    "           vae: models/VAE, embedding: embeddings,\n"
    "           controlnet: models/ControlNet\n"
    "  forge    as a1111, and diffusion_model: models/Stable-diffusion,\n"
    "           text_encoder: models/text_encoder\n"
    "  comfyui  models/ + checkpoints, diffusion_models, text_encoders, vae,\n"
    "           loras, embeddings, controlnet\n"
    "  sdnext   models/ + Stable-diffusion, UNET, Text-encoder, VAE, Lora,\n"
    "           embeddings, control/controlnet\n"
    "Sidecar files next to FILE with the same stem go along: .yaml, .json,\n"
    ".civitai.info, .preview.png, .preview.jpg, .preview.jpeg, .preview.webp.\n"
    "FILE must pass `check`. Nothing is overwritten: if a destination exists,\n"
    "nothing is done. Missing folders under DIR are created.\n"
    "\n"
    "Options:\n"
    "  --ui UI       a1111, forge, comfyui or sdnext\n"
    "  --root DIR    the UI's installation folder (must exist)\n"
    "  --copy        copy (default): temporary file, fsync, rename\n"
    "  --move        move (a rename on the same file system, else copy+delete)\n"
    "  --link        symbolic links to the files' absolute paths (the files\n"
    "                stay where they are; works across file systems)\n"
    "  --as KIND     install as KIND instead of what identify says\n"
    "  -n, --dry-run say what would be done, change nothing\n"
    "  -h, --help    show this help\n"
    "\n"
    "Exit status: 0 success, 1 FILE is not a valid safetensors file, 2 usage\n"
    "or I/O error, unknown kind, or a destination exists.\n";

typedef enum ui_id { UI_A1111, UI_FORGE, UI_COMFYUI, UI_SDNEXT, UI_COUNT } ui_id;
static const char *const ui_names[UI_COUNT] = {"a1111", "forge", "comfyui", "sdnext"};

typedef enum method { M_COPY, M_MOVE, M_LINK } method;

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

typedef struct item {
    char *src;
    char *dst;
} item;

typedef struct install {
    item items[1 + NSIDECARS];
    size_t n;
    char *dir;      /* destination folder */
    method how;
    bool dry_run;
    /* undo */
    bool done[1 + NSIDECARS];
} install;

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

static void say_path(const char *prefix, const char *p)
{
    char *q = cli_printable(p, strlen(p));
    printf("%s%s", prefix, q ? q : "?");
    free(q);
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

/* Gives `from` the name `to` unless `to` exists. Returns 0 or errno
 * (EEXIST when it exists). */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return errno;
    /* A file system without RENAME_NOREPLACE: link() fails on an existing
     * name as well. */
    if (link(from, to) != 0)
        return errno;
    unlink(from);
    return 0;
}

static int copy_fd(int in, int out)
{
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)1 << 30, 0);
        if (n == 0)
            return 0;
        if (n > 0)
            continue;
        if (errno == EINTR)
            continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP &&
            errno != EBADF)
            return errno;
        break;
    }
    /* The kernel cannot copy between these: read and write. */
    size_t cap = (size_t)1 << 20;
    char *buf = malloc(cap);
    if (!buf)
        return ENOMEM;
    int rc = 0;
    for (;;) {
        ssize_t n = read(in, buf, cap);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = errno;
            break;
        }
        for (ssize_t o = 0; o < n && !rc;) {
            ssize_t w = write(out, buf + o, (size_t)(n - o));
            if (w < 0 && errno != EINTR)
                rc = errno;
            else if (w > 0)
                o += w;
        }
        if (rc)
            break;
    }
    free(buf);
    return rc;
}

/* Copies src to dst through a synced temporary file in dst's folder.
 * Returns 0 or errno (EEXIST: dst appeared meanwhile). */
static int copy_atomic(const char *src, const char *dst, const char *dir)
{
    const char *base = strrchr(dst, '/');
    base = base ? base + 1 : dst;
    size_t cap = strlen(dir) + strlen(base) + 32;
    char *tmp = malloc(cap);
    if (!tmp)
        return ENOMEM;
    snprintf(tmp, cap, "%s/.%s.XXXXXX", dir, base);
    int out = mkstemp(tmp);
    if (out < 0) {
        int e = errno;
        free(tmp);
        return e;
    }
    int rc = 0;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        rc = errno;
    struct stat st;
    if (!rc && fstat(in, &st) != 0)
        rc = errno;
    if (!rc) {
        mode_t um = umask(0);
        umask(um);
        /* the mode cp(1) gives a new file */
        if (fchmod(out, 0666 & ~um) != 0)
            rc = errno;
    }
    if (!rc)
        rc = copy_fd(in, out);
    if (!rc && fsync(out) != 0)
        rc = errno;
    if (in >= 0)
        close(in);
    if (close(out) != 0 && !rc)
        rc = errno;
    if (!rc)
        rc = rename_noreplace(tmp, dst);
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

static int do_item(const install *ins, const item *it)
{
    switch (ins->how) {
    case M_COPY:
        return copy_atomic(it->src, it->dst, ins->dir);
    case M_MOVE: {
        int rc = rename_noreplace(it->src, it->dst);
        if (rc != EXDEV)
            return rc;
        rc = copy_atomic(it->src, it->dst, ins->dir);
        if (rc)
            return rc;
        return unlink(it->src) == 0 ? 0 : errno;
    }
    case M_LINK: {
        char *abs = realpath(it->src, NULL);
        if (!abs)
            return errno;
        int rc = symlink(abs, it->dst) == 0 ? 0 : errno;
        free(abs);
        return rc;
    }
    }
    return EINVAL;
}

/* Takes back what this run installed (a move is moved back). */
static void undo(install *ins)
{
    for (size_t i = ins->n; i-- > 0;) {
        if (!ins->done[i])
            continue;
        if (ins->how == M_MOVE) {
            const char *src = ins->items[i].src, *dst = ins->items[i].dst;
            int rc = rename_noreplace(dst, src);
            if (rc == EXDEV) {
                /* moved across file systems: copy it back, then remove */
                const char *slash = strrchr(src, '/');
                char *dir = slash ? strndup(src, (size_t)(slash - src)) : strdup(".");
                rc = dir ? copy_atomic(dst, src, dir) : ENOMEM;
                free(dir);
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

static void free_install(install *ins)
{
    for (size_t i = 0; i < ins->n; i++) {
        free(ins->items[i].src);
        free(ins->items[i].dst);
    }
    free(ins->dir);
}

static int kind_from_name(const char *s, st_model_kind *out)
{
    for (size_t k = 1; k < NKINDS; k++)
        if (folders[k][UI_COMFYUI] && strcmp(s, st_kind_name((st_model_kind)k)) == 0) {
            *out = (st_model_kind)k;
            return 0;
        }
    return -1;
}

/* Fills ins->items: FILE and the sidecars next to it. */
static int plan(install *ins, const char *file, const char *dir)
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

static int run(const char *file, ui_id ui, const char *root, method how, bool dry_run,
               bool has_kind, st_model_kind forced)
{
    st_file *f;
    int rc = cli_open_file(file, ST_OPEN_PREAD, &f);
    if (rc != CLI_EXIT_OK) {
        cli_errorf("%s: not installed (the file fails `check`)", file);
        return rc;
    }
    st_identity id;
    memset(&id, 0, sizeof id);
    st_error err;
    memset(&err, 0, sizeof err);
    if (!has_kind && st_identify(f, &id, &err) != ST_OK) {
        cli_print_error(file, &err);
        st_close(f);
        return CLI_EXIT_ERROR;
    }
    st_close(f);
    st_model_kind kind = has_kind ? forced : id.kind;
    if (kind == ST_KIND_UNKNOWN || (size_t)kind >= NKINDS) {
        cli_errorf("%s: cannot tell what kind of model this is; nothing installed (use --as "
                   "KIND)",
                   file);
        return CLI_EXIT_ERROR;
    }
    const char *sub = folders[kind][ui];
    if (!sub) {
        cli_errorf("%s: %s has no folder for a %s; nothing installed", file, ui_names[ui],
                   st_kind_name(kind));
        return CLI_EXIT_ERROR;
    }
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cli_errorf("io: --root %s: not a folder", root);
        return CLI_EXIT_ERROR;
    }
    install ins;
    memset(&ins, 0, sizeof ins);
    ins.how = how;
    ins.dry_run = dry_run;
    ins.dir = join(root, sub);
    int ret = CLI_EXIT_ERROR;
    if (!ins.dir || plan(&ins, file, ins.dir) != 0) {
        cli_errorf("nomem: out of memory");
        goto done;
    }
    /* Every destination first: all or nothing. */
    bool clash = false;
    for (size_t i = 0; i < ins.n; i++)
        if (exists(ins.items[i].dst)) {
            char *p = cli_printable(ins.items[i].dst, strlen(ins.items[i].dst));
            cli_errorf("%s exists", p ? p : "?");
            free(p);
            clash = true;
        }
    if (clash) {
        cli_errorf("nothing installed (files are never overwritten)");
        goto done;
    }
    static const char *const verbs[] = {"copy", "move", "link"};
    static const char *const done_verbs[] = {"copied", "moved", "linked"};
    printf("%s (%s", file, st_kind_name(kind));
    if (!has_kind && id.family != ST_FAMILY_UNKNOWN)
        printf(", %s", st_family_name(id.family));
    printf(") -> %s\n", ui_names[ui]);
    if (dry_run) {
        if (!exists(ins.dir)) {
            say_path("would create ", ins.dir);
            putchar('\n');
        }
        for (size_t i = 0; i < ins.n; i++) {
            printf("would %s ", verbs[how]);
            say_path("", ins.items[i].src);
            say_path(" -> ", ins.items[i].dst);
            putchar('\n');
        }
        ret = CLI_EXIT_OK;
        goto done;
    }
    int e = make_dirs(ins.dir);
    if (e) {
        cli_errorf("io: %s: %s", ins.dir, strerror(e));
        goto done;
    }
    for (size_t i = 0; i < ins.n; i++) {
        e = do_item(&ins, &ins.items[i]);
        if (e) {
            char *p = cli_printable(ins.items[i].dst, strlen(ins.items[i].dst));
            cli_errorf("io: %s %s: %s%s", verbs[how], p ? p : "?", strerror(e),
                       i ? "; what was installed is removed again" : "");
            free(p);
            undo(&ins);
            goto done;
        }
        ins.done[i] = true;
    }
    e = fsync_dir(ins.dir);
    if (e)
        cli_errorf("io: syncing %s: %s (the files are in place)", ins.dir, strerror(e));
    for (size_t i = 0; i < ins.n; i++) {
        printf("%s ", done_verbs[how]);
        say_path("", ins.items[i].src);
        say_path(" -> ", ins.items[i].dst);
        putchar('\n');
    }
    ret = CLI_EXIT_OK;
done:
    free_install(&ins);
    return ret;
}

int cmd_install(int argc, char **argv)
{
    enum { OPT_UI = 256, OPT_ROOT, OPT_COPY, OPT_MOVE, OPT_LINK, OPT_AS };
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {"ui", required_argument, NULL, OPT_UI},
        {"root", required_argument, NULL, OPT_ROOT},
        {"copy", no_argument, NULL, OPT_COPY},
        {"move", no_argument, NULL, OPT_MOVE},
        {"link", no_argument, NULL, OPT_LINK},
        {"as", required_argument, NULL, OPT_AS},
        {"dry-run", no_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    int ui = -1;
    const char *root = NULL;
    method how = M_COPY;
    int methods = 0;
    bool dry_run = false, has_kind = false;
    st_model_kind kind = ST_KIND_UNKNOWN;
    int c;
    while ((c = getopt_long(argc, argv, "hn", opts, NULL)) != -1) {
        switch (c) {
        case 'h': return cli_help(usage);
        case 'n': dry_run = true; break;
        case OPT_UI:
            ui = -1;
            for (int i = 0; i < UI_COUNT; i++)
                if (strcmp(optarg, ui_names[i]) == 0)
                    ui = i;
            if (ui < 0)
                return cli_usage_error(usage, "install: --ui wants a1111, forge, comfyui or "
                                              "sdnext, got '%s'",
                                       optarg);
            break;
        case OPT_ROOT: root = optarg; break;
        case OPT_COPY: how = M_COPY; methods++; break;
        case OPT_MOVE: how = M_MOVE; methods++; break;
        case OPT_LINK: how = M_LINK; methods++; break;
        case OPT_AS:
            if (kind_from_name(optarg, &kind) != 0)
                return cli_usage_error(usage, "install: --as wants checkpoint, diffusion_model, "
                                              "vae, text_encoder, lora, embedding or "
                                              "controlnet, got '%s'",
                                       optarg);
            has_kind = true;
            break;
        default: return cli_usage_error(usage, NULL);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error(usage, "install: expected one FILE");
    if (ui < 0 || !root)
        return cli_usage_error(usage, "install: --ui and --root are required");
    if (methods > 1)
        return cli_usage_error(usage, "install: choose one of --copy, --move, --link");
    return run(argv[optind], (ui_id)ui, root, how, dry_run, has_kind, kind);
}
