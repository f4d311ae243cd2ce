/*
 * check_metrics.c - unit tests for metrics.c: counter, gauge and histogram
 * arithmetic, exact totals under concurrent updates, escaping, the
 * exposition text line by line, the series cap, the snapshot swap while
 * renders run, the process metrics, and the whole page through
 * `promtool check metrics`.
 *
 * Each test runs in its own forked process under Check (unless CK_FORK=no)
 * and starts from an empty registry; the concurrency tests start their own
 * threads.
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "util.h"

static void check_metrics_setup(void)
{
    metrics_reset_for_tests();
}

static void check_metrics_teardown(void)
{
    metrics_reset_for_tests();
}

/* 1 if text holds line as a whole line. */
static int check_metrics_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
        p += 1;
    }
    return 0;
}

/* The value of the unlabelled sample called name, or NAN if absent. */
static double check_metrics_sample(const char *text, const char *name)
{
    size_t n = strlen(name);
    const char *p = text;

    while ((p = strstr(p, name)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += 1;
    }
    return NAN;
}

/* Lines of text that start with prefix. */
static int check_metrics_count_lines(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    int count = 0;

    for (const char *p = text; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, prefix, n) == 0)
            count++;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return count;
}

#define ASSERT_LINE(text, line) \
    ck_assert_msg(check_metrics_has_line((text), (line)), \
                  "missing line \"%s\" in:\n%.2000s", (line), (text))

/* --- arithmetic --- */

START_TEST(test_counter_adds_and_renders_integers)
{
    struct metrics_family *f = metrics_counter_new("t_events_total",
                                                   "Events.", NULL);
    struct metrics_family *big = metrics_counter_new("t_big_total", "Big.",
                                                     NULL);
    struct metrics_child *c = metrics_child(f, NULL);
    char *text;

    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_eq(metrics_child(f, NULL), c);
    metrics_counter_inc(c);
    metrics_counter_add(c, 41);
    ck_assert_uint_eq(metrics_counter_value(c), 42);
    metrics_counter_add(metrics_child(big, NULL), 12345678901234567890ULL);

    text = metrics_render(NULL);
    ASSERT_LINE(text, "t_events_total 42");
    /* Counts never take an exponent, however large. */
    ASSERT_LINE(text, "t_big_total 12345678901234567890");
    free(text);
}
END_TEST

START_TEST(test_gauge_sets_adds_and_spells_special_values)
{
    static const char *const k[] = { "kind", NULL };
    struct metrics_family *f = metrics_gauge_new("t_level", "Level.", k);
    const char *v1[] = { "sum" }, *v2[] = { "nan" }, *v3[] = { "pinf" },
               *v4[] = { "ninf" }, *v5[] = { "tenth" }, *v6[] = { "huge" };
    struct metrics_child *c = metrics_child(f, v1);
    char *text;

    metrics_gauge_set(c, 5);
    metrics_gauge_add(c, -7.5);
    ck_assert_double_eq(metrics_gauge_value(c), -2.5);
    metrics_gauge_set(metrics_child(f, v2), NAN);
    metrics_gauge_set(metrics_child(f, v3), INFINITY);
    metrics_gauge_set(metrics_child(f, v4), -INFINITY);
    metrics_gauge_set(metrics_child(f, v5), 0.1);
    metrics_gauge_set(metrics_child(f, v6), 1e300);

    text = metrics_render(NULL);
    ASSERT_LINE(text, "t_level{kind=\"sum\"} -2.5");
    ASSERT_LINE(text, "t_level{kind=\"nan\"} NaN");
    ASSERT_LINE(text, "t_level{kind=\"pinf\"} +Inf");
    ASSERT_LINE(text, "t_level{kind=\"ninf\"} -Inf");
    ASSERT_LINE(text, "t_level{kind=\"tenth\"} 0.1");
    ASSERT_LINE(text, "t_level{kind=\"huge\"} 1e+300");
    free(text);
}
END_TEST

