/*
 * decision: the values that decide a slide, the screener's threshold and its top k, and where
 * each came from.
 *
 * A bundle carries the values its screener was calibrated with (model/FORMAT.md:
 * threshold.screen, topk). A lab's config file overrides one only by setting its key
 * explicitly ([screener] threshold, top_k): the schema's default never wins over the bundle,
 * so a recalibrated bundle takes effect without editing every config. gastroscreend and the
 * embedded mode resolve once at start and hand the result to the coordinator, which copies
 * the threshold and its source into every verdict (report.json "threshold",
 * "threshold_source"); the screener worker resolves top k the same way, so its matrix has the
 * rows the coordinator sends.
 *
 *     gs_decision d;
 *     gs_model_thresholds bundle = gs_model_get_thresholds(model);  // model: the loaded bundle
 *     gs_decision_resolve(&d, &bundle, // NULL instead when no bundle is loaded
 *                         cfg->threshold, gs_config_is_set(cfg, GS_CFG_SCREENER_THRESHOLD),
 *                         cfg->top_k, gs_config_is_set(cfg, GS_CFG_SCREENER_TOP_K));
 */
#ifndef GS_STAGES_RUNTIME_DECISION_H
#define GS_STAGES_RUNTIME_DECISION_H

#include <stdint.h>

#include "model/network.h"

/* Where a value came from (the strings report.json and the verdict carry). */
#define GS_DECISION_FROM_BUNDLE "bundle"
#define GS_DECISION_FROM_CONFIG "config"
/* No bundle to take it from and the config left the key alone: the schema's default. */
#define GS_DECISION_FROM_DEFAULT "default"

typedef struct {
    double threshold;             /* slide positive if the screener score > threshold */
    const char *threshold_source; /* one of GS_DECISION_FROM_* (static) */
    uint32_t top_k;               /* patch features the screener takes */
    const char *top_k_source;
    /* slide unassessable when more than this share of its tissue tiles is blurry (the
     * blur-first sample, and every tile once judged); gs_decision_resolve_focus sets it */
    double blur_slide_fraction;
    const char *blur_slide_source;
    /* a tile is blurry when its focus < focus_threshold: the config's [blur] focus_threshold
     * when set (for a trained blur network only a value below 1, its P(sharp) scale), else
     * 1 - the bundle's threshold.blur when its blur network is trained, else the classical
     * GS_FOCUS_THRESHOLD */
    double focus_threshold;
    const char *focus_threshold_source;
    /* the blur network's sparse-tissue rule (model/FORMAT.md threshold.blur_sparse_tissue): a
     * crop whose tissue share is below sparse_tissue is also judged by the classical measure,
     * at sparse_classical_threshold; 0 and 0 = the rule is off */
    double sparse_tissue;
    const char *sparse_tissue_source;
    double sparse_classical_threshold;
} gs_decision;

/* Fills *d: for each value, the config's when the key was set explicitly, else the bundle's
 * (bundle: gs_model_get_thresholds() of the loaded bundle, or NULL when there is none), else
 * the config's default. Never fails: the bundle's values were checked when it loaded and the
 * config's when it was read. */
void gs_decision_resolve(gs_decision *d, const gs_model_thresholds *bundle, double cfg_threshold,
                         int threshold_set, uint32_t cfg_top_k, int top_k_set);

/* Sets the focus rules the same way: d->blur_slide_fraction is the config's [blur]
 * blur_slide_fraction when set explicitly, else the bundle's threshold.blur_slide, else the
 * config's default; d->focus_threshold as its comment says (blur_trained: the bundle's blur
 * network is trained, so its workers judge with it). d->sparse_tissue applies only to that
 * network: without a bundle or with an untrained blur network the rule is off (source
 * "default") whatever the config says; else the config's [blur] sparse_tissue when set
 * explicitly (0 = off), else the bundle's threshold.blur_sparse_tissue (0 when the bundle has
 * none: off). d->sparse_classical_threshold is the classical threshold the rule holds a crop
 * to (the config's focus_threshold when set and >= 1, else GS_FOCUS_THRESHOLD; 0 when off). */
void gs_decision_resolve_focus(gs_decision *d, const gs_model_thresholds *bundle, int blur_trained,
                               double cfg_fraction, int fraction_set, double cfg_focus,
                               int focus_set, double cfg_sparse, int sparse_set);

#endif
