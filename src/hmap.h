/*
 * hmap.h - a hash map from non-zero 64-bit keys to pointers: open
 * addressing with linear probing and backward-shift deletion, so there are
 * no tombstones and lookups stay short. Used by the service thread's
 * registries (sessions by id, users by id, conversation members).
 *
 * Not thread-safe: each map belongs to one thread.
 */
#ifndef CHATD_HMAP_H
#define CHATD_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_slot {
    uint64_t key;                 /* 0: empty */
    void *value;
};

struct hmap {
    struct hmap_slot *slots;
    size_t cap;                   /* a power of two, or 0 */
    size_t len;
};

/* A zeroed struct hmap is an empty map. */
void *hmap_get(const struct hmap *m, uint64_t key);
/* Sets key to value (key must not be 0); returns the previous value. */
void *hmap_put(struct hmap *m, uint64_t key, void *value);
/* Removes key; returns its value or NULL. */
void *hmap_del(struct hmap *m, uint64_t key);
void hmap_free(struct hmap *m);

/* Iteration: for (i = 0; hmap_next(m, &i, &k, &v); ) ... ; the map must not
 * change meanwhile. */
int hmap_next(const struct hmap *m, size_t *i, uint64_t *key, void **value);

#endif
