# Stage transport (ZeroMQ sockets, framing, validation), the generic worker loop, and the
# tiler and foreground stage libraries.
gs_cmocka_test(test_transport unit SOURCES unit/test_transport.c LIBS gs_stages)
find_package(PkgConfig REQUIRED)
pkg_check_modules(GS_TRANSPORT_TIFF REQUIRED IMPORTED_TARGET libtiff-4)
gs_cmocka_test(test_foreground unit SOURCES unit/test_foreground.c LIBS gs_stages
               PkgConfig::GS_TRANSPORT_TIFF)
gs_cmocka_test(test_tiler unit SOURCES unit/test_tiler.c LIBS gs_stages)
gs_cmocka_test(test_worker unit SOURCES unit/test_worker.c LIBS gs_stages)
