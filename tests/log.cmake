# Log lines of the coordinator and the stage workers (stages/log): journald fields, the
# JOURNAL_STREAM check, plain stderr.
gs_cmocka_test(test_log unit SOURCES unit/test_log.c LIBS gs_stages)
