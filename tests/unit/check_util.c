/*
 * check_util.c - unit tests for util.c: RFC 3339 time formatting, the
 * growable buffer, JSON string escaping, constant-time comparison and hex.
 *
 * Runs single-threaded under Check (each test in its own forked process
 * unless CK_FORK=no).
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* Formats s with util_buf_json_strn (n bytes) and returns a malloc'd copy. */
static char *check_util_json(const char *s, size_t n)
{
    struct util_buf b = { 0 };

    util_buf_json_strn(&b, s, n);
    return util_buf_steal(&b);
}

/* --- time formatting --- */

START_TEST(test_format_time_epoch)
{
    char out[UTIL_TIME_LEN];

    ck_assert_str_eq(util_format_time(0, out), "1970-01-01T00:00:00.000Z");
}
END_TEST

START_TEST(test_format_time_known_instant_with_ms)
{
    char out[UTIL_TIME_LEN];

    /* 2026-11-24T12:00:00Z is 1795521600 s after the epoch. */
    ck_assert_str_eq(util_format_time(1795521600000LL, out),
                     "2026-11-24T12:00:00.000Z");
    ck_assert_str_eq(util_format_time(1795521600123LL, out),
                     "2026-11-24T12:00:00.123Z");
    /* A leap day, one millisecond before midnight. */
    ck_assert_str_eq(util_format_time(951868799999LL, out),
                     "2000-02-29T23:59:59.999Z");
}
END_TEST

START_TEST(test_format_time_returns_out)
{
    char out[UTIL_TIME_LEN];

    ck_assert_ptr_eq(util_format_time(1, out), out);
    ck_assert_str_eq(out, "1970-01-01T00:00:00.001Z");
}
END_TEST

START_TEST(test_format_time_before_epoch_borrows_a_second)
{
    char out[UTIL_TIME_LEN];

    ck_assert_str_eq(util_format_time(-1, out), "1969-12-31T23:59:59.999Z");
    ck_assert_str_eq(util_format_time(-1000, out),
                     "1969-12-31T23:59:59.000Z");
    ck_assert_str_eq(util_format_time(-1001, out),
                     "1969-12-31T23:59:58.999Z");
}
END_TEST

/* --- clocks --- */

START_TEST(test_clocks_are_plausible_and_monotonic)
{
    int64_t a = util_mono_ns(), b = util_mono_ns();

    ck_assert_int_ge(b, a);
    /* Later than 2020-01-01 and earlier than 2200. */
    ck_assert_int_gt(util_now_ms(), 1577836800000LL);
    ck_assert_int_lt(util_now_ms(), 7258118400000LL);
}
END_TEST

/* --- growable buffer --- */

