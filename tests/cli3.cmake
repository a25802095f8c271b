# Monitoring and the CLI client commands (daemon/metrics, cmd_submit/watch/status/top) and the
# systemd units (systemd-analyze verify on every unit, with the built binaries staged).
gs_cmocka_test(test_metrics unit SOURCES unit/test_metrics.c LIBS gs_daemon)
# submit / status / watch / top against a fake coordinator thread on loopback.
gs_cmocka_test(test_cli_client unit SOURCES unit/test_cli_client.c LIBS gs_daemon)
set_tests_properties(test_cli_client PROPERTIES TIMEOUT 300)
# systemd units: systemd-analyze verify (any output fails), security scores, sysusers.d and
# tmpfiles.d; units whose binary is not built are skipped with the reason (exit 77 = skipped).
add_test(NAME systemd_units COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/systemd/verify.sh
         ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
set_tests_properties(systemd_units PROPERTIES LABELS unit ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77)
# The client commands against the real gastroscreend (with a foreground and a reporter worker)
# on a slide without tissue: submit, watch, status, top --once --json, /metrics.
if(TARGET gastroscreend)
  add_test(NAME cli_against_gastroscreend
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli3/against_gastroscreend.sh
                   $<TARGET_FILE:gastroscreen> $<TARGET_FILE:gastroscreend>
                   $<TARGET_FILE:gastroscreen-foreground> $<TARGET_FILE:gastroscreen-reporter>
                   ${CMAKE_BINARY_DIR}/tests/stages3/seed1.safetensors)
  set_tests_properties(cli_against_gastroscreend PROPERTIES LABELS integration
                       ENVIRONMENT "${GS_TEST_ENV}" SKIP_RETURN_CODE 77 TIMEOUT 600
                       FIXTURES_REQUIRED stages3_bundle)
endif()
