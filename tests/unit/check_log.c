/*
 * check_log.c - unit tests for log.c: the JSON line format and its
 * escaping, level filtering and parsing, and the writer thread (order,
 * flushing at shutdown, dropping rather than blocking when full, and the
 * stderr fallback outside log_init/log_shutdown).
 *
 * Each test runs in its own forked process (unless CK_FORK=no), so the
 * logger's global state starts fresh; tests that start the writer stop it.
 */
#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define CHECK_LOG_TS 1795521600123LL /* 2026-11-24T12:00:00.123Z */

/* Parses line as one whole JSON object; fails the test otherwise. The
 * caller puts the result. */
static json_object *check_log_parse(const char *line)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj;

    obj = json_tokener_parse_ex(tok, line, (int)strlen(line));
    ck_assert_msg(obj != NULL, "not JSON: %s", line);
    ck_assert_int_eq(json_tokener_get_error(tok), json_tokener_success);
    ck_assert_int_eq(json_tokener_get_parse_end(tok), strlen(line));
    ck_assert_int_eq(json_object_get_type(obj), json_type_object);
    json_tokener_free(tok);
    return obj;
}

/* Returns the member key of obj, failing the test when it is missing. */
static json_object *check_log_get(json_object *obj, const char *key)
{
    json_object *v = NULL;

    ck_assert_msg(json_object_object_get_ex(obj, key, &v), "no key %s", key);
    return v;
}

static void check_log_assert_one_line(const char *line)
{
    const char *p;

    for (p = line; *p != '\0'; p++)
        ck_assert_msg((unsigned char)*p >= 0x20 && *p != 0x7f,
                      "raw control byte 0x%02x at %zu", (unsigned char)*p,
                      (size_t)(p - line));
}

/* Reads a whole stream from its start into a malloc'd string. */
static char *check_log_slurp(FILE *f)
{
    struct util_buf b = { 0 };
    char chunk[4096];
    size_t n;

    fflush(f);
    rewind(f);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        util_buf_append(&b, chunk, n);
    return util_buf_steal(&b);
}

/* Splits text at '\n' in place; returns the number of complete lines and
 * fails the test if the text does not end with a newline. */
static size_t check_log_split(char *text, char **lines, size_t max)
{
    size_t n = 0;
    char *p = text, *nl;

    while (*p != '\0') {
        nl = strchr(p, '\n');
        ck_assert_msg(nl != NULL, "unterminated line: %s", p);
        *nl = '\0';
        ck_assert_uint_lt(n, max);
        lines[n++] = p;
        p = nl + 1;
    }
    return n;
}

/* --- format --- */

START_TEST(test_format_has_standard_keys_in_order)
{
    char *line = log_format(CHECK_LOG_TS, LOG_INFO, "user_login", "t-1",
                            LOG_INT("user_id", 42), LF_END);

    ck_assert_str_eq(line, "{\"timestamp\":\"2026-11-24T12:00:00.123Z\","
                           "\"level\":\"info\",\"service\":\"chatd\","
                           "\"event_type\":\"user_login\","
                           "\"trace_id\":\"t-1\",\"user_id\":42}");
    free(line);
}
END_TEST

START_TEST(test_format_parses_with_typed_fields)
{
    char *line = log_format(CHECK_LOG_TS, LOG_WARN, "message_sent", "abc123",
                            LOG_INT("user_id", 7), LOG_STR("username", "bob"),
                            LOG_DBL("latency_ms", 1.5), LOG_BOOL("ok", 1),
                            LOG_BOOL("cached", 0),
                            LOG_INT("big", INT64_MAX),
                            LOG_INT("small", INT64_MIN), LF_END);
    json_object *o = check_log_parse(line), *v;

    ck_assert_str_eq(json_object_get_string(check_log_get(o, "timestamp")),
                     "2026-11-24T12:00:00.123Z");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "level")),
                     "warn");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "service")),
                     "chatd");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "message_sent");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "trace_id")),
                     "abc123");

    v = check_log_get(o, "user_id");
    ck_assert_int_eq(json_object_get_type(v), json_type_int);
    ck_assert_int_eq(json_object_get_int64(v), 7);
    v = check_log_get(o, "username");
    ck_assert_int_eq(json_object_get_type(v), json_type_string);
    ck_assert_str_eq(json_object_get_string(v), "bob");
    v = check_log_get(o, "latency_ms");
    ck_assert_int_eq(json_object_get_type(v), json_type_double);
    ck_assert_double_eq(json_object_get_double(v), 1.5);
    v = check_log_get(o, "ok");
    ck_assert_int_eq(json_object_get_type(v), json_type_boolean);
    ck_assert_int_eq(json_object_get_boolean(v), 1);
    v = check_log_get(o, "cached");
    ck_assert_int_eq(json_object_get_type(v), json_type_boolean);
    ck_assert_int_eq(json_object_get_boolean(v), 0);
    ck_assert_int_eq(json_object_get_int64(check_log_get(o, "big")),
                     INT64_MAX);
    ck_assert_int_eq(json_object_get_int64(check_log_get(o, "small")),
                     INT64_MIN);
    ck_assert_int_eq(json_object_object_length(o), 12);
    json_object_put(o);
    free(line);
}
END_TEST

