# daemon/service as libraries: journal, slide table, tile ledger, config, metrics.
gs_cmocka_test(test_journal unit SOURCES unit/test_journal.c LIBS gs_daemon)
gs_cmocka_test(test_journal_faults unit SOURCES unit/test_journal_faults.c LIBS gs_daemon)
gs_cmocka_test(test_ledger unit SOURCES unit/test_ledger.c LIBS gs_daemon)
gs_cmocka_test(test_slide_table unit SOURCES unit/test_slide_table.c LIBS gs_daemon)
gs_cmocka_test(test_config unit SOURCES unit/test_config.c LIBS gs_daemon)
# The settings schema (stages/runtime/config_schema) against systemd/gastroscreen.conf and
# through both of its readers, gastroscreend's and the stage workers'.
gs_cmocka_test(test_config_schema unit SOURCES unit/test_config_schema.c LIBS gs_daemon)
gs_cmocka_test(test_metrics unit SOURCES unit/test_metrics.c LIBS gs_daemon)
# The HTTP server: routes, methods, path checks, files under a root, the token, bounds.
gs_cmocka_test(test_http unit SOURCES unit/test_http.c LIBS gs_daemon)
# The worklist snapshot of a slide table: /api/slides, /api/throughput, the viewer's lookup, the
# pages' routes.
gs_cmocka_test(test_worklist unit SOURCES unit/test_worklist.c LIBS gs_daemon)

# The coordinator's spool folder (plan, heat maps, retire, poison) as a crash leaves it.
gs_cmocka_test(test_spool unit SOURCES unit/test_spool.c LIBS gs_daemon)

# The coordinator library (daemon/service/coordinator, daemon/service/intake) driven in-process over inproc://
# with fake workers written in the test and a test clock (no sleeps, no timing assertions).
gs_cmocka_test(test_coordinator unit SOURCES unit/test_coordinator.c unit/coordinator_world.c
               LIBS gs_daemon)

# The gastroscreend executable: --help, a bad flag (exit 2 naming it), a model that does not
# load (exit 1 naming the file), and a start on loopback -> readiness -> SIGTERM -> exit 0 with
# the seeded bundle that tests/cmake/handlers.cmake makes.
set(GS_COORD_EXE $<TARGET_FILE:gastroscreend>)
add_test(NAME gastroscreend_help
         COMMAND sh -c "\"$0\" --help | grep -q 'usage: gastroscreend '" ${GS_COORD_EXE})
add_test(NAME gastroscreend_bad_flag
         COMMAND sh -c "out=$(\"$0\" --no-such-flag 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 2 ]"
                 ${GS_COORD_EXE})
add_test(NAME gastroscreend_missing_model
         COMMAND sh -c "out=$(\"$0\" --model /nonexistent/gs-model.safetensors 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 1 ] && echo \"$out\" | grep -q /nonexistent/gs-model.safetensors"
                 ${GS_COORD_EXE})
add_test(NAME gastroscreend_start_stop
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/integration/gastroscreend_smoke.sh ${GS_COORD_EXE}
                 ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors ${CMAKE_BINARY_DIR}/tests)
set_tests_properties(gastroscreend_help gastroscreend_bad_flag gastroscreend_missing_model
                     PROPERTIES LABELS unit)
set_tests_properties(gastroscreend_start_stop PROPERTIES LABELS integration
                     FIXTURES_REQUIRED seeded_bundle TIMEOUT 300)

# The coordinator with a journal folder that cannot be written (the journal's fault hook):
# degraded mode, refusals with the reason, recovery when the folder is back.
gs_cmocka_test(test_journal_degraded unit SOURCES unit/test_journal_degraded.c
               unit/coordinator_world.c LIBS gs_daemon)

# The coordinator with CURVE and the ZAP handler on tcp://127.0.0.1: unlisted, announcer and
# client keys kept off the work socket, worker keys off submit/query/events, a blur key refused
# as infer, a reload letting a key in, and a relay showing no worker id or slide path on the wire.
gs_cmocka_test(test_coordinator_curve unit SOURCES unit/test_coordinator_curve.c
               unit/key_folder.c unit/tcp_relay.c LIBS gs_daemon)
