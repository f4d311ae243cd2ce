/*
 * store_pg.c - the Postgres (libpq) backend of the storage interface.
 *
 * Not written yet: this build knows postgresql:// URLs only to refuse them
 * with a clear reason. store_open() calls it on the thread that will own
 * the connection.
 */
#include "store.h"

#include <stdio.h>

struct store *store_pg_open(const char *conninfo, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "the Postgres backend is not available in this build yet");
    return NULL;
}