START_TEST(test_histogram_buckets_are_cumulative)
{
    static const double bounds[] = { 0.5, 1, 10 };
    struct metrics_family *f =
        metrics_histogram_new("t_wait_seconds", "Wait.", NULL, bounds, 3);
    struct metrics_child *c = metrics_child(f, NULL);
    static const double obs[] = { 0.25, 0.5, 0.75, 5, 50, 100 };
    char *text;

    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metrics_histogram_observe(c, obs[i]);
    metrics_histogram_observe(c, NAN); /* ignored */
    ck_assert_uint_eq(metrics_histogram_count(c), 6);
    ck_assert_double_eq(metrics_histogram_sum(c), 156.5);

    text = metrics_render(NULL);
    ASSERT_LINE(text, "t_wait_seconds_bucket{le=\"0.5\"} 2");
    ASSERT_LINE(text, "t_wait_seconds_bucket{le=\"1\"} 3");
    ASSERT_LINE(text, "t_wait_seconds_bucket{le=\"10\"} 4");
    ASSERT_LINE(text, "t_wait_seconds_bucket{le=\"+Inf\"} 6");
    ASSERT_LINE(text, "t_wait_seconds_sum 156.5");
    ASSERT_LINE(text, "t_wait_seconds_count 6");
    free(text);
}
END_TEST

START_TEST(test_histogram_default_buckets_span_latencies)
{
    static const char *const op[] = { "operation", NULL };
    struct metrics_family *f =
        metrics_histogram_new("t_op_seconds", "Op.", op, NULL, 0);
    const char *v[] = { "get" };
    char *text;

    ck_assert_uint_eq(metrics_latency_nbuckets, 14);
    ck_assert_double_eq(metrics_latency_buckets[0], 0.0005);
    ck_assert_double_eq(metrics_latency_buckets[13], 10);
    metrics_histogram_observe(metrics_child(f, v), 0.003);
    text = metrics_render(NULL);
    ASSERT_LINE(text,
                "t_op_seconds_bucket{operation=\"get\",le=\"0.0005\"} 0");
    ASSERT_LINE(text,
                "t_op_seconds_bucket{operation=\"get\",le=\"0.0025\"} 0");
    ASSERT_LINE(text,
                "t_op_seconds_bucket{operation=\"get\",le=\"0.005\"} 1");
    ASSERT_LINE(text,
                "t_op_seconds_bucket{operation=\"get\",le=\"10\"} 1");
    ASSERT_LINE(text,
                "t_op_seconds_bucket{operation=\"get\",le=\"+Inf\"} 1");
    ASSERT_LINE(text, "t_op_seconds_sum{operation=\"get\"} 0.003");
    ASSERT_LINE(text, "t_op_seconds_count{operation=\"get\"} 1");
    ck_assert_int_eq(check_metrics_count_lines(text, "t_op_seconds_bucket"),
                     15);
    free(text);
}
END_TEST

START_TEST(test_updates_on_null_or_wrong_type_do_nothing)
{
    struct metrics_family *g = metrics_gauge_new("t_g", "G.", NULL);
    struct metrics_child *c = metrics_child(g, NULL);

    metrics_counter_add(NULL, 1);
    metrics_gauge_set(NULL, 1);
    metrics_gauge_add(NULL, 1);
    metrics_histogram_observe(NULL, 1);
    ck_assert_ptr_null(metrics_child(NULL, NULL));
    metrics_counter_add(c, 5);
    metrics_histogram_observe(c, 5);
    ck_assert_double_eq(metrics_gauge_value(c), 0);
    ck_assert_uint_eq(metrics_counter_value(c), 0);
}
END_TEST

/* --- concurrency --- */

#define CHECK_METRICS_THREADS 4
#define CHECK_METRICS_ITERS 100000

struct check_metrics_worker {
    struct metrics_family *counter, *gauge, *hist;
    int id;
};

static void *check_metrics_worker_run(void *arg)
{
    struct check_metrics_worker *w = arg;
    char own[16];
    const char *shared[] = { "shared" };
    const char *mine[] = { own };

    snprintf(own, sizeof own, "t%d", w->id);
    for (int i = 0; i < CHECK_METRICS_ITERS; i++) {
        /* Looked up every time, so creation races lookups at first. */
        metrics_counter_inc(metrics_child(w->counter, shared));
        metrics_counter_inc(metrics_child(w->counter, mine));
        metrics_gauge_add(metrics_child(w->gauge, NULL), 1.0);
        metrics_histogram_observe(metrics_child(w->hist, NULL), 0.001);
    }
    return NULL;
}

