/*
 * hub.c - the registry of this node's online sessions. See hub.h.
 *
 * Thread: the service thread only.
 */
#include "hub.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "ws_chat.h"

void hub_init(struct hub *h)
{
    memset(h, 0, sizeof *h);
    h->next_conn_id = 1;
}

static void hub_user_free(struct hub_user *u)
{
    free(u->contacts);
    hmap_free(&u->typing);
    free(u);
}

static void hub_members_clear(struct hub *h)
{
    size_t i = 0;
    uint64_t k;
    void *v;

    while (hmap_next(&h->members, &i, &k, &v))
        free(v);
    hmap_free(&h->members);
}

void hub_free(struct hub *h)
{
    size_t i = 0;
    uint64_t k;
    void *v;

    while (hmap_next(&h->users, &i, &k, &v))
        hub_user_free(v);
    hmap_free(&h->users);
    hmap_free(&h->conns);
    hub_members_clear(h);
}

uint64_t hub_conn_add(struct hub *h, struct ws_conn *c)
{
    c->id = h->next_conn_id++;
    hmap_put(&h->conns, c->id, c);
    return c->id;
}

struct ws_conn *hub_conn(const struct hub *h, uint64_t id)
{
    return hmap_get(&h->conns, id);
}

struct hub_user *hub_user(const struct hub *h, int64_t user_id)
{
    return user_id > 0 ? hmap_get(&h->users, (uint64_t)user_id) : NULL;
}

int hub_conn_ready(struct hub *h, struct ws_conn *c, const int64_t *contacts,
                   size_t ncontacts)
{
    struct hub_user *u = hub_user(h, c->user_id);
    int first = 0;

    if (u == NULL) {
        u = xcalloc(1, sizeof *u);
        u->user_id = c->user_id;
        u->spread = 1;
        u->tokens = HUB_RATE_BURST;
        u->tokens_ms = util_now_ms();
        if (ncontacts) {
            u->contacts = xmalloc(ncontacts * sizeof *u->contacts);
            memcpy(u->contacts, contacts, ncontacts * sizeof *contacts);
            u->ncontacts = ncontacts;
        }
        hmap_put(&h->users, (uint64_t)c->user_id, u);
        first = 1;
    }
    c->prev_of_user = NULL;
    c->next_of_user = u->conns;
    if (u->conns)
        u->conns->prev_of_user = c;
    u->conns = c;
    u->nconns++;
    h->nready++;
    return first;
}

int hub_conn_remove(struct hub *h, struct ws_conn *c)
{
    struct hub_user *u;

    if (c->id == 0)
        return 0;
    hmap_del(&h->conns, c->id);
    if (c->state != WS_READY && c->state != WS_CLOSING)
        return 0;
    u = hub_user(h, c->user_id);
    if (u == NULL || (c->prev_of_user == NULL && u->conns != c))
        return 0;                /* never joined (closing before ready) */
    if (c->prev_of_user)
        c->prev_of_user->next_of_user = c->next_of_user;
    else
        u->conns = c->next_of_user;
    if (c->next_of_user)
        c->next_of_user->prev_of_user = c->prev_of_user;
    c->next_of_user = c->prev_of_user = NULL;
    u->nconns--;
    h->nready--;
    if (u->nconns > 0)
        return 0;
    hmap_del(&h->users, (uint64_t)u->user_id);
    hub_user_free(u);
    return 1;
}

static int hub_cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int hub_sorted_has(const int64_t *v, size_t n, int64_t id)
{
    return bsearch(&id, v, n, sizeof *v, hub_cmp_id) != NULL;
}

int hub_user_has_contact(const struct hub_user *u, int64_t user_id)
{
    return hub_sorted_has(u->contacts, u->ncontacts, user_id);
}

void hub_user_add_contacts(struct hub_user *u, const int64_t *ids, size_t n)
{
    size_t i, added = 0;

    for (i = 0; i < n; i++) {
        if (ids[i] == u->user_id ||
            hub_sorted_has(u->contacts, u->ncontacts, ids[i]))
            continue;
        u->contacts = xrealloc(u->contacts,
                               (u->ncontacts + 1) * sizeof *u->contacts);
        u->contacts[u->ncontacts++] = ids[i];
        /* Keep it sorted for the next lookups. */
        qsort(u->contacts, u->ncontacts, sizeof *u->contacts, hub_cmp_id);
        added++;
    }
    (void)added;
}

int hub_rate_take(struct hub_user *u, int64_t now_ms)
{
    double elapsed = (double)(now_ms - u->tokens_ms) / 1000.0;
    /* A user with sessions on k nodes gets 1/k of the limit on each, so
     * that together they stay within it. */
    double k = u->spread > 1 ? (double)u->spread : 1.0;

    if (u->tokens > HUB_RATE_BURST / k)
        u->tokens = HUB_RATE_BURST / k;
    if (elapsed > 0) {
        u->tokens += elapsed * HUB_RATE_PER_S / k;
        if (u->tokens > HUB_RATE_BURST / k)
            u->tokens = HUB_RATE_BURST / k;
        u->tokens_ms = now_ms;
    }
    if (u->tokens < 1.0)
        return 0;
    u->tokens -= 1.0;
    return 1;
}

int hub_typing_allowed(struct hub_user *u, int64_t conv_id, int64_t now_ms)
{
    void *v = hmap_get(&u->typing, (uint64_t)conv_id);
    int64_t last = (int64_t)(intptr_t)v;

    if (v != NULL && now_ms - last < HUB_TYPING_MS)
        return 0;
    hmap_put(&u->typing, (uint64_t)conv_id, (void *)(intptr_t)(now_ms | 1));
    return 1;
}

void hub_typing_seen(struct hub_user *u, int64_t conv_id, int64_t now_ms)
{
    hmap_put(&u->typing, (uint64_t)conv_id, (void *)(intptr_t)(now_ms | 1));
}

const struct hub_members *hub_members(const struct hub *h, int64_t conv_id)
{
    return hmap_get(&h->members, (uint64_t)conv_id);
}

void hub_members_put(struct hub *h, int64_t conv_id, const int64_t *ids,
                     size_t n)
{
    struct hub_members *m;

    if (conv_id <= 0 || hmap_get(&h->members, (uint64_t)conv_id))
        return;
    if (h->members.len >= HUB_MEMBERS_MAX)
        hub_members_clear(h);
    m = xmalloc(sizeof *m + n * sizeof m->ids[0]);
    m->n = n;
    memcpy(m->ids, ids, n * sizeof *ids);
    qsort(m->ids, n, sizeof m->ids[0], hub_cmp_id);
    hmap_put(&h->members, (uint64_t)conv_id, m);
}

int hub_members_has(const struct hub_members *m, int64_t user_id)
{
    return hub_sorted_has(m->ids, m->n, user_id);
}
