/*
 * bus.h - how events reach the sessions they are for: `message`, `read`,
 * `typing` and `presence` frames addressed to users. Two backends behind
 * one vtable: bus_local.c (in-process, one node) and, for many nodes,
 * bus_redis.c (Redis PUBLISH/SUBSCRIBE).
 *
 * A publish never delivers from inside publish(): events are queued and
 * delivered on a later loop turn by bus_poll(), so both backends behave
 * alike (as hiredis's REDIS_IN_CALLBACK rule). Delivery hands each event to
 * the deliver callback given at creation, which finds the local sessions.
 *
 * Threads: bus_publish() and bus_poll() run on the service thread. A
 * backend that receives on another thread queues under its own lock and
 * calls the wake callback (lws_cancel_service).
 */
#ifndef CHATD_BUS_H
#define CHATD_BUS_H

#include <stddef.h>
#include <stdint.h>

#define BUS_ERRLEN 256

/* What an event is. MESSAGE, READ, TYPING and PRESENCE carry a frame for
 * the targets' sessions. LOGOUT closes the sessions of targets[0] whose
 * session id is `subject`. CONTACTS tells the targets (a new
 * conversation's members) that they now share a conversation. SPREAD says
 * that user targets[0] has sessions on `subject` nodes (their rate limit
 * is shared out among them). */
enum bus_kind { BUS_MESSAGE = 1, BUS_READ, BUS_TYPING, BUS_PRESENCE,
                BUS_LOGOUT, BUS_CONTACTS, BUS_SPREAD };

/* One event for a set of users. Owned by the bus once published; the
 * deliver callback borrows it for the duration of the call. */
struct bus_event {
    struct bus_event *next;
    enum bus_kind kind;
    int64_t *targets;            /* user ids (owned) */
    size_t ntargets;
    int64_t except_user;         /* none of this user's sessions (0: none) */
    uint64_t except_conn;        /* not this socket of the origin node
                                    (0: none; 0 on the other nodes) */
    /* PRESENCE with no targets: for every user who shares a conversation
     * with `subject` (the user the presence is about). TYPING: who types.
     * LOGOUT: the session id. SPREAD: the number of nodes. */
    int64_t subject;
    int64_t conv_id;             /* MESSAGE, TYPING: the conversation */
    int64_t seq;                 /* MESSAGE: its seq (delivery order) */
    int remote;                  /* it came from another node */
    char *frame;                 /* the JSON text frame (owned) */
    size_t len;
};

struct bus;
typedef void (*bus_deliver_cb)(void *arg, const struct bus_event *ev);
typedef void (*bus_wake_cb)(void *arg);

struct bus_ops {
    const char *name;
    int (*publish)(struct bus *b, struct bus_event *ev);
    /* Delivers what has arrived; returns how many events. */
    size_t (*poll)(struct bus *b);
    /* A session of user became ready (online=1) or went away (0). edge is
     * 1 when it was the user's first or last session on this node;
     * contacts are the user's contacts (copied). The bus decides whether
     * the user came online or went offline (on this node, or on the whole
     * cluster) and publishes `presence`. */
    void (*session)(struct bus *b, int64_t user_id, uint64_t conn_id,
                    int online, int edge, const int64_t *contacts, size_t n);
    /* Writes the bus's health for /ready ("ok", or why not) into out;
     * returns 1 when healthy. */
    int (*status)(struct bus *b, char *out, size_t outlen);
    void (*close)(struct bus *b);
};

struct bus {
    const struct bus_ops *ops;
    bus_deliver_cb deliver;
    void *arg;
    bus_wake_cb wake;
    void *wake_arg;
    char errstr[BUS_ERRLEN];
};

/* The in-process bus. */
struct bus *bus_local_create(bus_deliver_cb deliver, void *arg,
                             bus_wake_cb wake, void *wake_arg);

/* The Redis bus (bus_redis.c). NULL with err set when the URL is bad; an
 * unreachable Redis is not an error (it connects in the background). */
struct bus_redis_config {
    const char *url;
    const char *node_id;
    int presence_ttl_ms;          /* a session's life without heartbeat */
};
struct bus *bus_redis_create(const struct bus_redis_config *cfg,
                             bus_deliver_cb deliver, void *arg,
                             bus_wake_cb wake, void *wake_arg, char *err,
                             size_t errlen);

/* Builds an event (copies targets and frame). */
struct bus_event *bus_event_new(enum bus_kind kind, const int64_t *targets,
                                size_t ntargets, const char *frame,
                                size_t len);
void bus_event_free(struct bus_event *ev);

/* Takes ownership of ev. 0, or -1 (the event is dropped and freed). */
int bus_publish(struct bus *b, struct bus_event *ev);
size_t bus_poll(struct bus *b);
void bus_session(struct bus *b, int64_t user_id, uint64_t conn_id, int online,
                 int edge, const int64_t *contacts, size_t n);
int bus_status(struct bus *b, char *out, size_t outlen);
/* The `presence` event for user_id to targets (n may be 0: subject mode,
 * see struct bus_event). */
struct bus_event *bus_presence_event(int64_t user_id, int online,
                                     const int64_t *targets, size_t n);
void bus_close(struct bus *b);          /* bus_close(NULL) does nothing */
const char *bus_name(const struct bus *b);

#endif