START_TEST(test_concurrent_updates_give_exact_totals)
{
    static const char *const who[] = { "who", NULL };
    struct check_metrics_worker w[CHECK_METRICS_THREADS];
    pthread_t th[CHECK_METRICS_THREADS];
    struct metrics_family *counter =
        metrics_counter_new("t_hits_total", "Hits.", who);
    struct metrics_family *gauge = metrics_gauge_new("t_sum", "Sum.", NULL);
    struct metrics_family *hist =
        metrics_histogram_new("t_lat_seconds", "Lat.", NULL, NULL, 0);
    const char *shared[] = { "shared" };
    char *text;

    for (int i = 0; i < CHECK_METRICS_THREADS; i++) {
        w[i] = (struct check_metrics_worker){ counter, gauge, hist, i };
        ck_assert_int_eq(
            pthread_create(&th[i], NULL, check_metrics_worker_run, &w[i]), 0);
    }
    for (int i = 0; i < CHECK_METRICS_THREADS; i++)
        pthread_join(th[i], NULL);

    ck_assert_uint_eq(metrics_counter_value(metrics_child(counter, shared)),
                      CHECK_METRICS_THREADS * CHECK_METRICS_ITERS);
    ck_assert_double_eq(metrics_gauge_value(metrics_child(gauge, NULL)),
                        CHECK_METRICS_THREADS * CHECK_METRICS_ITERS);
    ck_assert_uint_eq(metrics_histogram_count(metrics_child(hist, NULL)),
                      CHECK_METRICS_THREADS * CHECK_METRICS_ITERS);

    text = metrics_render(NULL);
    /* One child for "shared" however many threads raced to create it. */
    ck_assert_int_eq(check_metrics_count_lines(text, "t_hits_total{"),
                     CHECK_METRICS_THREADS + 1);
    ASSERT_LINE(text, "t_hits_total{who=\"shared\"} 400000");
    ASSERT_LINE(text, "t_hits_total{who=\"t0\"} 100000");
    ASSERT_LINE(text, "t_hits_total{who=\"t3\"} 100000");
    ASSERT_LINE(text, "t_sum 400000");
    ASSERT_LINE(text, "t_lat_seconds_bucket{le=\"0.001\"} 400000");
    ASSERT_LINE(text, "t_lat_seconds_count 400000");
    free(text);
}
END_TEST

struct check_metrics_swap {
    volatile int stop;
    long renders, bad;
};

/* Renders in a loop and checks the snapshot block arrives whole: its two
 * lines carry the same generation number. */
static void *check_metrics_renderer(void *arg)
{
    struct check_metrics_swap *s = arg;

    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        char *text = metrics_render(NULL);
        const char *p = strstr(text, "# HELP snap_gen ");
        long a, b;

        if (p != NULL) {
            if (sscanf(p, "# HELP snap_gen Generation %ld.\n# TYPE snap_gen "
                          "gauge\nsnap_gen %ld\n", &a, &b) != 2 || a != b)
                s->bad++;
        }
        if (!check_metrics_has_line(text, "t_fixed_total 7"))
            s->bad++;
        s->renders++;
        free(text);
    }
    return NULL;
}

START_TEST(test_snapshot_swaps_while_renders_run)
{
    struct check_metrics_swap s = { 0, 0, 0 };
    pthread_t th;
    int64_t end;
    long swaps = 0;
    char *text;

    metrics_counter_add(
        metrics_child(metrics_counter_new("t_fixed_total", "Fixed.", NULL),
                      NULL), 7);
    ck_assert_int_eq(pthread_create(&th, NULL, check_metrics_renderer, &s), 0);
    end = util_mono_ns() + 500000000LL;
    while (util_mono_ns() < end) {
        struct util_buf b = { 0 };
        util_buf_printf(&b, "# HELP snap_gen Generation %ld.\n"
                            "# TYPE snap_gen gauge\nsnap_gen %ld\n",
                        swaps, swaps);
        metrics_set_snapshot(util_buf_steal(&b));
        if (swaps % 7 == 0)
            metrics_set_snapshot(NULL);
        swaps++;
    }
    __atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);

    ck_assert_int_gt(s.renders, 0);
    ck_assert_int_gt(swaps, 0);
    ck_assert_int_eq(s.bad, 0);

    metrics_set_snapshot(xstrdup("# HELP snap_last Last.\n"
                                 "# TYPE snap_last gauge\nsnap_last 3"));
    text = metrics_render(NULL);
    /* A block without a final newline still ends its line. */
    ASSERT_LINE(text, "snap_last 3");
    free(text);
    metrics_set_snapshot(NULL);
    text = metrics_render(NULL);
    ck_assert_ptr_null(strstr(text, "snap_"));
    free(text);
}
END_TEST

