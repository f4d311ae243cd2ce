/*
 * server.h - the service thread: the libwebsockets context serving HTTP
 * and WebSocket on one port, and the loop that answers finished jobs.
 *
 * server_create, server_run and server_free run on the thread that becomes
 * the service thread; server_notify (a worker sink's notify callback) and
 * server_stop may be called from any thread, server_stop also from a
 * signal handler.
 */
#ifndef CHATD_SERVER_H
#define CHATD_SERVER_H

#include <stddef.h>

#include "config.h"
#include "http_api.h"
#include "worker.h"

struct server;

/* Binds the listening socket. NULL with a one-line reason in err. */
struct ws_chat;
struct server *server_create(const struct config *cfg, struct http_api *api,
                             struct ws_chat *chat, struct worker_sink *sink,
                             char *err, size_t errlen);
/* Serves until server_stop(); then answers what is in flight (bounded)
 * and returns 0. */
int server_run(struct server *srv);
void server_stop(struct server *srv);
void server_notify(void *arg);
size_t server_inflight(const struct server *srv);
void server_free(struct server *srv);

#endif
