# gastroscreen bench: smoke tests of the benchmark command (figures checked for presence and
# sign only; no timing assertions, machines are noisy). The full run is manual:
#   gastroscreen bench [--model BUNDLE]   and   tests/bench/torch_side.py
add_test(NAME bench_smoke
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/bench/smoke.py
                 --gastroscreen $<TARGET_FILE:gastroscreen>)
set_tests_properties(bench_smoke PROPERTIES LABELS unit ENVIRONMENT "${GS_TEST_ENV}")


# The pipeline benchmark's harness (tests/bench/pipeline.sh), one short round so the script
# cannot rot: the service as separate processes screens one sample slide, the network round
# runs, and the final JSON (printed only after every slide ended `done`) carries the ratio and
# every process's peak memory. No figure is asserted. Not in the sanitize build: it would time
# instrumented code.
if(NOT GS_SANITIZE)
  add_test(NAME bench_pipeline_smoke
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/bench/pipeline.sh ${CMAKE_BINARY_DIR}
                   --bundle ${CMAKE_BINARY_DIR}/model/default.safetensors --rounds 1
                   --slides-per-round 1 --bench-repeat 1)
  set_tests_properties(bench_pipeline_smoke PROPERTIES LABELS integration TIMEOUT 900
    ENVIRONMENT "GS_BENCH_SCRATCH=${CMAKE_BINARY_DIR}/tests/pipeline-bench"
    PASS_REGULAR_EXPRESSION "\"ratio\": [0-9.]+, .*\"gastroscreen-reporter\": [0-9.]+}}")
endif()