/* --- escaping and the exact text --- */

START_TEST(test_label_values_are_escaped)
{
    static const char *const k[] = { "v", NULL };
    struct metrics_family *f = metrics_counter_new("t_esc_total", "E.", k);
    const char *odd[] = { "a\\b\"c\nd" };
    const char *bad_utf8[] = { "x\xff" "y" };
    const char *utf8[] = { "caf\xc3\xa9" };
    char *text;

    metrics_counter_inc(metrics_child(f, odd));
    metrics_counter_inc(metrics_child(f, bad_utf8));
    metrics_counter_inc(metrics_child(f, utf8));
    text = metrics_render(NULL);
    ASSERT_LINE(text, "t_esc_total{v=\"a\\\\b\\\"c\\nd\"} 1");
    ASSERT_LINE(text, "t_esc_total{v=\"x\xef\xbf\xbdy\"} 1");
    ASSERT_LINE(text, "t_esc_total{v=\"caf\xc3\xa9\"} 1");
    free(text);
}
END_TEST

START_TEST(test_help_text_is_escaped)
{
    char *text;

    ck_assert_ptr_nonnull(metrics_gauge_new(
        "t_help", "two\nlines, a back\\slash and \"quotes\"", NULL));
    text = metrics_render(NULL);
    /* In HELP only backslash and newline are escaped. */
    ASSERT_LINE(text,
                "# HELP t_help two\\nlines, a back\\\\slash and \"quotes\"");
    free(text);
}
END_TEST

static double check_metrics_forty_two(void *arg)
{
    return *(double *)arg;
}

START_TEST(test_render_small_registry_line_by_line)
{
    static const char *const mc[] = { "method", "code", NULL };
    static const char *const op[] = { "op", NULL };
    static const double bounds[] = { 0.1, 1 };
    struct metrics_family *req =
        metrics_counter_new("t_requests_total", "Requests.", mc);
    struct metrics_family *temp = metrics_gauge_new("t_temp_celsius",
                                                    "Temperature.", NULL);
    struct metrics_family *idle = metrics_histogram_new(
        "t_idle_seconds", "Never observed.", op, bounds, 2);
    struct metrics_family *hist = metrics_histogram_new(
        "t_job_seconds", "Job time.", op, bounds, 2);
    double depth = 42;
    const char *get200[] = { "GET", "200" }, *post500[] = { "POST", "500" };
    const char *job[] = { "copy" };
    size_t len;
    char *text;

    ck_assert_ptr_nonnull(metrics_gauge_func("t_queue_depth", "Queue.",
                                             check_metrics_forty_two, &depth));
    ck_assert_ptr_nonnull(idle);
    metrics_counter_add(metrics_child(req, get200), 3);
    metrics_counter_add(metrics_child(req, post500), 1);
    metrics_gauge_set(metrics_child(temp, NULL), 21.5);
    metrics_histogram_observe(metrics_child(hist, job), 0.5);

    text = metrics_render(&len);
    ck_assert_uint_eq(len, strlen(text));
    ck_assert_str_eq(text,
        "# HELP t_requests_total Requests.\n"
        "# TYPE t_requests_total counter\n"
        "t_requests_total{method=\"GET\",code=\"200\"} 3\n"
        "t_requests_total{method=\"POST\",code=\"500\"} 1\n"
        "# HELP t_temp_celsius Temperature.\n"
        "# TYPE t_temp_celsius gauge\n"
        "t_temp_celsius 21.5\n"
        "# HELP t_idle_seconds Never observed.\n"
        "# TYPE t_idle_seconds histogram\n"
        "# HELP t_job_seconds Job time.\n"
        "# TYPE t_job_seconds histogram\n"
        "t_job_seconds_bucket{op=\"copy\",le=\"0.1\"} 0\n"
        "t_job_seconds_bucket{op=\"copy\",le=\"1\"} 1\n"
        "t_job_seconds_bucket{op=\"copy\",le=\"+Inf\"} 1\n"
        "t_job_seconds_sum{op=\"copy\"} 0.5\n"
        "t_job_seconds_count{op=\"copy\"} 1\n"
        "# HELP t_queue_depth Queue.\n"
        "# TYPE t_queue_depth gauge\n"
        "t_queue_depth 42\n");
    free(text);
}
END_TEST

