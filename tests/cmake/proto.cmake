# Wire schema (proto/gastroscreen.proto): round trips, garbage, wrong envelope types.
gs_cmocka_test(test_proto unit SOURCES unit/test_proto.c LIBS gs_proto)
