# Stage handlers (stages/handlers/blur, infer, screener, reporter) without sockets, on a seeded bundle
# made at test time, and the stage executables' command lines.
set(GS_SEEDED_DIR ${CMAKE_BINARY_DIR}/tests/seeded)
add_test(NAME seeded_bundle
         COMMAND sh -c "mkdir -p '${GS_SEEDED_DIR}' && exec /usr/bin/python3 \
'${CMAKE_SOURCE_DIR}/model/pytorch/make_bundle.py' --seed 1 --created 2026-01-01T00:00:00Z \
--out '${GS_SEEDED_DIR}/seed1.safetensors'")
set_tests_properties(seeded_bundle PROPERTIES LABELS unit FIXTURES_SETUP seeded_bundle)
# A foreground network with hand-set weights (tissue = bright pixels), trained and untrained,
# for the network method of the foreground stage.
add_test(NAME crafted_fg_bundle
         COMMAND sh -c "mkdir -p '${GS_SEEDED_DIR}' && \
/usr/bin/python3 '${CMAKE_SOURCE_DIR}/tests/unit/make_crafted_fg_bundle.py' \
--out '${GS_SEEDED_DIR}/crafted-fg.safetensors' && \
exec /usr/bin/python3 '${CMAKE_SOURCE_DIR}/tests/unit/make_crafted_fg_bundle.py' --untrained \
--out '${GS_SEEDED_DIR}/crafted-fg-untrained.safetensors'")
set_tests_properties(crafted_fg_bundle PROPERTIES LABELS unit FIXTURES_SETUP crafted_fg_bundle)

find_package(PkgConfig REQUIRED)
pkg_check_modules(GS_HANDLERS_TIFF REQUIRED IMPORTED_TARGET libtiff-4)
gs_cmocka_test(test_foreground unit SOURCES unit/test_foreground.c LIBS gs_stages
               PkgConfig::GS_HANDLERS_TIFF)
set_tests_properties(test_foreground PROPERTIES FIXTURES_REQUIRED crafted_fg_bundle)
gs_cmocka_test(test_tiler unit SOURCES unit/test_tiler.c LIBS gs_stages)
gs_cmocka_test(test_reporter_methods unit SOURCES unit/test_reporter_methods.c LIBS gs_stages)
gs_cmocka_test(test_stage_handlers unit SOURCES unit/test_stage_handlers.c LIBS gs_stages)
set_tests_properties(test_stage_handlers PROPERTIES FIXTURES_REQUIRED seeded_bundle TIMEOUT 600)

# The executables: --help exits 0 with the usage; a bad flag exits 2 naming it; a missing
# model file exits 1 naming the file (stages that load a model); a bad value in the config file
# exits 2 naming file, line and key; a worker started against no coordinator stops cleanly
# (exit 0) on SIGTERM once it is running (it prints "connecting to" when its loop starts).
foreach(stage tiler foreground blur infer screener reporter)
  set(exe $<TARGET_FILE:gastroscreen-${stage}>)
  add_test(NAME stage_exec_${stage}_help
           COMMAND sh -c "out=$(\"$0\" --help) && echo \"$out\" | grep -q 'usage: gastroscreen-${stage} '"
                   ${exe})
  add_test(NAME stage_exec_${stage}_bad_flag
           COMMAND sh -c "out=$(\"$0\" --no-such-flag 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 2 ] && echo \"$out\" | grep -q -- '--no-such-flag: not an option'"
                   ${exe})
  add_test(NAME stage_exec_${stage}_bad_config
           COMMAND sh -c "f=\"$1/bad-${stage}.conf\"; mkdir -p \"$1\" && printf '[coordinator]\\nheartbeat_ms = 0\\n' > \"$f\" && out=$(\"$0\" --config \"$f\" 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 2 ] && echo \"$out\" | grep -q \"$f:2: .coordinator. heartbeat_ms\""
                   ${exe} ${GS_SEEDED_DIR})
  set_tests_properties(stage_exec_${stage}_help stage_exec_${stage}_bad_flag
                       stage_exec_${stage}_bad_config PROPERTIES LABELS unit)
endforeach()
foreach(stage foreground blur infer screener)
  add_test(NAME stage_exec_${stage}_missing_model
           COMMAND sh -c "out=$(\"$0\" --model /nonexistent/missing.safetensors 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 1 ] && echo \"$out\" | grep -q '/nonexistent/missing.safetensors'"
                   $<TARGET_FILE:gastroscreen-${stage}>)
  set_tests_properties(stage_exec_${stage}_missing_model PROPERTIES LABELS unit)
endforeach()
set(GS_SEEDED_SIGTERM_tiler "")
set(GS_SEEDED_SIGTERM_blur "--tile-inbox tcp://127.0.0.1:* --model ${GS_SEEDED_DIR}/seed1.safetensors")
foreach(stage tiler blur)
  add_test(NAME stage_exec_${stage}_sigterm
           COMMAND sh -c "log=\"$1/sigterm-${stage}.log\"; mkdir -p \"$1\"; rm -f \"$log\"; set -f; \"$0\" --config \"$2\" --coordinator tcp://127.0.0.1:1 $3 2>\"$log\" & p=$!; i=0; until grep -q 'connecting to' \"$log\"; do i=$((i+1)); [ $i -gt 600 ] && { kill -9 $p; cat \"$log\"; exit 1; }; sleep 0.1; done; kill -TERM $p; wait $p; rc=$?; cat \"$log\"; [ $rc -eq 0 ] && grep -q stopped \"$log\""
                   $<TARGET_FILE:gastroscreen-${stage}> ${GS_SEEDED_DIR}
                   ${CMAKE_SOURCE_DIR}/systemd/gastroscreen.conf "${GS_SEEDED_SIGTERM_${stage}}")
  set_tests_properties(stage_exec_${stage}_sigterm PROPERTIES LABELS unit FIXTURES_REQUIRED
                       seeded_bundle)
endforeach()
