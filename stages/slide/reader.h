/*
 * reader: a whole-slide image opened with OpenSlide, read at the analysis resolution.
 *
 * The tiler opens a slide with gs_slide_open(), asks for the target-grid size (the slide at
 * target_mpp, 0.5 um/px = 20X by default), and reads RGB tiles of that grid with
 * gs_slide_read_target(); the foreground stage gets a whole-slide thumbnail from
 * gs_slide_thumbnail(). Tiles are read from the pyramid level closest to the target resolution
 * while still at least as fine, and resampled to the target grid (area mean when shrinking,
 * bilinear when enlarging), so a 40X and a 20X scan of the same tissue give the same tiles.
 *
 * Pixels are RGB, 3 bytes per pixel, rows w*3 bytes apart. Transparent areas (outside the
 * scanned region, beyond the slide's edge, padding) are white, like an empty glass slide.
 *
 * Failure model: every error leaves a message "<path>: <cause>" (see ops/error.h). After any
 * OpenSlide error during a read the OpenSlide handle is closed (OpenSlide's errors are sticky:
 * the handle is useless) and the slide is marked failed: every later read returns -1 with the
 * same message, while the metadata gathered at open (levels, mpp, properties) stays readable.
 * Slides whose metadata had to be guessed (no mpp in the file) carry warnings that the caller
 * copies into every output.
 *
 * Resolution: OpenSlide's openslide.mpp-x/-y when the file has them. OpenSlide 3.4 gives none
 * for generic tiled TIFFs, so when both are absent the standard TIFF tags are used instead, as
 * OpenSlide 4.0 does: 10000 / tiff.XResolution (ResolutionUnit "centimeter") or 25400 /
 * tiff.XResolution ("inch"), the same for Y, the mean of the two axes. A value outside
 * 0.01..100 um/px (e.g. the 72 dpi an image editor writes) is ignored with a warning
 * "ignoring implausible TIFF resolution ..."; unit "none" or no tags says nothing. Without
 * either the configured default is assumed, with a warning. gs_slide_mpp_source() says which.
 *
 * Which file: gs_slide_open() takes any path a user gives (symlinks followed) but refuses what
 * is not a regular file (a FIFO, a device, a folder) before OpenSlide sees it, without opening
 * it (opening a FIFO would block). The service's stages open with gs_slide_open_checked() and
 * the identity the coordinator took at intake (device, inode, size, mtime, and quickhash once
 * planned): the path must be canonical (realpath(path) == path, so no symlink was swapped into
 * it), a regular file by lstat, and that same file, checked before OpenSlide opens it and again
 * after; a mismatch fails with "<path>: slide file changed after intake: inode 12 -> 34".
 * OpenSlide 3.4 opens by path only (and some formats open sibling files, or re-open the file
 * while reading), so a handle cannot be pinned to the checked file: callers also call
 * gs_slide_recheck() after their reads and before they answer.
 *
 * Work bound: gs_slide_set_deadline() makes every read after a monotonic instant fail ("time
 * budget ... exceeded"); gs_slide_thumbnail() refuses a thumbnail whose source level holds
 * more than a pixel budget (a slide declaring 200000 x 200000 pixels with no smaller level
 * would be read whole).
 *
 * A gs_slide is not thread-safe: use one per job (one OpenSlide handle per job is also what
 * the design asks for). Memory for reads is bounded: large regions are read from OpenSlide in
 * pieces of at most 1 Mpx (4 MiB of ARGB).
 */
#ifndef GS_STAGES_SLIDE_READER_H
#define GS_STAGES_SLIDE_READER_H

#include <stddef.h>
#include <stdint.h>

#include "proto/gastroscreen.pb-c.h"

typedef struct gs_slide gs_slide;

typedef struct {
    double target_mpp;  /* analysis resolution, um/px; 0.5 by default */
    double default_mpp; /* used when the slide has no mpp; 0.25 by default (typical 40x);
                           a warning is recorded */
} gs_slide_options;

/* Fills o with the defaults (target 0.5 um/px, default 0.25 um/px). */
void gs_slide_options_default(gs_slide_options *o);

/* What a slide file is: the fields the coordinator journals at intake (PROTOCOL.md §13). */
typedef struct {
    uint64_t dev, ino; /* both 0: unknown, not checked */
    int64_t size;      /* bytes */
    int64_t mtime_ns;  /* modification time, ns since the Unix epoch */
} gs_file_identity;

/* Fills *id from lstat(path). Returns 0, or -1 with the error "<path>: <errno text>", or
 * "<path>: not a regular file (a FIFO)" (also: a character device, a block device, a folder,
 * a socket, a symbolic link): a slide is never read through any of them. */
int gs_file_identify(const char *path, gs_file_identity *id);

