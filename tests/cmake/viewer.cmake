# The slide viewer: Deep Zoom tiles of a slide (stages/slide/deepzoom) against openslide-python.
gs_cmocka_test(test_deepzoom unit SOURCES unit/test_deepzoom.c LIBS gs_stages)
