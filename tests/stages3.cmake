# Stage handlers (stages/blur, infer, screener, reporter) without sockets, on a seeded bundle
# made at test time, and the stage executables' command lines.
set(GS_STAGES3_DIR ${CMAKE_BINARY_DIR}/tests/stages3)
add_test(NAME stages3_bundle
         COMMAND sh -c "mkdir -p '${GS_STAGES3_DIR}' && exec /usr/bin/python3 \
'${CMAKE_SOURCE_DIR}/model/pytorch/make_bundle.py' --seed 1 --created 2026-01-01T00:00:00Z \
--out '${GS_STAGES3_DIR}/seed1.safetensors'")
set_tests_properties(stages3_bundle PROPERTIES LABELS unit FIXTURES_SETUP stages3_bundle)

gs_cmocka_test(test_stage_handlers unit SOURCES unit/test_stage_handlers.c LIBS gs_stages)
set_tests_properties(test_stage_handlers PROPERTIES FIXTURES_REQUIRED stages3_bundle TIMEOUT 600)
