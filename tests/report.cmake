# Classical focus measure, mask contours, slide heatmap and slide reports.
gs_cmocka_test(test_ops_focus unit SOURCES unit/test_ops_focus.c LIBS gs_stages)
gs_cmocka_test(test_ops_contours unit SOURCES unit/test_ops_contours.c LIBS gs_ops)
gs_cmocka_test(test_heatmap unit SOURCES unit/test_heatmap.c LIBS gs_stages)
gs_cmocka_test(test_report unit SOURCES unit/test_report.c LIBS gs_stages)
gs_cmocka_test(test_reporter_methods unit SOURCES unit/test_reporter_methods.c LIBS gs_stages)
