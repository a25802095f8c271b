# stages/slide: the slide reader (OpenSlide), PNG files, the tissue mask and plan, the slide
# heat map and the report files.
gs_cmocka_test(test_png_io unit SOURCES unit/test_png_io.c LIBS gs_stages)
# One source, two binaries: the normal cases (unit) and the corrupt / missing / unsupported /
# truncated files (fault).
# test_slide_reader writes tiled TIFFs with resolution tags at test time (libtiff).
pkg_check_modules(GS_SLIDE_TIFF REQUIRED IMPORTED_TARGET libtiff-4)
gs_cmocka_test(test_slide_reader unit SOURCES unit/test_slide_reader.c LIBS gs_stages PkgConfig::GS_SLIDE_TIFF)
gs_cmocka_test(test_slide_reader_faults fault SOURCES unit/test_slide_reader.c LIBS gs_stages
               PkgConfig::GS_SLIDE_TIFF)
target_compile_definitions(test_slide_reader_faults PRIVATE GS_SLIDE_FAULTS=1)
# Which file a stage reads (FIFOs, links swapped in, replaced files) and the plan's work caps.
gs_cmocka_test(test_slide_identity unit SOURCES unit/test_slide_identity.c LIBS gs_stages
               PkgConfig::GS_SLIDE_TIFF)
gs_cmocka_test(test_tissue unit SOURCES unit/test_tissue.c LIBS gs_stages PkgConfig::GS_SLIDE_TIFF)
gs_cmocka_test(test_heatmap unit SOURCES unit/test_heatmap.c LIBS gs_stages)
gs_cmocka_test(test_report_files unit SOURCES unit/test_report_files.c LIBS gs_stages)
gs_cmocka_test(test_uuid5 unit SOURCES unit/test_uuid5.c LIBS gs_stages)
# QuPath annotations: reading, rasterising and refinement against the tissue (refine).
gs_cmocka_test(test_annotation unit SOURCES unit/test_annotation.c LIBS gs_stages)
# The foreground network's input resize against hand-computed values and against PIL itself.
gs_cmocka_test(test_box_resize unit SOURCES unit/test_box_resize.c LIBS gs_stages)
# tissue_mask_tool: the classical mask of one PNG at a given um/px (the foreground network's
# training labels, model/pytorch/learn_foreground.py). A tool, not a test.
add_executable(tissue_mask_tool tools/tissue_mask_tool.c)
target_link_libraries(tissue_mask_tool PRIVATE gs_stages)
