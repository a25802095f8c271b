# Fuzz targets (tests/fuzz/README.md: what each covers, how to run one longer).
# gs_fuzz_target(NAME SOURCE file.c ... CORPUS dir LIBS ... [FIXTURES ...]) builds one libFuzzer
# target (its ctest requires the FIXTURES, e.g. the seeded bundle). With
# GS_FUZZ (the sanitize preset, clang) it is linked with -fsanitize=fuzzer and its ctest fuzzes
# for GS_FUZZ_SECONDS over a copy of the seed corpus in the build tree (new inputs land there,
# never in the source tree). Without GS_FUZZ (gcc release) the same file is linked with a small
# main() (tests/fuzz/standalone_main.c) and the ctest replays every seed once, so the target
# always compiles and the seeds (with every fixed crash's reproducer) stay regression tests.
# All carry the label fuzz.
set(GS_FUZZ_SECONDS 60 CACHE STRING "Seconds each libFuzzer ctest runs")

function(gs_fuzz_target name)
  cmake_parse_arguments(F "" "CORPUS" "SOURCE;LIBS;FIXTURES" ${ARGN})
  if(GS_FUZZ)
    add_executable(${name} ${F_SOURCE})
  else()
    add_executable(${name} ${F_SOURCE} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/standalone_main.c)
  endif()
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  if(GS_FUZZ)
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    set(work ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus/${name})
    add_test(NAME ${name}_corpus
             COMMAND ${CMAKE_COMMAND} -E copy_directory ${F_CORPUS} ${work})
    set_tests_properties(${name}_corpus PROPERTIES LABELS fuzz FIXTURES_SETUP ${name}_corpus)
    add_test(NAME ${name}
             COMMAND ${name} -max_total_time=${GS_FUZZ_SECONDS} -rss_limit_mb=2048
                     -timeout=30 -print_final_stats=1 ${work})
    set_tests_properties(${name} PROPERTIES LABELS fuzz
                                            FIXTURES_REQUIRED "${name}_corpus;${F_FIXTURES}"
                                            ENVIRONMENT "${GS_TEST_ENV}")
  else()
    add_test(NAME ${name} COMMAND ${name} ${F_CORPUS})
    set_tests_properties(${name} PROPERTIES LABELS fuzz ENVIRONMENT "${GS_TEST_ENV}")
    if(F_FIXTURES)
      set_tests_properties(${name} PROPERTIES FIXTURES_REQUIRED "${F_FIXTURES}")
    endif()
  endif()
endfunction()

gs_fuzz_target(fuzz_weights SOURCE fuzz/fuzz_weights.c
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/weights LIBS gs_model)
gs_fuzz_target(fuzz_config SOURCE fuzz/fuzz_config.c fuzz/fuzz_util.c
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/config LIBS gs_daemon)
gs_fuzz_target(fuzz_annotation SOURCE fuzz/fuzz_annotation.c fuzz/fuzz_util.c
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/annotation LIBS gs_stages)
gs_fuzz_target(fuzz_coordinator SOURCE fuzz/fuzz_coordinator.c fuzz/fuzz_util.c
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/coordinator LIBS gs_daemon)
gs_fuzz_target(fuzz_worker SOURCE fuzz/fuzz_worker.c fuzz/fuzz_util.c
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/worker LIBS gs_stages
               FIXTURES seeded_bundle)
gs_fuzz_target(fuzz_journal SOURCE fuzz/fuzz_journal.c fuzz/fuzz_util.c
               CORPUS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/journal LIBS gs_daemon)
# Writes the coordinator's, the worker's and the journal's seeds (tests/fuzz/fuzz_seeds.c).
add_executable(fuzz_seeds fuzz/fuzz_seeds.c)
target_link_libraries(fuzz_seeds PRIVATE gs_daemon)
