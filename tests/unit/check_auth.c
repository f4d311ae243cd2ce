/*
 * check_auth.c - unit tests for auth.c: yescrypt hashing and verification,
 * the timing of the unknown-user path, session tokens, SHA-256 and the
 * login throttle.
 *
 * Runs single-threaded under Check (each test in its own forked process
 * unless CK_FORK=no). Hashing cases get a long timeout: every hash costs
 * tens of milliseconds on purpose.
 */
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "util.h"

#define CHECK_AUTH_TIMING_RUNS 7

static const char check_auth_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int check_auth_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static int64_t check_auth_median(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, check_auth_cmp_i64);
    return v[n / 2];
}

/* --- password hashing --- */

START_TEST(test_hash_is_yescrypt)
{
    char hash[AUTH_HASH_MAX];

    ck_assert_int_eq(auth_hash_password("correct horse", hash, sizeof hash),
                     0);
    ck_assert_int_eq(strncmp(hash, "$y$", 3), 0);
    /* "$y$" params "$" salt "$" hash: four '$' in all. */
    ck_assert_ptr_nonnull(strchr(hash + 3, '$'));
    ck_assert_ptr_nonnull(strrchr(hash, '$'));
    ck_assert_uint_gt(strlen(strrchr(hash, '$')), 20);
    ck_assert_uint_lt(strlen(hash), AUTH_HASH_MAX);
    /* The password itself must not appear in what is stored. */
    ck_assert_ptr_null(strstr(hash, "correct horse"));
}
END_TEST

START_TEST(test_hash_fails_when_out_is_too_small)
{
    char hash[16];

    ck_assert_int_eq(auth_hash_password("pw", hash, sizeof hash), -1);
    ck_assert_int_eq(auth_hash_password(NULL, hash, sizeof hash), -1);
}
END_TEST

START_TEST(test_same_password_hashes_differently)
{
    char a[AUTH_HASH_MAX], b[AUTH_HASH_MAX];

    ck_assert_int_eq(auth_hash_password("same", a, sizeof a), 0);
    ck_assert_int_eq(auth_hash_password("same", b, sizeof b), 0);
    ck_assert_str_ne(a, b);
    ck_assert_int_eq(auth_verify_password("same", a), 1);
    ck_assert_int_eq(auth_verify_password("same", b), 1);
}
END_TEST

START_TEST(test_verify_accepts_the_right_password)
{
    char hash[AUTH_HASH_MAX];

    ck_assert_int_eq(auth_hash_password("s3cret pass", hash, sizeof hash), 0);
    ck_assert_int_eq(auth_verify_password("s3cret pass", hash), 1);
}
END_TEST

START_TEST(test_verify_rejects_wrong_and_empty_passwords)
{
    char hash[AUTH_HASH_MAX];

    ck_assert_int_eq(auth_hash_password("s3cret pass", hash, sizeof hash), 0);
    ck_assert_int_eq(auth_verify_password("s3cret pasS", hash), 0);
    ck_assert_int_eq(auth_verify_password("s3cret pass ", hash), 0);
    ck_assert_int_eq(auth_verify_password("s3cret", hash), 0);
    ck_assert_int_eq(auth_verify_password("", hash), 0);
    ck_assert_int_eq(auth_verify_password(NULL, hash), 0);
}
END_TEST

START_TEST(test_verify_rejects_malformed_hashes)
{
    char hash[AUTH_HASH_MAX], bad[AUTH_HASH_MAX];
    size_t n;

    ck_assert_int_eq(auth_hash_password("pw", hash, sizeof hash), 0);
    n = strlen(hash);

    ck_assert_int_eq(auth_verify_password("pw", ""), 0);
    ck_assert_int_eq(auth_verify_password("pw", NULL), 0);
    ck_assert_int_eq(auth_verify_password("pw", "*0"), 0);
    ck_assert_int_eq(auth_verify_password("pw", "$y$"), 0);
    ck_assert_int_eq(auth_verify_password("pw", "not a hash"), 0);
    /* A bare word is a traditional DES setting to libcrypt; never ours. */
    ck_assert_int_eq(auth_verify_password("pw", "pw"), 0);

    /* Truncated: the recomputed hash is longer than the stored one. */
    memcpy(bad, hash, n - 1);
    bad[n - 1] = '\0';
    ck_assert_int_eq(auth_verify_password("pw", bad), 0);
    /* Only the setting (no hash part). */
    memcpy(bad, hash, (size_t)(strrchr(hash, '$') - hash) + 1);
    bad[strrchr(hash, '$') - hash + 1] = '\0';
    ck_assert_int_eq(auth_verify_password("pw", bad), 0);
    /* Last character changed. */
    memcpy(bad, hash, n + 1);
    bad[n - 1] = bad[n - 1] == 'A' ? 'B' : 'A';
    ck_assert_int_eq(auth_verify_password("pw", bad), 0);
    /* Extra character appended. */
    memcpy(bad, hash, n);
    bad[n] = 'x';
    bad[n + 1] = '\0';
    ck_assert_int_eq(auth_verify_password("pw", bad), 0);
}
END_TEST

