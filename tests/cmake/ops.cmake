# ops/ kernels: each test compares the fast path with the reference and checks known values.
gs_cmocka_test(test_error unit SOURCES unit/test_error.c LIBS gs_ops)
gs_cmocka_test(test_ops_resample unit SOURCES unit/test_ops_resample.c LIBS gs_ops)
gs_cmocka_test(test_ops_colour unit SOURCES unit/test_ops_colour.c LIBS gs_ops)
gs_cmocka_test(test_ops_otsu unit SOURCES unit/test_ops_otsu.c LIBS gs_ops)
gs_cmocka_test(test_ops_morph unit SOURCES unit/test_ops_morph.c LIBS gs_ops)
gs_cmocka_test(test_ops_components unit SOURCES unit/test_ops_components.c LIBS gs_ops)
gs_cmocka_test(test_ops_contours unit SOURCES unit/test_ops_contours.c LIBS gs_ops)
gs_cmocka_test(test_ops_rng unit SOURCES unit/test_ops_rng.c LIBS gs_ops)
# Whether bf16 pays on this CPU (measured once per process).
gs_cmocka_test(test_ops_cpu_rate unit SOURCES unit/test_ops_cpu_rate.c LIBS gs_ops)
# The classical focus measure; its test reads the real focus pairs as PNG (stages/slide/png_io).
gs_cmocka_test(test_ops_focus unit SOURCES unit/test_ops_focus.c LIBS gs_stages)

# ops/deform_conv: unit tests and torchvision parity. The parity script writes seeded
# torchvision cases into a scratch folder and runs `test_deform_conv --parity DIR` on them.
gs_cmocka_test(test_deform_conv unit SOURCES unit/test_deform_conv.c LIBS gs_ops)
# The bf16 path against the float32 reference; skipped (exit 77) on a CPU without native bf16.
gs_cmocka_test(test_deform_conv_bf16 unit SOURCES unit/test_deform_conv_bf16.c LIBS gs_ops)
set_tests_properties(test_deform_conv_bf16 PROPERTIES SKIP_RETURN_CODE 77)
# The int8 form against the float32 reference; skipped (exit 77) without VNNI and native bf16.
gs_cmocka_test(test_deform_conv_int8 unit SOURCES unit/test_deform_conv_int8.c LIBS gs_ops)
set_tests_properties(test_deform_conv_int8 PROPERTIES SKIP_RETURN_CODE 77)
add_test(NAME deform_conv_torch_parity
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/parity/deform_conv_torch.py
                 --checker $<TARGET_FILE:test_deform_conv>)
set_tests_properties(deform_conv_torch_parity PROPERTIES LABELS parity
                     ENVIRONMENT "${GS_TEST_ENV}")

# focus_tool: the classical focus judgement of PNG files, one line each; learn_blur.py evaluate
# runs it to compare the blur network with the C measure on the same crops.
add_executable(focus_tool tools/focus_tool.c)
target_link_libraries(focus_tool PRIVATE gs_stages)