START_TEST(test_unlabelled_family_renders_zero_before_any_update)
{
    char *text;

    ck_assert_ptr_nonnull(metrics_counter_new("t_none_total", "None.", NULL));
    ck_assert_ptr_nonnull(
        metrics_histogram_new("t_none_seconds", "None.", NULL, NULL, 0));
    text = metrics_render(NULL);
    ASSERT_LINE(text, "t_none_total 0");
    ASSERT_LINE(text, "t_none_seconds_bucket{le=\"+Inf\"} 0");
    ASSERT_LINE(text, "t_none_seconds_count 0");
    ASSERT_LINE(text, "t_none_seconds_sum 0");
    free(text);
}
END_TEST

START_TEST(test_registration_rejects_bad_or_taken_names)
{
    static const char *const dup[] = { "a", "a", NULL };
    static const char *const reserved[] = { "__a", NULL };
    static const char *const le[] = { "le", NULL };
    static const char *const dash[] = { "a-b", NULL };
    static const double down[] = { 1, 0.5 };
    static const double inf[] = { 1, INFINITY };

    ck_assert_ptr_null(metrics_counter_new("", "x", NULL));
    ck_assert_ptr_null(metrics_counter_new("1abc_total", "x", NULL));
    ck_assert_ptr_null(metrics_counter_new("a-b_total", "x", NULL));
    ck_assert_ptr_null(metrics_counter_new("a_total", "x", dup));
    ck_assert_ptr_null(metrics_counter_new("a_total", "x", reserved));
    ck_assert_ptr_null(metrics_counter_new("a_total", "x", dash));
    ck_assert_ptr_null(metrics_histogram_new("h_seconds", "x", le, NULL, 0));
    ck_assert_ptr_null(metrics_histogram_new("h_seconds", "x", NULL, down, 2));
    ck_assert_ptr_null(metrics_histogram_new("h_seconds", "x", NULL, inf, 2));
    ck_assert_ptr_null(metrics_gauge_func("f", "x", NULL, NULL));
    /* Colons are allowed in metric names (recording rules use them). */
    ck_assert_ptr_nonnull(metrics_gauge_new("ns:a_b", "x", le));
    ck_assert_ptr_nonnull(metrics_counter_new("a_total", "x", NULL));
    ck_assert_ptr_null(metrics_gauge_new("a_total", "again", NULL));
    ck_assert_ptr_nonnull(metrics_find("a_total"));
    ck_assert_ptr_null(metrics_find("b_total"));
    /* A labelled family needs its values. */
    ck_assert_ptr_null(metrics_child(metrics_find("ns:a_b"), NULL));
}
END_TEST

/* --- the series cap --- */

START_TEST(test_series_cap_drops_new_label_sets)
{
    static const char *const k[] = { "user", NULL };
    struct metrics_family *f;
    const char *a[] = { "a" }, *b[] = { "b" }, *c[] = { "c" }, *d[] = { "d" };
    struct metrics_child *ca;
    char *text;

    ck_assert_int_eq(metrics_init("test"), 0);
    f = metrics_counter_new("t_capped_total", "Capped.", k);
    metrics_set_max_series(f, 3);
    ca = metrics_child(f, a);
    ck_assert_ptr_nonnull(ca);
    ck_assert_ptr_nonnull(metrics_child(f, b));
    ck_assert_ptr_nonnull(metrics_child(f, c));
    ck_assert_ptr_null(metrics_child(f, d));
    ck_assert_ptr_null(metrics_child(f, d));
    /* Existing series keep working past the cap. */
    ck_assert_ptr_eq(metrics_child(f, a), ca);
    metrics_counter_inc(metrics_child(f, a));
    metrics_counter_inc(metrics_child(f, d)); /* goes nowhere */
    /* Each refused lookup counts. */
    ck_assert_uint_eq(metrics_dropped_series(), 3);

    text = metrics_render(NULL);
    ck_assert_int_eq(check_metrics_count_lines(text, "t_capped_total{"), 3);
    ASSERT_LINE(text, "t_capped_total{user=\"a\"} 1");
    ck_assert_ptr_null(strstr(text, "user=\"d\""));
    ASSERT_LINE(text, "chat_metrics_dropped_series_total 3");
    free(text);
}
END_TEST

/* --- the standard families and process metrics --- */

