/* Stable Diffusion 1.x names between the single-file (LDM) and diffusers
 * layouts (diffusers_map.c), used by diffusers.c. Not installed. */
#ifndef ST_DIFFUSERS_INTERNAL_H
#define ST_DIFFUSERS_INTERNAL_H

#include "common/internal.h"

enum { ST_SD_UNET = 0, ST_SD_VAE = 1, ST_SD_TEXT_ENCODER = 2, ST_SD_COMPONENTS = 3 };

/* How a weight's shape changes on the way. */
enum { ST_RESHAPE_NONE = 0, ST_RESHAPE_SQUEEZE = 1 /* [o,i,1,1] -> [o,i] */,
       ST_RESHAPE_UNSQUEEZE = 2 /* [o,i] -> [o,i,1,1] */ };

/* Returned for a noise-schedule or EMA-bookkeeping buffer of a single
 * file, which no diffusers component holds. */
#define ST_SD_SCHEDULE (-1)

/* A single-file name -> its component and name there (NUL-terminated in
 * out). ST_OK, ST_SD_SCHEDULE, or ST_E_NOT_FOUND when the name is not one
 * of the model's. */
ST_INTERNAL int st_sd1_to_diffusers_name(const char *name, size_t len, int *comp, char *out,
                                         size_t cap, int *reshape);

/* A component's name -> the single-file name. ST_OK or ST_E_NOT_FOUND. */
ST_INTERNAL int st_sd1_from_diffusers_name(int comp, const char *name, size_t len, char *out,
                                           size_t cap, int *reshape);

#endif
