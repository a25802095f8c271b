#include "stages/slide/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <openslide.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/error.h"
#include "ops/resample.h"
#include "stages/runtime/fileio.h"

/* OpenSlide allocates nothing per call, but the caller's ARGB buffer is w*h*4 bytes; reading a
 * level in one call would need gigabytes. Pieces of at most 1 Mpx (4 MiB) keep memory
 * bounded; 4096 columns is also OpenSlide's own internal chunk width, so rows of up to 4096
 * pixels are read with the same positioning OpenSlide would use. */
enum { PIECE_MAX_W = 4096, PIECE_PIXELS = 1 << 20 };

/* Resolutions outside this range are not microscope scans; treat them as missing. */
#define MPP_MIN 0.01
#define MPP_MAX 100.0
/* Relative tolerance for "at or finer than the target" and for "scale is 1". */
#define SCALE_TOL 1e-3
/* Level-0 coordinates must stay far from int64 overflow after scaling by a downsample. */
#define COORD_LIMIT ((int64_t)1 << 52)

struct gs_slide {
    char *path;
    openslide_t *osr; /* NULL once a read has failed */
    char *failure;    /* "<path>: <OpenSlide's message>" after a read error, else NULL */
    char *vendor;
    int levels;
    int64_t *level_w, *level_h;
    double *level_ds;
    double mpp;
    int mpp_known;
    const char *mpp_source; /* a static string, see gs_slide_mpp_source() */
    double objective;
    char *quickhash;
    size_t nprops;
    char **prop_names, **prop_values;
    size_t nwarn;
    char **warnings;
    gs_slide_options opt;
    gs_file_identity id; /* of the file as opened */
    int canonical;       /* opened by gs_slide_open_checked: the path must stay canonical */
    int64_t deadline_us; /* reads starting later fail; 0 = none */
    double budget_s;     /* for the message */
};

void gs_slide_options_default(gs_slide_options *o)
{
    GS_ASSERT(o);
    o->target_mpp = 0.5;
    o->default_mpp = 0.25;
}

static int add_warning(gs_slide *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int add_warning(gs_slide *s, const char *fmt, ...)
{
    char **grown = realloc(s->warnings, (s->nwarn + 1) * sizeof *grown);
    if (!grown)
        return gs_error_set("%s: out of memory", s->path);
    s->warnings = grown;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s->warnings[s->nwarn], fmt, ap);
    va_end(ap);
    if (n < 0)
        return gs_error_set("%s: out of memory", s->path);
    s->nwarn++;
    return 0;
}

