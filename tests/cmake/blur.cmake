# The blur network's sparse-tissue rule (stages/handlers/blur, bundle key
# threshold.blur_sparse_tissue) on the committed trained blur network: real held-out crops of
# CMU-1-Small-Region and the network's bundle without the key, made at test time.
set(GS_BLUR_SPARSE_DIR ${CMAKE_BINARY_DIR}/tests/blur-sparse)
add_test(NAME blur_sparse_crops
         COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/unit/make_blur_sparse_crops.py
                 --data ${GS_TEST_DATA} --trained ${CMAKE_SOURCE_DIR}/model/trained/blur.safetensors
                 --out ${GS_BLUR_SPARSE_DIR})
set_tests_properties(blur_sparse_crops PROPERTIES LABELS unit FIXTURES_SETUP blur_sparse_crops)
gs_cmocka_test(test_blur_sparse unit SOURCES unit/test_blur_sparse.c LIBS gs_stages)
set_tests_properties(test_blur_sparse PROPERTIES FIXTURES_REQUIRED blur_sparse_crops)
