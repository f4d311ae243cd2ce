/*
 * store_null.c - chatd with the send transaction taken out, for one
 * benchmark only: the "frame rate without storage" baseline of
 * docs/benchmarks.md. It is never part of chatd itself.
 *
 * bench/build-null.sh links it into a second binary, chatd-null, made of
 * the very objects of a normal build (src/main.o and libchatd.a) and
 *
 *     -Wl,--wrap=store_send_batch
 *
 * so that the store thread's one call to store_send_batch() (worker.c)
 * lands in __wrap_store_send_batch() below instead of the backend. Nothing
 * else changes: the same service thread, frames, JSON, hub, fan-out,
 * queues, worker and store threads, logins, conversation set-up and
 * collector, on a real database (SQLite or Postgres) that is migrated and
 * checked as usual.
 *
 * What a send batch still does here, so that the frames chatd sends are
 * exactly the ones it sends when it stores:
 *   - membership: a send to a conversation the sender is not in is
 *     refused (forbidden / not found) as the backend would;
 *   - a seq per conversation, 1, 2, 3, ... without gaps, continuing from
 *     the conversation's last_seq in the database, and a message id;
 *   - the sender's name and every field of the stored message.
 * Each conversation's last_seq and members, and each sender's name, are
 * read once from the database (on the store thread's own connection, the
 * first time they are needed) and then kept in memory.
 *
 * What it does not do: write anything, commit, move the sender's read
 * marker, or recognise a retried client_msg_id (chatload never retries).
 * An ack therefore means nothing about durability: this binary exists to
 * measure everything around the database, never to serve.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "store.h"
#include "util.h"

int __wrap_store_send_batch(struct store *s, struct store_send *sends,
                            size_t n);

struct null_conv {
    int64_t last_seq;
    size_t nmembers;
    int64_t members[];
};

static pthread_mutex_t null_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hmap null_convs;        /* conversation id -> null_conv */
static struct hmap null_names;        /* user id -> username (char *) */
static int64_t null_next_id;          /* message ids: 1, 2, 3, ... */

/* The conversation, read from the database the first time. Returns
 * STORE_OK, STORE_FORBIDDEN, STORE_NOTFOUND or STORE_ERR (as the backend's
 * membership look-up would); *out is set when the sender is a member. */
static int null_conv_get(struct store *s, int64_t conv_id, int64_t sender,
                         struct null_conv **out)
{
    struct null_conv *c = hmap_get(&null_convs, (uint64_t)conv_id);
    int64_t last_seq = 0, *ids = NULL;
    size_t n = 0, i;
    int rc;

    *out = NULL;
    if (c == NULL) {
        rc = store_conv_member(s, conv_id, sender, &last_seq);
        if (rc != STORE_OK)
            return rc;
        if (store_conv_member_ids(s, conv_id, &ids, &n) != STORE_OK)
            return STORE_ERR;
        c = xmalloc(sizeof *c + n * sizeof *ids);
        c->last_seq = last_seq;
        c->nmembers = n;
        memcpy(c->members, ids, n * sizeof *ids);
        free(ids);
        hmap_put(&null_convs, (uint64_t)conv_id, c);
    }
    for (i = 0; i < c->nmembers; i++)
        if (c->members[i] == sender) {
            *out = c;
            return STORE_OK;
        }
    return STORE_FORBIDDEN;
}

/* The sender's name: the first time, every member name of the sender's
 * conversations is read at once (one conversation list). */
static const char *null_name(struct store *s, int64_t user_id)
{
    const char *name = hmap_get(&null_names, (uint64_t)user_id);
    struct store_conv *convs = NULL;
    size_t n = 0, i, k;

    if (name != NULL)
        return name;
    if (store_conv_list(s, user_id, &convs, &n) != STORE_OK)
        return NULL;
    for (i = 0; i < n; i++)
        for (k = 0; k < convs[i].nmembers; k++) {
            const struct store_user_brief *m = &convs[i].members[k];

            if (hmap_get(&null_names, (uint64_t)m->id) == NULL)
                hmap_put(&null_names, (uint64_t)m->id,
                         xstrndup(m->username, strlen(m->username)));
        }
    store_convs_free(convs, n);
    return hmap_get(&null_names, (uint64_t)user_id);
}

int __wrap_store_send_batch(struct store *s, struct store_send *sends,
                            size_t n)
{
    size_t i, cid_len;

    pthread_mutex_lock(&null_lock);
    for (i = 0; i < n; i++) {
        struct store_send *sd = &sends[i];
        struct store_msg *m = &sd->msg;
        struct null_conv *c;
        const char *name;

        memset(m, 0, sizeof *m);
        sd->rc = null_conv_get(s, sd->conversation_id, sd->sender_id, &c);
        if (sd->rc != STORE_OK)
            continue;
        name = null_name(s, sd->sender_id);
        cid_len = sd->client_msg_id ? strlen(sd->client_msg_id) : 0;
        if (name == NULL || cid_len == 0 || cid_len >= sizeof m->client_msg_id ||
            sd->body == NULL || sd->body_len == 0) {
            sd->rc = STORE_ERR;
            continue;
        }
        m->message_id = ++null_next_id;
        m->conversation_id = sd->conversation_id;
        m->seq = ++c->last_seq;
        m->sender_id = sd->sender_id;
        memcpy(m->sender, name, strlen(name) + 1);
        memcpy(m->client_msg_id, sd->client_msg_id, cid_len + 1);
        m->body = xstrndup(sd->body, sd->body_len);
        m->created_at = sd->now;
    }
    pthread_mutex_unlock(&null_lock);
    return STORE_OK;
}