/*
 * The unknown-user path must cost about what a real verification costs.
 * Medians of several runs, compared within a factor of three either way;
 * a dummy that skipped the work would be thousands of times faster.
 */
START_TEST(test_dummy_verify_takes_as_long_as_a_real_one)
{
    char hash[AUTH_HASH_MAX];
    int64_t real[CHECK_AUTH_TIMING_RUNS], dummy[CHECK_AUTH_TIMING_RUNS];
    int64_t t, real_med, dummy_med;
    int i;

    ck_assert_int_eq(auth_hash_password("the password", hash, sizeof hash),
                     0);
    /* The first dummy call also makes the dummy hash; keep it out. */
    auth_verify_dummy("warm up");

    for (i = 0; i < CHECK_AUTH_TIMING_RUNS; i++) {
        t = util_mono_ns();
        (void)auth_verify_password(i % 2 ? "the password" : "wrong", hash);
        real[i] = util_mono_ns() - t;

        t = util_mono_ns();
        auth_verify_dummy(i % 2 ? "the password" : "wrong");
        dummy[i] = util_mono_ns() - t;
    }
    real_med = check_auth_median(real, CHECK_AUTH_TIMING_RUNS);
    dummy_med = check_auth_median(dummy, CHECK_AUTH_TIMING_RUNS);

    /* yescrypt at the default cost is not cheap: at least a millisecond. */
    ck_assert_int_gt(real_med, 1000000);
    ck_assert_int_ge(dummy_med * 3, real_med);
    ck_assert_int_le(dummy_med, real_med * 3);
}
END_TEST

START_TEST(test_dummy_verify_accepts_null_password)
{
    int64_t t;

    auth_verify_dummy("warm up");
    t = util_mono_ns();
    auth_verify_dummy(NULL);
    /* Still does the work rather than returning early. */
    ck_assert_int_gt(util_mono_ns() - t, 1000000);
}
END_TEST

/* --- random bytes and tokens --- */

START_TEST(test_random_fills_large_buffers)
{
    uint8_t a[1000], b[1000];
    size_t i, zeros = 0;

    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    ck_assert_int_eq(auth_random(a, sizeof a), 0);
    ck_assert_int_eq(auth_random(b, sizeof b), 0);
    ck_assert_int_ne(memcmp(a, b, sizeof a), 0);
    for (i = 0; i < sizeof a; i++)
        zeros += a[i] == 0;
    /* About 4 zero bytes expected in 1000; far more means unfilled. */
    ck_assert_uint_lt(zeros, 40);
    ck_assert_int_eq(auth_random(a, 0), 0);
}
END_TEST

START_TEST(test_token_is_43_base64url_chars)
{
    char token[AUTH_TOKEN_LEN + 1];
    uint8_t hash[AUTH_SHA256_LEN];
    size_t i;

    memset(token, '#', sizeof token);
    ck_assert_int_eq(auth_token_new(token, hash), 0);
    ck_assert_uint_eq(strlen(token), AUTH_TOKEN_LEN);
    ck_assert_uint_eq(AUTH_TOKEN_LEN, 43);
    for (i = 0; i < AUTH_TOKEN_LEN; i++)
        ck_assert_ptr_nonnull(strchr(check_auth_b64url, token[i]));
    /* 256 bits in 43 six-bit characters: the last one carries four bits
     * and two zero bits, so its alphabet index is a multiple of four. */
    ck_assert_int_eq((strchr(check_auth_b64url, token[42]) -
                      check_auth_b64url) % 4, 0);
}
END_TEST