START_TEST(test_format_without_fields)
{
    char *line = log_format(0, LOG_ERROR, "startup_failed", NULL, LF_END);
    json_object *o = check_log_parse(line);

    ck_assert_int_eq(json_object_object_length(o), 5);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "timestamp")),
                     "1970-01-01T00:00:00.000Z");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "level")),
                     "error");
    json_object_put(o);
    free(line);
}
END_TEST

START_TEST(test_format_null_values_are_json_null)
{
    char *line = log_format(CHECK_LOG_TS, LOG_INFO, "e", NULL,
                            LOG_STR("reason", NULL), LF_END);
    json_object *o = check_log_parse(line), *v;

    /* Present, and null: not a missing key, not the string "(null)". */
    v = check_log_get(o, "trace_id");
    ck_assert_ptr_null(v);
    v = check_log_get(o, "reason");
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(line, "\"trace_id\":null"));
    ck_assert_ptr_nonnull(strstr(line, "\"reason\":null"));
    json_object_put(o);
    free(line);
}
END_TEST

START_TEST(test_format_doubles_round_trip_and_non_finite_is_null)
{
    const double values[] = { 0.1, 1.0 / 3.0, -2.5e-300, 1e300, 0.0, 12345 };
    size_t i;
    char *line;
    json_object *o, *v;

    for (i = 0; i < sizeof values / sizeof values[0]; i++) {
        line = log_format(CHECK_LOG_TS, LOG_INFO, "e", NULL,
                          LOG_DBL("v", values[i]), LF_END);
        o = check_log_parse(line);
        v = check_log_get(o, "v");
        ck_assert_msg(json_object_get_double(v) == values[i],
                      "%.17g came back as %.17g in %s", values[i],
                      json_object_get_double(v), line);
        json_object_put(o);
        free(line);
    }
    line = log_format(CHECK_LOG_TS, LOG_INFO, "e", NULL,
                      LOG_DBL("nan", NAN), LOG_DBL("inf", INFINITY),
                      LOG_DBL("ninf", -INFINITY), LF_END);
    o = check_log_parse(line);
    ck_assert_ptr_null(check_log_get(o, "nan"));
    ck_assert_ptr_null(check_log_get(o, "inf"));
    ck_assert_ptr_null(check_log_get(o, "ninf"));
    json_object_put(o);
    free(line);
}
END_TEST

START_TEST(test_format_escapes_values_keys_and_trace_id)
{
    const char *nasty = "say \"hi\" \\ back\nslash\r\ttab\x01\x1f\x7f end";
    const char *trace = "tr\"ace\n\x01\\";
    char *line = log_format(CHECK_LOG_TS, LOG_INFO, "ev\"ent\n", trace,
                            LOG_STR("msg", nasty), LOG_STR("k\"e\ny", "v"),
                            LF_END);
    json_object *o;

    check_log_assert_one_line(line);
    ck_assert_ptr_null(strchr(line, '\n'));
    ck_assert_ptr_nonnull(strstr(line, "\\u0001"));
    ck_assert_ptr_nonnull(strstr(line, "\\u001f"));
    ck_assert_ptr_nonnull(strstr(line, "\\u007f"));
    ck_assert_ptr_nonnull(strstr(line, "\\t"));
    ck_assert_ptr_nonnull(strstr(line, "\\\""));
    ck_assert_ptr_nonnull(strstr(line, "\\\\"));

    /* And every value reads back exactly as given. */
    o = check_log_parse(line);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "msg")), nasty);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "trace_id")),
                     trace);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "ev\"ent\n");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "k\"e\ny")),
                     "v");
    json_object_put(o);
    free(line);
}
END_TEST

