/*
 * check_proto.c - unit tests for proto.c: what a valid username, password
 * and client_msg_id are, the UTF-8 validator, strict parsing of client
 * JSON (objects only, bounded depth, no NUL, no trailing garbage), the
 * field getters, and the JSON shapes chatd sends, read back with json-c
 * the way a client would.
 *
 * Runs single-threaded under Check (each test in its own forked process
 * unless CK_FORK=no).
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* Tests pass byte strings with their exact length, NUL bytes included. */
#define CHECK_PROTO_LIT(s) (s), (sizeof(s) - 1)
#define CHECK_PROTO_UTF8(s) proto_valid_utf8(CHECK_PROTO_LIT(s))
#define CHECK_PROTO_USER(s) proto_valid_username(CHECK_PROTO_LIT(s))
#define CHECK_PROTO_PASS(s) proto_valid_password(CHECK_PROTO_LIT(s))
#define CHECK_PROTO_MSGID(s) proto_valid_client_msg_id(CHECK_PROTO_LIT(s))

/* Returns a malloc'd string of n copies of unit. */
static char *check_proto_repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit), i;
    char *s = xmalloc(ul * n + 1);

    for (i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

/* n nested objects {"a":{"a":...}}; the innermost holds inner (an object
 * body such as "" or "\"k\":1"). Returns a malloc'd string. */
static char *check_proto_nest(size_t n, const char *inner)
{
    struct util_buf b = { 0 };
    size_t i;

    for (i = 0; i + 1 < n; i++)
        util_buf_puts(&b, "{\"a\":");
    util_buf_printf(&b, "{%s}", inner);
    for (i = 0; i + 1 < n; i++)
        util_buf_puts(&b, "}");
    return util_buf_steal(&b);
}

/* Parses text (its strlen) and asserts it is refused; returns the why. */
static const char *check_proto_refused(const char *text, size_t len)
{
    const char *why = NULL;
    json_object *o = proto_parse_object(text, len, &why);

    ck_assert_msg(o == NULL, "accepted: %s", text);
    ck_assert_ptr_nonnull(why);
    ck_assert_int_gt((int)strlen(why), 0);
    return why;
}

/* Parses the writer's output as a client would; the output must be one
 * JSON object on one line. The caller puts the result. */
static json_object *check_proto_read_back(struct util_buf *b)
{
    json_object *o;

    ck_assert_ptr_nonnull(b->data);
    ck_assert_uint_eq(strlen(b->data), b->len);
    ck_assert_msg(strchr(b->data, '\n') == NULL, "not one line: %s",
                  b->data);
    o = json_tokener_parse(b->data);
    ck_assert_msg(o != NULL, "json-c cannot parse: %s", b->data);
    ck_assert(json_object_is_type(o, json_type_object));
    return o;
}

static json_object *check_proto_field(json_object *o, const char *key,
                                      json_type type)
{
    json_object *v = NULL;

    ck_assert_msg(json_object_object_get_ex(o, key, &v), "no field %s", key);
    ck_assert_msg(json_object_is_type(v, type), "field %s has type %s", key,
                  json_type_to_name(json_object_get_type(v)));
    return v;
}

static int64_t check_proto_int(json_object *o, const char *key)
{
    return json_object_get_int64(check_proto_field(o, key, json_type_int));
}

static const char *check_proto_str(json_object *o, const char *key)
{
    return json_object_get_string(check_proto_field(o, key,
                                                    json_type_string));
}

/* --- usernames --- */

START_TEST(test_username_length_bounds)
{
    char *s32 = check_proto_repeat("a", 32), *s33 = check_proto_repeat("a", 33);

    ck_assert_int_eq(CHECK_PROTO_USER("abc"), 1);
    ck_assert_int_eq(proto_valid_username(s32, 32), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("ab"), 0);
    ck_assert_int_eq(proto_valid_username(s33, 33), 0);
    ck_assert_int_eq(CHECK_PROTO_USER(""), 0);
    free(s32);
    free(s33);
}
END_TEST

START_TEST(test_username_each_allowed_class)
{
    ck_assert_int_eq(CHECK_PROTO_USER("ABCXYZ"), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("abcxyz"), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("0123456789"), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("___"), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("..."), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("---"), 1);
    ck_assert_int_eq(CHECK_PROTO_USER("Al.ice_B-0b"), 1);
}
END_TEST

START_TEST(test_username_other_chars_refused)
{
    ck_assert_int_eq(CHECK_PROTO_USER("al ice"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("alice@x"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("al\xc3\xa9x"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("\xe6\x9d\x8e\xe5\x9b\x9b"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("ali/ce"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("ali+ce"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("alice\n"), 0);
    ck_assert_int_eq(CHECK_PROTO_USER("ali\0ce"), 0);
}
END_TEST

/* --- passwords --- */

START_TEST(test_password_length_in_bytes)
{
    char *p256 = check_proto_repeat("x", 256);
    char *p257 = check_proto_repeat("x", 257);

    ck_assert_int_eq(CHECK_PROTO_PASS("12345678"), 1);
    ck_assert_int_eq(CHECK_PROTO_PASS("1234567"), 0);
    ck_assert_int_eq(proto_valid_password(p256, 256), 1);
    ck_assert_int_eq(proto_valid_password(p257, 257), 0);
    ck_assert_int_eq(CHECK_PROTO_PASS(""), 0);
    free(p256);
    free(p257);
}
END_TEST

START_TEST(test_password_multibyte_counted_in_bytes)
{
    /* Four two-byte characters are eight bytes: long enough. */
    char *e4 = check_proto_repeat("\xc3\xa9", 4);
    char *e3 = check_proto_repeat("\xc3\xa9", 3);
    char *e128 = check_proto_repeat("\xc3\xa9", 128);
    char *e129 = check_proto_repeat("\xc3\xa9", 129);
    char *emoji64 = check_proto_repeat("\xf0\x9f\x98\x80", 64);
    char *emoji65 = check_proto_repeat("\xf0\x9f\x98\x80", 65);

    ck_assert_int_eq(proto_valid_password(e4, 8), 1);
    ck_assert_int_eq(proto_valid_password(e3, 6), 0);
    ck_assert_int_eq(proto_valid_password(e128, 256), 1);
    ck_assert_int_eq(proto_valid_password(e129, 258), 0);
    ck_assert_int_eq(proto_valid_password(emoji64, 256), 1);
    ck_assert_int_eq(proto_valid_password(emoji65, 260), 0);
    free(e4);
    free(e3);
    free(e128);
    free(e129);
    free(emoji64);
    free(emoji65);
}
END_TEST

START_TEST(test_password_invalid_utf8_refused)
{
    ck_assert_int_eq(CHECK_PROTO_PASS("password\xff"), 0);
    ck_assert_int_eq(CHECK_PROTO_PASS("passw\xc3rd1"), 0);
    ck_assert_int_eq(CHECK_PROTO_PASS("pass\xed\xa0\x80word"),
                     0);
    ck_assert_int_eq(CHECK_PROTO_PASS("pass\0word"), 0);
}
END_TEST

/* --- client_msg_id --- */

START_TEST(test_client_msg_id_length_in_characters)
{
    char *a64 = check_proto_repeat("a", 64), *a65 = check_proto_repeat("a", 65);

    ck_assert_int_eq(CHECK_PROTO_MSGID("a"), 1);
    ck_assert_int_eq(
        CHECK_PROTO_MSGID("6f1c0e52-3a7b-4c55-9a0e-1d2b3c4d5e6f"), 1);
    ck_assert_int_eq(proto_valid_client_msg_id(a64, 64), 1);
    ck_assert_int_eq(proto_valid_client_msg_id(a65, 65), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID(""), 0);
    free(a64);
    free(a65);
}
END_TEST

START_TEST(test_client_msg_id_multibyte_characters)
{
    char *e64 = check_proto_repeat("\xc3\xa9", 64);
    char *e65 = check_proto_repeat("\xc3\xa9", 65);
    char *emoji64 = check_proto_repeat("\xf0\x9f\x98\x80", 64);
    char *emoji65 = check_proto_repeat("\xf0\x9f\x98\x80", 65);

    ck_assert_int_eq(proto_valid_client_msg_id(e64, 128), 1);
    ck_assert_int_eq(proto_valid_client_msg_id(e65, 130), 0);
    ck_assert_int_eq(proto_valid_client_msg_id(emoji64, 256), 1);
    ck_assert_int_eq(proto_valid_client_msg_id(emoji65, 260), 0);
    free(e64);
    free(e65);
    free(emoji64);
    free(emoji65);
}
END_TEST

START_TEST(test_client_msg_id_control_chars_refused)
{
    ck_assert_int_eq(CHECK_PROTO_MSGID("a\x01" "b"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("ab\n"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("\tab"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("a\x7f"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("a\0b"), 0);
    /* A space is not a control character. */
    ck_assert_int_eq(CHECK_PROTO_MSGID("a b"), 1);
}
END_TEST

/* U+0080..U+009F (C1) are control characters too: NEL (U+0085) would end
 * a line in some clients' logs. */
START_TEST(test_client_msg_id_c1_control_chars_refused)
{
    ck_assert_int_eq(CHECK_PROTO_MSGID("a\xc2\x85" "b"),
                     0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("\xc2\x80"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("\xc2\x9f"), 0);
    /* U+00A0 is the first character after them. */
    ck_assert_int_eq(CHECK_PROTO_MSGID("\xc2\xa0"), 1);
}
END_TEST

START_TEST(test_client_msg_id_invalid_utf8_refused)
{
    ck_assert_int_eq(CHECK_PROTO_MSGID("ab\xc3"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("\xff"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("\xc0\xaf"), 0);
    ck_assert_int_eq(CHECK_PROTO_MSGID("\x80" "abc"), 0);
}
END_TEST

/* --- UTF-8 --- */

START_TEST(test_utf8_valid_sequences)
{
    ck_assert_int_eq(CHECK_PROTO_UTF8(""), 1);
    ck_assert_int_eq(CHECK_PROTO_UTF8("plain ascii ~\x7f"), 1);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc2\x80"), 1);     /* U+0080 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc3\xa9"), 1);     /* U+00E9 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xdf\xbf"), 1);     /* U+07FF */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xe0\xa0\x80"), 1); /* U+0800 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xe2\x82\xac"), 1); /* U+20AC */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xed\x9f\xbf"), 1); /* U+D7FF */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xee\x80\x80"), 1); /* U+E000 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xef\xbf\xbf"), 1); /* U+FFFF */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf0\x90\x80\x80"), 1); /* U+10000 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf0\x9f\x98\x80"), 1); /* U+1F600 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf4\x8f\xbf\xbf"), 1); /* U+10FFFF */
    ck_assert_int_eq(
        CHECK_PROTO_UTF8("a\xc3\xa9z\xe2\x82\xac\xf0\x9f\x98\x80!"), 1);
}
END_TEST

START_TEST(test_utf8_overlong_refused)
{
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc0\x80"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc0\xaf"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc1\xbf"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xe0\x80\xaf"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xe0\x9f\xbf"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf0\x80\x80\xaf"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf0\x8f\xbf\xbf"), 0);
}
END_TEST

START_TEST(test_utf8_surrogates_refused)
{
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xed\xa0\x80"), 0); /* U+D800 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xed\xaf\xbf"), 0); /* U+DBFF */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xed\xb0\x80"), 0); /* U+DC00 */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xed\xbf\xbf"), 0); /* U+DFFF */
    /* A CESU-8 pair is two surrogates, not one character. */
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xed\xa0\xbd\xed\xb8\x80"), 0);
}
END_TEST

START_TEST(test_utf8_beyond_u10ffff_refused)
{
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf4\x90\x80\x80"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf5\x80\x80\x80"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf7\xbf\xbf\xbf"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf8\x88\x80\x80\x80"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xfe"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xff"), 0);
}
END_TEST

