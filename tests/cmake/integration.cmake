# Integration tests (label integration): the service end to end.
#   - `gastroscreen screen` (embedded mode: coordinator and stages as threads over inproc://) on
#     the sample slide with the default bundle that the build makes (model/bundle.cmake), and on
#     a mix of a real, a corrupt and a missing slide, and a partly defocused slide made at test
#     time (tests/integration/screen.sh);
#   - its command line: --help documents the exit status, a bad flag exits 2, no slide exits 2.
set(GS_SCREEN_EXE $<TARGET_FILE:gastroscreen>)
# The sanitize build runs our kernels under ASan (several times slower): a wider safety net.
if(GS_SANITIZE)
  set(GS_INTEGRATION_BOUND 1500)
else()
  set(GS_INTEGRATION_BOUND 280)
endif()
math(EXPR GS_INTEGRATION_TIMEOUT "${GS_INTEGRATION_BOUND} + 60")
foreach(mode sample mixed partial)
  add_test(NAME screen_${mode}
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/integration/screen.sh ${GS_SCREEN_EXE}
                   ${GS_TEST_DATA} ${CMAKE_BINARY_DIR}/tests ${mode} ${GS_INTEGRATION_BOUND})
  set_tests_properties(screen_${mode} PROPERTIES LABELS integration
                       TIMEOUT ${GS_INTEGRATION_TIMEOUT})
endforeach()
add_test(NAME screen_help
         COMMAND sh -c "\"$0\" screen --help | grep -q 'Exit status: 0 when every slide got'"
                 ${GS_SCREEN_EXE})
add_test(NAME screen_bad_flag
         COMMAND sh -c "out=$(\"$0\" screen --no-such-flag x 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 2 ]"
                 ${GS_SCREEN_EXE})
add_test(NAME screen_no_slide
         COMMAND sh -c "out=$(\"$0\" screen 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 2 ] && echo \"$out\" | grep -q 'no slide given'"
                 ${GS_SCREEN_EXE})
set_tests_properties(screen_help screen_bad_flag screen_no_slide PROPERTIES LABELS unit)

# The service as separate processes on loopback (tests/integration/service.py): gastroscreend,
# one worker of each stage and a second infer worker, started by the test with free ports, a
# scratch journal and a slide root holding copies of tests/data slides plus an out-of-focus
# slide made at test time. service_probe (C, over stages/runtime/transport) announces the slides with
# `slide.arrived.` and subscribes to the events.
add_executable(service_probe integration/service_probe.c)
target_link_libraries(service_probe PRIVATE gs_stages)
add_test(NAME service_processes
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/integration/service.py
                 ${CMAKE_BINARY_DIR} ${GS_TEST_DATA} ${CMAKE_BINARY_DIR}/tests
                 ${GS_INTEGRATION_BOUND})
# Label sanitize: also run by the sanitize workflow (every stage process instrumented, ~2-3 min).
set_tests_properties(service_processes PROPERTIES LABELS "integration;sanitize" SKIP_RETURN_CODE 77
                     TIMEOUT ${GS_INTEGRATION_TIMEOUT})
