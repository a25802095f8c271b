#include "stages/runtime/decision.h"

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
