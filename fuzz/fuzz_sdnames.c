/* Fuzz target: the Stable Diffusion / Flux key-name maps of lib/model/.
 *
 * The first input byte picks the component kind, the UNet layout (SD1,
 * SDXL base, refiner) and the direction; the rest is a tensor name. The
 * maps must answer without overflowing their output, always NUL-terminated,
 * and agree with each other: a name mapped one way maps back to itself
 * (single file -> diffusers -> single file; the old diffusers VAE names are
 * read but never written, so only that direction is exact), a diffusers
 * name mapped to a single-file name maps forward again, and for Flux every
 * part of a split names the same BFL tensor on the way back. */
#include "fuzz_util.h"
#include "model/diffusers_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const st_sd_unet_layout layouts[3] = {
    {4, {true, true, true, false}, false},  /* SD1 / SD2 */
    {3, {false, true, true, false}, true},  /* SDXL base */
    {4, {false, true, true, false}, true},  /* SDXL refiner */
};

static void check_flux(const char *name, size_t n, bool to_diff)
{
    st_sd_group g, back;
    int rc = st_flux_map(to_diff, name, n, &g);
    if (rc != ST_OK && rc != ST_SD_PART)
        return;
    FUZZ_ASSERT(g.n >= 1 && g.n <= 4, "flux: %d parts", g.n);
    if (to_diff) {
        for (int k = 0; k < g.n; k++) {
            int r = st_flux_map(false, g.names[k], strlen(g.names[k]), &back);
            FUZZ_ASSERT(r == (k == 0 ? ST_OK : ST_SD_PART), "flux: part %d of %.*s maps back with %d", k,
                        (int)n, name, r);
            FUZZ_ASSERT(strlen(back.names[0]) == n && memcmp(back.names[0], name, n) == 0,
                        "flux: %s maps back to %s", g.names[k], back.names[0]);
        }
    } else {
        int r = st_flux_map(true, g.names[0], strlen(g.names[0]), &back);
        FUZZ_ASSERT(r == ST_OK && back.n == g.n, "flux: %s does not map forward", g.names[0]);
        bool found = false;
        for (int k = 0; k < back.n; k++)
            found |= strlen(back.names[k]) == n && memcmp(back.names[k], name, n) == 0;
        FUZZ_ASSERT(found, "flux: %.*s is not among the parts of %s", (int)n, name, g.names[0]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 512)
        return 0;
    unsigned sel = data[0];
    const char *name = (const char *)data + 1;
    size_t n = size - 1;
    int kind = (int)(sel % 5);
    const st_sd_unet_layout *u = &layouts[(sel / 5) % 3];
    bool to_diff = (sel / 15) % 2 == 0;
    if (kind == ST_SDK_FLUX) {
        check_flux(name, n, to_diff);
        return 0;
    }
    char out[512], back[512];
    memset(out, 'x', sizeof out);
    int how, how2;
    if (to_diff) {
        int rc = st_sd_to_diffusers_name(kind, u, name, n, out, sizeof out, &how);
        if (rc != ST_OK)
            return 0;
        FUZZ_ASSERT(memchr(out, '\0', sizeof out), "not NUL-terminated");
        int r = st_sd_from_diffusers_name(kind, u, out, strlen(out), back, sizeof back, &how2);
        FUZZ_ASSERT(r == ST_OK, "%.*s -> %s does not map back (%d)", (int)n, name, out, r);
        FUZZ_ASSERT(strlen(back) == n && memcmp(back, name, n) == 0, "%.*s -> %s -> %s", (int)n, name,
                    out, back);
    } else {
        int rc = st_sd_from_diffusers_name(kind, u, name, n, out, sizeof out, &how);
        if (rc != ST_OK)
            return 0;
        FUZZ_ASSERT(memchr(out, '\0', sizeof out), "not NUL-terminated");
        int r = st_sd_to_diffusers_name(kind, u, out, strlen(out), back, sizeof back, &how2);
        FUZZ_ASSERT(r == ST_OK, "%.*s -> %s does not map forward (%d)", (int)n, name, out, r);
    }
    return 0;
}
