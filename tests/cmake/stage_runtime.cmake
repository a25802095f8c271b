# stages/runtime: transport (ZeroMQ sockets, framing, validation), the generic worker loop and
# the log lines (journald fields, the JOURNAL_STREAM check, plain stderr).
gs_cmocka_test(test_transport unit SOURCES unit/test_transport.c LIBS gs_stages)
gs_cmocka_test(test_worker unit SOURCES unit/test_worker.c unit/fake_coordinator.c LIBS gs_stages)
gs_cmocka_test(test_worker_stages unit SOURCES unit/test_worker_stages.c unit/fake_coordinator.c
               LIBS gs_stages)
gs_cmocka_test(test_log unit SOURCES unit/test_log.c LIBS gs_stages)
gs_cmocka_test(test_decision unit SOURCES unit/test_decision.c LIBS gs_stages)
# File helpers (mkdir -p, atomic writes, whole-file reads, clocks) and the CRC record files.
gs_cmocka_test(test_fileio unit SOURCES unit/test_fileio.c LIBS gs_stages)
gs_cmocka_test(test_recfile unit SOURCES unit/test_recfile.c LIBS gs_stages)
# CURVE keys: key files, the keys folder, the ZAP handler over tcp://127.0.0.1, CURVE or plain,
# and a relay recording the bytes on the wire (no slide id, no pixel run).
gs_cmocka_test(test_keys unit SOURCES unit/test_keys.c unit/tcp_relay.c unit/key_folder.c LIBS gs_stages)
# A tile inbox under CURVE: the hello carries its key, only tiler keys get tiles in.
gs_cmocka_test(test_worker_curve unit SOURCES unit/test_worker_curve.c unit/fake_coordinator.c
               unit/key_folder.c LIBS gs_stages)