START_TEST(test_utf8_truncated_and_stray_refused)
{
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc3"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xe2\x82"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf0\x9f\x98"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("ab\xf0\x9f"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\x80"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xbf" "a"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xc3("), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xe2(\xac"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("\xf0\x9f(\x80"), 0);
    /* The length bounds the read: a valid sequence cut by len is refused. */
    ck_assert_int_eq(proto_valid_utf8("\xe2\x82\xac", 2), 0);
}
END_TEST

START_TEST(test_utf8_nul_refused)
{
    ck_assert_int_eq(CHECK_PROTO_UTF8("\0"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("a\0b"), 0);
    ck_assert_int_eq(CHECK_PROTO_UTF8("abc\0"), 0);
}
END_TEST

START_TEST(test_utf8_chars_counts_characters)
{
    ck_assert_uint_eq(proto_utf8_chars(CHECK_PROTO_LIT("")), 0);
    ck_assert_uint_eq(proto_utf8_chars(CHECK_PROTO_LIT("abc")), 3);
    ck_assert_uint_eq(proto_utf8_chars(
        CHECK_PROTO_LIT("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80")), 4);
}
END_TEST

/* --- proto_parse_object --- */

START_TEST(test_parse_valid_object)
{
    static const char text[] =
        "{\"type\":\"send\",\"conversation_id\":12,\"body\":\"h\\u00e9\\n\"}";
    const char *why = "unset", *s;
    size_t len;
    int64_t id;
    json_object *o = proto_parse_object(CHECK_PROTO_LIT(text), &why);

    ck_assert_ptr_nonnull(o);
    ck_assert_ptr_null(why);
    ck_assert_int_eq(proto_get_string(o, "type", &s, &len), 0);
    ck_assert_str_eq(s, "send");
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(proto_get_int(o, "conversation_id", &id), 0);
    ck_assert_int_eq(id, 12);
    ck_assert_int_eq(proto_get_string(o, "body", &s, &len), 0);
    ck_assert_str_eq(s, "h\xc3\xa9\n");
    ck_assert_uint_eq(len, 4);
    json_object_put(o);

    o = proto_parse_object(CHECK_PROTO_LIT("{}"), &why);
    ck_assert_ptr_nonnull(o);
    json_object_put(o);
    o = proto_parse_object(CHECK_PROTO_LIT(" \n{\"a\":[1,{\"b\":null}]}"),
                           &why);
    ck_assert_ptr_nonnull(o);
    json_object_put(o);
}
END_TEST

START_TEST(test_parse_non_objects_refused)
{
    static const char *const texts[] = {
        "[]", "[{\"a\":1}]", "\"string\"", "true ", "12 ",
    };
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        const char *why = check_proto_refused(texts[i], strlen(texts[i]));
        ck_assert_msg(strstr(why, "must be a JSON object") != NULL,
                      "'%s' refused with '%s'", texts[i], why);
    }
}
END_TEST

/* A bare number or literal is refused as not an object too, not as cut
 * short: json-c waits for more input, but the body has ended. */
START_TEST(test_parse_bare_scalar_says_must_be_object)
{
    static const char *const texts[] = { "1", "-2.5", "0", "true", "null" };
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        const char *why = check_proto_refused(texts[i], strlen(texts[i]));
        ck_assert_msg(strstr(why, "must be a JSON object") != NULL,
                      "'%s' refused with '%s'", texts[i], why);
    }
}
END_TEST

