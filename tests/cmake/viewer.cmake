# The slide viewer: Deep Zoom tiles of a slide (stages/slide/deepzoom) against openslide-python.
gs_cmocka_test(test_deepzoom unit SOURCES unit/test_deepzoom.c LIBS gs_stages)
# `gastroscreen view` over the sample slide screened once (fixture gs_view): every route over
# HTTP and its refusals (tests/cli/view_http.py), then the page in headless Chromium, judged by
# its screenshots (tests/web/view_browser.py; skipped only where chromium is not installed).
set(GS_VIEW_FIXTURE ${CMAKE_CURRENT_BINARY_DIR}/view_fixture)
add_test(NAME cli_view_setup COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/view_setup.sh
                                     $<TARGET_FILE:gastroscreen> ${GS_VIEW_FIXTURE})
set_tests_properties(cli_view_setup PROPERTIES LABELS integration FIXTURES_SETUP gs_view
                                               ENVIRONMENT "${GS_TEST_ENV}")
add_test(NAME cli_view_http COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/cli/view_http.py
                                    $<TARGET_FILE:gastroscreen> ${GS_VIEW_FIXTURE})
set_tests_properties(cli_view_http PROPERTIES LABELS integration FIXTURES_REQUIRED gs_view
                                              ENVIRONMENT "${GS_TEST_ENV}")
add_test(NAME web_view_browser
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/web/view_browser.py
                 $<TARGET_FILE:gastroscreen> ${GS_VIEW_FIXTURE})
set_tests_properties(web_view_browser PROPERTIES LABELS integration FIXTURES_REQUIRED gs_view
                                                 SKIP_RETURN_CODE 77 ENVIRONMENT "${GS_TEST_ENV}")
