/*
 * check_bus.c - unit tests for the in-process bus (bus_local.c) and the
 * event helpers of bus.c: nothing is delivered inside bus_publish(),
 * bus_poll() delivers in publish order, the wake callback fires when the
 * queue stops being empty, events published while delivering wait for the
 * next poll, bus_event_new() copies what it is given, and bus_close()
 * frees what was never delivered (a sanitizer build shows a leak as a
 * failure).
 *
 * Each test runs in its own forked process under Check (unless
 * CK_FORK=no); the bus is used from the test's one thread, as the service
 * thread would.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "util.h"

/* What the callbacks saw. */
struct check_bus_log {
    int delivered;
    int wakes;
    int in_poll;                 /* set by the test around bus_poll() */
    int outside_poll;            /* deliveries seen outside a poll */
    char frames[64][32];
    int64_t first_target[64];
    size_t ntargets[64];
    enum bus_kind kinds[64];
    int64_t except_user[64];
    uint64_t except_conn[64];
    struct bus *bus;             /* for republishing from a callback */
    int republish;               /* events still to publish from deliver */
};

static void check_bus_deliver(void *arg, const struct bus_event *ev)
{
    struct check_bus_log *l = arg;
    int i = l->delivered++;

    if (!l->in_poll)
        l->outside_poll++;
    ck_assert_int_lt(i, 64);
    snprintf(l->frames[i], sizeof l->frames[i], "%.*s", (int)ev->len,
             ev->frame);
    l->first_target[i] = ev->ntargets ? ev->targets[0] : 0;
    l->ntargets[i] = ev->ntargets;
    l->kinds[i] = ev->kind;
    l->except_user[i] = ev->except_user;
    l->except_conn[i] = ev->except_conn;
    if (l->republish > 0) {
        char frame[32];
        int64_t t = 100 + l->republish;
        int n = snprintf(frame, sizeof frame, "again-%d", l->republish);
        l->republish--;
        ck_assert_int_eq(bus_publish(l->bus, bus_event_new(BUS_TYPING, &t, 1,
                                                           frame,
                                                           (size_t)n)),
                         0);
    }
}

static void check_bus_wake(void *arg)
{
    struct check_bus_log *l = arg;

    l->wakes++;
}

/* Publishes a MESSAGE event for user `target` with text frame. */
static void check_bus_pub(struct bus *b, int64_t target, const char *frame)
{
    ck_assert_int_eq(bus_publish(b, bus_event_new(BUS_MESSAGE, &target, 1,
                                                  frame, strlen(frame))),
                     0);
}

static size_t check_bus_poll(struct bus *b, struct check_bus_log *l)
{
    size_t n;

    l->in_poll = 1;
    n = bus_poll(b);
    l->in_poll = 0;
    return n;
}

START_TEST(test_publish_delivers_nothing_until_poll)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, check_bus_wake,
                                     &l);

    ck_assert_str_eq(bus_name(b), "local");
    check_bus_pub(b, 1, "{\"type\":\"a\"}");
    check_bus_pub(b, 2, "{\"type\":\"b\"}");
    ck_assert_int_eq(l.delivered, 0);
    ck_assert_uint_eq(check_bus_poll(b, &l), 2);
    ck_assert_int_eq(l.delivered, 2);
    ck_assert_int_eq(l.outside_poll, 0);
    /* Nothing left: a second poll delivers nothing. */
    ck_assert_uint_eq(check_bus_poll(b, &l), 0);
    ck_assert_int_eq(l.delivered, 2);
    bus_close(b);
}
END_TEST

START_TEST(test_poll_delivers_in_publish_order)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, NULL, NULL);
    char frame[32];
    int i;

    for (i = 0; i < 40; i++) {
        snprintf(frame, sizeof frame, "f%d", i);
        check_bus_pub(b, 1000 + i, frame);
    }
    ck_assert_uint_eq(check_bus_poll(b, &l), 40);
    for (i = 0; i < 40; i++) {
        snprintf(frame, sizeof frame, "f%d", i);
        ck_assert_str_eq(l.frames[i], frame);
        ck_assert_int_eq(l.first_target[i], 1000 + i);
        ck_assert_int_eq(l.kinds[i], BUS_MESSAGE);
    }
    bus_close(b);
}
END_TEST

START_TEST(test_wake_once_when_queue_becomes_non_empty)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, check_bus_wake,
                                     &l);

    check_bus_pub(b, 1, "a");
    ck_assert_int_eq(l.wakes, 1);
    check_bus_pub(b, 1, "b");
    check_bus_pub(b, 1, "c");
    ck_assert_int_eq(l.wakes, 1);
    check_bus_poll(b, &l);
    ck_assert_int_eq(l.wakes, 1);
    /* Empty again: the next publish wakes again. */
    check_bus_pub(b, 1, "d");
    ck_assert_int_eq(l.wakes, 2);
    check_bus_pub(b, 1, "e");
    ck_assert_int_eq(l.wakes, 2);
    check_bus_poll(b, &l);
    ck_assert_int_eq(l.delivered, 5);
    bus_close(b);
}
END_TEST

