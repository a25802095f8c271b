/*
 * gastroscreen-<stage>: a stage worker executable. The build compiles this file once per stage
 * with GS_STAGE set to the stage's enumerator (stages/CMakeLists.txt); stage_run.h describes
 * the flags and the exit status.
 */
#include "stages/runtime/stage_run.h"

#ifndef GS_STAGE
#error "GS_STAGE must name the stage (e.g. GASTROSCREEN__V1__STAGE__STAGE_TILER)"
#endif

int main(int argc, char **argv)
{
    return gs_stage_run(GS_STAGE, argc, argv);
}
