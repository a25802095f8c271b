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
