# systemd units: systemd-analyze verify (any output fails), security scores, sysusers.d and
# tmpfiles.d; units whose binary is not built are skipped with the reason (exit 77 = skipped).
add_test(NAME systemd_units COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/systemd/verify.sh
         ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR})
set_tests_properties(systemd_units PROPERTIES LABELS unit ENVIRONMENT "${GS_TEST_ENV}"
                     SKIP_RETURN_CODE 77)