START_TEST(test_init_registers_the_standard_families)
{
    static const char *const types[][2] = {
        { "http_requests_total", "counter" },
        { "http_request_duration_seconds", "histogram" },
        { "chat_errors_total", "counter" },
        { "chat_messages_created_total", "counter" },
        { "chat_users_registered_total", "counter" },
        { "chat_users_logged_in_total", "counter" },
        { "chat_conversations_created_total", "counter" },
        { "chat_cache_requests_total", "counter" },
        { "chat_cache_hits_total", "counter" },
        { "chat_cache_misses_total", "counter" },
        { "chat_cache_operations_duration_seconds", "histogram" },
        { "chat_database_queries_total", "counter" },
        { "chat_database_query_duration_seconds", "histogram" },
        { "chat_database_connections_active", "gauge" },
        { "chat_ws_connections", "gauge" },
        { "chat_messages_delivered_total", "counter" },
        { "chat_ws_frames_rejected_total", "counter" },
        { "chat_store_queue_depth", "gauge" },
        { "chat_store_batch_size", "histogram" },
        { "chat_log_lines_dropped_total", "counter" },
        { "chat_metrics_dropped_series_total", "counter" },
        { "chatd_build_info", "gauge" },
        { "process_cpu_seconds_total", "counter" },
        { "process_resident_memory_bytes", "gauge" },
        { "process_virtual_memory_bytes", "gauge" },
        { "process_open_fds", "gauge" },
        { "process_max_fds", "gauge" },
        { "process_start_time_seconds", "gauge" },
    };
    char line[128];
    char *text;

    ck_assert_int_eq(metrics_init("1.2.3"), 0);
    ck_assert_int_eq(metrics_init("again"), 0);
    metrics_counter_inc(metrics_users_registered);
    metrics_histogram_observe(metrics_store_batch_size, 3);
    metrics_observe_http("GET", "/api/conversations/{id}/messages", 200,
                         0.002);
    text = metrics_render(NULL);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        snprintf(line, sizeof line, "# TYPE %s %s", types[i][0], types[i][1]);
        ASSERT_LINE(text, line);
    }
    ASSERT_LINE(text, "chatd_build_info{version=\"1.2.3\"} 1");
    ASSERT_LINE(text, "chat_users_registered_total 1");
    ASSERT_LINE(text, "chat_store_batch_size_bucket{le=\"2\"} 0");
    ASSERT_LINE(text, "chat_store_batch_size_bucket{le=\"4\"} 1");
    ASSERT_LINE(text, "chat_store_batch_size_bucket{le=\"1024\"} 1");
    ASSERT_LINE(text, "http_requests_total{method=\"GET\",route=\"/api/"
                      "conversations/{id}/messages\",status=\"200\"} 1");
    ASSERT_LINE(text, "http_request_duration_seconds_count{method=\"GET\","
                      "route=\"/api/conversations/{id}/messages\"} 1");
    ck_assert_int_eq(
        check_metrics_count_lines(text, "# TYPE chatd_build_info"), 1);
    free(text);
}
END_TEST

START_TEST(test_process_metrics_are_plausible)
{
    double now = (double)time(NULL);
    double rss, vsz, start, fds, maxfds, cpu;
    char *text;

    ck_assert_int_eq(metrics_init(NULL), 0);
    text = metrics_render(NULL);
    rss = check_metrics_sample(text, "process_resident_memory_bytes");
    vsz = check_metrics_sample(text, "process_virtual_memory_bytes");
    start = check_metrics_sample(text, "process_start_time_seconds");
    fds = check_metrics_sample(text, "process_open_fds");
    maxfds = check_metrics_sample(text, "process_max_fds");
    cpu = check_metrics_sample(text, "process_cpu_seconds_total");
    ck_assert_msg(rss > 0, "rss %g", rss);
    ck_assert_msg(vsz >= rss, "vsz %g rss %g", vsz, rss);
    ck_assert_msg(start > now - 86400 && start <= now + 60,
                  "start %f now %f", start, now);
    ck_assert_msg(fds >= 3 && fds <= maxfds, "fds %g max %g", fds, maxfds);
    ck_assert_msg(cpu >= 0, "cpu %g", cpu);
    ASSERT_LINE(text, "chatd_build_info{version=\"unknown\"} 1");
    free(text);
}
END_TEST

/* Writes the whole page, as a busy chatd would render it, and asks
 * promtool whether Prometheus accepts it and its names follow the
 * conventions. */