START_TEST(test_parse_malformed_refused)
{
    static const char *const texts[] = {
        "{", "}", "{\"a\":}", "{a:1}", "{\"a\":'b'}", "{\"a\":1,}", "{\"a\" 1}",
        "{\"a\":01}", "{\"a\":tru}", "{\"a\":\"x}", "{\"a\":nan}", "nope",
        "{\"a\":1", "{\"a\":\"\\x41\"}", " ", "\n\t",
    };
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
        check_proto_refused(texts[i], strlen(texts[i]));
    check_proto_refused("", 0);
}
END_TEST

/* Texts json-c accepts even in strict mode but RFC 8259 does not: a
 * single-quoted key, a number ending in a dot, NaN and Infinity, and raw
 * control characters inside a string. */
START_TEST(test_parse_non_json_syntax_refused)
{
    static const char *const texts[] = {
        "{'a':1}", "{\"a\":1.}", "{\"a\":NaN}", "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":\"x\ny\"}", "{\"a\":\"x\ty\"}", "{\"a\":\"x\x01y\"}",
    };
    struct util_buf accepted = { 0 };
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        const char *why;
        json_object *o = proto_parse_object(texts[i], strlen(texts[i]), &why);
        if (o != NULL) {
            util_buf_puts(&accepted, " ");
            util_buf_json_str(&accepted, texts[i]);
            json_object_put(o);
        }
    }
    ck_assert_msg(accepted.len == 0, "accepted:%s", accepted.data);
    util_buf_free(&accepted);
}
END_TEST