START_TEST(test_format_keeps_utf8)
{
    char *line = log_format(CHECK_LOG_TS, LOG_INFO, "e", NULL,
                            LOG_STR("name", "J\xc3\xb6rg \xf0\x9f\x98\x80"),
                            LF_END);
    json_object *o = check_log_parse(line);

    ck_assert_str_eq(json_object_get_string(check_log_get(o, "name")),
                     "J\xc3\xb6rg \xf0\x9f\x98\x80");
    json_object_put(o);
    free(line);
}
END_TEST

/* --- levels --- */

START_TEST(test_level_filtering)
{
    log_set_level(LOG_WARN);
    ck_assert_int_eq(log_enabled(LOG_DEBUG), 0);
    ck_assert_int_eq(log_enabled(LOG_INFO), 0);
    ck_assert_int_ne(log_enabled(LOG_WARN), 0);
    ck_assert_int_ne(log_enabled(LOG_ERROR), 0);

    log_set_level(LOG_DEBUG);
    ck_assert_int_ne(log_enabled(LOG_DEBUG), 0);
    ck_assert_int_ne(log_enabled(LOG_INFO), 0);

    log_set_level(LOG_ERROR);
    ck_assert_int_eq(log_enabled(LOG_WARN), 0);
    ck_assert_int_ne(log_enabled(LOG_ERROR), 0);
}
END_TEST

START_TEST(test_default_level_is_info)
{
    ck_assert_int_eq(log_enabled(LOG_DEBUG), 0);
    ck_assert_int_ne(log_enabled(LOG_INFO), 0);
}
END_TEST

START_TEST(test_level_parse_and_name)
{
    ck_assert_int_eq(log_level_parse("debug"), LOG_DEBUG);
    ck_assert_int_eq(log_level_parse("info"), LOG_INFO);
    ck_assert_int_eq(log_level_parse("warn"), LOG_WARN);
    ck_assert_int_eq(log_level_parse("warning"), LOG_WARN);
    ck_assert_int_eq(log_level_parse("error"), LOG_ERROR);
    ck_assert_int_eq(log_level_parse("ERROR"), LOG_ERROR);
    ck_assert_int_eq(log_level_parse("Info"), LOG_INFO);
    ck_assert_int_eq(log_level_parse(""), -1);
    ck_assert_int_eq(log_level_parse("verbose"), -1);
    ck_assert_int_eq(log_level_parse("info "), -1);
    ck_assert_int_eq(log_level_parse("err"), -1);
    ck_assert_int_eq(log_level_parse(NULL), -1);

    ck_assert_str_eq(log_level_name(LOG_DEBUG), "debug");
    ck_assert_str_eq(log_level_name(LOG_INFO), "info");
    ck_assert_str_eq(log_level_name(LOG_WARN), "warn");
    ck_assert_str_eq(log_level_name(LOG_ERROR), "error");
}
END_TEST

/* --- the writer --- */

START_TEST(test_writer_delivers_in_order_and_shutdown_flushes)
{
    enum { N = 3000 };
    FILE *f = tmpfile();
    char *text, **lines = xcalloc(N + 1, sizeof *lines);
    size_t n, i;

    ck_assert_ptr_nonnull(f);
    log_init(f, LOG_DEBUG);
    for (i = 0; i < N; i++)
        log_event(i % 2 ? LOG_DEBUG : LOG_ERROR, "tick", "tr-1",
                  LOG_INT("i", i), LOG_STR("s", "a\nb"), LF_END);
    log_shutdown();

    text = check_log_slurp(f);
    n = check_log_split(text, lines, N + 1);
    ck_assert_uint_eq(n, N);
    for (i = 0; i < n; i++) {
        json_object *o = check_log_parse(lines[i]);

        ck_assert_int_eq(json_object_get_int64(check_log_get(o, "i")),
                         (int64_t)i);
        ck_assert_str_eq(json_object_get_string(check_log_get(o, "level")),
                         i % 2 ? "debug" : "error");
        ck_assert_str_eq(json_object_get_string(check_log_get(o, "s")),
                         "a\nb");
        json_object_put(o);
    }
    ck_assert_uint_eq(log_dropped(), 0);
    free(lines);
    free(text);
    fclose(f);
}
END_TEST

