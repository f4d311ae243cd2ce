/*
 * check_hmap.c - unit tests for hmap.c: put, get and delete, overwrites,
 * growth, backward-shift deletion checked against a plain reference array
 * over many random operations, iteration, the reserved key 0 and reuse
 * after hmap_free.
 *
 * Each test runs in its own forked process under Check (unless
 * CK_FORK=no); everything runs on the test's one thread, as the map is
 * meant to be used.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "util.h"

/* A value that names its key, so a lookup that finds another key's slot
 * shows. */
#define V(k) ((void *)(uintptr_t)((k) * 2 + 1))

/* xorshift64*: a fixed seed gives the same operations on every run. */
static uint64_t check_hmap_rng = 0x9e3779b97f4a7c15ULL;

static uint64_t check_hmap_rand(void)
{
    check_hmap_rng ^= check_hmap_rng >> 12;
    check_hmap_rng ^= check_hmap_rng << 25;
    check_hmap_rng ^= check_hmap_rng >> 27;
    return check_hmap_rng * 0x2545f4914f6cdd1dULL;
}

START_TEST(test_put_get_del)
{
    struct hmap m = { 0 };

    ck_assert_ptr_null(hmap_get(&m, 7));
    ck_assert_ptr_null(hmap_del(&m, 7));
    ck_assert_ptr_null(hmap_put(&m, 7, V(7)));
    ck_assert_ptr_null(hmap_put(&m, 8, V(8)));
    ck_assert_uint_eq(m.len, 2);
    ck_assert_ptr_eq(hmap_get(&m, 7), V(7));
    ck_assert_ptr_eq(hmap_get(&m, 8), V(8));
    ck_assert_ptr_null(hmap_get(&m, 9));

    ck_assert_ptr_eq(hmap_del(&m, 7), V(7));
    ck_assert_ptr_null(hmap_get(&m, 7));
    ck_assert_ptr_null(hmap_del(&m, 7));
    ck_assert_ptr_eq(hmap_get(&m, 8), V(8));
    ck_assert_uint_eq(m.len, 1);
    hmap_free(&m);
}
END_TEST

START_TEST(test_overwrite_returns_previous_value)
{
    struct hmap m = { 0 };
    int a, b;

    ck_assert_ptr_null(hmap_put(&m, 42, &a));
    ck_assert_ptr_eq(hmap_put(&m, 42, &b), &a);
    ck_assert_ptr_eq(hmap_get(&m, 42), &b);
    ck_assert_uint_eq(m.len, 1);
    /* A NULL value is stored too, and the next put reports it. */
    ck_assert_ptr_eq(hmap_put(&m, 42, NULL), &b);
    ck_assert_ptr_null(hmap_put(&m, 42, &a));
    ck_assert_uint_eq(m.len, 1);
    hmap_free(&m);
}
END_TEST

START_TEST(test_grows_past_many_thousand_keys)
{
    struct hmap m = { 0 };
    const uint64_t n = 200000;
    uint64_t k;

    /* Sequential ids, the way the registries use it, plus wide keys. */
    for (k = 1; k <= n; k++)
        ck_assert_ptr_null(hmap_put(&m, k, V(k)));
    for (k = 1; k <= 1000; k++)
        ck_assert_ptr_null(hmap_put(&m, k << 40, V(k << 40)));
    ck_assert_uint_eq(m.len, n + 1000);
    ck_assert_uint_ge(m.cap, m.len);
    ck_assert_uint_eq(m.cap & (m.cap - 1), 0);
    for (k = 1; k <= n; k++)
        ck_assert_ptr_eq(hmap_get(&m, k), V(k));
    for (k = 1; k <= 1000; k++)
        ck_assert_ptr_eq(hmap_get(&m, k << 40), V(k << 40));
    ck_assert_ptr_null(hmap_get(&m, n + 1));
    hmap_free(&m);
}
END_TEST

/* Random puts, overwrites and deletes over a small key space (so probe
 * runs collide and deletes shift often), each checked against a plain
 * array; after every delete the whole map is compared, now and then. */
START_TEST(test_random_ops_match_reference)
{
    enum { NKEYS = 4096, NOPS = 100000 };
    struct hmap m = { 0 };
    void **ref = xcalloc(NKEYS + 1, sizeof *ref);
    size_t live = 0, i;
    uint64_t k;

    for (i = 0; i < NOPS; i++) {
        uint64_t r = check_hmap_rand();
        void *v = (void *)(uintptr_t)((r >> 20) | 1);
        k = 1 + r % NKEYS;

        if ((r >> 12) % 5 < 3) {
            ck_assert_ptr_eq(hmap_put(&m, k, v), ref[k]);
            if (ref[k] == NULL)
                live++;
            ref[k] = v;
        } else {
            ck_assert_ptr_eq(hmap_del(&m, k), ref[k]);
            if (ref[k] != NULL)
                live--;
            ref[k] = NULL;
        }
        ck_assert_uint_eq(m.len, live);
        if (i % 997 == 0)
            for (k = 1; k <= NKEYS; k++)
                ck_assert_msg(hmap_get(&m, k) == ref[k],
                              "op %zu: key %llu wrong", i,
                              (unsigned long long)k);
    }
    for (k = 1; k <= NKEYS; k++)
        ck_assert_ptr_eq(hmap_get(&m, k), ref[k]);
    hmap_free(&m);
    free(ref);
}
END_TEST