START_TEST(test_parse_truncated_refused)
{
    static const char full[] = "{\"body\":\"hello\",\"n\":[1,2,{\"x\":3}]}";
    size_t cut;

    for (cut = 1; cut < sizeof full - 1; cut++)
        check_proto_refused(full, cut);
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":1"));
}
END_TEST

START_TEST(test_parse_trailing_garbage_refused)
{
    static const char *const texts[] = {
        "{} x", "{}{}", "{\"a\":1}]", "{\"a\":1}}", "{}\n,", "{} 1",
        "{}\"\"",
    };
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++)
        check_proto_refused(texts[i], strlen(texts[i]));
}
END_TEST

START_TEST(test_parse_trailing_whitespace_ok)
{
    const char *why;
    json_object *o = proto_parse_object(CHECK_PROTO_LIT("{\"a\":1} \t\r\n  "),
                                        &why);

    ck_assert_ptr_nonnull(o);
    json_object_put(o);
}
END_TEST

START_TEST(test_parse_depth_16_accepted)
{
    const char *why;
    char *empty = check_proto_nest(PROTO_JSON_DEPTH, "");
    char *scalar = check_proto_nest(PROTO_JSON_DEPTH, "\"k\":1");
    json_object *o;

    o = proto_parse_object(empty, strlen(empty), &why);
    ck_assert_msg(o != NULL, "refused (%s): %s", why, empty);
    json_object_put(o);
    o = proto_parse_object(scalar, strlen(scalar), &why);
    ck_assert_msg(o != NULL, "refused (%s): %s", why, scalar);
    json_object_put(o);
    free(empty);
    free(scalar);
}
END_TEST

/* Seventeen objects nest seventeen deep whether or not the innermost one
 * holds a value. */
START_TEST(test_parse_depth_17_refused)
{
    char *empty = check_proto_nest(PROTO_JSON_DEPTH + 1, "");
    char *scalar = check_proto_nest(PROTO_JSON_DEPTH + 1, "\"k\":1");
    char *deeper = check_proto_nest(PROTO_JSON_DEPTH + 5, "");
    const char *why;

    why = check_proto_refused(scalar, strlen(scalar));
    ck_assert_ptr_nonnull(strstr(why, "deep"));
    why = check_proto_refused(deeper, strlen(deeper));
    ck_assert_ptr_nonnull(strstr(why, "deep"));
    why = check_proto_refused(empty, strlen(empty));
    ck_assert_ptr_nonnull(strstr(why, "deep"));
    free(empty);
    free(scalar);
    free(deeper);
}
END_TEST