START_TEST(test_tokens_differ_and_use_the_url_alphabet)
{
    enum { N = 64 };
    static char tokens[N][AUTH_TOKEN_LEN + 1];
    uint8_t hash[AUTH_SHA256_LEN];
    int seen[64] = { 0 };
    int i, j, distinct = 0;

    for (i = 0; i < N; i++)
        ck_assert_int_eq(auth_token_new(tokens[i], hash), 0);
    for (i = 0; i < N; i++)
        for (j = i + 1; j < N; j++)
            ck_assert_str_ne(tokens[i], tokens[j]);
    /* Over 2688 random characters every one of the 64 shows up (missing
     * one has odds near e^-42), '-' and '_' included, never '+' or '/'. */
    for (i = 0; i < N; i++)
        for (j = 0; j < AUTH_TOKEN_LEN - 1; j++)
            seen[strchr(check_auth_b64url, tokens[i][j]) -
                 check_auth_b64url] = 1;
    for (i = 0; i < 64; i++)
        distinct += seen[i];
    ck_assert_int_eq(distinct, 64);
}
END_TEST

START_TEST(test_token_hash_matches_hash_at_creation)
{
    char token[AUTH_TOKEN_LEN + 1];
    uint8_t created[AUTH_SHA256_LEN], presented[AUTH_SHA256_LEN];
    uint8_t direct[AUTH_SHA256_LEN];

    ck_assert_int_eq(auth_token_new(token, created), 0);
    ck_assert_int_eq(auth_token_hash(token, presented), 0);
    ck_assert_int_eq(memcmp(created, presented, AUTH_SHA256_LEN), 0);
    /* What is stored is the SHA-256 of the token as the client sends it. */
    auth_sha256(token, AUTH_TOKEN_LEN, direct);
    ck_assert_int_eq(memcmp(created, direct, AUTH_SHA256_LEN), 0);
}
END_TEST

START_TEST(test_token_hash_differs_between_tokens)
{
    char a[AUTH_TOKEN_LEN + 1], b[AUTH_TOKEN_LEN + 1];
    uint8_t ha[AUTH_SHA256_LEN], hb[AUTH_SHA256_LEN];

    ck_assert_int_eq(auth_token_new(a, ha), 0);
    ck_assert_int_eq(auth_token_new(b, hb), 0);
    ck_assert_int_ne(memcmp(ha, hb, AUTH_SHA256_LEN), 0);
}
END_TEST

START_TEST(test_token_hash_rejects_malformed_tokens)
{
    char token[AUTH_TOKEN_LEN + 1], bad[AUTH_TOKEN_LEN + 8];
    uint8_t hash[AUTH_SHA256_LEN];
    const char bad_chars[] = { '+', '/', '=', ' ', '.', '\n', '"', '\x80' };
    size_t i;

    ck_assert_int_eq(auth_token_new(token, hash), 0);
    ck_assert_int_eq(auth_token_hash(NULL, hash), -1);
    ck_assert_int_eq(auth_token_hash("", hash), -1);

    /* One short. */
    memcpy(bad, token, AUTH_TOKEN_LEN - 1);
    bad[AUTH_TOKEN_LEN - 1] = '\0';
    ck_assert_int_eq(auth_token_hash(bad, hash), -1);
    /* One long. */
    memcpy(bad, token, AUTH_TOKEN_LEN);
    bad[AUTH_TOKEN_LEN] = 'A';
    bad[AUTH_TOKEN_LEN + 1] = '\0';
    ck_assert_int_eq(auth_token_hash(bad, hash), -1);
    /* Padded like standard base64. */
    memcpy(bad, token, AUTH_TOKEN_LEN);
    bad[AUTH_TOKEN_LEN] = '=';
    bad[AUTH_TOKEN_LEN + 1] = '\0';
    ck_assert_int_eq(auth_token_hash(bad, hash), -1);
    /* Right length, one bad character, at the start, middle and end. */
    for (i = 0; i < sizeof bad_chars; i++) {
        size_t pos[] = { 0, 20, AUTH_TOKEN_LEN - 1 };
        size_t k;

        for (k = 0; k < 3; k++) {
            memcpy(bad, token, AUTH_TOKEN_LEN + 1);
            bad[pos[k]] = bad_chars[i];
            ck_assert_int_eq(auth_token_hash(bad, hash), -1);
        }
    }
    /* The unmodified token still passes. */
    ck_assert_int_eq(auth_token_hash(token, hash), 0);
}
END_TEST