/* Compares two identities; an unknown expected identity (dev and ino 0) matches anything.
 * Returns 0 when they match, or -1 with the error "<path>: slide file changed after intake:
 * inode 12 -> 34" naming the first field that differs (device, inode, size, mtime). */
int gs_file_identity_check(const char *path, const gs_file_identity *expected,
                           const gs_file_identity *found);

/* What a service stage expects of the file it opens; any field may be unset. */
typedef struct {
    gs_file_identity identity; /* dev and ino 0: not checked */
    const char *quickhash;     /* openslide.quickhash-1 of the plan; NULL or "": not checked */
} gs_slide_expect;

/* gs_slide_open() for a service stage: path must be canonical (its own realpath: no symbolic
 * link anywhere in it) and a regular file by lstat, whose identity matches expect->identity
 * before OpenSlide opens it and after; OpenSlide's quickhash must match expect->quickhash.
 * expect may be NULL (then only the canonical-path and regular-file checks apply). Returns the
 * slide, or NULL with the error naming what is wrong ("<path>: not a canonical path (resolves
 * to /elsewhere/x.svs)", "<path>: slide file changed after intake: size 100 -> 200",
 * "<path>: slide content changed after planning: quickhash 1a2b... -> 3c4d...") or what
 * gs_slide_open() says. */
gs_slide *gs_slide_open_checked(const char *path, const gs_slide_options *opt,
                                const gs_slide_expect *expect);

/* How a stage handler opens the slide of a job: with the job's SlideIdentity (set by the
 * coordinator) gs_slide_open_checked() against it, without one (a job built by a test or a CLI
 * command) gs_slide_open(). Returns the slide or NULL with the error, as those do. */
gs_slide *gs_slide_open_for_job(const char *path, const gs_slide_options *opt,
                                const Gastroscreen__V1__SlideIdentity *identity);

/* Checks that the slide's path still names the file that was opened (the identity taken at
 * open; canonical-path check too for a slide opened with gs_slide_open_checked). Call after
 * the reads and before answering: OpenSlide re-opens files by path. Returns 0, or -1 with the
 * error as gs_slide_open_checked(). */
int gs_slide_recheck(const gs_slide *s);

/* The identity of the file as opened. */
const gs_file_identity *gs_slide_identity(const gs_slide *s);

/* Every read that starts after deadline_us (gs_mono_us clock; 0 = none) fails with "<path>:
 * time budget of N s exceeded": a plan's work is bounded by time as well as by pixels. Reads
 * in progress stop at their next piece. The slide is not marked failed by it. */
void gs_slide_set_deadline(gs_slide *s, int64_t deadline_us, double budget_s);

/* Opens the slide at `path` (opt may be NULL for the defaults). Returns a new slide that the
 * caller frees with gs_slide_destroy(), or NULL with the error "<path>: <cause>": the errno
 * text when the file is missing or unreadable, "empty file", "not a slide OpenSlide can read",
 * "DICOM whole-slide images need OpenSlide >= 4.0 ..." for DICOM files this OpenSlide cannot
 * open, OpenSlide's own message when it opens the file in an error state (e.g. "Unsupported
 * TIFF compression: 52479"), or a description of impossible metadata (no levels, zero size). */
gs_slide *gs_slide_open(const char *path, const gs_slide_options *opt);

/* Closes the slide and frees everything; sets *s to NULL. Accepts NULL and *s == NULL. */
void gs_slide_destroy(gs_slide **s);

/* The path given to gs_slide_open (owned by the slide). */
const char *gs_slide_path(const gs_slide *s);

/* OpenSlide's vendor name: "aperio", "hamamatsu", "generic-tiff", ... (owned by the slide). */
const char *gs_slide_vendor(const gs_slide *s);

/* Number of pyramid levels (>= 1). */
int gs_slide_level_count(const gs_slide *s);

/* Size of `level` in its own pixels; w and h may be NULL. An out-of-range level is a broken
 * invariant (aborts). */
void gs_slide_level_size(const gs_slide *s, int level, int64_t *w, int64_t *h);

/* Downsample of `level` relative to level 0 (1.0 for level 0), as OpenSlide reports it. */
double gs_slide_level_downsample(const gs_slide *s, int level);

/* Level-0 resolution in um/px (mean of x and y): the slide's own value, or the default from
 * the options when the slide has none. */
double gs_slide_mpp(const gs_slide *s);

/* 1 if gs_slide_mpp() comes from the slide (OpenSlide's mpp or the TIFF resolution tags), 0
 * if it is the configured default. */
int gs_slide_mpp_known(const gs_slide *s);

/* Where gs_slide_mpp() comes from: "slide" (openslide.mpp-x/-y), "tiff-resolution" (the TIFF
 * XResolution/YResolution/ResolutionUnit tags; no warning is recorded for it) or "default"
 * (the configured default; a warning is recorded). A static string. */
const char *gs_slide_mpp_source(const gs_slide *s);