START_TEST(test_parse_1000_deep_refused_without_crash)
{
    char *objects = check_proto_nest(1000, "");
    char *arrays = xmalloc(2001 + 16);
    const char *why;

    /* {"a":[[[...]]]} a thousand arrays deep. */
    strcpy(arrays, "{\"a\":");
    memset(arrays + 5, '[', 1000);
    memset(arrays + 1005, ']', 1000);
    strcpy(arrays + 2005, "}");
    why = check_proto_refused(objects, strlen(objects));
    ck_assert_ptr_nonnull(strstr(why, "deep"));
    why = check_proto_refused(arrays, strlen(arrays));
    ck_assert_ptr_nonnull(strstr(why, "deep"));
    free(objects);
    free(arrays);
}
END_TEST

START_TEST(test_parse_nul_in_value_refused)
{
    /* A raw NUL byte inside the text and an escaped one inside a value. */
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":\"x\0y\"}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":1}\0"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":\"x\\u0000y\"}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":\"\\u0000\"}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":[\"ok\",\"x\\u0000\"]}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":{\"b\":\"\\u0000\"}}"));
}
END_TEST

START_TEST(test_parse_nul_in_key_refused)
{
    check_proto_refused(CHECK_PROTO_LIT("{\"a\0b\":1}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\\u0000b\":1}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"x\":{\"\\u0000\":1}}"));
}
END_TEST

START_TEST(test_parse_escaped_backslash_u0000_is_text)
{
    /* "\\u0000" is a backslash followed by the text u0000: no NUL. */
    const char *why, *s;
    size_t len;
    json_object *o = proto_parse_object(
        CHECK_PROTO_LIT("{\"a\":\"\\\\u0000\"}"), &why);

    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(proto_get_string(o, "a", &s, &len), 0);
    ck_assert_str_eq(s, "\\u0000");
    json_object_put(o);
}
END_TEST

START_TEST(test_parse_invalid_utf8_refused)
{
    const char *why;

    why = check_proto_refused(CHECK_PROTO_LIT("{\"a\":\"\xff\"}"));
    ck_assert_ptr_nonnull(strstr(why, "UTF-8"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":\"\xc0\xaf\"}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"a\":\"\xed\xa0\x80\"}"));
    check_proto_refused(CHECK_PROTO_LIT("{\"\xc3\":1}"));
}
END_TEST

/* --- getters --- */

START_TEST(test_get_string_types_and_absence)
{
    const char *why, *s = NULL;
    size_t len = 99;
    json_object *o = proto_parse_object(CHECK_PROTO_LIT(
        "{\"s\":\"abc\",\"e\":\"\",\"n\":1,\"z\":null,\"b\":true,"
        "\"o\":{},\"a\":[\"x\"]}"), &why);

    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(proto_get_string(o, "s", &s, &len), 0);
    ck_assert_str_eq(s, "abc");
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(proto_get_string(o, "s", &s, NULL), 0);
    ck_assert_int_eq(proto_get_string(o, "e", &s, &len), 0);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(proto_get_string(o, "n", &s, &len), -1);
    ck_assert_int_eq(proto_get_string(o, "z", &s, &len), -1);
    ck_assert_int_eq(proto_get_string(o, "b", &s, &len), -1);
    ck_assert_int_eq(proto_get_string(o, "o", &s, &len), -1);
    ck_assert_int_eq(proto_get_string(o, "a", &s, &len), -1);
    ck_assert_int_eq(proto_get_string(o, "missing", &s, &len), -1);
    ck_assert_int_eq(proto_get_string(o, "S", &s, &len), -1);
    json_object_put(o);
}
END_TEST

START_TEST(test_get_int_types_and_absence)
{
    const char *why;
    int64_t v = 0;
    json_object *o = proto_parse_object(CHECK_PROTO_LIT(
        "{\"n\":42,\"neg\":-7,\"zero\":0,\"s\":\"42\",\"d\":1.5,\"x\":1e3,"
        "\"z\":null,\"b\":true,\"a\":[1]}"), &why);

    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(proto_get_int(o, "n", &v), 0);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(proto_get_int(o, "neg", &v), 0);
    ck_assert_int_eq(v, -7);
    ck_assert_int_eq(proto_get_int(o, "zero", &v), 0);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(proto_get_int(o, "s", &v), -1);
    ck_assert_int_eq(proto_get_int(o, "d", &v), -1);
    ck_assert_int_eq(proto_get_int(o, "x", &v), -1);
    ck_assert_int_eq(proto_get_int(o, "z", &v), -1);
    ck_assert_int_eq(proto_get_int(o, "b", &v), -1);
    ck_assert_int_eq(proto_get_int(o, "a", &v), -1);
    ck_assert_int_eq(proto_get_int(o, "missing", &v), -1);
    json_object_put(o);
}
END_TEST

START_TEST(test_get_int_full_int64_range)
{
    const char *why;
    int64_t v = 0;
    json_object *o = proto_parse_object(CHECK_PROTO_LIT(
        "{\"max\":9223372036854775807,\"min1\":-9223372036854775807}"), &why);

    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(proto_get_int(o, "max", &v), 0);
    ck_assert_int_eq(v, INT64_MAX);
    ck_assert_int_eq(proto_get_int(o, "min1", &v), 0);
    ck_assert_int_eq(v, -INT64_MAX);
    json_object_put(o);
}
END_TEST

