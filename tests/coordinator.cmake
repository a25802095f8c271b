# The coordinator library (daemon/coordinator, daemon/intake) driven in-process over inproc://
# with fake workers written in the test and a test clock (no sleeps, no timing assertions).
gs_cmocka_test(test_coordinator unit SOURCES unit/test_coordinator.c LIBS gs_daemon)
