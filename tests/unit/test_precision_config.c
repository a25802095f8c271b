/*
 * The precision setting where the service reads it: the schema's [infer] precision (empty,
 * fp32, bf16 or int8; anything else refused naming the value), the infer worker's --precision flag
 * and key (only the infer stage holds it), and the provenance a stage announces (it names the
 * precision the model was set to). Runs on any CPU: nothing here executes bf16.
 *
 * With --capped-isa it caps oneDNN at avx512_core (ONEDNN_MAX_CPU_ISA, set before oneDNN
 * starts) and checks the fallback of a CPU without native bf16: bf16 asked for runs fp32, with
 * the one line to log saying why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/network.h"
#include "ops/cpu_rate.h"
#include "ops/dnnl_reorder.h"
#include "ops/error.h"
#include "stages/runtime/config_schema.h"
#include "stages/runtime/provenance.h"
#include "stages/runtime/stage_config.h"

static void schema_key(void **state)
{
    (void)state;
    gs_config_key_id k;
    assert_int_equal(gs_config_schema_find("infer", "precision", &k), 0);
    assert_int_equal(k, GS_CFG_INFER_PRECISION);
    assert_string_equal(gs_config_schema_key(k)->def, "");
    gs_config_value v;
    assert_int_equal(gs_config_schema_parse(k, "", &v), 0);
    assert_int_equal(gs_config_schema_parse(k, "fp32", &v), 0);
    assert_int_equal(gs_config_schema_parse(k, "bf16", &v), 0);
    assert_int_equal(gs_config_schema_parse(k, "int8", &v), 0);
    assert_int_equal(gs_config_schema_parse(k, "int4", &v), -1);
    assert_non_null(strstr(gs_error_get(), "\"int4\""));
    assert_int_equal(gs_config_schema_parse(k, "FP32", &v), -1);
}

static void infer_worker_flag(void **state)
{
    (void)state;
    gs_stage_config c;
    int help = 0;
    gs_stage_config_default(&c, GASTROSCREEN__V1__STAGE__STAGE_INFER);
    assert_string_equal(c.precision, "");
    char *argv[] = {"gastroscreen-infer", "--precision", "bf16", NULL};
    assert_int_equal(gs_stage_config_args(&c, 3, argv, &help), 0);
    assert_string_equal(c.precision, "bf16");
    char *bad[] = {"gastroscreen-infer", "--precision", "half", NULL};
    assert_int_equal(gs_stage_config_args(&c, 3, bad, &help), -1);
    assert_non_null(strstr(gs_error_get(), "half"));
    /* The blur worker runs no multi-task network: no such flag. */
    gs_stage_config_default(&c, GASTROSCREEN__V1__STAGE__STAGE_BLUR);
    assert_int_equal(gs_stage_config_args(&c, 3, argv, &help), -1);
}

static void provenance_names_the_precision(void **state)
{
    (void)state;
    char path[4096];
    const char *b = getenv("GS_BUILD_DIR");
    assert_non_null(b);
    snprintf(path, sizeof path, "%s/tests/seeded/seed1.safetensors", b);
    const gs_net_id mt = GS_NET_MULTITASK;
    gs_model *m = gs_model_load_nets(path, &mt, 1);
    if (!m)
        fail_msg("%s", gs_error_get());
    gs_provenance p;
    assert_int_equal(gs_provenance_init(&p, path, m, &mt, 1), 0);
    assert_string_equal(p.precision, "fp32");
    /* Setting bf16 converts weights; it works (slowly, emulated) on any AVX-512 CPU, and
     * below AVX-512 (no bf16 convs in oneDNN) it is refused and nothing changes. */
    if (!gs_dnnl_isa_has(dnnl_cpu_isa_avx512_core)) {
        assert_int_equal(gs_model_set_precision(m, GS_PRECISION_BF16), -1);
        assert_non_null(strstr(gs_error_get(), "precision bf16 needs AVX-512"));
        assert_int_equal(gs_provenance_init(&p, path, m, &mt, 1), 0);
        assert_string_equal(p.precision, "fp32");
        gs_model_destroy(&m);
        return;
    }
    if (gs_model_set_precision(m, GS_PRECISION_BF16))
        fail_msg("%s", gs_error_get());
    assert_int_equal(gs_provenance_init(&p, path, m, &mt, 1), 0);
    assert_string_equal(p.precision, "bf16");
    gs_model_destroy(&m);
}

static void capped_isa_falls_back(void **state)
{
    (void)state;
    assert_int_equal(gs_bf16_native(), 0);
    assert_int_equal(gs_bf16_pays(), 0);
    char why[160];
    assert_int_equal(gs_precision_usable(GS_PRECISION_BF16, why, sizeof why), GS_PRECISION_FP32);
    assert_non_null(strstr(why, "no native bf16"));
    assert_non_null(strstr(why, "running fp32"));
    assert_int_equal(gs_precision_usable(GS_PRECISION_FP32, why, sizeof why), GS_PRECISION_FP32);
    assert_string_equal(why, "");
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--capped-isa")) {
        /* Before any oneDNN call: the library reads it once. */
        setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE", 1);
        const struct CMUnitTest capped[] = {cmocka_unit_test(capped_isa_falls_back)};
        return cmocka_run_group_tests(capped, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(schema_key),
        cmocka_unit_test(infer_worker_flag),
        cmocka_unit_test(provenance_names_the_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
