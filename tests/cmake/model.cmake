# model/: the safetensors weight reader. test_weights writes its fixtures with
# tests/tools/safetensors_writer.py (/usr/bin/python3, stdlib only) into $GS_BUILD_DIR.
gs_cmocka_test(test_weights unit SOURCES unit/test_weights.c LIBS gs_model)

# Network runtime (model/runtime, model/network), C against the PyTorch mirror.
gs_cmocka_test(test_runtime unit SOURCES unit/test_runtime.c LIBS gs_model)

# C vs the PyTorch mirror on seeded bundles, real slide tiles and random tiles, through the
# CLI. The sanitizer build runs it on 128x128 inputs (its C side is 5-10x slower); the
# release build at 512x512.
if(GS_SANITIZE)
  set(GS_RUNTIME_PARITY_SIZE 128)
else()
  set(GS_RUNTIME_PARITY_SIZE 512)
endif()
add_test(NAME runtime_parity
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/parity/runtime_parity.py
                 --gastroscreen $<TARGET_FILE:gastroscreen>
                 --work ${CMAKE_CURRENT_BINARY_DIR}/runtime_parity
                 --size ${GS_RUNTIME_PARITY_SIZE})
set_tests_properties(runtime_parity PROPERTIES LABELS parity ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 900)
# The same with oneDNN capped at AVX2: every network channels-last, as on a CPU without
# AVX-512 (model/runtime.h), on 128x128 inputs (the reference kernels of anything still
# blocked would take minutes at 512).
add_test(NAME runtime_parity_avx2
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/parity/runtime_parity.py
                 --gastroscreen $<TARGET_FILE:gastroscreen>
                 --work ${CMAKE_CURRENT_BINARY_DIR}/runtime_parity_avx2 --size 128)
set_tests_properties(runtime_parity_avx2 PROPERTIES LABELS parity TIMEOUT 900
                     ENVIRONMENT "${GS_TEST_ENV};ONEDNN_MAX_CPU_ISA=AVX2")


# gs_model_load_nets: building only some networks of the seeded four-network bundle.
gs_cmocka_test(test_network_subset unit SOURCES unit/test_network_subset.c LIBS gs_model)
set_tests_properties(test_network_subset PROPERTIES FIXTURES_REQUIRED seeded_bundle TIMEOUT 300)

# The per-part profiling hook of the networks (what `gastroscreen bench` reports).
gs_cmocka_test(test_network_profile unit SOURCES unit/test_network_profile.c LIBS gs_model)
set_tests_properties(test_network_profile PROPERTIES FIXTURES_REQUIRED seeded_bundle TIMEOUT 300)

# The bf16 runtime step by step against float32, the precision setting and its fallback;
# skipped (exit 77) on a CPU without native bf16.
gs_cmocka_test(test_network_precision unit SOURCES unit/test_network_precision.c LIBS gs_model)
set_tests_properties(test_network_precision PROPERTIES FIXTURES_REQUIRED seeded_bundle
                     SKIP_RETURN_CODE 77 TIMEOUT 300)

# bf16 and int8 (bundles calibrated by `gastroscreen calibrate`) against fp32 on real tiles
# (CMU-1, TCGA, Kather patches) through `gastroscreen infer --precision`: patch score, feature
# cosine and segmentation budgets (model/network.h);
# skipped (exit 77) on a CPU without native bf16.
# Under the sanitizers it runs --quick (one slide tile and the Kather batch): the same C code
# paths, a fraction of the ~10 minutes the whole set takes there.
if(GS_SANITIZE)
  set(GS_PRECISION_BUDGET_QUICK --quick)
endif()
add_test(NAME precision_budget
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/parity/precision_budget.py
                 --gastroscreen $<TARGET_FILE:gastroscreen>
                 --work ${CMAKE_CURRENT_BINARY_DIR}/precision_budget ${GS_PRECISION_BUDGET_QUICK})
set_tests_properties(precision_budget PROPERTIES LABELS parity ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77 TIMEOUT 1800)

# The precision setting in the schema, the infer worker's flag and the announced provenance.
gs_cmocka_test(test_precision_config unit SOURCES unit/test_precision_config.c LIBS gs_stages)
set_tests_properties(test_precision_config PROPERTIES FIXTURES_REQUIRED seeded_bundle TIMEOUT 300)
# The same binary with oneDNN capped below avx512_core_bf16: the fallback to fp32.
add_test(NAME test_precision_fallback COMMAND test_precision_config --capped-isa)
set_tests_properties(test_precision_fallback PROPERTIES LABELS unit)

# The int8 runtime: int8 convs against an emulation of their integer arithmetic and against
# float32 within the quantisation bound, the calibration hook, the bundle writer.
gs_cmocka_test(test_runtime_int8 unit SOURCES unit/test_runtime_int8.c LIBS gs_model)
# The int8 precision on the seeded bundle: parsing, fallbacks, the calibrating state and an
# int8 run from the ranges it records.
gs_cmocka_test(test_network_int8 unit SOURCES unit/test_network_int8.c LIBS gs_model)
set_tests_properties(test_network_int8 PROPERTIES FIXTURES_REQUIRED seeded_bundle TIMEOUT 300)
# On an AMX CPU the bf16 decoder runs channels-last; capped below AMX, the same tests (and the
# real-tile budget, --quick) run the nChw16c decoder a CPU without AMX gets.
add_test(NAME test_network_int8_no_amx COMMAND test_network_int8)
set_tests_properties(test_network_int8_no_amx PROPERTIES LABELS unit FIXTURES_REQUIRED
                     seeded_bundle TIMEOUT 300 ENVIRONMENT
                     "${GS_TEST_ENV};ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16")
add_test(NAME precision_budget_no_amx
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/parity/precision_budget.py
                 --gastroscreen $<TARGET_FILE:gastroscreen>
                 --work ${CMAKE_CURRENT_BINARY_DIR}/precision_budget_no_amx --quick)
set_tests_properties(precision_budget_no_amx PROPERTIES LABELS parity SKIP_RETURN_CODE 77
                     TIMEOUT 1800 ENVIRONMENT "${GS_TEST_ENV};ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16")