/* An id past int64 must not be read as some other, existing id. */
START_TEST(test_get_int_beyond_int64_refused)
{
    static const char *const texts[] = {
        "{\"n\":9223372036854775808}", "{\"n\":18446744073709551615}",
        "{\"n\":99999999999999999999}", "{\"n\":-9223372036854775809}",
        "{\"n\":-99999999999999999999}",
    };
    size_t i;

    for (i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        const char *why;
        int64_t v = 0;
        json_object *o = proto_parse_object(texts[i], strlen(texts[i]), &why);

        /* Refusing the whole body is as good as refusing the field. */
        if (o == NULL)
            continue;
        ck_assert_msg(proto_get_int(o, "n", &v) == -1,
                      "%s read as %lld", texts[i], (long long)v);
        json_object_put(o);
    }
}
END_TEST

/* --- JSON writers --- */

START_TEST(test_json_message_round_trips)
{
    static const char body[] =
        "he said \"hi\"\nline\ttwo\\ \x01\x1f\x7f caf\xc3\xa9 \xf0\x9f\x98\x80";
    struct store_msg m;
    struct util_buf b = { 0 };
    json_object *o;

    memset(&m, 0, sizeof m);
    m.message_id = 9007199254740993LL;
    m.conversation_id = 12;
    m.seq = 345;
    m.sender_id = 6;
    strcpy(m.sender, "alice");
    strcpy(m.client_msg_id, "c-1 \"q\"");
    m.body = xstrdup(body);
    m.created_at = 1795521600123LL;
    proto_json_message(&b, &m);
    o = check_proto_read_back(&b);
    ck_assert_int_eq(json_object_object_length(o), 8);
    ck_assert_int_eq(check_proto_int(o, "message_id"), 9007199254740993LL);
    ck_assert_int_eq(check_proto_int(o, "conversation_id"), 12);
    ck_assert_int_eq(check_proto_int(o, "seq"), 345);
    ck_assert_int_eq(check_proto_int(o, "sender_id"), 6);
    ck_assert_str_eq(check_proto_str(o, "sender"), "alice");
    ck_assert_str_eq(check_proto_str(o, "body"), body);
    ck_assert_str_eq(check_proto_str(o, "client_msg_id"), "c-1 \"q\"");
    ck_assert_str_eq(check_proto_str(o, "created_at"),
                     "2026-11-24T12:00:00.123Z");
    json_object_put(o);
    util_buf_free(&b);
    free(m.body);
}
END_TEST

START_TEST(test_json_message_created_at_whole_second)
{
    struct store_msg m;
    struct util_buf b = { 0 };
    json_object *o;

    memset(&m, 0, sizeof m);
    m.message_id = 1;
    strcpy(m.sender, "bob");
    strcpy(m.client_msg_id, "x");
    m.body = NULL;               /* written as the empty string */
    m.created_at = 951868800000LL;
    proto_json_message(&b, &m);
    o = check_proto_read_back(&b);
    ck_assert_str_eq(check_proto_str(o, "created_at"),
                     "2000-03-01T00:00:00.000Z");
    ck_assert_str_eq(check_proto_str(o, "body"), "");
    json_object_put(o);
    util_buf_free(&b);
}
END_TEST

START_TEST(test_json_user_round_trips)
{
    struct store_user_brief u = { .id = 42, .username = "Al.ice_B-0b" };
    struct util_buf b = { 0 };
    json_object *o;

    proto_json_user(&b, &u);
    o = check_proto_read_back(&b);
    ck_assert_int_eq(json_object_object_length(o), 2);
    ck_assert_int_eq(check_proto_int(o, "user_id"), 42);
    ck_assert_str_eq(check_proto_str(o, "username"), "Al.ice_B-0b");
    json_object_put(o);
    util_buf_free(&b);
}
END_TEST

/* A conversation with members, and optionally the list fields. */
static void check_proto_conv(struct store_conv *c,
                             struct store_user_brief members[3])
{
    memset(c, 0, sizeof *c);
    memset(members, 0, 3 * sizeof members[0]);
    members[0].id = 1;
    strcpy(members[0].username, "alice");
    members[1].id = 2;
    strcpy(members[1].username, "bob");
    members[2].id = 3;
    strcpy(members[2].username, "carol");
    c->id = 77;
    strcpy(c->kind, "group");
    c->members = members;
    c->nmembers = 3;
}

static void check_proto_assert_members(json_object *o)
{
    json_object *arr = check_proto_field(o, "members", json_type_array);
    static const char *const names[] = { "alice", "bob", "carol" };
    size_t i;

    ck_assert_uint_eq(json_object_array_length(arr), 3);
    for (i = 0; i < 3; i++) {
        json_object *u = json_object_array_get_idx(arr, i);
        ck_assert(json_object_is_type(u, json_type_object));
        ck_assert_int_eq(json_object_object_length(u), 2);
        ck_assert_int_eq(check_proto_int(u, "user_id"), (int64_t)i + 1);
        ck_assert_str_eq(check_proto_str(u, "username"), names[i]);
    }
}