/* Parses a whole string as a finite number. Returns 0, or -1 if it is not one. */
static int parse_number(const char *text, double *out)
{
    if (!text || !*text)
        return -1;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    while (end && (*end == ' ' || *end == '\t'))
        end++;
    if (errno != 0 || end == text || *end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* DICOM files have a .dcm name or "DICM" after a 128-byte preamble. */
static int looks_like_dicom(const char *path, const uint8_t *head, size_t n)
{
    size_t len = strlen(path);
    if (len >= 4 && strcasecmp(path + len - 4, ".dcm") == 0)
        return 1;
    return n >= 132 && memcmp(head + 128, "DICM", 4) == 0;
}

/* Classic or BigTIFF, either byte order: most slide formats are TIFF inside. */
static int looks_like_tiff(const uint8_t *head, size_t n)
{
    return n >= 4 && (memcmp(head, "II*\0", 4) == 0 || memcmp(head, "MM\0*", 4) == 0 ||
                      memcmp(head, "II+\0", 4) == 0 || memcmp(head, "MM\0+", 4) == 0);
}

enum file_kind { FILE_OTHER, FILE_DICOM, FILE_TIFF };

static const char *file_type_name(mode_t m)
{
    return S_ISFIFO(m)   ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISDIR(m)  ? "a folder"
           : S_ISSOCK(m) ? "a socket"
           : S_ISLNK(m)  ? "a symbolic link"
                         : "not a plain file";
}

static void identity_of(const struct stat *st, gs_file_identity *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (int64_t)st->st_size;
    id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int gs_file_identify(const char *path, gs_file_identity *id)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return gs_error_set("%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return gs_error_set("%s: not a regular file (%s)", path, file_type_name(st.st_mode));
    identity_of(&st, id);
    return 0;
}

int gs_file_identity_check(const char *path, const gs_file_identity *expected,
                           const gs_file_identity *found)
{
    if (expected->dev == 0 && expected->ino == 0)
        return 0;
    struct {
        const char *what;
        long long was, now;
    } f[] = {
        {"device", (long long)expected->dev, (long long)found->dev},
        {"inode", (long long)expected->ino, (long long)found->ino},
        {"size", expected->size, found->size},
        {"mtime (ns)", expected->mtime_ns, found->mtime_ns},
    };
    const char *what = NULL;
    long long was = 0, now = 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0] && !what; i++)
        if (f[i].was != f[i].now) {
            what = f[i].what;
            was = f[i].was;
            now = f[i].now;
        }
    if (!what)
        return 0;
    return gs_error_set("%s: slide file changed after intake: %s %lld -> %lld", path, what, was,
                        now);
}

/* Checks what OpenSlide cannot tell apart (missing, unreadable, empty, DICOM, a damaged TIFF)
 * before handing the path to OpenSlide. What is not a regular file (a FIFO, a device, a folder)
 * is refused by stat before any open: opening a FIFO blocks until a writer comes, and OpenSlide
 * would open it too. The open itself never blocks (O_NONBLOCK) and must find the file stat saw.
 * Returns 0, or -1 with the message set; *kind says what the first bytes look like, *id what
 * the file is (by stat, or lstat when no_follow: then a symbolic link is refused too). */
static int check_file(const char *path, int no_follow, enum file_kind *kind, gs_file_identity *id)
{
    struct stat st;
    if ((no_follow ? lstat(path, &st) : stat(path, &st)) != 0)
        return gs_error_set("%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return gs_error_set("%s: not a regular file (%s)", path, file_type_name(st.st_mode));
    int fd =
        open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | (no_follow ? O_NOFOLLOW : 0));
    if (fd < 0)
        return gs_error_set("%s: %s", path, strerror(errno));
    struct stat fst;
    if (fstat(fd, &fst) != 0) {
        gs_error_set("%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(fst.st_mode) || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino) {
        close(fd);
        return gs_error_set("%s: the file changed while it was checked", path);
    }
    if (fst.st_size == 0) {
        close(fd);
        return gs_error_set("%s: empty file (0 bytes); not a slide", path);
    }
    identity_of(&fst, id);
    uint8_t head[132];
    ssize_t got = read(fd, head, sizeof head);
    if (got < 0) {
        gs_error_set("%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    *kind = looks_like_dicom(path, head, (size_t)got) ? FILE_DICOM
            : looks_like_tiff(head, (size_t)got)      ? FILE_TIFF
                                                      : FILE_OTHER;
    return 0;
}

static int not_a_slide(const char *path, enum file_kind kind)
{
    if (kind == FILE_TIFF)
        return gs_error_set("%s: not a slide OpenSlide can read (a TIFF file, perhaps truncated "
                            "or damaged)",
                            path);
    if (kind == FILE_DICOM)
        return gs_error_set("%s: unsupported format: DICOM whole-slide images need OpenSlide >= "
                            "4.0; this build has %s",
                            path, openslide_get_version());
    return gs_error_set("%s: not a slide OpenSlide can read", path);
}

static int copy_properties(gs_slide *s)
{
    const char *const *names = openslide_get_property_names(s->osr);
    size_t n = 0;
    while (names && names[n])
        n++;
    s->prop_names = calloc(n + 1, sizeof *s->prop_names);
    s->prop_values = calloc(n + 1, sizeof *s->prop_values);
    if (!s->prop_names || !s->prop_values)
        return gs_error_set("%s: out of memory", s->path);
    for (size_t i = 0; i < n; i++) {
        const char *v = openslide_get_property_value(s->osr, names[i]);
        s->prop_names[i] = strdup(names[i]);
        s->prop_values[i] = strdup(v ? v : "");
        s->nprops = i + 1;
        if (!s->prop_names[i] || !s->prop_values[i])
            return gs_error_set("%s: out of memory", s->path);
    }
    return 0;
}

static int read_levels(gs_slide *s)
{
    int32_t n = openslide_get_level_count(s->osr);
    if (n < 1)
        return gs_error_set("%s: the slide has no pyramid levels", s->path);
    s->levels = n;
    s->level_w = calloc((size_t)n, sizeof *s->level_w);
    s->level_h = calloc((size_t)n, sizeof *s->level_h);
    s->level_ds = calloc((size_t)n, sizeof *s->level_ds);
    if (!s->level_w || !s->level_h || !s->level_ds)
        return gs_error_set("%s: out of memory", s->path);
    for (int32_t l = 0; l < n; l++) {
        openslide_get_level_dimensions(s->osr, l, &s->level_w[l], &s->level_h[l]);
        s->level_ds[l] = openslide_get_level_downsample(s->osr, l);
        if (s->level_w[l] <= 0 || s->level_h[l] <= 0)
            return gs_error_set("%s: level %d has zero size (%" PRId64 "x%" PRId64 ")", s->path,
                                (int)l, s->level_w[l], s->level_h[l]);
        if (s->level_w[l] > INT_MAX || s->level_h[l] > INT_MAX)
            return gs_error_set("%s: level %d is too large (%" PRId64 "x%" PRId64 ")", s->path,
                                (int)l, s->level_w[l], s->level_h[l]);
        if (!(s->level_ds[l] >= 1.0) || !isfinite(s->level_ds[l]) ||
            (l > 0 && s->level_ds[l] < s->level_ds[l - 1]))
            return gs_error_set("%s: level %d has an invalid downsample %g", s->path, (int)l,
                                s->level_ds[l]);
    }
    const char *err = openslide_get_error(s->osr);
    if (err)
        return gs_error_set("%s: %s", s->path, err);
    return 0;
}

/* One of openslide.mpp-x / -y: returns the value, or 0 if absent or implausible (with a
 * warning in the latter case, because a wrong mpp silently changes the analysis scale). */
static double read_mpp_axis(gs_slide *s, const char *name)
{
    const char *text = gs_slide_property(s, name);
    double v;
    if (!text)
        return 0;
    if (parse_number(text, &v) != 0 || v < MPP_MIN || v > MPP_MAX) {
        add_warning(s, "ignoring implausible %s '%s'", name, text);
        return 0;
    }
    return v;
}

/* Micrometres per TIFF ResolutionUnit, as OpenSlide 3.4 prints the unit ("centimeter",
 * "inch"), or 0 when the unit gives no physical size ("none", "unknown") or is absent. */
static double tiff_unit_um(const char *unit)
{
    if (!unit)
        return 0;
    if (strcmp(unit, "centimeter") == 0)
        return 10000;
    if (strcmp(unit, "inch") == 0)
        return 25400;
    return 0;
}

/* One axis of the TIFF resolution tags (pixels per unit): returns the mpp, or 0 if the tag is
 * absent or the value is not a plausible microscope resolution. An implausible value is
 * described in note (for a single warning that names both axes), else note is left empty. */
static double read_tiff_axis(gs_slide *s, const char *name, const char *unit, double um_per_unit,
                             char *note, size_t note_size)
{
    note[0] = '\0';
    const char *text = gs_slide_property(s, name);
    double ppu;
    if (!text)
        return 0;
    if (parse_number(text, &ppu) != 0 || !(ppu > 0)) {
        snprintf(note, note_size, "%s '%.40s' per %s", name, text, unit);
        return 0;
    }
    double mpp = um_per_unit / ppu;
    if (mpp < MPP_MIN || mpp > MPP_MAX) {
        snprintf(note, note_size, "%s '%.40s' per %s = %g um/px", name, text, unit, mpp);
        return 0;
    }
    return mpp;
}

/* OpenSlide 3.4 gives no openslide.mpp-x/-y for generic TIFF, but the file may say its
 * resolution in the standard tags; OpenSlide 4.0 derives mpp from them the same way. Returns
 * the mean of the plausible axes, or 0 (with a warning if a tag was there but implausible:
 * 72 dpi, an image editor's default, would read as 352.8 um/px). -1 on out of memory. */
static int read_tiff_resolution(gs_slide *s, double *mpp)
{
    *mpp = 0;
    const char *unit = gs_slide_property(s, "tiff.ResolutionUnit");
    double um_per_unit = tiff_unit_um(unit);
    if (um_per_unit == 0)
        return 0;
    char note_x[160], note_y[160];
    double mx = read_tiff_axis(s, "tiff.XResolution", unit, um_per_unit, note_x, sizeof note_x);
    double my = read_tiff_axis(s, "tiff.YResolution", unit, um_per_unit, note_y, sizeof note_y);
    if ((note_x[0] || note_y[0]) &&
        add_warning(s, "ignoring implausible TIFF resolution %s%s%s (plausible: %g..%g um/px)",
                    note_x, note_x[0] && note_y[0] ? ", " : "", note_y, MPP_MIN, MPP_MAX) != 0)
        return -1;
    if (mx > 0 && my > 0)
        *mpp = (mx + my) / 2;
    else
        *mpp = mx > 0 ? mx : my;
    return 0;
}

static int read_resolution(gs_slide *s)
{
    const char *mpp_x = gs_slide_property(s, OPENSLIDE_PROPERTY_NAME_MPP_X);
    const char *mpp_y = gs_slide_property(s, OPENSLIDE_PROPERTY_NAME_MPP_Y);
    double mx = read_mpp_axis(s, OPENSLIDE_PROPERTY_NAME_MPP_X);
    double my = read_mpp_axis(s, OPENSLIDE_PROPERTY_NAME_MPP_Y);
    if (mx > 0 && my > 0)
        s->mpp = (mx + my) / 2;
    else
        s->mpp = mx > 0 ? mx : my;
    s->mpp_source = "slide";
    /* Only a file with no OpenSlide mpp at all falls back to the tags: an implausible
     * openslide.mpp-x is a broken file, not a sign that the tags are better. */
    if (!(s->mpp > 0) && !mpp_x && !mpp_y) {
        if (read_tiff_resolution(s, &s->mpp) != 0)
            return -1;
        s->mpp_source = "tiff-resolution";
    }
    s->mpp_known = s->mpp > 0;
    if (!s->mpp_known) {
        s->mpp = s->opt.default_mpp;
        s->mpp_source = "default";
        if (add_warning(s, "no microns-per-pixel in the slide; assuming %g um/px", s->mpp) != 0)
            return -1;
    }
    double obj;
    const char *text = gs_slide_property(s, OPENSLIDE_PROPERTY_NAME_OBJECTIVE_POWER);
    s->objective = text && parse_number(text, &obj) == 0 && obj > 0 ? obj : 0;
    if (s->mpp > s->opt.target_mpp * (1 + SCALE_TOL) &&
        add_warning(s,
                    "slide resolution %g um/px is coarser than the target %g um/px; tiles are "
                    "upsampled",
                    s->mpp, s->opt.target_mpp) != 0)
        return -1;
    const char *hash = gs_slide_property(s, OPENSLIDE_PROPERTY_NAME_QUICKHASH1);
    s->quickhash = strdup(hash ? hash : "");
    if (!s->quickhash)
        return gs_error_set("%s: out of memory", s->path);
    return 0;
}

/* A path the coordinator resolved at intake is its own realpath; if it no longer is, a
 * symbolic link was swapped into it (a folder replaced by a link out of the slide roots). */
static int canonical_check(const char *path)
{
    char *real = realpath(path, NULL);
    if (!real)
        return gs_error_set("%s: %s", path, strerror(errno));
    int same = strcmp(real, path) == 0;
    if (!same)
        gs_error_set("%s: not a canonical path (it resolves to %s): the slide's path changed "
                     "after intake",
                     path, real);
    free(real);
    return same ? 0 : -1;
}

/* The file at path is still the one described by *id (lstat when no_follow). */
static int same_file(const char *path, int no_follow, const gs_file_identity *id)
{
    struct stat st;
    if ((no_follow ? lstat(path, &st) : stat(path, &st)) != 0)
        return gs_error_set("%s: slide file changed after intake: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return gs_error_set("%s: slide file changed after intake: now %s", path,
                            file_type_name(st.st_mode));
    gs_file_identity now;
    identity_of(&st, &now);
    return gs_file_identity_check(path, id, &now);
}

static int quickhash_check(const char *path, const char *expected, const char *found)
{
    if (!expected || !expected[0] || strcmp(expected, found) == 0)
        return 0;
    return gs_error_set("%s: slide content changed after planning: quickhash %.16s... -> %.16s...",
                        path, expected, found[0] ? found : "(none)");
}

/* checked: the service's rules (canonical path, no symbolic link, identity and quickhash of
 * expect, which may be NULL). */
static gs_slide *open_slide(const char *path, const gs_slide_options *opt, int checked,
                            const gs_slide_expect *expect)
{
    if (!path || !*path) {
        gs_error_set("gs_slide_open: no path");
        return NULL;
    }
    gs_slide_options o;
    gs_slide_options_default(&o);
    if (opt)
        o = *opt;
    if (!(o.target_mpp > 0) || !isfinite(o.target_mpp) || !(o.default_mpp > 0) ||
        !isfinite(o.default_mpp)) {
        gs_error_set("%s: invalid options (target %g um/px, default %g um/px)", path, o.target_mpp,
                     o.default_mpp);
        return NULL;
    }
    if (checked && canonical_check(path) != 0)
        return NULL;
    enum file_kind kind = FILE_OTHER;
    gs_file_identity id;
    if (check_file(path, checked, &kind, &id) != 0)
        return NULL;
    if (checked && expect && gs_file_identity_check(path, &expect->identity, &id) != 0)
        return NULL;
    /* detect_vendor is cheap and tells "not a slide" apart from "a slide that failed". */
    const char *vendor = openslide_detect_vendor(path);
    if (!vendor) {
        not_a_slide(path, kind);
        return NULL;
    }
    openslide_t *osr = openslide_open(path);
    if (!osr) {
        not_a_slide(path, kind);
        return NULL;
    }
    const char *err = openslide_get_error(osr);
    if (err) {
        gs_error_set("%s: %s", path, err);
        openslide_close(osr);
        return NULL;
    }

    gs_slide *s = calloc(1, sizeof *s);
    if (!s) {
        openslide_close(osr);
        gs_error_set("%s: out of memory", path);
        return NULL;
    }
    s->osr = osr;
    s->opt = o;
    s->id = id;
    s->canonical = checked;
    s->path = strdup(path);
    s->vendor = strdup(vendor);
    if (!s->path || !s->vendor) {
        gs_error_set("%s: out of memory", path);
        goto destroy_slide;
    }
    if (read_levels(s) != 0 || copy_properties(s) != 0 || read_resolution(s) != 0)
        goto destroy_slide;
    /* OpenSlide opened the path on its own: the file it read must still be the one checked
     * (as far as a path-only library lets us tell; gs_slide_recheck() again after reads). */
    if (checked && (gs_slide_recheck(s) != 0 ||
                    quickhash_check(path, expect ? expect->quickhash : NULL, s->quickhash) != 0))
        goto destroy_slide;
    return s;

destroy_slide:
    gs_slide_destroy(&s);
    return NULL;
}

gs_slide *gs_slide_open(const char *path, const gs_slide_options *opt)
{
    return open_slide(path, opt, 0, NULL);
}

gs_slide *gs_slide_open_checked(const char *path, const gs_slide_options *opt,
                                const gs_slide_expect *expect)
{
    return open_slide(path, opt, 1, expect);
}

gs_slide *gs_slide_open_for_job(const char *path, const gs_slide_options *opt,
                                const Gastroscreen__V1__SlideIdentity *identity)
{
    if (!identity)
        return gs_slide_open(path, opt);
    gs_slide_expect e = {
        .identity = {.dev = identity->device,
                     .ino = identity->inode,
                     .size = identity->size,
                     .mtime_ns = identity->mtime_ns},
        .quickhash = identity->quickhash,
    };
    return gs_slide_open_checked(path, opt, &e);
}

int gs_slide_recheck(const gs_slide *s)
{
    GS_ASSERT(s);
    if (s->canonical && canonical_check(s->path) != 0)
        return -1;
    return same_file(s->path, s->canonical, &s->id);
}

const gs_file_identity *gs_slide_identity(const gs_slide *s)
{
    GS_ASSERT(s);
    return &s->id;
}

void gs_slide_set_deadline(gs_slide *s, int64_t deadline_us, double budget_s)
{
    GS_ASSERT(s);
    s->deadline_us = deadline_us;
    s->budget_s = budget_s;
}

void gs_slide_destroy(gs_slide **sp)
{
    if (!sp || !*sp)
        return;
    gs_slide *s = *sp;
    if (s->osr)
        openslide_close(s->osr);
    for (size_t i = 0; i < s->nprops; i++) {
        free(s->prop_names[i]);
        free(s->prop_values[i]);
    }
    free(s->prop_names);
    free(s->prop_values);
    for (size_t i = 0; i < s->nwarn; i++)
        free(s->warnings[i]);
    free(s->warnings);
    free(s->level_w);
    free(s->level_h);
    free(s->level_ds);
    free(s->quickhash);
    free(s->vendor);
    free(s->failure);
    free(s->path);
    free(s);
    *sp = NULL;
}

const char *gs_slide_path(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->path;
}

const char *gs_slide_vendor(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->vendor;
}

int gs_slide_level_count(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->levels;
}

void gs_slide_level_size(const gs_slide *s, int level, int64_t *w, int64_t *h)
{
    GS_ASSERT(s && level >= 0 && level < s->levels);
    if (w)
        *w = s->level_w[level];
    if (h)
        *h = s->level_h[level];
}

double gs_slide_level_downsample(const gs_slide *s, int level)
{
    GS_ASSERT(s && level >= 0 && level < s->levels);
    return s->level_ds[level];
}

double gs_slide_mpp(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->mpp;
}

int gs_slide_mpp_known(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->mpp_known;
}

const char *gs_slide_mpp_source(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->mpp_source;
}

double gs_slide_objective(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->objective;
}

const char *gs_slide_quickhash(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->quickhash ? s->quickhash : "";
}

const char *gs_slide_property(const gs_slide *s, const char *name)
{
    GS_ASSERT(s);
    if (!name)
        return NULL;
    for (size_t i = 0; i < s->nprops; i++)
        if (strcmp(s->prop_names[i], name) == 0)
            return s->prop_values[i];
    return NULL;
}

size_t gs_slide_warning_count(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->nwarn;
}

const char *gs_slide_warning(const gs_slide *s, size_t i)
{
    GS_ASSERT(s && i < s->nwarn);
    return s->warnings[i];
}

int gs_slide_target_level(const gs_slide *s, double target_mpp, double *level_to_target)
{
    GS_ASSERT(s && target_mpp > 0);
    int best = 0;
    for (int l = 0; l < s->levels; l++) {
        double mpp_l = s->mpp * s->level_ds[l];
        if (mpp_l <= target_mpp * (1 + SCALE_TOL) && mpp_l >= s->mpp * s->level_ds[best])
            best = l;
    }
    if (level_to_target)
        *level_to_target = s->mpp * s->level_ds[best] / target_mpp;
    return best;
}

double gs_slide_target_mpp(const gs_slide *s)
{
    GS_ASSERT(s);
    return s->opt.target_mpp;
}

void gs_slide_target_size(const gs_slide *s, int64_t *w, int64_t *h)
{
    GS_ASSERT(s);
    double f = s->mpp / s->opt.target_mpp;
    if (w)
        *w = (int64_t)floor((double)s->level_w[0] * f);
    if (h)
        *h = (int64_t)floor((double)s->level_h[0] * f);
}

/* Closes the handle after an OpenSlide error: its errors are sticky, so nothing more can be
 * read from it, and keeping the message lets every later call report the same cause. */
static int fail_slide(gs_slide *s, const char *openslide_msg)
{
    if (!s->failure && asprintf(&s->failure, "%s: %s", s->path, openslide_msg) < 0)
        s->failure = NULL;
    gs_error_set("%s: %s", s->path, openslide_msg);
    if (s->osr) {
        openslide_close(s->osr);
        s->osr = NULL;
    }
    return -1;
}

static int check_usable(const gs_slide *s)
{
    if (s->failure)
        return gs_error_set("%s", s->failure);
    if (!s->osr)
        return gs_error_set("%s: the slide has failed", s->path);
    return 0;
}

/* Premultiplied ARGB over white: c_straight * a/255 + 255 * (1 - a/255) = c + 255 - a, exact
 * in integers; the clamp only matters for malformed input where c > a. */
static void argb_to_rgb_over_white(const uint32_t *argb, int n, uint8_t *rgb)
{
    for (int i = 0; i < n; i++) {
        uint32_t p = argb[i];
        unsigned a = p >> 24;
        unsigned r = (p >> 16) & 0xff, g = (p >> 8) & 0xff, b = p & 0xff;
        unsigned add = 255 - a;
        rgb[i * 3 + 0] = (uint8_t)(r + add > 255 ? 255 : r + add);
        rgb[i * 3 + 1] = (uint8_t)(g + add > 255 ? 255 : g + add);
        rgb[i * 3 + 2] = (uint8_t)(b + add > 255 ? 255 : b + add);
    }
}

/* Reads w x h level pixels starting at level-0 (x, y) into rgb (stride w*3), piece by piece;
 * a piece at level offset (px, py) starts at level-0 (x + px*ds, y + py*ds), rounded. */
static int read_pieces(gs_slide *s, int level, int64_t x, int64_t y, int w, int h, uint8_t *rgb)
{
    double ds = s->level_ds[level];
    int pw = w < PIECE_MAX_W ? w : PIECE_MAX_W;
    int ph = PIECE_PIXELS / pw;
    if (ph > h)
        ph = h;
    uint32_t *argb = malloc((size_t)pw * (size_t)ph * sizeof *argb);
    if (!argb)
        return gs_error_set("%s: out of memory reading %dx%d pixels", s->path, pw, ph);
    int rc = 0;
    for (int py = 0; py < h && rc == 0; py += ph) {
        int ch = h - py < ph ? h - py : ph;
        for (int px = 0; px < w && rc == 0; px += pw) {
            int cw = w - px < pw ? w - px : pw;
            if (s->deadline_us && gs_mono_us() > s->deadline_us) {
                rc = gs_error_set("%s: time budget of %.0f s exceeded while reading level %d",
                                  s->path, s->budget_s, level);
                break;
            }
            int64_t sx = x + llround(px * ds), sy = y + llround(py * ds);
            openslide_read_region(s->osr, argb, sx, sy, level, cw, ch);
            const char *err = openslide_get_error(s->osr);
            if (err) {
                rc = fail_slide(s, err);
                break;
            }
            for (int r = 0; r < ch; r++)
                argb_to_rgb_over_white(argb + (size_t)r * cw, cw,
                                       rgb + ((size_t)(py + r) * w + px) * 3);
        }
    }
    free(argb);
    return rc;
}

int gs_slide_read_region(gs_slide *s, int level, int64_t x, int64_t y, int w, int h, uint8_t *rgb)
{
    GS_ASSERT(s);
    if (check_usable(s) != 0)
        return -1;
    if (level < 0 || level >= s->levels || w <= 0 || h <= 0 || !rgb)
        return gs_error_set("%s: invalid region request (level %d of %d, %dx%d)", s->path, level,
                            s->levels, w, h);
    if (x <= -COORD_LIMIT || x >= COORD_LIMIT || y <= -COORD_LIMIT || y >= COORD_LIMIT)
        return gs_error_set("%s: region origin (%" PRId64 ", %" PRId64 ") out of range", s->path, x,
                            y);
    return read_pieces(s, level, x, y, w, h, rgb);
}

/* Source span (in level pixels) for n target pixels from t0 at scale k (target px per level
 * px), with a margin of at least 2 target pixels and 2 level pixels each side. The margin is
 * extended by up to SPAN_SEARCH extra level pixels on each side so that (a) the span's start
 * falls as close as possible to a whole target pixel and (b) its length times k is as close as
 * possible to a whole number: the whole-image resampler then maps the span onto an integer
 * target grid with almost no registration error. */
enum { SPAN_SEARCH = 24 };

/* Most pixels a target read holds at once, before and after resampling (384 MB of RGB each):
 * a 1672-px tile (the largest a tile job allows) from a level up to 6.7x finer. */
enum { READ_PIXELS_MAX = 1 << 27 };

typedef struct {
    int64_t start; /* first level pixel */
    int len;       /* level pixels */
    int out_len;   /* target pixels the span is resampled to */
    int crop;      /* offset of t0 in the resampled span */
} span;

static span plan_span(int64_t t0, int n, double k)
{
    int margin = (int)ceil(2.0 / k);
    if (margin < 2)
        margin = 2;
    int64_t lo = (int64_t)floor((double)t0 / k) - margin;
    int64_t hi = (int64_t)ceil((double)(t0 + n) / k) + margin;
    span best = {0};
    double best_start_err = 2, best_len_err = 2;
    for (int a = 0; a <= SPAN_SEARCH; a++) {
        double pos = (double)t0 - (double)(lo - a) * k; /* t0 relative to the span start */
        double err = fabs(pos - nearbyint(pos));
        if (err < best_start_err - 1e-12) {
            best_start_err = err;
            best.start = lo - a;
        }
    }
    for (int b = 0; b <= SPAN_SEARCH; b++) {
        int64_t len = hi + b - best.start;
        double out = (double)len * k;
        double err = fabs(out - nearbyint(out));
        if (err < best_len_err - 1e-12) {
            best_len_err = err;
            best.len = (int)len;
        }
    }
    best.out_len = (int)llround(best.len * k);
    double scale = (double)best.out_len / ((double)best.len * k);
    best.crop = (int)llround(((double)t0 - (double)best.start * k) * scale);
    return best;
}

int gs_slide_read_target(gs_slide *s, int64_t tx, int64_t ty, int w, int h, uint8_t *rgb)
{
    GS_ASSERT(s);
    if (check_usable(s) != 0)
        return -1;
    if (w <= 0 || h <= 0 || !rgb)
        return gs_error_set("%s: invalid tile request (%dx%d)", s->path, w, h);
    if (tx <= -COORD_LIMIT / 1024 || tx >= COORD_LIMIT / 1024 || ty <= -COORD_LIMIT / 1024 ||
        ty >= COORD_LIMIT / 1024)
        return gs_error_set("%s: tile origin (%" PRId64 ", %" PRId64 ") out of range", s->path, tx,
                            ty);
    double k;
    int level = gs_slide_target_level(s, s->opt.target_mpp, &k);
    double ds = s->level_ds[level];

    if (fabs(k - 1) <= SCALE_TOL) {
        /* Same grid within 0.1%: round the origin and copy, no resampling blur. */
        int64_t lx = llround((double)tx / k), ly = llround((double)ty / k);
        return read_pieces(s, level, llround(lx * ds), llround(ly * ds), w, h, rgb);
    }

    /* A target resolution far from every level's (a job's own target_mpp, a slide without a
     * pyramid) would make either span huge: refuse it before planning, in doubles. */
    double src_side = (double)(w > h ? w : h) / k + 2 * (2.0 / k + 2 + SPAN_SEARCH);
    double out_side = src_side * k;
    if (src_side * src_side > READ_PIXELS_MAX || out_side * out_side > READ_PIXELS_MAX)
        return gs_error_set("%s: a %dx%d tile at %g um/px needs a level-%d region of about "
                            "%.0f px a side resampled by %g; over the %d-pixel limit",
                            s->path, w, h, s->opt.target_mpp, level, src_side, k, READ_PIXELS_MAX);
    span sx = plan_span(tx, w, k), sy = plan_span(ty, h, k);
    GS_ASSERT(sx.crop >= 0 && sx.crop + w <= sx.out_len);
    GS_ASSERT(sy.crop >= 0 && sy.crop + h <= sy.out_len);
    int rc = -1;
    uint8_t *src = malloc((size_t)sx.len * sy.len * 3);
    uint8_t *dst = malloc((size_t)sx.out_len * sy.out_len * 3);
    if (!src || !dst) {
        gs_error_set("%s: out of memory for a %dx%d tile", s->path, w, h);
        goto free_buffers;
    }
    if (read_pieces(s, level, llround(sx.start * ds), llround(sy.start * ds), sx.len, sy.len,
                    src) != 0)
        goto free_buffers;
    int resized = k < 1 ? gs_resize_area_u8(src, sx.len, sy.len, (size_t)sx.len * 3, 3, dst,
                                            sx.out_len, sy.out_len, (size_t)sx.out_len * 3)
                        : gs_resize_bilinear_u8(src, sx.len, sy.len, (size_t)sx.len * 3, 3, dst,
                                                sx.out_len, sy.out_len, (size_t)sx.out_len * 3);
    if (resized != 0) {
        gs_error_prefix("%s: resampling a tile", s->path);
        goto free_buffers;
    }
    for (int r = 0; r < h; r++)
        memcpy(rgb + (size_t)r * w * 3, dst + ((size_t)(sy.crop + r) * sx.out_len + sx.crop) * 3,
               (size_t)w * 3);
    rc = 0;

free_buffers:
    free(dst);
    free(src);
    return rc;
}

int gs_slide_read_region_shrunk(gs_slide *s, int level, int64_t x, int64_t y, int rw, int rh,
                                int tw, int th, uint8_t *rgb)
{
    GS_ASSERT(s);
    if (check_usable(s) != 0)
        return -1;
    if (level < 0 || level >= s->levels || rw <= 0 || rh <= 0 || tw <= 0 || th <= 0 || tw > rw ||
        th > rh || !rgb)
        return gs_error_set("%s: invalid shrunk region request (level %d of %d, %dx%d to %dx%d)",
                            s->path, level, s->levels, rw, rh, tw, th);
    if (x <= -COORD_LIMIT || x >= COORD_LIMIT || y <= -COORD_LIMIT || y >= COORD_LIMIT)
        return gs_error_set("%s: region origin (%" PRId64 ", %" PRId64 ") out of range", s->path, x,
                            y);
    double ds = s->level_ds[level];
    /* Separable area mean: each strip of level rows is shrunk horizontally into `cols`
     * (rh x tw), then `cols` is shrunk vertically. Memory is one strip (at most PIECE_PIXELS
     * level pixels) plus `cols`, never the rw x rh region itself. */
    int strip_h = PIECE_PIXELS / rw;
    strip_h = strip_h < 1 ? 1 : strip_h > rh ? rh : strip_h;
    int rc = -1;
    uint8_t *strip = malloc((size_t)rw * strip_h * 3);
    uint8_t *cols = malloc((size_t)tw * rh * 3);
    if (!strip || !cols) {
        gs_error_set("%s: out of memory shrinking %dx%d level pixels to %dx%d", s->path, rw, rh, tw,
                     th);
        goto free_buffers;
    }
    for (int r = 0; r < rh; r += strip_h) {
        int n = rh - r < strip_h ? rh - r : strip_h;
        if (read_pieces(s, level, x, y + llround(r * ds), rw, n, strip) != 0)
            goto free_buffers;
        if (gs_resize_area_u8(strip, rw, n, (size_t)rw * 3, 3, cols + (size_t)r * tw * 3, tw, n,
                              (size_t)tw * 3) != 0) {
            gs_error_prefix("%s: shrinking level %d", s->path, level);
            goto free_buffers;
        }
    }
    if (gs_resize_area_u8(cols, tw, rh, (size_t)tw * 3, 3, rgb, tw, th, (size_t)tw * 3) != 0) {
        gs_error_prefix("%s: shrinking level %d", s->path, level);
        goto free_buffers;
    }
    rc = 0;

free_buffers:
    free(cols);
    free(strip);
    return rc;
}

int gs_slide_thumbnail(gs_slide *s, int max_dim, uint8_t **rgb, int *w, int *h)
{
    return gs_slide_thumbnail_capped(s, max_dim, 0, rgb, w, h);
}

int gs_slide_thumbnail_capped(gs_slide *s, int max_dim, int64_t max_source_pixels, uint8_t **rgb,
                              int *w, int *h)
{
    GS_ASSERT(s && rgb && w && h);
    *rgb = NULL;
    if (check_usable(s) != 0)
        return -1;
    if (max_dim <= 0)
        return gs_error_set("%s: invalid thumbnail size %d", s->path, max_dim);
    int64_t w0 = s->level_w[0], h0 = s->level_h[0];
    int64_t longer = w0 > h0 ? w0 : h0;
    int tw = (int)w0, th = (int)h0;
    if (longer > max_dim) {
        double f = (double)max_dim / (double)longer;
        tw = w0 >= h0 ? max_dim : (int)llround((double)w0 * f);
        th = h0 >= w0 ? max_dim : (int)llround((double)h0 * f);
        tw = tw < 1 ? 1 : tw;
        th = th < 1 ? 1 : th;
    }
    int level = 0;
    for (int l = 1; l < s->levels; l++)
        if (s->level_w[l] >= tw && s->level_h[l] >= th)
            level = l;
    /* The cost is the source level, read whole: refuse before reading a pixel. */
    int64_t lw = s->level_w[level], lh = s->level_h[level];
    if (max_source_pixels > 0 && (double)lw * (double)lh > (double)max_source_pixels)
        return gs_error_set("%s: too large to plan: its thumbnail would be read from level %d "
                            "of %d, %" PRId64 " x %" PRId64 " pixels (%.0f Mpx; the limit is "
                            "%.0f Mpx), its smallest level not smaller than the %d x %d "
                            "thumbnail",
                            s->path, level, s->levels, lw, lh, (double)lw * (double)lh / 1e6,
                            (double)max_source_pixels / 1e6, tw, th);
    if (lw > INT_MAX / 4 || lh > INT_MAX / 4)
        return gs_error_set("%s: level %d is %" PRId64 " x %" PRId64 " pixels: too large to read "
                            "a thumbnail from",
                            s->path, level, lw, lh);
    uint8_t *out = malloc((size_t)tw * th * 3);
    if (!out)
        return gs_error_set("%s: out of memory for a %dx%d thumbnail", s->path, tw, th);
    if (gs_slide_read_region_shrunk(s, level, 0, 0, (int)lw, (int)lh, tw, th, out) != 0) {
        free(out);
        return -1;
    }
    *rgb = out;
    *w = tw;
    *h = th;
    return 0;
}
