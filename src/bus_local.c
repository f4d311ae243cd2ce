/*
 * bus_local.c - the in-process bus: events published on the service
 * thread are queued and delivered by the next bus_poll(), on a later turn
 * of the loop (publish wakes the loop so that turn comes at once).
 *
 * Thread: the service thread only; no lock.
 */
#include "bus.h"

#include <stdio.h>
#include <stdlib.h>

#include "util.h"

struct bus_local {
    struct bus base;
    struct bus_event *head, *tail;
};

static int bus_local_publish(struct bus *b, struct bus_event *ev)
{
    struct bus_local *bl = (struct bus_local *)b;
    int was_empty = bl->head == NULL;

    ev->next = NULL;
    if (bl->tail)
        bl->tail->next = ev;
    else
        bl->head = ev;
    bl->tail = ev;
    if (was_empty && b->wake)
        b->wake(b->wake_arg);
    return 0;
}

static size_t bus_local_poll(struct bus *b)
{
    struct bus_local *bl = (struct bus_local *)b;
    struct bus_event *ev = bl->head, *next;
    size_t n = 0;

    /* Events published while delivering wait for the next poll. */
    bl->head = bl->tail = NULL;
    for (; ev; ev = next) {
        next = ev->next;
        b->deliver(b->arg, ev);
        bus_event_free(ev);
        n++;
    }
    return n;
}

static void bus_local_session(struct bus *b, int64_t user_id,
                              uint64_t conn_id, int online, int edge,
                              const int64_t *contacts, size_t n)
{
    (void)conn_id;
    /* One node: its first session is the user's first anywhere. */
    if (edge && n > 0)
        bus_local_publish(b, bus_presence_event(user_id, online, contacts, n));
}

static int bus_local_status(struct bus *b, char *out, size_t outlen)
{
    (void)b;
    snprintf(out, outlen, "ok");
    return 1;
}

static void bus_local_close(struct bus *b)
{
    struct bus_local *bl = (struct bus_local *)b;
    struct bus_event *ev = bl->head, *next;

    for (; ev; ev = next) {
        next = ev->next;
        bus_event_free(ev);
    }
    free(bl);
}

static const struct bus_ops bus_local_ops = {
    .name = "local",
    .publish = bus_local_publish,
    .poll = bus_local_poll,
    .session = bus_local_session,
    .status = bus_local_status,
    .close = bus_local_close,
};

struct bus *bus_local_create(bus_deliver_cb deliver, void *arg,
                             bus_wake_cb wake, void *wake_arg)
{
    struct bus_local *bl = xcalloc(1, sizeof *bl);

    bl->base.ops = &bus_local_ops;
    bl->base.deliver = deliver;
    bl->base.arg = arg;
    bl->base.wake = wake;
    bl->base.wake_arg = wake_arg;
    return &bl->base;
}
