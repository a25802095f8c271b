# Slide reader (OpenSlide) and PNG files.
gs_cmocka_test(test_png_io unit SOURCES unit/test_png_io.c LIBS gs_stages)
# One source, two binaries: the normal cases (unit) and the corrupt / missing / unsupported /
# truncated files (fault).
# test_slide writes tiled TIFFs with resolution tags at test time (libtiff).
pkg_check_modules(GS_SLIDE_TIFF REQUIRED IMPORTED_TARGET libtiff-4)
gs_cmocka_test(test_slide unit SOURCES unit/test_slide.c LIBS gs_stages PkgConfig::GS_SLIDE_TIFF)
gs_cmocka_test(test_slide_faults fault SOURCES unit/test_slide.c LIBS gs_stages
               PkgConfig::GS_SLIDE_TIFF)
target_compile_definitions(test_slide_faults PRIVATE GS_SLIDE_FAULTS=1)
