# The default model bundle: the multi-task network and the screener with seeded random weights
# (provenance "untrained"; no trained gastric weights exist yet) plus the organ-agnostic quality
# gates trained here on real tissue and committed as partial bundles in model/trained/ (the blur
# and foreground networks; how each was made is model/trained/README.md), merged by
# model/pytorch/make_bundle.py --trained as part of the default build. `gastroscreen screen`
# finds it at <build>/model/default.safetensors next to the build tree's daemon/gastroscreen, or
# at <prefix>/share/gastroscreen/default.safetensors once installed (daemon/cli/cmd_screen.c
# gives the lookup order). The fixed seed and creation time make the file byte-identical per
# build.
set(GS_DEFAULT_BUNDLE ${CMAKE_BINARY_DIR}/model/default.safetensors)
# The root CMakeLists.txt installs it (share/gastroscreen): make the path visible there.
set(GS_DEFAULT_BUNDLE ${GS_DEFAULT_BUNDLE} PARENT_SCOPE)
set(GS_TRAINED_NETS ${CMAKE_SOURCE_DIR}/model/trained/blur.safetensors
                    ${CMAKE_SOURCE_DIR}/model/trained/foreground.safetensors)
set(GS_MAKE_BUNDLE_DEPS ${CMAKE_SOURCE_DIR}/model/pytorch/make_bundle.py
    ${CMAKE_SOURCE_DIR}/model/pytorch/bundle.py ${CMAKE_SOURCE_DIR}/model/pytorch/networks.py
    ${GS_TRAINED_NETS})
set(GS_TRAINED_ARGS)
foreach(net ${GS_TRAINED_NETS})
  list(APPEND GS_TRAINED_ARGS --trained ${net})
endforeach()
add_custom_command(
  OUTPUT ${GS_DEFAULT_BUNDLE}
  COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/model/pytorch/make_bundle.py --seed 20191008
          --nets multitask,screener ${GS_TRAINED_ARGS} --created 2019-10-08T00:00:00Z
          --out ${GS_DEFAULT_BUNDLE}
  DEPENDS ${GS_MAKE_BUNDLE_DEPS}
  COMMENT "Making the default model bundle model/default.safetensors (seeded multi-task and screener, trained quality gates)"
  VERBATIM)
add_custom_target(gs_default_bundle ALL DEPENDS ${GS_DEFAULT_BUNDLE})
