# Slide reader (OpenSlide) and PNG files.
gs_cmocka_test(test_png_io unit SOURCES unit/test_png_io.c LIBS gs_stages)
# One source, two binaries: the normal cases (unit) and the corrupt / missing / unsupported /
# truncated files (fault).
gs_cmocka_test(test_slide unit SOURCES unit/test_slide.c LIBS gs_stages)
gs_cmocka_test(test_slide_faults fault SOURCES unit/test_slide.c LIBS gs_stages)
target_compile_definitions(test_slide_faults PRIVATE GS_SLIDE_FAULTS=1)