START_TEST(test_no_wake_callback_is_fine)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, NULL, NULL);

    check_bus_pub(b, 1, "a");
    ck_assert_uint_eq(check_bus_poll(b, &l), 1);
    bus_close(b);
}
END_TEST

START_TEST(test_publish_from_deliver_waits_for_next_poll)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, check_bus_wake,
                                     &l);

    l.bus = b;
    l.republish = 2;
    check_bus_pub(b, 1, "first");
    ck_assert_int_eq(l.wakes, 1);
    /* The deliver callback of "first" publishes "again-2": it is not part
     * of this poll, and publishing it woke the loop for the next one. */
    ck_assert_uint_eq(check_bus_poll(b, &l), 1);
    ck_assert_int_eq(l.delivered, 1);
    ck_assert_str_eq(l.frames[0], "first");
    ck_assert_int_eq(l.wakes, 2);
    ck_assert_uint_eq(check_bus_poll(b, &l), 1);
    ck_assert_str_eq(l.frames[1], "again-2");
    ck_assert_int_eq(l.kinds[1], BUS_TYPING);
    ck_assert_int_eq(l.first_target[1], 102);
    ck_assert_int_eq(l.wakes, 3);
    ck_assert_uint_eq(check_bus_poll(b, &l), 1);
    ck_assert_str_eq(l.frames[2], "again-1");
    ck_assert_uint_eq(check_bus_poll(b, &l), 0);
    ck_assert_int_eq(l.delivered, 3);
    bus_close(b);
}
END_TEST

START_TEST(test_event_new_copies_targets_and_frame)
{
    int64_t targets[3] = { 5, 6, 7 };
    char frame[] = "{\"type\":\"read\"}xyz";
    size_t len = strlen("{\"type\":\"read\"}");
    struct bus_event *ev = bus_event_new(BUS_READ, targets, 3, frame, len);

    targets[0] = 99;
    memset(frame, 'Z', sizeof frame - 1);
    ck_assert_ptr_ne(ev->targets, targets);
    ck_assert_ptr_ne(ev->frame, frame);
    ck_assert_int_eq(ev->kind, BUS_READ);
    ck_assert_uint_eq(ev->ntargets, 3);
    ck_assert_int_eq(ev->targets[0], 5);
    ck_assert_int_eq(ev->targets[1], 6);
    ck_assert_int_eq(ev->targets[2], 7);
    /* Exactly len bytes, NUL-terminated. */
    ck_assert_uint_eq(ev->len, len);
    ck_assert_str_eq(ev->frame, "{\"type\":\"read\"}");
    ck_assert_int_eq(ev->except_user, 0);
    ck_assert_uint_eq(ev->except_conn, 0);
    bus_event_free(ev);
    bus_event_free(NULL);

    /* No targets at all is a valid event (presence to nobody yet). */
    ev = bus_event_new(BUS_PRESENCE, NULL, 0, "p", 1);
    ck_assert_uint_eq(ev->ntargets, 0);
    ck_assert_str_eq(ev->frame, "p");
    bus_event_free(ev);
}
END_TEST

START_TEST(test_delivered_event_keeps_except_fields)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, NULL, NULL);
    int64_t t[2] = { 3, 4 };
    struct bus_event *ev = bus_event_new(BUS_MESSAGE, t, 2, "m", 1);

    ev->except_user = 3;
    ev->except_conn = 77;
    ck_assert_int_eq(bus_publish(b, ev), 0);
    ck_assert_uint_eq(check_bus_poll(b, &l), 1);
    ck_assert_uint_eq(l.ntargets[0], 2);
    ck_assert_int_eq(l.first_target[0], 3);
    ck_assert_int_eq(l.except_user[0], 3);
    ck_assert_uint_eq(l.except_conn[0], 77);
    bus_close(b);
}
END_TEST

/* Undelivered events are freed by bus_close(); in a sanitizer build
 * LeakSanitizer fails the test if any is left. */
START_TEST(test_close_frees_undelivered_events)
{
    struct check_bus_log l = { 0 };
    struct bus *b = bus_local_create(check_bus_deliver, &l, check_bus_wake,
                                     &l);
    int i;

    for (i = 0; i < 10; i++)
        check_bus_pub(b, i + 1, "never delivered");
    bus_close(b);
    ck_assert_int_eq(l.delivered, 0);
    bus_close(NULL);
}
END_TEST

static Suite *check_bus_suite(void)
{
    Suite *s = suite_create("bus");
    TCase *tc;

    tc = tcase_create("local_delivery");
    tcase_add_test(tc, test_publish_delivers_nothing_until_poll);
    tcase_add_test(tc, test_poll_delivers_in_publish_order);
    tcase_add_test(tc, test_wake_once_when_queue_becomes_non_empty);
    tcase_add_test(tc, test_no_wake_callback_is_fine);
    tcase_add_test(tc, test_publish_from_deliver_waits_for_next_poll);
    tcase_add_test(tc, test_delivered_event_keeps_except_fields);
    suite_add_tcase(s, tc);

    tc = tcase_create("events_and_ownership");
    tcase_add_test(tc, test_event_new_copies_targets_and_frame);
    tcase_add_test(tc, test_close_frees_undelivered_events);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(check_bus_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