/* Scanner objective power (e.g. 20, 40), or 0 if the slide does not say. */
double gs_slide_objective(const gs_slide *s);

/* OpenSlide's openslide.quickhash-1 (hex), or "" if absent. Owned by the slide. */
const char *gs_slide_quickhash(const gs_slide *s);

/* The value of property `name` (a copy taken at open, so it stays valid after a read error),
 * or NULL if absent. Owned by the slide. */
const char *gs_slide_property(const gs_slide *s, const char *name);

/* Warnings gathered so far (e.g. "no microns-per-pixel in the slide; assuming 0.25 um/px"),
 * to be carried into every output. Strings are owned by the slide; i < count. */
size_t gs_slide_warning_count(const gs_slide *s);
const char *gs_slide_warning(const gs_slide *s, size_t i);

/* Level choice for the target resolution: the level whose mpp is nearest to the target while
 * at or finer than it (mpp_level <= target * (1 + 1e-3)), or level 0 if even level 0 is
 * coarser (then reads are upsampled; gs_slide_open records a warning for the configured
 * target). Returns the level; if level_to_target is not NULL it receives the scale from that
 * level's pixels to target pixels (mpp_level / target_mpp: < 1 shrinks, > 1 enlarges). */
int gs_slide_target_level(const gs_slide *s, double target_mpp, double *level_to_target);

/* The configured target resolution, um/px. */
double gs_slide_target_mpp(const gs_slide *s);

/* Target-grid size of the whole slide at the configured target mpp (level-0 size * mpp /
 * target_mpp, floored); w and h may be NULL. */
void gs_slide_target_size(const gs_slide *s, int64_t *w, int64_t *h);

/* Reads a w x h region of `level` into caller-owned rgb (w*h*3 bytes, stride w*3); x, y are
 * level-0 coordinates of the top-left corner and may be negative or beyond the edge (those
 * pixels are white). OpenSlide's premultiplied ARGB is composited over white. Returns 0, or -1:
 * bad arguments, or an OpenSlide error, which closes the handle and fails this and every later
 * read with "<path>: <OpenSlide's message>". */
int gs_slide_read_region(gs_slide *s, int level, int64_t x, int64_t y, int w, int h, uint8_t *rgb);

/* Reads the rw x rh region of `level` whose top-left corner is level-0 (x, y), as
 * gs_slide_read_region, and shrinks it by area mean to tw x th (tw <= rw, th <= rh) into
 * caller-owned rgb (tw*th*3 bytes). It reads in strips and shrinks each strip as it comes
 * (separably: within one grey level of a one-pass area mean), so its memory is one strip of at
 * most 1 Mpx plus tw x rh pixels, not the region: a zoomed-out view of a slide without a
 * coarse level costs time, not gigabytes. Returns 0 or -1 as gs_slide_read_region(). */
int gs_slide_read_region_shrunk(gs_slide *s, int level, int64_t x, int64_t y, int rw, int rh,
                                int tw, int th, uint8_t *rgb);

/* Reads the w x h tile of the target grid (configured target mpp) whose top-left corner is
 * (tx, ty) in target pixels into caller-owned rgb (w*h*3 bytes). Chooses the level with
 * gs_slide_target_level(), reads the covering region with a margin and resamples it (area mean
 * when shrinking, bilinear when enlarging, a plain copy when the scale is 1 within 1e-3).
 * The resampler maps whole images, so the source span is an integer number of level pixels;
 * its margins are chosen (up to 24 extra level pixels) so that the span starts and ends as
 * close as possible to whole target pixels: registration error is at most half a target pixel
 * and usually a few hundredths (zero when the scale is a simple fraction such as 4/5).
 * Returns 0 or -1 as gs_slide_read_region(). */
int gs_slide_read_target(gs_slide *s, int64_t tx, int64_t ty, int w, int h, uint8_t *rgb);

/* Whole-slide thumbnail whose longer side is max_dim (or the level-0 size if that is smaller),
 * aspect kept, RGB. Made from the smallest level still at least that size, read in strips and
 * area-averaged (separably: within one grey level of a one-pass area mean); never from
 * OpenSlide's associated "thumbnail" image, which is not aligned with the levels. On success
 * *rgb is malloc'd (caller frees), *w and *h are set; returns 0, or -1 (then *rgb is NULL).
 * gs_slide_thumbnail_capped() also refuses, before reading anything, a source level of more
 * than max_source_pixels (0 = no cap) with "<path>: too large to plan: ..."; its cost (time,
 * and the tw x level-height intermediate) grows with that level, not with the thumbnail. */
int gs_slide_thumbnail(gs_slide *s, int max_dim, uint8_t **rgb, int *w, int *h);
int gs_slide_thumbnail_capped(gs_slide *s, int max_dim, int64_t max_source_pixels, uint8_t **rgb,
                              int *w, int *h);

#endif
