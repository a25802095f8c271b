# PyTorch mirror (model/pytorch): python unittest scripts run with the system interpreter
# that has Debian's torch/torchvision (DESIGN.md section 6). Same environment as the
# cmocka tests (GS_TEST_ENV from tests/CMakeLists.txt).
foreach(gs_pytorch_test keys dcn bundle export forward)
  add_test(NAME pytorch_${gs_pytorch_test}
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/pytorch/test_${gs_pytorch_test}.py)
  set_tests_properties(pytorch_${gs_pytorch_test} PROPERTIES LABELS unit
                       ENVIRONMENT "${GS_TEST_ENV}")
endforeach()

# Foreign checkpoints (InPlace-ABN, DCNv1) exported and run by the C runtime: needs the
# gastroscreen binary. 32 s on 2 idle cores but 61 s when they are shared, so integration.
add_test(NAME pytorch_export_foreign
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/pytorch/test_export_foreign.py)
set_tests_properties(pytorch_export_foreign PROPERTIES LABELS integration TIMEOUT 300
                     ENVIRONMENT "${GS_TEST_ENV}")

# The training recipes learn (train.py multitask / screener on tiny synthetic-target data);
# the multi-task one also exports and checks the trained weights in C. Seeded, one thread.
# Measured on 2 shared cores: screener ~47 s, multitask (6 epochs of ~30 s) ~3.5 min.
foreach(gs_pytorch_test learn_screener learn_multitask)
  add_test(NAME pytorch_${gs_pytorch_test}
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/pytorch/test_${gs_pytorch_test}.py)
  set_tests_properties(pytorch_${gs_pytorch_test} PROPERTIES LABELS integration TIMEOUT 900
                       ENVIRONMENT "${GS_TEST_ENV}")
endforeach()

# The networks trained here and committed in model/trained/: their recorded held-out metrics
# still hold on a fixed reduced set rebuilt from ../shared/data, and the training records'
# data hashes still match the files.
foreach(gs_pytorch_test trained_blur trained_foreground)
  add_test(NAME pytorch_${gs_pytorch_test}
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/pytorch/test_${gs_pytorch_test}.py)
  set_tests_properties(pytorch_${gs_pytorch_test} PROPERTIES LABELS unit TIMEOUT 300
                       ENVIRONMENT "${GS_TEST_ENV}")
endforeach()
