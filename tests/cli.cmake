# The gastroscreen command line, end to end (shell scripts over the built binary).
add_test(NAME cli_tiles COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/tiles.sh $<TARGET_FILE:gastroscreen>)
set_tests_properties(cli_tiles PROPERTIES LABELS integration ENVIRONMENT "${GS_TEST_ENV}")
add_test(NAME cli_tiles_faults COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/cli/tiles_faults.sh $<TARGET_FILE:gastroscreen>)
set_tests_properties(cli_tiles_faults PROPERTIES LABELS fault ENVIRONMENT "${GS_TEST_ENV}")
