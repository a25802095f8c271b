/* gastroscreen-tiler: the tiler stage worker (stages/stage_run.h describes flags and exit). */
#include "stages/stage_run.h"

int main(int argc, char **argv)
{
    return gs_stage_run(GASTROSCREEN__V1__STAGE__STAGE_TILER, argc, argv);
}
