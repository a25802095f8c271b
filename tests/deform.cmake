# ops/deform_conv: unit tests, torchvision parity, and the bench_deform program (not a test).
gs_cmocka_test(test_deform_conv unit SOURCES unit/test_deform_conv.c LIBS gs_ops)

# The parity script writes seeded torchvision cases into a scratch folder and runs
# `test_deform_conv --parity DIR` on them.
add_test(NAME deform_conv_torch_parity
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/parity/deform_conv_torch.py
                 --checker $<TARGET_FILE:test_deform_conv>)
set_tests_properties(deform_conv_torch_parity PROPERTIES LABELS parity
                     ENVIRONMENT "${GS_TEST_ENV}")

add_executable(bench_deform bench_deform.c)
target_link_libraries(bench_deform PRIVATE gs_ops)
