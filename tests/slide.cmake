# Slide reader (OpenSlide) and PNG files.
gs_cmocka_test(test_png_io unit SOURCES unit/test_png_io.c LIBS gs_stages)
