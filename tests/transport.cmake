# Stage transport (ZeroMQ sockets, framing, validation), the generic worker loop, and the
# tiler and foreground stage libraries.
gs_cmocka_test(test_transport unit SOURCES unit/test_transport.c LIBS gs_stages)
