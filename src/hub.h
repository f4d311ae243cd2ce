/*
 * hub.h - who is online on this node: the registry of WebSocket sessions
 * by connection id and by user, each online user's contacts (the users who
 * share a conversation with them, for presence), per-user rate limits and
 * typing throttles, and the members of conversations (which never change
 * once a conversation exists, so they are cached without invalidation).
 *
 * Thread: the service thread only. Sessions are borrowed: the hub never
 * frees a struct ws_conn (lws owns it); it forgets it in hub_conn_remove().
 */
#ifndef CHATD_HUB_H
#define CHATD_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "hmap.h"

struct ws_conn;

/* One online user of this node. */
struct hub_user {
    int64_t user_id;
    struct ws_conn *conns;        /* ready sessions, linked by next_of_user */
    size_t nconns;
    int64_t *contacts;            /* sorted user ids; owned */
    size_t ncontacts;
    int spread;                   /* nodes holding the user's sessions
                                     (Redis): each enforces its share */
    double tokens;                /* rate limit bucket */
    int64_t tokens_ms;            /* when it was last filled */
    struct hmap typing;           /* conversation id -> last typing (ms) */
};

struct hub {
    struct hmap conns;            /* connection id -> struct ws_conn */
    struct hmap users;            /* user id -> struct hub_user */
    struct hmap members;          /* conversation id -> struct hub_members */
    uint64_t next_conn_id;
    size_t nready;                /* sessions that are ready */
};

struct hub_members {
    size_t n;
    int64_t ids[];                /* ascending */
};

#define HUB_RATE_PER_S 20.0
#define HUB_RATE_BURST 100.0
#define HUB_TYPING_MS 2000
#define HUB_MEMBERS_MAX 200000    /* cached conversations before a reset */

void hub_init(struct hub *h);
void hub_free(struct hub *h);

uint64_t hub_conn_add(struct hub *h, struct ws_conn *c);
struct ws_conn *hub_conn(const struct hub *h, uint64_t id);
/* The session is authenticated: joins its user. Returns 1 when it is the
 * user's first session here (the user came online). contacts (sorted) are
 * copied when the user is new. */
int hub_conn_ready(struct hub *h, struct ws_conn *c, const int64_t *contacts,
                   size_t ncontacts);
/* Forgets the session. Returns 1 when it was its user's last one here (the
 * user left this node). */
int hub_conn_remove(struct hub *h, struct ws_conn *c);

struct hub_user *hub_user(const struct hub *h, int64_t user_id);
/* 1 when user_id is among u's contacts. */
int hub_user_has_contact(const struct hub_user *u, int64_t user_id);
/* Adds ids to an online user's contacts (a new conversation). */
void hub_user_add_contacts(struct hub_user *u, const int64_t *ids, size_t n);

/* Takes one token from the user's bucket; 0 if it was empty. */
int hub_rate_take(struct hub_user *u, int64_t now_ms);
/* 1 when the user may send typing for conv now (and records it). */
int hub_typing_allowed(struct hub_user *u, int64_t conv_id, int64_t now_ms);
/* Records a typing the user sent through another node. */
void hub_typing_seen(struct hub_user *u, int64_t conv_id, int64_t now_ms);

const struct hub_members *hub_members(const struct hub *h, int64_t conv_id);
void hub_members_put(struct hub *h, int64_t conv_id, const int64_t *ids,
                     size_t n);
int hub_members_has(const struct hub_members *m, int64_t user_id);

#endif
