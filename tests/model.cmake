# model/: the safetensors weight reader. test_weights writes its fixtures with
# tests/tools/safetensors_writer.py (/usr/bin/python3, stdlib only) into $GS_BUILD_DIR.
gs_cmocka_test(test_weights unit SOURCES unit/test_weights.c LIBS gs_model)