START_TEST(test_json_conversation_without_list_fields)
{
    struct store_conv c;
    struct store_user_brief members[3];
    struct util_buf b = { 0 };
    json_object *o;

    check_proto_conv(&c, members);
    c.title = xstrdup("the \"plan\"\n\\ \x02");
    c.last_seq = 5;
    proto_json_conversation(&b, &c, 0);
    o = check_proto_read_back(&b);
    ck_assert_int_eq(json_object_object_length(o), 4);
    ck_assert_int_eq(check_proto_int(o, "conversation_id"), 77);
    ck_assert_str_eq(check_proto_str(o, "kind"), "group");
    ck_assert_str_eq(check_proto_str(o, "title"), "the \"plan\"\n\\ \x02");
    check_proto_assert_members(o);
    ck_assert(!json_object_object_get_ex(o, "last_message", NULL));
    ck_assert(!json_object_object_get_ex(o, "unread", NULL));
    json_object_put(o);
    util_buf_free(&b);
    free(c.title);
}
END_TEST

START_TEST(test_json_conversation_null_title_and_no_last_message)
{
    struct store_conv c;
    struct store_user_brief members[3];
    struct util_buf b = { 0 };
    json_object *o;

    check_proto_conv(&c, members);
    strcpy(c.kind, "direct");
    c.nmembers = 2;
    c.title = NULL;
    proto_json_conversation(&b, &c, 1);
    o = check_proto_read_back(&b);
    ck_assert_int_eq(json_object_object_length(o), 6);
    ck_assert_str_eq(check_proto_str(o, "kind"), "direct");
    check_proto_field(o, "title", json_type_null);
    ck_assert_uint_eq(json_object_array_length(
        check_proto_field(o, "members", json_type_array)), 2);
    check_proto_field(o, "last_message", json_type_null);
    ck_assert_int_eq(check_proto_int(o, "unread"), 0);
    json_object_put(o);
    util_buf_free(&b);
}
END_TEST

START_TEST(test_json_conversation_with_last_message_and_unread)
{
    struct store_conv c;
    struct store_user_brief members[3];
    struct util_buf b = { 0 };
    json_object *o, *last;

    check_proto_conv(&c, members);
    c.title = xstrdup("team");
    c.last_seq = 10;
    c.read_seq = 4;
    c.has_last = 1;
    c.last_message.message_id = 501;
    c.last_message.conversation_id = 77;
    c.last_message.seq = 10;
    c.last_message.sender_id = 2;
    strcpy(c.last_message.sender, "bob");
    strcpy(c.last_message.client_msg_id, "m10");
    c.last_message.body = xstrdup("see \"you\"\n");
    c.last_message.created_at = 1795521600999LL;
    proto_json_conversation(&b, &c, 1);
    o = check_proto_read_back(&b);
    ck_assert_int_eq(json_object_object_length(o), 6);
    ck_assert_str_eq(check_proto_str(o, "title"), "team");
    check_proto_assert_members(o);
    ck_assert_int_eq(check_proto_int(o, "unread"), 6);
    last = check_proto_field(o, "last_message", json_type_object);
    ck_assert_int_eq(json_object_object_length(last), 8);
    ck_assert_int_eq(check_proto_int(last, "message_id"), 501);
    ck_assert_int_eq(check_proto_int(last, "conversation_id"), 77);
    ck_assert_int_eq(check_proto_int(last, "seq"), 10);
    ck_assert_int_eq(check_proto_int(last, "sender_id"), 2);
    ck_assert_str_eq(check_proto_str(last, "sender"), "bob");
    ck_assert_str_eq(check_proto_str(last, "body"), "see \"you\"\n");
    ck_assert_str_eq(check_proto_str(last, "client_msg_id"), "m10");
    ck_assert_str_eq(check_proto_str(last, "created_at"),
                     "2026-11-24T12:00:00.999Z");
    json_object_put(o);
    util_buf_free(&b);
    free(c.title);
    free(c.last_message.body);
}
END_TEST

START_TEST(test_json_conversation_unread_never_negative)
{
    struct store_conv c;
    struct store_user_brief members[3];
    struct util_buf b = { 0 };
    json_object *o;

    check_proto_conv(&c, members);
    c.last_seq = 3;
    c.read_seq = 9;
    proto_json_conversation(&b, &c, 1);
    o = check_proto_read_back(&b);
    ck_assert_int_eq(check_proto_int(o, "unread"), 0);
    json_object_put(o);
    util_buf_free(&b);
}
END_TEST

START_TEST(test_json_conversation_no_members)
{
    struct store_conv c;
    struct store_user_brief members[3];
    struct util_buf b = { 0 };
    json_object *o;

    check_proto_conv(&c, members);
    c.members = NULL;
    c.nmembers = 0;
    proto_json_conversation(&b, &c, 0);
    o = check_proto_read_back(&b);
    ck_assert_uint_eq(json_object_array_length(
        check_proto_field(o, "members", json_type_array)), 0);
    json_object_put(o);
    util_buf_free(&b);
}
END_TEST