/* --- SHA-256 --- */

START_TEST(test_sha256_known_vectors)
{
    uint8_t out[AUTH_SHA256_LEN];
    char hex[2 * AUTH_SHA256_LEN + 1];

    auth_sha256("abc", 3, out);
    util_hex(out, sizeof out, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223"
                          "b00361a396177a9cb410ff61f20015ad");
    auth_sha256("", 0, out);
    util_hex(out, sizeof out, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                          "27ae41e4649b934ca495991b7852b855");
}
END_TEST

/* --- login throttle --- */

START_TEST(test_throttle_none_below_threshold)
{
    int f;

    ck_assert_int_eq(AUTH_THROTTLE_AFTER, 5);
    for (f = -1; f < AUTH_THROTTLE_AFTER; f++)
        ck_assert_int_eq(auth_throttle_until(f, 1000), 0);
    ck_assert_int_eq(auth_throttle_until(INT_MIN, 1000), 0);
}
END_TEST

START_TEST(test_throttle_starts_at_base_and_doubles)
{
    const int64_t now = 1795521600000LL;

    ck_assert_int_eq(auth_throttle_until(5, now), now + 30000);
    ck_assert_int_eq(auth_throttle_until(6, now), now + 60000);
    ck_assert_int_eq(auth_throttle_until(7, now), now + 120000);
    ck_assert_int_eq(auth_throttle_until(8, now), now + 240000);
    ck_assert_int_eq(auth_throttle_until(9, now), now + 480000);
}
END_TEST

START_TEST(test_throttle_caps_at_fifteen_minutes)
{
    const int64_t now = 1795521600000LL;

    ck_assert_int_eq(AUTH_THROTTLE_MAX_MS, 900000);
    ck_assert_int_eq(auth_throttle_until(10, now), now + 900000);
    ck_assert_int_eq(auth_throttle_until(11, now), now + 900000);
    ck_assert_int_eq(auth_throttle_until(64, now), now + 900000);
    ck_assert_int_eq(auth_throttle_until(1000, now), now + 900000);
}
END_TEST

START_TEST(test_throttle_no_overflow_at_int_max)
{
    const int64_t now = 1795521600000LL;

    ck_assert_int_eq(auth_throttle_until(INT_MAX, now), now + 900000);
    ck_assert_int_eq(auth_throttle_until(INT_MAX - 1, now), now + 900000);
}
END_TEST

static Suite *check_auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc;

    tc = tcase_create("password_hash");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_hash_is_yescrypt);
    tcase_add_test(tc, test_hash_fails_when_out_is_too_small);
    tcase_add_test(tc, test_same_password_hashes_differently);
    suite_add_tcase(s, tc);

    tc = tcase_create("password_verify");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_verify_accepts_the_right_password);
    tcase_add_test(tc, test_verify_rejects_wrong_and_empty_passwords);
    tcase_add_test(tc, test_verify_rejects_malformed_hashes);
    suite_add_tcase(s, tc);

    tc = tcase_create("dummy_verify");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_dummy_verify_takes_as_long_as_a_real_one);
    tcase_add_test(tc, test_dummy_verify_accepts_null_password);
    suite_add_tcase(s, tc);

    tc = tcase_create("tokens");
    tcase_add_test(tc, test_random_fills_large_buffers);
    tcase_add_test(tc, test_token_is_43_base64url_chars);
    tcase_add_test(tc, test_tokens_differ_and_use_the_url_alphabet);
    tcase_add_test(tc, test_token_hash_matches_hash_at_creation);
    tcase_add_test(tc, test_token_hash_differs_between_tokens);
    tcase_add_test(tc, test_token_hash_rejects_malformed_tokens);
    suite_add_tcase(s, tc);

    tc = tcase_create("sha256");
    tcase_add_test(tc, test_sha256_known_vectors);
    suite_add_tcase(s, tc);

    tc = tcase_create("throttle");
    tcase_add_test(tc, test_throttle_none_below_threshold);
    tcase_add_test(tc, test_throttle_starts_at_base_and_doubles);
    tcase_add_test(tc, test_throttle_caps_at_fifteen_minutes);
    tcase_add_test(tc, test_throttle_no_overflow_at_int_max);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_auth_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
