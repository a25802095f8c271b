# Wire schema (proto/gastroscreen.proto): round trips, garbage, wrong envelope types.
gs_cmocka_test(test_proto unit SOURCES unit/test_proto.c LIBS gs_proto)
# Protocol vocabulary (proto/vocab): slide ids, fences, names, pixel channels.
gs_cmocka_test(test_vocab unit SOURCES unit/test_vocab.c LIBS gs_proto)