START_TEST(test_json_error_round_trips)
{
    struct util_buf b = { 0 };
    json_object *o, *e;

    proto_json_error(&b, "invalid_username",
                     "usernames are 3 to 32 of \"A-Z a-z 0-9 _ . -\"\n\\");
    o = check_proto_read_back(&b);
    ck_assert_int_eq(json_object_object_length(o), 1);
    e = check_proto_field(o, "error", json_type_object);
    ck_assert_int_eq(json_object_object_length(e), 2);
    ck_assert_str_eq(check_proto_str(e, "code"), "invalid_username");
    ck_assert_str_eq(check_proto_str(e, "message"),
                     "usernames are 3 to 32 of \"A-Z a-z 0-9 _ . -\"\n\\");
    json_object_put(o);
    util_buf_free(&b);
}
END_TEST

START_TEST(test_json_writers_append)
{
    struct store_user_brief u = { .id = 1, .username = "abc" };
    struct util_buf b = { 0 };

    util_buf_puts(&b, "[");
    proto_json_user(&b, &u);
    util_buf_puts(&b, ",");
    proto_json_error(&b, "x", "y");
    util_buf_puts(&b, "]");
    ck_assert_str_eq(b.data, "[{\"user_id\":1,\"username\":\"abc\"},"
                     "{\"error\":{\"code\":\"x\",\"message\":\"y\"}}]");
    util_buf_free(&b);
}
END_TEST

static Suite *check_proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc;

    tc = tcase_create("username");
    tcase_add_test(tc, test_username_length_bounds);
    tcase_add_test(tc, test_username_each_allowed_class);
    tcase_add_test(tc, test_username_other_chars_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("password");
    tcase_add_test(tc, test_password_length_in_bytes);
    tcase_add_test(tc, test_password_multibyte_counted_in_bytes);
    tcase_add_test(tc, test_password_invalid_utf8_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("client_msg_id");
    tcase_add_test(tc, test_client_msg_id_length_in_characters);
    tcase_add_test(tc, test_client_msg_id_multibyte_characters);
    tcase_add_test(tc, test_client_msg_id_control_chars_refused);
    tcase_add_test(tc, test_client_msg_id_c1_control_chars_refused);
    tcase_add_test(tc, test_client_msg_id_invalid_utf8_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("utf8");
    tcase_add_test(tc, test_utf8_valid_sequences);
    tcase_add_test(tc, test_utf8_overlong_refused);
    tcase_add_test(tc, test_utf8_surrogates_refused);
    tcase_add_test(tc, test_utf8_beyond_u10ffff_refused);
    tcase_add_test(tc, test_utf8_truncated_and_stray_refused);
    tcase_add_test(tc, test_utf8_nul_refused);
    tcase_add_test(tc, test_utf8_chars_counts_characters);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse_object");
    tcase_add_test(tc, test_parse_valid_object);
    tcase_add_test(tc, test_parse_non_objects_refused);
    tcase_add_test(tc, test_parse_bare_scalar_says_must_be_object);
    tcase_add_test(tc, test_parse_malformed_refused);
    tcase_add_test(tc, test_parse_non_json_syntax_refused);
    tcase_add_test(tc, test_parse_truncated_refused);
    tcase_add_test(tc, test_parse_trailing_garbage_refused);
    tcase_add_test(tc, test_parse_trailing_whitespace_ok);
    tcase_add_test(tc, test_parse_depth_16_accepted);
    tcase_add_test(tc, test_parse_depth_17_refused);
    tcase_add_test(tc, test_parse_1000_deep_refused_without_crash);
    tcase_add_test(tc, test_parse_nul_in_value_refused);
    tcase_add_test(tc, test_parse_nul_in_key_refused);
    tcase_add_test(tc, test_parse_escaped_backslash_u0000_is_text);
    tcase_add_test(tc, test_parse_invalid_utf8_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("getters");
    tcase_add_test(tc, test_get_string_types_and_absence);
    tcase_add_test(tc, test_get_int_types_and_absence);
    tcase_add_test(tc, test_get_int_full_int64_range);
    tcase_add_test(tc, test_get_int_beyond_int64_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("json_writers");
    tcase_add_test(tc, test_json_message_round_trips);
    tcase_add_test(tc, test_json_message_created_at_whole_second);
    tcase_add_test(tc, test_json_user_round_trips);
    tcase_add_test(tc, test_json_conversation_without_list_fields);
    tcase_add_test(tc, test_json_conversation_null_title_and_no_last_message);
    tcase_add_test(tc, test_json_conversation_with_last_message_and_unread);
    tcase_add_test(tc, test_json_conversation_unread_never_negative);
    tcase_add_test(tc, test_json_conversation_no_members);
    tcase_add_test(tc, test_json_error_round_trips);
    tcase_add_test(tc, test_json_writers_append);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_proto_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
