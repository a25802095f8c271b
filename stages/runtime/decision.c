#include "stages/runtime/decision.h"

#include "ops/focus.h"

void gs_decision_resolve(gs_decision *d, const gs_model_thresholds *bundle, double cfg_threshold,
                         int threshold_set, uint32_t cfg_top_k, int top_k_set)
{
    if (threshold_set) {
        d->threshold = cfg_threshold;
        d->threshold_source = GS_DECISION_FROM_CONFIG;
    } else if (bundle) {
        d->threshold = bundle->screen;
        d->threshold_source = GS_DECISION_FROM_BUNDLE;
    } else {
        d->threshold = cfg_threshold;
        d->threshold_source = GS_DECISION_FROM_DEFAULT;
    }
    if (top_k_set) {
        d->top_k = cfg_top_k;
        d->top_k_source = GS_DECISION_FROM_CONFIG;
    } else if (bundle) {
        d->top_k = bundle->topk;
        d->top_k_source = GS_DECISION_FROM_BUNDLE;
    } else {
        d->top_k = cfg_top_k;
        d->top_k_source = GS_DECISION_FROM_DEFAULT;
    }
}

void gs_decision_resolve_focus(gs_decision *d, const gs_model_thresholds *bundle, int blur_trained,
                               double cfg_fraction, int fraction_set, double cfg_focus,
                               int focus_set, double cfg_sparse, int sparse_set)
{
    /* The threshold the workers apply (stages/handlers/blur): a trained network takes a
     * configured value only on its own scale, P(sharp) in (0, 1); one >= 1 is a classical score,
     * which then holds only the sparse-tissue rule's crops (sparse_classical_threshold). */
    int cfg_on = focus_set && cfg_focus > 0 &&
                 (!(bundle && blur_trained) || gs_focus_is_network_threshold(cfg_focus));
    if (cfg_on) {
        d->focus_threshold = cfg_focus;
        d->focus_threshold_source = GS_DECISION_FROM_CONFIG;
    } else if (bundle && blur_trained) {
        d->focus_threshold = 1.0 - (double)bundle->blur;
        d->focus_threshold_source = GS_DECISION_FROM_BUNDLE;
    } else {
        d->focus_threshold = GS_FOCUS_THRESHOLD;
        d->focus_threshold_source = GS_DECISION_FROM_DEFAULT;
    }
    if (fraction_set) {
        d->blur_slide_fraction = cfg_fraction;
        d->blur_slide_source = GS_DECISION_FROM_CONFIG;
    } else if (bundle) {
        d->blur_slide_fraction = bundle->blur_slide;
        d->blur_slide_source = GS_DECISION_FROM_BUNDLE;
    } else {
        d->blur_slide_fraction = cfg_fraction;
        d->blur_slide_source = GS_DECISION_FROM_DEFAULT;
    }
    /* The rule is a part of the network method: a classical judgement never consults it, so
     * recording a configured share there would claim a rule that did not apply. */
    if (!bundle || !blur_trained) {
        d->sparse_tissue = 0;
        d->sparse_tissue_source = GS_DECISION_FROM_DEFAULT;
    } else if (sparse_set) {
        d->sparse_tissue = cfg_sparse;
        d->sparse_tissue_source = GS_DECISION_FROM_CONFIG;
    } else {
        d->sparse_tissue = bundle->blur_sparse_tissue;
        d->sparse_tissue_source = GS_DECISION_FROM_BUNDLE;
    }
    /* As the workers read the job's focus_threshold, which is the config's value (0 unset). */
    d->sparse_classical_threshold =
        d->sparse_tissue > 0 ? gs_focus_classical_threshold(focus_set ? cfg_focus : 0) : 0;
}
