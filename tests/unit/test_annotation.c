/*
 * test_annotation: QuPath GeoJSON annotations (stages/slide/annotation): the three shapes of
 * file QuPath exports, unusable features named and skipped, the rasteriser on a polygon with a
 * hole counted by hand, and refinement of real annotations on the CMU-1 sample slide against
 * its own tissue mask (glass cut out, the lesion kept, properties kept, areas measured).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops/error.h"
#include "stages/slide/annotation.h"

static char tmp[64];

static const char *write_tmp(const char *text)
{
    snprintf(tmp, sizeof tmp, "/tmp/gs_test_ann_XXXXXX");
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return tmp;
}

#define SQUARE_WITH_HOLE                                                                           \
    "{\"type\":\"Feature\",\"properties\":{\"classification\":{\"name\":\"Tumor\"}},"              \
    "\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[10,0],[10,10],[0,10],[0,0]],"     \
    "[[2,2],[2,6],[6,6],[6,2]]]}}"

static void three_shapes_and_bad_features(void **state)
{
    (void)state;
    /* A single Feature. */
    gs_annotations *a = gs_annotations_read(write_tmp(SQUARE_WITH_HOLE));
    assert_non_null(a);
    assert_int_equal(gs_annotations_count(a), 1);
    assert_string_equal(gs_annotations_class(a, 0), "Tumor");
    assert_true(gs_annotations_area(a, 0) == 100 - 16);
    double x0, y0, x1, y1;
    gs_annotations_bounds(a, 0, &x0, &y0, &x1, &y1);
    assert_true(x0 == 0 && y0 == 0 && x1 == 10 && y1 == 10);
    gs_annotations_destroy(&a);
    unlink(tmp);
    /* An array, with a MultiPolygon and three unusable features. */
    a = gs_annotations_read(write_tmp(
        "[" SQUARE_WITH_HOLE ",{\"type\":\"Feature\",\"geometry\":{\"type\":\"LineString\","
        "\"coordinates\":[[0,0],[1,1]]}},{\"type\":\"Feature\",\"geometry\":{\"type\":"
        "\"MultiPolygon\",\"coordinates\":[[[[0,0],[4,0],[4,4]]],[[[10,10],[12,10],[12,12],"
        "[10,12]]]]},\"properties\":null},{\"type\":\"Feature\",\"geometry\":{\"type\":"
        "\"Polygon\",\"coordinates\":[[[0,0],[1,\"x\"],[2,2]]]}},{\"type\":\"Feature\"}]"));
    assert_non_null(a);
    assert_int_equal(gs_annotations_count(a), 2);
    assert_int_equal(gs_annotations_file_index(a, 1), 2);
    assert_string_equal(gs_annotations_class(a, 1), "");
    assert_true(gs_annotations_area(a, 1) == 8 + 4);
    assert_int_equal(gs_annotations_message_count(a), 3);
    assert_non_null(strstr(gs_annotations_message(a, 0),
                           ": feature 1: LineString is not a Polygon or MultiPolygon"));
    assert_non_null(strstr(gs_annotations_message(a, 1), ": feature 3: position 1 of a ring"));
    assert_non_null(strstr(gs_annotations_message(a, 2), ": feature 4: no geometry"));
    gs_annotations_destroy(&a);
    unlink(tmp);
    /* Finite but huge coordinates: their differences and areas would not be. */
    a = gs_annotations_read(write_tmp("[" SQUARE_WITH_HOLE
                                      ",{\"type\":\"Feature\",\"geometry\":{\"type\":\"Polygon\","
                                      "\"coordinates\":[[[1e308,0],[-1e308,5],[3,1e308]]]}}]"));
    assert_non_null(a);
    assert_int_equal(gs_annotations_count(a), 1);
    assert_int_equal(gs_annotations_message_count(a), 1);
    assert_non_null(strstr(gs_annotations_message(a, 0), ": feature 1: position 0 of a ring"));
    gs_annotations_destroy(&a);
    unlink(tmp);
    /* Not JSON, not GeoJSON, missing: errors naming the file. */
    assert_null(gs_annotations_read(write_tmp("{\"type\": ")));
    assert_non_null(strstr(gs_error_get(), "not valid JSON"));
    assert_non_null(strstr(gs_error_get(), tmp));
    unlink(tmp);
    assert_null(gs_annotations_read(write_tmp("{\"type\":\"Point\"}")));
    assert_non_null(strstr(gs_error_get(), "not a GeoJSON Feature, FeatureCollection"));
    unlink(tmp);
    assert_null(gs_annotations_read("/nonexistent/a.geojson"));
    assert_non_null(strstr(gs_error_get(), "/nonexistent/a.geojson"));
}

