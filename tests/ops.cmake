# ops/ kernels: each test compares the fast path with the reference and checks known values.
gs_cmocka_test(test_ops_resample unit SOURCES unit/test_ops_resample.c LIBS gs_ops)
gs_cmocka_test(test_ops_colour unit SOURCES unit/test_ops_colour.c LIBS gs_ops)
gs_cmocka_test(test_ops_otsu unit SOURCES unit/test_ops_otsu.c LIBS gs_ops)
gs_cmocka_test(test_ops_morph unit SOURCES unit/test_ops_morph.c LIBS gs_ops)
gs_cmocka_test(test_ops_components unit SOURCES unit/test_ops_components.c LIBS gs_ops)