/* Deleting every key in random order: after each delete every remaining
 * key is still found (no probe run was broken) and the gone ones are not. */
START_TEST(test_delete_in_random_order_keeps_others)
{
    enum { N = 3000 };
    struct hmap m = { 0 };
    uint64_t *keys = xmalloc(N * sizeof *keys);
    size_t i, j;

    for (i = 0; i < N; i++) {
        /* Clustered keys: many share home slots. */
        keys[i] = 1 + i * 64;
        hmap_put(&m, keys[i], V(keys[i]));
    }
    for (i = N - 1; i > 0; i--) {
        size_t r = (size_t)(check_hmap_rand() % (i + 1));
        uint64_t t = keys[i];
        keys[i] = keys[r];
        keys[r] = t;
    }
    for (i = 0; i < N; i++) {
        ck_assert_ptr_eq(hmap_del(&m, keys[i]), V(keys[i]));
        ck_assert_uint_eq(m.len, N - i - 1);
        if (i % 50 == 0 || i > N - 50) {
            for (j = 0; j <= i; j++)
                ck_assert_ptr_null(hmap_get(&m, keys[j]));
            for (j = i + 1; j < N; j++)
                ck_assert_msg(hmap_get(&m, keys[j]) == V(keys[j]),
                              "after %zu deletes key %llu is lost", i + 1,
                              (unsigned long long)keys[j]);
        }
    }
    ck_assert_uint_eq(m.len, 0);
    hmap_free(&m);
    free(keys);
}
END_TEST

START_TEST(test_iteration_visits_each_key_once)
{
    enum { N = 5000 };
    struct hmap m = { 0 };
    unsigned char *seen = xcalloc(N + 1, 1);
    size_t i = 0, count = 0;
    uint64_t k;
    void *v;

    /* An empty map yields nothing, zeroed or freed. */
    ck_assert_int_eq(hmap_next(&m, &i, &k, &v), 0);
    for (k = 1; k <= N; k++)
        hmap_put(&m, k, V(k));
    for (k = 2; k <= N; k += 3)
        hmap_del(&m, k);
    for (i = 0; hmap_next(&m, &i, &k, &v);) {
        ck_assert_uint_ge(k, 1);
        ck_assert_uint_le(k, N);
        ck_assert_msg(k % 3 != 2, "deleted key %llu visited",
                      (unsigned long long)k);
        ck_assert_ptr_eq(v, V(k));
        ck_assert_msg(!seen[k], "key %llu visited twice",
                      (unsigned long long)k);
        seen[k] = 1;
        count++;
    }
    ck_assert_uint_eq(count, m.len);
    for (k = 1; k <= N; k++)
        ck_assert_int_eq(seen[k], k % 3 != 2);
    hmap_free(&m);
    i = 0;
    ck_assert_int_eq(hmap_next(&m, &i, &k, &v), 0);
    free(seen);
}
END_TEST

START_TEST(test_key_zero_is_never_stored)
{
    struct hmap m = { 0 };

    ck_assert_ptr_null(hmap_get(&m, 0));
    ck_assert_ptr_null(hmap_del(&m, 0));
    hmap_put(&m, 1, V(1));
    hmap_put(&m, 2, V(2));
    ck_assert_ptr_null(hmap_get(&m, 0));
    ck_assert_ptr_null(hmap_del(&m, 0));
    ck_assert_uint_eq(m.len, 2);
    ck_assert_ptr_eq(hmap_get(&m, 1), V(1));
    hmap_free(&m);
}
END_TEST

START_TEST(test_free_leaves_empty_usable_map)
{
    struct hmap m = { 0 };
    uint64_t k;

    hmap_free(&m);              /* freeing an empty map is fine */
    for (k = 1; k <= 100; k++)
        hmap_put(&m, k, V(k));
    hmap_free(&m);
    ck_assert_ptr_null(m.slots);
    ck_assert_uint_eq(m.len, 0);
    ck_assert_uint_eq(m.cap, 0);
    ck_assert_ptr_null(hmap_get(&m, 5));
    ck_assert_ptr_null(hmap_del(&m, 5));
    ck_assert_ptr_null(hmap_put(&m, 5, V(5)));
    ck_assert_ptr_eq(hmap_get(&m, 5), V(5));
    ck_assert_uint_eq(m.len, 1);
    hmap_free(&m);
}
END_TEST

static Suite *check_hmap_suite(void)
{
    Suite *s = suite_create("hmap");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_add_test(tc, test_put_get_del);
    tcase_add_test(tc, test_overwrite_returns_previous_value);
    tcase_add_test(tc, test_key_zero_is_never_stored);
    tcase_add_test(tc, test_free_leaves_empty_usable_map);
    suite_add_tcase(s, tc);

    tc = tcase_create("growth_and_deletion");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_grows_past_many_thousand_keys);
    tcase_add_test(tc, test_random_ops_match_reference);
    tcase_add_test(tc, test_delete_in_random_order_keeps_others);
    suite_add_tcase(s, tc);

    tc = tcase_create("iteration");
    tcase_add_test(tc, test_iteration_visits_each_key_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_hmap_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
