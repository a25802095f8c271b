# Coordinator state as libraries: journal, slide table, tile ledger, config.
gs_cmocka_test(test_journal unit SOURCES unit/test_journal.c LIBS gs_daemon)
gs_cmocka_test(test_ledger unit SOURCES unit/test_ledger.c LIBS gs_daemon)
gs_cmocka_test(test_slides unit SOURCES unit/test_slides.c LIBS gs_daemon)
gs_cmocka_test(test_config unit SOURCES unit/test_config.c LIBS gs_daemon)
