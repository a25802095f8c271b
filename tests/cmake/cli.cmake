# The gastroscreen command line (daemon/cli): end to end over the built binary, the client
# commands against a fake coordinator, and `gastroscreen infer`'s error paths in-process.
add_test(NAME cli_tiles COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/tiles.sh $<TARGET_FILE:gastroscreen>)
set_tests_properties(cli_tiles PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}")
add_test(NAME cli_tiles_faults COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/tiles_faults.sh $<TARGET_FILE:gastroscreen>)
set_tests_properties(cli_tiles_faults PROPERTIES LABELS fault ENVIRONMENT "${GS_TEST_ENV}")

# submit / status / watch / top against a fake coordinator thread on loopback.
gs_cmocka_test(test_cli_client unit SOURCES unit/test_cli_client.c LIBS gs_daemon)
set_tests_properties(test_cli_client PROPERTIES TIMEOUT 300)
# `gastroscreen infer` error paths (in-process).
gs_cmocka_test(test_cmd_infer fault SOURCES unit/test_cmd_infer.c LIBS gs_daemon)
# The client commands against the real gastroscreend (with a foreground and a reporter worker)
# on a slide without tissue: submit, watch, status, top --once --json, /metrics.
add_test(NAME cli_against_gastroscreend
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/against_gastroscreend.sh
                 $<TARGET_FILE:gastroscreen> $<TARGET_FILE:gastroscreend>
                 $<TARGET_FILE:gastroscreen-foreground> $<TARGET_FILE:gastroscreen-reporter>
                 ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors)
set_tests_properties(cli_against_gastroscreend PROPERTIES LABELS integration
                     ENVIRONMENT "${GS_TEST_ENV}" SKIP_RETURN_CODE 77 TIMEOUT 600
                     FIXTURES_REQUIRED seeded_bundle)