START_TEST(test_promtool_accepts_the_page)
{
    static const char *const ops[] = { "get", "set" };
    const char *tmpdir = getenv("TMPDIR");
    char path[512];
    char cmd[640];
    char out[4096];
    size_t len, n;
    FILE *fp;
    char *text;
    int fd, status;

    ck_assert_msg(system("command -v promtool >/dev/null 2>&1") == 0,
                  "promtool not found on PATH: install Prometheus (Debian "
                  "package prometheus) to run this test");

    ck_assert_int_eq(metrics_init("0.1.0-test"), 0);
    metrics_observe_http("GET", "/api/users/me", 200, 0.0042);
    metrics_observe_http("POST", "/api/conversations/{id}/messages", 201,
                         0.02);
    metrics_observe_http("GET", "weird \"route\"\\\n", 404, 12);
    metrics_counter_inc(metrics_child(metrics_errors,
                                      (const char *[]){ "validation",
                                                        "/api/register" }));
    for (size_t i = 0; i < 2; i++) {
        metrics_counter_inc(metrics_child(metrics_cache_requests, &ops[i]));
        metrics_counter_inc(metrics_child(metrics_cache_hits, &ops[i]));
        metrics_histogram_observe(metrics_child(metrics_cache_duration,
                                                &ops[i]), 0.0001);
        metrics_counter_inc(metrics_child(metrics_db_queries, &ops[i]));
    }
    metrics_gauge_set(metrics_ws_connections, 3);
    metrics_gauge_set(metrics_store_queue_depth, NAN);
    metrics_histogram_observe(metrics_store_batch_size, 17);
    metrics_counter_inc(metrics_child(metrics_ws_frames_rejected,
                                      (const char *[]){ "too_large" }));
    metrics_set_snapshot(xstrdup(
        "# HELP chat_active_users Users active in the last 5 minutes.\n"
        "# TYPE chat_active_users gauge\n"
        "chat_active_users 12\n"));
    text = metrics_render(&len);

    snprintf(path, sizeof path, "%s/check_metrics_XXXXXX",
             tmpdir != NULL && *tmpdir != '\0' ? tmpdir : P_tmpdir);
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fp = fdopen(fd, "w");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(text, 1, len, fp), len);
    ck_assert_int_eq(fclose(fp), 0);

    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    fp = popen(cmd, "r");
    ck_assert_ptr_nonnull(fp);
    n = fread(out, 1, sizeof out - 1, fp);
    out[n] = '\0';
    status = pclose(fp);
    unlink(path);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "promtool check metrics failed (%d):\n%.1500s\n"
                  "page:\n%.2000s",
                  status, out, text);
    free(text);
}
END_TEST

static Suite *check_metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc;

    tc = tcase_create("arithmetic");
    tcase_add_checked_fixture(tc, check_metrics_setup, check_metrics_teardown);
    tcase_add_test(tc, test_counter_adds_and_renders_integers);
    tcase_add_test(tc, test_gauge_sets_adds_and_spells_special_values);
    tcase_add_test(tc, test_histogram_buckets_are_cumulative);
    tcase_add_test(tc, test_histogram_default_buckets_span_latencies);
    tcase_add_test(tc, test_updates_on_null_or_wrong_type_do_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("concurrency");
    tcase_add_checked_fixture(tc, check_metrics_setup, check_metrics_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_concurrent_updates_give_exact_totals);
    tcase_add_test(tc, test_snapshot_swaps_while_renders_run);
    suite_add_tcase(s, tc);

    tc = tcase_create("text");
    tcase_add_checked_fixture(tc, check_metrics_setup, check_metrics_teardown);
    tcase_add_test(tc, test_label_values_are_escaped);
    tcase_add_test(tc, test_help_text_is_escaped);
    tcase_add_test(tc, test_render_small_registry_line_by_line);
    tcase_add_test(tc, test_unlabelled_family_renders_zero_before_any_update);
    tcase_add_test(tc, test_registration_rejects_bad_or_taken_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("series_cap");
    tcase_add_checked_fixture(tc, check_metrics_setup, check_metrics_teardown);
    tcase_add_test(tc, test_series_cap_drops_new_label_sets);
    suite_add_tcase(s, tc);

    tc = tcase_create("standard");
    tcase_add_checked_fixture(tc, check_metrics_setup, check_metrics_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_init_registers_the_standard_families);
    tcase_add_test(tc, test_process_metrics_are_plausible);
    tcase_add_test(tc, test_promtool_accepts_the_page);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
