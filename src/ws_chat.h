/*
 * ws_chat.h - the WebSocket half of the protocol: the `chat.v1` lws
 * protocol on /ws, the frames clients send (auth, send, read, typing,
 * sync, ping) and the frames chatd pushes (message, read, typing,
 * presence), with the limits the protocol sets.
 *
 * Threads: everything here runs on the service thread. Work that needs the
 * database goes to the worker pools as jobs (struct ws_job) that refer to
 * their socket by connection id, never by pointer, so a socket that closes
 * meanwhile is simply not found when the job comes back.
 *
 * The HTTP side calls the ws_chat_* hooks below when something it did must
 * reach sockets (a message sent over HTTP, a read marker, a logout).
 */
#ifndef CHATD_WS_CHAT_H
#define CHATD_WS_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "auth.h"
#include "bus.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define WS_MSG_MAX 65536          /* a client message, reassembled */
#define WS_QUEUE_FRAMES 4096      /* outgoing frames before a slow client */
#define WS_QUEUE_BYTES (1 << 20)  /* ... or bytes is dropped */
#define WS_AUTH_TIMEOUT_US (5 * LWS_USEC_PER_SEC)
#define WS_BAD_FRAMES_MAX 10
#define WS_LIMITED_MAX 100        /* refused in a row for the rate limit */
#define WS_SYNC_MAX 1000          /* conversations in one sync */
#define WS_SYNC_PER_CONV 500

/* A text frame shared by every socket it goes to. */
struct ws_frame {
    unsigned refs;
    int asked;                    /* a sync frame: the client asked for it */
    size_t len;
    unsigned char data[];         /* LWS_PRE bytes, then the payload */
};

enum ws_state {
    WS_AUTH_WAIT = 0,             /* waiting for the auth frame */
    WS_AUTHING,                   /* token being checked */
    WS_READY,
    WS_CLOSING,                   /* a close is queued */
};

struct ws_sync;

/* Per socket; lws owns the memory (the protocol's per-session data). */
struct ws_conn {
    struct lws *wsi;
    uint64_t id;                  /* 0 until registered */
    enum ws_state state;
    int64_t user_id;
    int64_t session_id;
    char username[STORE_USERNAME_MAX + 1];
    struct ws_conn *next_of_user; /* the hub's list of the user's sessions */
    struct ws_conn *prev_of_user;
    struct ws_frame **q;          /* outgoing ring */
    size_t qhead, qlen, qcap;
    size_t qbytes;
    size_t qasked, qasked_bytes;  /* of which sync frames (not bounded) */
    struct util_buf rx;           /* a fragmented message being reassembled */
    int rx_too_big;
    int bad_frames;               /* over the socket's life */
    int limited;                  /* refused for the rate limit in a row */
    double tokens;                /* rate limit before authentication */
    int64_t tokens_ms;
    int close_code;
    char close_reason[64];
    char cookie[AUTH_TOKEN_LEN + 8]; /* chat_session from the handshake */
    char remote[64];
    struct ws_sync *sync;         /* a sync being sent, or NULL */
};

struct ws_chat;
struct config;

/* wake is called (on the service thread) when the bus has events for the
 * next ws_chat_poll(). */
struct ws_chat *ws_chat_create(const struct config *cfg,
                               struct worker_pool *workers,
                               struct worker_pool *store_pool,
                               bus_wake_cb wake, char *err, size_t errlen);
void ws_chat_free(struct ws_chat *wc);
/* The lws protocol entry for chat.v1 (its user pointer is wc). */
void ws_chat_protocol(struct ws_chat *wc, struct lws_protocols *out);
/* Delivers what the bus holds (service thread, on each wake-up). */
void ws_chat_poll(struct ws_chat *wc);
/* Sockets that are open, and ready. */
size_t ws_chat_connections(const struct ws_chat *wc);
/* Refuses new sockets from now on (shutdown). */
void ws_chat_stop_accepting(struct ws_chat *wc);
/* Stops taking new sockets and closes every open one with code. */
void ws_chat_close_all(struct ws_chat *wc, int code, const char *reason);
/* Jobs of WebSocket frames still in a pool. */
size_t ws_chat_inflight(const struct ws_chat *wc);

/* Hooks for the HTTP side (service thread). */
void ws_chat_message_stored(struct ws_chat *wc, const struct store_msg *m,
                            const int64_t *members, size_t n,
                            uint64_t except_conn);
void ws_chat_read_moved(struct ws_chat *wc, int64_t user_id, int64_t conv_id,
                        int64_t seq, const int64_t *members, size_t n,
                        uint64_t except_conn);
void ws_chat_logout(struct ws_chat *wc, int64_t user_id, int64_t session_id);
void ws_chat_conversation_created(struct ws_chat *wc,
                                  const struct store_conv *c);
int ws_chat_is_online(const struct ws_chat *wc, int64_t user_id);
/* The loop's context, for the chat's timers (server_create sets it). */
void ws_chat_set_context(struct ws_chat *wc, struct lws_context *context);
/* The Redis bus's health for /ready ("ok" or why not; 1 when ok), or -1
 * when the node runs without Redis. Any thread. */
int ws_chat_redis_status(const struct ws_chat *wc, char *out, size_t outlen);

#endif
