/*
 * bus.c - the bus wrappers and event helpers. See bus.h.
 */
#include "bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct bus_event *bus_event_new(enum bus_kind kind, const int64_t *targets,
                                size_t ntargets, const char *frame,
                                size_t len)
{
    struct bus_event *ev = xcalloc(1, sizeof *ev);

    ev->kind = kind;
    ev->ntargets = ntargets;
    ev->targets = xmalloc((ntargets ? ntargets : 1) * sizeof *ev->targets);
    if (ntargets)
        memcpy(ev->targets, targets, ntargets * sizeof *targets);
    ev->frame = xstrndup(frame, len);
    ev->len = len;
    return ev;
}

void bus_event_free(struct bus_event *ev)
{
    if (ev == NULL)
        return;
    free(ev->targets);
    free(ev->frame);
    free(ev);
}

int bus_publish(struct bus *b, struct bus_event *ev)
{
    return b->ops->publish(b, ev);
}

size_t bus_poll(struct bus *b)
{
    return b->ops->poll(b);
}

void bus_session(struct bus *b, int64_t user_id, uint64_t conn_id, int online,
                 int edge, const int64_t *contacts, size_t n)
{
    b->ops->session(b, user_id, conn_id, online, edge, contacts, n);
}

int bus_status(struct bus *b, char *out, size_t outlen)
{
    return b->ops->status(b, out, outlen);
}

struct bus_event *bus_presence_event(int64_t user_id, int online,
                                     const int64_t *targets, size_t n)
{
    char frame[96];
    int len = snprintf(frame, sizeof frame,
                       "{\"type\":\"presence\",\"user_id\":%lld,"
                       "\"online\":%s}", (long long)user_id,
                       online ? "true" : "false");
    struct bus_event *ev = bus_event_new(BUS_PRESENCE, targets, n, frame,
                                         (size_t)len);

    ev->subject = user_id;
    return ev;
}

void bus_close(struct bus *b)
{
    if (b)
        b->ops->close(b);
}

const char *bus_name(const struct bus *b)
{
    return b->ops->name;
}