START_TEST(test_buf_zeroed_is_empty_and_steal_gives_empty_string)
{
    struct util_buf b = { 0 };
    char *s = util_buf_steal(&b);

    ck_assert_str_eq(s, "");
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    free(s);
    util_buf_free(&b);
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(test_buf_grows_past_many_appends)
{
    struct util_buf b = { 0 };
    size_t i;

    for (i = 0; i < 10000; i++)
        util_buf_append(&b, &"0123456789"[i % 10], 1);
    ck_assert_uint_eq(b.len, 10000);
    ck_assert_uint_gt(b.cap, b.len);
    ck_assert_int_eq(b.data[b.len], '\0');
    for (i = 0; i < 10000; i++)
        ck_assert_int_eq(b.data[i], '0' + (int)(i % 10));
    util_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
}
END_TEST

START_TEST(test_buf_append_keeps_embedded_nul_bytes)
{
    struct util_buf b = { 0 };

    util_buf_append(&b, "a\0b", 3);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_int_eq(memcmp(b.data, "a\0b", 4), 0);
    util_buf_free(&b);
}
END_TEST

START_TEST(test_buf_printf_appends_formatted_text)
{
    struct util_buf b = { 0 };
    char big[5000];

    util_buf_puts(&b, "n=");
    util_buf_printf(&b, "%d,%s,%lld", 42, "x", -7LL);
    ck_assert_str_eq(b.data, "n=42,x,-7");
    ck_assert_uint_eq(b.len, strlen("n=42,x,-7"));

    /* A single printf far larger than the current capacity. */
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    util_buf_printf(&b, "[%s]", big);
    ck_assert_uint_eq(b.len, strlen("n=42,x,-7") + 2 + sizeof big - 1);
    ck_assert_int_eq(b.data[b.len - 1], ']');
    ck_assert_int_eq(b.data[b.len], '\0');
    util_buf_free(&b);
}
END_TEST

START_TEST(test_buf_steal_hands_over_and_empties)
{
    struct util_buf b = { 0 };
    char *s;

    util_buf_puts(&b, "hello");
    s = util_buf_steal(&b);
    ck_assert_str_eq(s, "hello");
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    util_buf_puts(&b, "again");
    ck_assert_str_eq(b.data, "again");
    free(s);
    util_buf_free(&b);
}
END_TEST

/* --- JSON strings --- */

START_TEST(test_json_str_plain_text_is_quoted)
{
    char *s = check_util_json("hello world", 11);

    ck_assert_str_eq(s, "\"hello world\"");
    free(s);
}
END_TEST

START_TEST(test_json_str_escapes_quote_and_backslash)
{
    char *s = check_util_json("a\"b\\c", 5);

    ck_assert_str_eq(s, "\"a\\\"b\\\\c\"");
    free(s);
}
END_TEST

START_TEST(test_json_str_escapes_every_control_character)
{
    char in[33];
    char *s;
    int c;

    for (c = 0; c < 32; c++)
        in[c] = (char)(c + 1); /* 0x01 .. 0x20 */
    in[32] = '\0';
    s = check_util_json(in, 32);
    ck_assert_str_eq(s, "\"\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006"
                        "\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f"
                        "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015"
                        "\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b"
                        "\\u001c\\u001d\\u001e\\u001f \"");
    for (c = 0; s[c] != '\0'; c++)
        ck_assert_int_ge((unsigned char)s[c], 0x20);
    free(s);
}
END_TEST

START_TEST(test_json_str_escapes_del_and_nul)
{
    char *s = check_util_json("x\x7fy\0z", 5);

    ck_assert_str_eq(s, "\"x\\u007fy\\u0000z\"");
    free(s);
}
END_TEST

START_TEST(test_json_str_passes_utf8_through)
{
    char *s = check_util_json("caf\xc3\xa9 \xe2\x82\xac", 9);

    ck_assert_str_eq(s, "\"caf\xc3\xa9 \xe2\x82\xac\"");
    free(s);
}
END_TEST

START_TEST(test_json_str_null_is_json_null)
{
    struct util_buf b = { 0 };

    util_buf_json_str(&b, NULL);
    util_buf_puts(&b, ",");
    util_buf_json_str(&b, "");
    util_buf_puts(&b, ",");
    util_buf_json_str(&b, "line1\nline2");
    ck_assert_str_eq(b.data, "null,\"\",\"line1\\nline2\"");
    util_buf_free(&b);
}
END_TEST

/* --- constant-time comparison and hex --- */

START_TEST(test_ct_memcmp_equal_is_zero)
{
    ck_assert_int_eq(util_ct_memcmp("abcdef", "abcdef", 6), 0);
    ck_assert_int_eq(util_ct_memcmp("abc", "xyz", 0), 0);
}
END_TEST

START_TEST(test_ct_memcmp_any_difference_is_nonzero)
{
    ck_assert_int_ne(util_ct_memcmp("abcdef", "xbcdef", 6), 0);
    ck_assert_int_ne(util_ct_memcmp("abcdef", "abcdeg", 6), 0);
    /* One bit in the middle. */
    ck_assert_int_ne(util_ct_memcmp("ab\x01" "def", "ab\x03" "def", 6), 0);
    /* Only the first n bytes count. */
    ck_assert_int_eq(util_ct_memcmp("abcX", "abcY", 3), 0);
}
END_TEST

START_TEST(test_hex_encodes_lower_case)
{
    const uint8_t in[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
    char out[2 * sizeof in + 1];

    util_hex(in, sizeof in, out);
    ck_assert_str_eq(out, "00017f80abff");
    util_hex(in, 0, out);
    ck_assert_str_eq(out, "");
}
END_TEST

/* --- allocation --- */

START_TEST(test_xalloc_family_allocates_and_copies)
{
    char *a = xstrdup("chatd");
    char *b = xstrndup("chatd daemon", 5);
    int *z = xcalloc(16, sizeof *z);
    char *r = xmalloc(0);
    int i;

    ck_assert_str_eq(a, "chatd");
    ck_assert_str_eq(b, "chatd");
    for (i = 0; i < 16; i++)
        ck_assert_int_eq(z[i], 0);
    r = xrealloc(r, 100);
    memset(r, 'x', 100);
    free(a);
    free(b);
    free(z);
    free(r);
}
END_TEST

static Suite *check_util_suite(void)
{
    Suite *s = suite_create("util");
    TCase *tc;

    tc = tcase_create("format_time");
    tcase_add_test(tc, test_format_time_epoch);
    tcase_add_test(tc, test_format_time_known_instant_with_ms);
    tcase_add_test(tc, test_format_time_returns_out);
    tcase_add_test(tc, test_format_time_before_epoch_borrows_a_second);
    suite_add_tcase(s, tc);

    tc = tcase_create("clocks");
    tcase_add_test(tc, test_clocks_are_plausible_and_monotonic);
    suite_add_tcase(s, tc);

    tc = tcase_create("buf");
    tcase_add_test(tc, test_buf_zeroed_is_empty_and_steal_gives_empty_string);
    tcase_add_test(tc, test_buf_grows_past_many_appends);
    tcase_add_test(tc, test_buf_append_keeps_embedded_nul_bytes);
    tcase_add_test(tc, test_buf_printf_appends_formatted_text);
    tcase_add_test(tc, test_buf_steal_hands_over_and_empties);
    suite_add_tcase(s, tc);

    tc = tcase_create("json_str");
    tcase_add_test(tc, test_json_str_plain_text_is_quoted);
    tcase_add_test(tc, test_json_str_escapes_quote_and_backslash);
    tcase_add_test(tc, test_json_str_escapes_every_control_character);
    tcase_add_test(tc, test_json_str_escapes_del_and_nul);
    tcase_add_test(tc, test_json_str_passes_utf8_through);
    tcase_add_test(tc, test_json_str_null_is_json_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("ct_memcmp_and_hex");
    tcase_add_test(tc, test_ct_memcmp_equal_is_zero);
    tcase_add_test(tc, test_ct_memcmp_any_difference_is_nonzero);
    tcase_add_test(tc, test_hex_encodes_lower_case);
    suite_add_tcase(s, tc);

    tc = tcase_create("alloc");
    tcase_add_test(tc, test_xalloc_family_allocates_and_copies);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_util_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