START_TEST(test_writer_skips_disabled_levels)
{
    FILE *f = tmpfile();
    char *text, *lines[8];
    json_object *o;

    ck_assert_ptr_nonnull(f);
    log_init(f, LOG_WARN);
    log_event(LOG_DEBUG, "hidden_debug", NULL, LF_END);
    log_event(LOG_INFO, "hidden_info", NULL, LF_END);
    log_event(LOG_WARN, "shown", NULL, LF_END);
    log_shutdown();

    text = check_log_slurp(f);
    ck_assert_uint_eq(check_log_split(text, lines, 8), 1);
    o = check_log_parse(lines[0]);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "shown");
    json_object_put(o);
    free(text);
    fclose(f);
}
END_TEST

struct check_log_thread_arg {
    int id;
    int count;
};

static void *check_log_thread_main(void *p)
{
    const struct check_log_thread_arg *a = p;
    int i;

    for (i = 0; i < a->count; i++)
        log_event(LOG_INFO, "from_thread", NULL, LOG_INT("thread", a->id),
                  LOG_INT("i", i), LF_END);
    return NULL;
}

START_TEST(test_writer_keeps_lines_whole_across_threads)
{
    enum { THREADS = 4, PER = 1000 };
    pthread_t th[THREADS];
    struct check_log_thread_arg args[THREADS];
    int next[THREADS] = { 0 };
    FILE *f = tmpfile();
    char *text, **lines = xcalloc(THREADS * PER + 1, sizeof *lines);
    size_t n, i;
    int t;

    ck_assert_ptr_nonnull(f);
    log_init(f, LOG_INFO);
    for (t = 0; t < THREADS; t++) {
        args[t].id = t;
        args[t].count = PER;
        ck_assert_int_eq(pthread_create(&th[t], NULL, check_log_thread_main,
                                        &args[t]), 0);
    }
    for (t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    log_shutdown();

    /* Fewer lines than the queue holds, so none may be dropped. */
    text = check_log_slurp(f);
    n = check_log_split(text, lines, THREADS * PER + 1);
    ck_assert_uint_eq(n, THREADS * PER);
    for (i = 0; i < n; i++) {
        json_object *o = check_log_parse(lines[i]);
        int64_t id = json_object_get_int64(check_log_get(o, "thread"));

        ck_assert_int_ge(id, 0);
        ck_assert_int_lt(id, THREADS);
        /* Each thread's lines arrive in the order it logged them. */
        ck_assert_int_eq(json_object_get_int64(check_log_get(o, "i")),
                         next[id]);
        next[id]++;
        json_object_put(o);
    }
    ck_assert_uint_eq(log_dropped(), 0);
    free(lines);
    free(text);
    fclose(f);
}
END_TEST

struct check_log_reader {
    int fd;
    size_t lines;
};

static void *check_log_reader_main(void *p)
{
    struct check_log_reader *r = p;
    char buf[65536];
    ssize_t n, i;

    while ((n = read(r->fd, buf, sizeof buf)) > 0)
        for (i = 0; i < n; i++)
            r->lines += buf[i] == '\n';
    return NULL;
}

/*
 * Nobody reads the pipe at first, so the writer blocks on it; log_event
 * must still return at once (or this test times out), dropping and counting
 * what does not fit. Every line is then either delivered or counted.
 */
START_TEST(test_full_queue_drops_and_counts_without_blocking)
{
    enum { N = 40000 };
    int fds[2];
    FILE *w;
    pthread_t reader;
    struct check_log_reader r = { 0 };
    uint64_t dropped;
    int i;

    ck_assert_int_eq(pipe(fds), 0);
    w = fdopen(fds[1], "w");
    ck_assert_ptr_nonnull(w);
    log_init(w, LOG_INFO);
    for (i = 0; i < N; i++)
        log_event(LOG_INFO, "burst", NULL, LOG_INT("i", i), LF_END);
    dropped = log_dropped();
    ck_assert_uint_gt(dropped, 0);

    r.fd = fds[0];
    ck_assert_int_eq(pthread_create(&reader, NULL, check_log_reader_main, &r),
                     0);
    log_shutdown();
    fclose(w);
    pthread_join(reader, NULL);
    close(fds[0]);

    ck_assert_uint_eq(log_dropped(), dropped);
    ck_assert_uint_eq(r.lines + dropped, N);
}
END_TEST

/* Points fd at a fresh temporary file; returns the saved original fd. */
static int check_log_redirect(int fd, FILE **tmp)
{
    int saved = dup(fd);

    *tmp = tmpfile();
    ck_assert_ptr_nonnull(*tmp);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(*tmp), fd), 0);
    return saved;
}