static void fill_counts_cells_by_hand(void **state)
{
    (void)state;
    gs_annotations *a = gs_annotations_read(write_tmp(SQUARE_WITH_HOLE));
    assert_non_null(a);
    unlink(tmp);
    /* Cell 1: every cell centre (i + 0.5) inside the square and outside the hole. */
    uint8_t m[12 * 12];
    memset(m, 0, sizeof m);
    assert_int_equal(gs_annotations_fill(a, 0, 0, 0, 1.0, m, 12, 12), 0);
    int n = 0;
    for (int j = 0; j < 12; j++)
        for (int i = 0; i < 12; i++) {
            int want = i < 10 && j < 10 && !(i >= 2 && i < 6 && j >= 2 && j < 6);
            assert_int_equal(m[j * 12 + i], want);
            n += m[j * 12 + i];
        }
    assert_int_equal(n, 84);
    /* Cell 2 with an offset: 5 x 5 cells over the square, the hole takes 2 x 2. */
    memset(m, 0, sizeof m);
    assert_int_equal(gs_annotations_fill(a, 0, 0, 0, 2.0, m, 5, 5), 0);
    n = 0;
    for (int k = 0; k < 25; k++)
        n += m[k];
    assert_int_equal(n, 21);
    assert_int_equal(gs_annotations_fill(a, 1, 0, 0, 1.0, m, 5, 5), -1);
    gs_annotations_destroy(&a);
}

static void refine_on_the_sample_slide(void **state)
{
    (void)state;
    char slide_path[4096], out[80];
    snprintf(slide_path, sizeof slide_path, "%s/CMU-1-Small-Region.svs", getenv("GS_TEST_DATA"));
    gs_slide *s = gs_slide_open(slide_path, NULL);
    assert_non_null(s);
    /* The whole slide as one loose outline; a box of glass in the top-left corner (no tissue
     * there on this slide); a box in the middle of the tissue. */
    const char *in = write_tmp(
        "{\"type\":\"FeatureCollection\",\"features\":["
        "{\"type\":\"Feature\",\"properties\":{\"classification\":{\"name\":\"Tumor\",\"color\":"
        "[200,0,0]},\"measurements\":{\"kept\":1}},\"geometry\":{\"type\":\"Polygon\","
        "\"coordinates\":[[[0,0],[2220,0],[2220,2967],[0,2967],[0,0]]]}},"
        "{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"Polygon\","
        "\"coordinates\":[[[0,0],[200,0],[200,200],[0,200],[0,0]]]}},"
        "{\"type\":\"Feature\",\"properties\":{},\"geometry\":{\"type\":\"Polygon\","
        "\"coordinates\":[[[1000,2300],[1200,2300],[1200,2500],[1000,2500],[1000,2300]]]}}]}");
    char in_path[64];
    snprintf(in_path, sizeof in_path, "%s", in);
    snprintf(out, sizeof out, "%s.out", in_path);
    gs_refine_stats st;
    assert_int_equal(gs_refine_file(s, in_path, out, NULL, &st), 0);
    printf("written %zu, emptied %zu; area %.0f -> %.0f px^2\n", st.written, st.emptied,
           st.area_before, st.area_after);
    assert_int_equal(st.read, 3);
    assert_int_equal(st.written, 2);
    assert_int_equal(st.emptied, 1);
    json_error_t je;
    json_t *g = json_load_file(out, 0, &je);
    assert_non_null(g);
    json_t *f = json_object_get(g, "features");
    assert_int_equal(json_array_size(f), 2);
    json_t *whole = json_array_get(f, 0), *inner = json_array_get(f, 1);
    json_t *meas = json_object_get(json_object_get(whole, "properties"), "measurements");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(whole, "properties"), "classification"), "name")),
        "Tumor");
    assert_int_equal(json_integer_value(json_object_get(meas, "kept")), 1);
    double before = json_number_value(json_object_get(meas, "area_before_px2"));
    double after = json_number_value(json_object_get(meas, "area_after_px2"));
    assert_true(before == 2220.0 * 2967.0);
    /* The sample slide is about one third tissue (its classical mask). */
    assert_true(after > 0.2 * before && after < 0.5 * before);
    assert_non_null(json_object_get(meas, "area_after_um2"));
    /* The box inside the tissue is nearly all kept. */
    json_t *im = json_object_get(json_object_get(inner, "properties"), "measurements");
    double ib = json_number_value(json_object_get(im, "area_before_px2"));
    double ia = json_number_value(json_object_get(im, "area_after_px2"));
    /* Cells of 1 um (2.004 px) do not divide the box: its edge rounds to a cell. */
    assert_true(ib == 40000 && ia > 0.9 * ib && ia <= 1.01 * ib);
    const char *type =
        json_string_value(json_object_get(json_object_get(whole, "geometry"), "type"));
    assert_true(!strcmp(type, "Polygon") || !strcmp(type, "MultiPolygon"));
    json_decref(g);
    unlink(in_path);
    unlink(out);
    gs_slide_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(three_shapes_and_bad_features),
        cmocka_unit_test(fill_counts_cells_by_hand),
        cmocka_unit_test(refine_on_the_sample_slide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