# `gastroscreen eval`: its statistics against hand-worked and scipy values, and the command end
# to end on slides made at test time (the sample slide, a partly defocused copy, a slide
# without tissue, a missing file) whose figures are recounted from the per-slide rows.
gs_cmocka_test(test_evaluation unit SOURCES unit/test_evaluation.c LIBS gs_daemon)
add_test(NAME cli_eval COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/eval.sh
                               $<TARGET_FILE:gastroscreen> ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(cli_eval PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 900)
# `gastroscreen refine` on the sample slide's own regions.geojson plus a loose hand-drawn box.
add_test(NAME cli_refine COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/refine.sh
                                 $<TARGET_FILE:gastroscreen> ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(cli_refine PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 600)
# A slide with OpenSlide bounds (Leica SCN made at test time): reports and refine in QuPath's frame.
add_test(NAME cli_bounds COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/bounds.sh
                                 $<TARGET_FILE:gastroscreen> ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(cli_bounds PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 600)
# The QuPath-ready outputs of two screenings of the sample slide, parsed as QuPath reads them.
add_test(NAME cli_qupath COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/qupath.sh
                                 $<TARGET_FILE:gastroscreen> ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(cli_qupath PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 600)
# `gastroscreen dataset` on slides made at test time: files, masks, draws, resume.
add_test(NAME cli_dataset COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/dataset.sh
                                  $<TARGET_FILE:gastroscreen> ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(cli_dataset PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 600)
# `gastroscreen features`: the screener's inputs, checked against the PyTorch screener of the
# default bundle (whose seeded screener gives scores near 0.5, not saturated ones).
add_test(NAME cli_features COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/features.sh
                                   $<TARGET_FILE:gastroscreen> ${CMAKE_BINARY_DIR}/tests
                                   ${CMAKE_BINARY_DIR}/model/default.safetensors)
set_tests_properties(cli_features PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 600)

# `gastroscreen infer --json` over the built binary: the build's default bundle on a tile of the
# sample slide, and the seeded bundle with its blur and foreground networks marked trained.
add_test(NAME cli_infer_json
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/infer_json.sh $<TARGET_FILE:gastroscreen>
                 ${CMAKE_BINARY_DIR}/model/default.safetensors
                 ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors)
set_tests_properties(cli_infer_json PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     TIMEOUT 600 FIXTURES_REQUIRED seeded_bundle)
# LABELS.csv reading and CSV field writing (daemon/cli/labels).
gs_cmocka_test(test_labels unit SOURCES unit/test_labels.c LIBS gs_daemon)

# gastroscreend with CURVE on loopback: keygen, a listed and an unlisted client, the refusal on
# /metrics and in the log, SIGHUP reload, no start without keys off loopback, a 0640 secret
# refused, security = off warned.
add_test(NAME cli_curve_gastroscreend
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/curve_gastroscreend.sh
                 $<TARGET_FILE:gastroscreen> $<TARGET_FILE:gastroscreend>
                 ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors)
set_tests_properties(cli_curve_gastroscreend PROPERTIES LABELS integration
                     ENVIRONMENT "${GS_TEST_ENV}" SKIP_RETURN_CODE 77 TIMEOUT 300
                     FIXTURES_REQUIRED seeded_bundle)

# The whole service over CURVE (gastroscreend and the six stage workers on loopback with keys
# from keygen): the sample slide gets its verdict, nothing is refused, and a worker whose key is
# listed for blur only is refused as infer.
add_test(NAME cli_curve_pipeline
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/curve_pipeline.sh ${CMAKE_BINARY_DIR}
                 ${GS_TEST_DATA})
set_tests_properties(cli_curve_pipeline PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77 TIMEOUT 600)

# `gastroscreen announce` against the real gastroscreend (no workers): accepted with the id
# status shows, a duplicate, a path outside the roots and a missing file not acknowledged,
# usage errors, --bind with the coordinator's intake_connect, and under CURVE an announcer key
# listed in announcers/ taken, an unlisted one refused.
add_test(NAME cli_announce
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/announce.sh $<TARGET_FILE:gastroscreen>
                 $<TARGET_FILE:gastroscreend> ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors)
set_tests_properties(cli_announce PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77 TIMEOUT 300 FIXTURES_REQUIRED seeded_bundle)

# The HTTP surface of a real gastroscreend (tests/cli/web_gastroscreend.py): the sample slide
# and a slide without tissue screened by the six workers, then every endpoint as a browser or
# curl meets it (worklist page and assets, /api/slides with its filters, /api/throughput,
# /metrics, 404, traversal and symlinks, HEAD, 405, 413/414/431) and, on a 0.0.0.0 bind, the
# token rules. Several processes: run alone.
add_test(NAME web_gastroscreend
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/cli/web_gastroscreend.py
                 --build ${CMAKE_BINARY_DIR} --bundle ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors
                 --data ${CMAKE_CURRENT_SOURCE_DIR}/data --source ${CMAKE_SOURCE_DIR}
                 --scratch ${CMAKE_BINARY_DIR}/tests/web)
set_tests_properties(web_gastroscreend PROPERTIES LABELS integration SKIP_RETURN_CODE 77
                     TIMEOUT 3600 RUN_SERIAL TRUE FIXTURES_REQUIRED seeded_bundle)

# `gastroscreen bench --slide`: the whole-slide figure's JSON and table on the slide without
# tissue (--quick --repeat 1, the default bundle; no timing asserted).
add_test(NAME cli_bench_slide
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/bench_slide.sh $<TARGET_FILE:gastroscreen>)
set_tests_properties(cli_bench_slide PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77 TIMEOUT 1800)

# `gastroscreen calibrate` end to end: folder errors, the calibrated bundle's tensors and keys,
# int8 inference from it and the fallback of an uncalibrated bundle.
add_test(NAME cli_calibrate COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/calibrate.sh
                                    $<TARGET_FILE:gastroscreen>
                                    ${CMAKE_BINARY_DIR}/model/default.safetensors)
set_tests_properties(cli_calibrate PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77 TIMEOUT 600)
