# Tissue mask and tile plan.
find_package(PkgConfig REQUIRED)
pkg_check_modules(TIFF REQUIRED IMPORTED_TARGET libtiff-4)
gs_cmocka_test(test_tissue unit SOURCES unit/test_tissue.c LIBS gs_stages PkgConfig::TIFF)