static void check_log_restore(int fd, int saved)
{
    ck_assert_int_ge(dup2(saved, fd), 0);
    close(saved);
}

START_TEST(test_before_init_and_after_shutdown_write_to_stderr)
{
    FILE *err, *out = tmpfile();
    char *text, *lines[8];
    int saved;
    json_object *o;

    ck_assert_ptr_nonnull(out);
    saved = check_log_redirect(STDERR_FILENO, &err);
    log_event(LOG_ERROR, "early", NULL, LOG_STR("why", "no config"), LF_END);
    log_init(out, LOG_INFO);
    log_event(LOG_INFO, "running", NULL, LF_END);
    log_shutdown();
    log_event(LOG_WARN, "late", NULL, LF_END);
    log_event(LOG_DEBUG, "late_debug", NULL, LF_END); /* below the level */
    check_log_restore(STDERR_FILENO, saved);

    text = check_log_slurp(err);
    ck_assert_uint_eq(check_log_split(text, lines, 8), 2);
    o = check_log_parse(lines[0]);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "early");
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "why")),
                     "no config");
    json_object_put(o);
    o = check_log_parse(lines[1]);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "late");
    json_object_put(o);
    free(text);

    text = check_log_slurp(out);
    ck_assert_uint_eq(check_log_split(text, lines, 8), 1);
    o = check_log_parse(lines[0]);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "running");
    json_object_put(o);
    free(text);
    fclose(out);
    fclose(err);
}
END_TEST

START_TEST(test_null_out_means_stdout)
{
    FILE *tmp;
    char *text, *lines[8];
    int saved;
    json_object *o;

    fflush(stdout);
    saved = check_log_redirect(STDOUT_FILENO, &tmp);
    log_init(NULL, LOG_INFO);
    log_event(LOG_INFO, "to_stdout", "x", LF_END);
    log_shutdown();
    check_log_restore(STDOUT_FILENO, saved);

    text = check_log_slurp(tmp);
    ck_assert_uint_eq(check_log_split(text, lines, 8), 1);
    o = check_log_parse(lines[0]);
    ck_assert_str_eq(json_object_get_string(check_log_get(o, "event_type")),
                     "to_stdout");
    json_object_put(o);
    free(text);
    fclose(tmp);
}
END_TEST

START_TEST(test_shutdown_without_init_and_reinit)
{
    FILE *f = tmpfile();
    char *text, *lines[8];

    ck_assert_ptr_nonnull(f);
    log_shutdown(); /* nothing running: a no-op */
    log_init(f, LOG_INFO);
    log_event(LOG_INFO, "first", NULL, LF_END);
    log_shutdown();
    log_shutdown();
    log_init(f, LOG_INFO);
    log_event(LOG_INFO, "second", NULL, LF_END);
    log_shutdown();

    text = check_log_slurp(f);
    ck_assert_uint_eq(check_log_split(text, lines, 8), 2);
    ck_assert_ptr_nonnull(strstr(lines[0], "\"first\""));
    ck_assert_ptr_nonnull(strstr(lines[1], "\"second\""));
    free(text);
    fclose(f);
}
END_TEST

static Suite *check_log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc;

    tc = tcase_create("format");
    tcase_add_test(tc, test_format_has_standard_keys_in_order);
    tcase_add_test(tc, test_format_parses_with_typed_fields);
    tcase_add_test(tc, test_format_without_fields);
    tcase_add_test(tc, test_format_null_values_are_json_null);
    tcase_add_test(tc, test_format_doubles_round_trip_and_non_finite_is_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("escaping");
    tcase_add_test(tc, test_format_escapes_values_keys_and_trace_id);
    tcase_add_test(tc, test_format_keeps_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("levels");
    tcase_add_test(tc, test_default_level_is_info);
    tcase_add_test(tc, test_level_filtering);
    tcase_add_test(tc, test_level_parse_and_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_writer_delivers_in_order_and_shutdown_flushes);
    tcase_add_test(tc, test_writer_skips_disabled_levels);
    tcase_add_test(tc, test_writer_keeps_lines_whole_across_threads);
    tcase_add_test(tc, test_full_queue_drops_and_counts_without_blocking);
    tcase_add_test(tc, test_before_init_and_after_shutdown_write_to_stderr);
    tcase_add_test(tc, test_null_out_means_stdout);
    tcase_add_test(tc, test_shutdown_without_init_and_reinit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_log_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
