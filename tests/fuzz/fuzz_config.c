/*
 * Fuzz target for the INI reader every process shares (stages/runtime/config_schema) and the
 * two readers built on it (daemon/service/config for gastroscreend, stages/runtime/
 * stage_config for each stage worker): any file text must load or be refused with an error
 * naming the file, never crash or leak; a file that loads has every key in its range. The
 * first line is also parsed as a duration and as a value of one key (picked by the first
 * byte), the parsers command-line flags go through.
 *
 * Built with -fsanitize=fuzzer when GS_FUZZ is on; otherwise linked with tests/fuzz/
 * standalone_main.c, which replays the seed corpus once in every build.
 */
#include "daemon/service/config.h"
#include "ops/error.h"
#include "stages/runtime/config_schema.h"
#include "stages/runtime/stage_config.h"
#include "tests/fuzz/fuzz_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The error must name the file it is about (the path, or "FILE:LINE"). */
static void assert_names(const char *path)
{
    GS_ASSERT(strncmp(gs_error_get(), path, strlen(path)) == 0);
}

static void check_in_range(const gs_config_values *v)
{
    for (int k = 0; k < GS_CFG_KEY_COUNT; k++) {
        const gs_config_key_info *info = gs_config_schema_key((gs_config_key_id)k);
        const gs_config_value *val = gs_config_values_get(v, (gs_config_key_id)k);
        GS_ASSERT(info && val && val->text);
        switch (info->type) {
        case GS_CONFIG_COUNT:
            GS_ASSERT(val->count >= info->min && val->count <= info->max);
            break;
        case GS_CONFIG_NUMBER:
            GS_ASSERT(val->number >= info->min && val->number <= info->max);
            break;
        case GS_CONFIG_DURATION:
            GS_ASSERT(val->ms >= info->min && val->ms <= info->max);
            break;
        default:
            break;
        }
    }
}

static void parse_first_line(const uint8_t *data, size_t size)
{
    size_t n = 0;
    while (n < size && n < 256 && data[n] != '\n')
        n++;
    char text[257];
    memcpy(text, data, n);
    text[n] = '\0';
    int64_t ms;
    if (gs_config_parse_duration(text, &ms) == 0)
        GS_ASSERT(ms >= 0);
    gs_config_value out;
    gs_config_key_id k = (gs_config_key_id)(size ? data[0] % GS_CFG_KEY_COUNT : 0);
    if (gs_config_schema_parse(k, text, &out) == 0)
        GS_ASSERT(out.text == text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_input("fuzz.conf", data, size);

    gs_config_values *v = gs_config_values_new();
    GS_ASSERT(v);
    if (gs_config_values_load(v, path) == 0)
        check_in_range(v);
    else
        assert_names(path);
    gs_config_values_destroy(&v);

    gs_config *c = gs_config_new();
    GS_ASSERT(c);
    if (gs_config_load(c, path) != 0)
        assert_names(path);
    gs_config_destroy(&c);

    for (int s = GASTROSCREEN__V1__STAGE__STAGE_TILER; s <= GASTROSCREEN__V1__STAGE__STAGE_REPORTER;
         s++) {
        gs_stage_config sc;
        gs_stage_config_default(&sc, (Gastroscreen__V1__Stage)s);
        if (gs_stage_config_load(&sc, path) != 0)
            assert_names(path);
    }
    parse_first_line(data, size);
    return 0;
}
