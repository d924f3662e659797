/* The overload manager's config checks and reset buckets (overload.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/overload.h"
#include "envoy/extensions/resource_monitors/fixed_heap/v3/fixed_heap.pb-c.h"

#define HEAP_URL "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig"
#define HEAP "envoy.resource_monitors.fixed_heap"

/* One fixed_heap monitor of max bytes and one action with one trigger. */
struct fixture {
    uint8_t heap_bytes[16];
    Google__Protobuf__Any any;
    Envoy__Config__Overload__V3__ResourceMonitor mon, *mons[1];
    Envoy__Config__Overload__V3__ThresholdTrigger th;
    Envoy__Config__Overload__V3__ScaledTrigger sc;
    Envoy__Config__Overload__V3__Trigger trig, *trigs[1];
    Envoy__Config__Overload__V3__OverloadAction act, *acts[1];
    Envoy__Config__Overload__V3__BufferFactoryConfig bf;
    Envoy__Config__Overload__V3__OverloadManager om;
};

static void fixture_init(struct fixture *f, uint64_t max, const char *action)
{
    memset(f, 0, sizeof(*f));
    Envoy__Extensions__ResourceMonitors__FixedHeap__V3__FixedHeapConfig fh =
        ENVOY__EXTENSIONS__RESOURCE_MONITORS__FIXED_HEAP__V3__FIXED_HEAP_CONFIG__INIT;
    fh.max_heap_size_bytes = max;
    google__protobuf__any__init(&f->any);
    f->any.type_url = HEAP_URL;
    f->any.value.len = envoy__extensions__resource_monitors__fixed_heap__v3__fixed_heap_config__pack(&fh, f->heap_bytes);
    f->any.value.data = f->heap_bytes;
    envoy__config__overload__v3__resource_monitor__init(&f->mon);
    f->mon.name = HEAP;
    f->mon.config_type_case = ENVOY__CONFIG__OVERLOAD__V3__RESOURCE_MONITOR__CONFIG_TYPE_TYPED_CONFIG;
    f->mon.typed_config = &f->any;
    f->mons[0] = &f->mon;
    envoy__config__overload__v3__threshold_trigger__init(&f->th);
    f->th.value = 0.9;
    envoy__config__overload__v3__scaled_trigger__init(&f->sc);
    envoy__config__overload__v3__trigger__init(&f->trig);
    f->trig.name = HEAP;
    f->trig.trigger_oneof_case = ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF_THRESHOLD;
    f->trig.threshold = &f->th;
    f->trigs[0] = &f->trig;
    envoy__config__overload__v3__overload_action__init(&f->act);
    f->act.name = (char *)action;
    f->act.n_triggers = 1;
    f->act.triggers = f->trigs;
    f->acts[0] = &f->act;
    envoy__config__overload__v3__buffer_factory_config__init(&f->bf);
    f->bf.minimum_account_to_track_power_of_two = 20;
    envoy__config__overload__v3__overload_manager__init(&f->om);
    f->om.n_resource_monitors = 1;
    f->om.resource_monitors = f->mons;
    f->om.n_actions = 1;
    f->om.actions = f->acts;
}

static void expect_error(struct fixture *f, const char *want)
{
    struct dp_overload *o = (struct dp_overload *)1;
    char err[512] = "";
    assert_int_equal(dp_overload_build(&f->om, &o, err, sizeof(err)), -1);
    assert_null(o);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

static void test_none_and_valid(void **state)
{
    (void)state;
    struct dp_overload *o = (struct dp_overload *)1;
    char err[256];
    assert_int_equal(dp_overload_build(NULL, &o, err, sizeof(err)), 0);
    assert_null(o);
    struct fixture f;
    fixture_init(&f, 1 << 30, "envoy.overload_actions.stop_accepting_requests");
    assert_int_equal(dp_overload_build(&f.om, &o, err, sizeof(err)), 0);
    assert_non_null(o);
    dp_overload_free(o);
}

static void test_errors(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, 0, "envoy.overload_actions.shrink_heap");
    expect_error(&f, "overload_manager.resource_monitors[0].typed_config.max_heap_size_bytes: must be greater than 0");
    fixture_init(&f, 1 << 30, "envoy.overload_actions.disable_http_keepalive");
    expect_error(&f, "overload_manager.actions[0].name: unsupported overload action \"envoy.overload_actions.disable_http_keepalive\"");
    fixture_init(&f, 1 << 30, "envoy.overload_actions.shrink_heap");
    f.th.value = -0.1;
    expect_error(&f, "overload_manager.actions[0].triggers[0].threshold.value: must be in [0, 1]");
    fixture_init(&f, 1 << 30, "envoy.overload_actions.shrink_heap");
    f.trig.trigger_oneof_case = ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF__NOT_SET;
    expect_error(&f, "overload_manager.actions[0].triggers[0]: threshold or scaled is required");
    fixture_init(&f, 1 << 30, "envoy.overload_actions.reset_high_memory_stream");
    f.trig.trigger_oneof_case = ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF_SCALED;
    f.trig.scaled = &f.sc;
    f.sc.scaling_threshold = 0.5;
    f.sc.saturation_threshold = 0.8;
    expect_error(&f, "needs overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two");
    f.om.buffer_factory_config = &f.bf;
    f.bf.minimum_account_to_track_power_of_two = 9;
    expect_error(&f, "overload_manager.buffer_factory_config.minimum_account_to_track_power_of_two: must be in [10, 56]");
    f.bf.minimum_account_to_track_power_of_two = 20;
    struct dp_overload *o = NULL;
    char err[256];
    assert_int_equal(dp_overload_build(&f.om, &o, err, sizeof(err)), 0);
    dp_overload_free(o);
    fixture_init(&f, 1 << 30, "envoy.overload_actions.shrink_heap");
    f.om.n_resource_monitors = 0;
    expect_error(&f, "overload_manager.actions[0].triggers[0].name: no envoy.resource_monitors.fixed_heap resource monitor is configured");
    fixture_init(&f, 1 << 30, "envoy.overload_actions.shrink_heap");
    f.any.type_url = "type.googleapis.com/google.protobuf.Empty";
    f.mon.name = "envoy.resource_monitors.cgroup_memory";
    expect_error(&f, "overload_manager.resource_monitors[0]: unsupported resource monitor \"envoy.resource_monitors.cgroup_memory\"");
}

static void test_reset_buckets(void **state)
{
    (void)state;
    assert_int_equal(dp_overload_reset_threshold(20, 0), 0);
    assert_int_equal(dp_overload_reset_threshold(20, -1), 0);
    /* a little pressure: only the top bucket (2^27 and more) */
    assert_int_equal(dp_overload_reset_threshold(20, 0.01), (uint64_t)1 << 27);
    assert_int_equal(dp_overload_reset_threshold(20, 0.125), (uint64_t)1 << 27);
    assert_int_equal(dp_overload_reset_threshold(20, 0.126), (uint64_t)1 << 26);
    assert_int_equal(dp_overload_reset_threshold(20, 0.5), (uint64_t)1 << 24);
    /* saturation: every tracked stream */
    assert_int_equal(dp_overload_reset_threshold(20, 1.0), (uint64_t)1 << 20);
    assert_int_equal(dp_overload_reset_threshold(10, 1.0), 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none_and_valid),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reset_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
