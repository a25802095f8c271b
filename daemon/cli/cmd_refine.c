/*
 * cmd_refine: `gastroscreen refine SLIDE ANNOTATION.geojson --out REFINED.geojson`, a
 * pathologist's annotation cut to the slide's tissue (paper §3.1, Fig. 2), so that the glass
 * inside a loose outline is not taught as lesion (stages/slide/annotation has the rules).
 *
 * The input is what QuPath exports (GeoJSON in QuPath's pixels — level 0, less the bounds origin
 * of a slide with OpenSlide bounds, stages/slide/annotation — a FeatureCollection, an array of
 * Features or one Feature; Polygon and MultiPolygon with holes); the output is a
 * FeatureCollection QuPath imports, each feature with its classification and other properties,
 * its refined geometry and its area before and after in properties.measurements. A feature that
 * cannot be used, or keeps no tissue, is left out with a line on stderr naming the file and the
 * feature; the others are still written. The regions.geojson that `screen` writes is a valid
 * input too: a starting annotation a pathologist corrects in QuPath and brings back.
 *
 * Exit status: 0 when every feature was written; 1 when some were left out (the output holds
 * the others) or nothing could be done (the slide or the annotation cannot be read, the output
 * cannot be written); 2 on a usage error.
 */
#include "daemon/cli/commands.h"

#include <getopt.h>
#include <stdio.h>

#include "ops/error.h"
#include "stages/slide/annotation.h"
#include "stages/slide/reader.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen refine SLIDE ANNOTATION.geojson --out REFINED.geojson\n"
               "\n"
               "Cuts each region of a QuPath GeoJSON annotation (QuPath's level-0 pixels, from\n"
               "the bounds corner on slides with OpenSlide bounds; Polygon or MultiPolygon with\n"
               "holes) to the slide's tissue (colour deconvolution + Otsu mask,\n"
               "marker ink removed) and writes the refined regions with their classification and\n"
               "their area before and after (properties.measurements). Features that cannot be\n"
               "used or keep no tissue are named on stderr and left out.\n"
               "\n"
               "Exit status: 0 every feature written; 1 some left out, or an input or the output\n"
               "failed; 2 usage error.\n");
}

int gs_cmd_refine(int argc, char **argv)
{
    const char *out = NULL;
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'o':
            out = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 2 || !out) {
        fprintf(stderr, "gastroscreen refine: %s\n",
                !out ? "--out REFINED.geojson is required" : "give a SLIDE and an ANNOTATION");
        usage(stderr);
        return 2;
    }
    gs_slide *slide = gs_slide_open(argv[optind], NULL);
    if (!slide) {
        fprintf(stderr, "gastroscreen refine: %s\n", gs_error_get());
        return 1;
    }
    gs_refine_stats st;
    int rc = gs_refine_file(slide, argv[optind + 1], out, NULL, &st);
    gs_slide_destroy(&slide);
    if (rc != 0) {
        fprintf(stderr, "gastroscreen refine: %s\n", gs_error_get());
        return 1;
    }
    printf("%zu of %zu features written to %s (%zu unusable, %zu without tissue); area %.0f -> "
           "%.0f level-0 px^2 (%.1f%% kept)\n",
           st.written, st.read + st.skipped, out, st.skipped, st.emptied, st.area_before,
           st.area_after, st.area_before > 0 ? 100.0 * st.area_after / st.area_before : 0.0);
    return st.skipped || st.emptied ? 1 : 0;
}
