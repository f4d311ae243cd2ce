/*
 * hmap.c - open addressing hash map of 64-bit keys. See hmap.h.
 */
#include "hmap.h"

#include <stdlib.h>

#include "util.h"

static size_t hmap_hash(uint64_t k, size_t mask)
{
    /* A 64-bit mix (splitmix64's finaliser): ids are sequential, so the
     * low bits alone would cluster. */
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ULL;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebULL;
    k ^= k >> 31;
    return (size_t)k & mask;
}

void *hmap_get(const struct hmap *m, uint64_t key)
{
    size_t mask, i;

    if (m->cap == 0 || key == 0)
        return NULL;
    mask = m->cap - 1;
    for (i = hmap_hash(key, mask); m->slots[i].key; i = (i + 1) & mask)
        if (m->slots[i].key == key)
            return m->slots[i].value;
    return NULL;
}

static void hmap_grow(struct hmap *m)
{
    struct hmap_slot *old = m->slots;
    size_t oldcap = m->cap, i;

    m->cap = oldcap ? oldcap * 2 : 16;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
    m->len = 0;
    for (i = 0; i < oldcap; i++)
        if (old[i].key)
            hmap_put(m, old[i].key, old[i].value);
    free(old);
}

void *hmap_put(struct hmap *m, uint64_t key, void *value)
{
    size_t mask, i;

    if (key == 0)
        abort();
    if ((m->len + 1) * 4 > m->cap * 3)
        hmap_grow(m);
    mask = m->cap - 1;
    for (i = hmap_hash(key, mask); m->slots[i].key; i = (i + 1) & mask)
        if (m->slots[i].key == key) {
            void *prev = m->slots[i].value;
            m->slots[i].value = value;
            return prev;
        }
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->len++;
    return NULL;
}

void *hmap_del(struct hmap *m, uint64_t key)
{
    size_t mask, i, j;
    void *value;

    if (m->cap == 0 || key == 0)
        return NULL;
    mask = m->cap - 1;
    for (i = hmap_hash(key, mask); m->slots[i].key; i = (i + 1) & mask)
        if (m->slots[i].key == key)
            break;
    if (m->slots[i].key == 0)
        return NULL;
    value = m->slots[i].value;
    /* Backward shift: move later members of the probe run into the hole
     * when their home slot lies at or before it. */
    for (j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = hmap_hash(m->slots[j].key, mask);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].value = NULL;
    m->len--;
    return value;
}

void hmap_free(struct hmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->len = 0;
}

int hmap_next(const struct hmap *m, size_t *i, uint64_t *key, void **value)
{
    for (; *i < m->cap; (*i)++)
        if (m->slots[*i].key) {
            *key = m->slots[*i].key;
            *value = m->slots[*i].value;
            (*i)++;
            return 1;
        }
    return 0;
}
