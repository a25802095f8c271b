# Fault tests (label fault): real processes on loopback (gastroscreend and the six stage
# executables, free ports, scratch journal/spool/slide folders under the build tree), driven by
# tests/fault/fault.py on the seeded bundle tests/cmake/handlers.cmake makes: kill -9 of an infer
# worker, of a tiler and of the coordinator while a slide is INFERRING -> each slide ends in
# exactly one verdict (counted by a subscriber across the restart and by a replay of the
# journal, checked against the state query); a slide whose infer workers keep dying ends
# `failed` as poison. Every wait inside is bounded; the TIMEOUT is only a safety net (the
# sanitize build runs the network several times slower).
foreach(case infer tiler coordinator poison)
  add_test(NAME fault_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/fault/fault.py ${case}
                   --build ${CMAKE_BINARY_DIR} --bundle ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors
                   --data ${CMAKE_CURRENT_SOURCE_DIR}/data --scratch ${CMAKE_BINARY_DIR}/tests/fault)
  # Several processes each: run alone so that the machine's cores are not oversubscribed.
  set_tests_properties(fault_${case} PROPERTIES LABELS fault FIXTURES_REQUIRED seeded_bundle
                       TIMEOUT 3600 RUN_SERIAL TRUE)
endforeach()
# Label sanitize: also run by the sanitize workflow (ASan + UBSan over the coordinator's
# restart and journal replay, ~5 min instrumented); the other fault cases run in release only.
set_tests_properties(fault_coordinator PROPERTIES LABELS "fault;sanitize")

# The journal's faults (tests/fault/journal_faults.py): a damaged journal (flipped byte, torn
# tail, hand-edited slide file) replays with every intact record and every verdict once; a
# second coordinator on the same folder is refused; an unwritable journal folder puts the
# coordinator in degraded mode and back (skipped, exit 77, where nothing can make a folder
# unwritable without a mount).
foreach(case damaged lock readonly)
  add_test(NAME fault_journal_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/fault/journal_faults.py ${case}
                   --build ${CMAKE_BINARY_DIR} --bundle ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors
                   --data ${CMAKE_CURRENT_SOURCE_DIR}/data --scratch ${CMAKE_BINARY_DIR}/tests/fault)
  set_tests_properties(fault_journal_${case} PROPERTIES LABELS fault FIXTURES_REQUIRED seeded_bundle
                       TIMEOUT 1800 RUN_SERIAL TRUE SKIP_RETURN_CODE 77)
endforeach()

# Which file the service reads and how long one slide may hold a stage (tests/fault/paths.py):
# a FIFO and a folder refused at submit; a folder swapped for a link out of the roots after
# intake, and a file replaced after PLANNED, fail the slide naming the change; a slide declaring
# 200000 x 200000 px fails with the plan cap while a small slide still gets its verdict.
foreach(case refuse swap replace huge)
  add_test(NAME fault_paths_${case}
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/fault/paths.py ${case}
                   --build ${CMAKE_BINARY_DIR} --bundle ${CMAKE_BINARY_DIR}/tests/seeded/seed1.safetensors
                   --data ${CMAKE_CURRENT_SOURCE_DIR}/data --scratch ${CMAKE_BINARY_DIR}/tests/fault)
  set_tests_properties(fault_paths_${case} PROPERTIES LABELS fault FIXTURES_REQUIRED seeded_bundle
                       TIMEOUT 3600 RUN_SERIAL TRUE)
endforeach()
