# monitoring/: the Prometheus rules and their unit tests, the example Prometheus configuration,
# and a live gastroscreend's /metrics (promtool check metrics; the dashboard's and the rules'
# metric names and label values against it). promtool comes with the Debian package
# prometheus; the tests that need it skip (exit 77) where it is missing.
set(GS_MONITORING ${CMAKE_SOURCE_DIR}/monitoring)
set(GS_PROMTOOL_SH ${CMAKE_CURRENT_SOURCE_DIR}/monitoring/promtool.sh)
add_test(NAME monitoring_rules_check
         COMMAND sh ${GS_PROMTOOL_SH} check-rules ${GS_MONITORING}/prometheus/gastroscreen-rules.yml)
add_test(NAME monitoring_rules_test
         COMMAND sh ${GS_PROMTOOL_SH} test-rules
                 ${GS_MONITORING}/prometheus/gastroscreen-rules.test.yml)
add_test(NAME monitoring_prometheus_config
         COMMAND sh ${GS_PROMTOOL_SH} check-config
                 ${GS_MONITORING}/prometheus/prometheus.example.yml)
set_tests_properties(monitoring_rules_check monitoring_rules_test monitoring_prometheus_config
                     PROPERTIES LABELS unit SKIP_RETURN_CODE 77)

# One gastroscreend (default bundle, no workers) scraped once; it also checks the build and
# model info series against this build's version and the bundle's SHA-256.
set(GS_MONITORING_SCRAPE ${CMAKE_BINARY_DIR}/tests/monitoring-metrics.txt)
add_test(NAME monitoring_live_scrape
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/monitoring/scrape.py
                 $<TARGET_FILE:gastroscreend> ${CMAKE_BINARY_DIR}/model/default.safetensors
                 ${PROJECT_VERSION} ${CMAKE_BINARY_DIR}/tests ${GS_MONITORING_SCRAPE})
set_tests_properties(monitoring_live_scrape PROPERTIES LABELS integration TIMEOUT 300
                     FIXTURES_SETUP monitoring_scrape)
add_test(NAME monitoring_metrics_lint
         COMMAND sh ${GS_PROMTOOL_SH} check-metrics ${GS_MONITORING_SCRAPE})
add_test(NAME monitoring_names
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/monitoring/check_monitoring.py
                 ${CMAKE_SOURCE_DIR} ${GS_MONITORING_SCRAPE})
set_tests_properties(monitoring_metrics_lint monitoring_names PROPERTIES LABELS integration
                     FIXTURES_REQUIRED monitoring_scrape SKIP_RETURN_CODE 77)
