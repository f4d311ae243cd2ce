/*
 * proto.h - the protocol's rules shared by HTTP and WebSocket: what a valid
 * username, password, message body and client_msg_id are, strict JSON
 * parsing of client input, and the JSON shapes chatd sends (messages,
 * users, conversations, errors).
 *
 * Pure functions; any thread may call them.
 */
#ifndef CHATD_PROTO_H
#define CHATD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "store.h"
#include "util.h"

#define PROTO_USERNAME_MIN 3
#define PROTO_USERNAME_MAX 32
#define PROTO_PASSWORD_MIN 8
#define PROTO_PASSWORD_MAX 256
#define PROTO_BODY_MAX 16384
#define PROTO_CLIENT_MSG_ID_MAX 64
#define PROTO_TITLE_MAX 200
#define PROTO_MEMBERS_MAX 100
#define PROTO_JSON_DEPTH 16

/* 1 when s (len bytes) is 3..32 of A-Z a-z 0-9 _ . - */
int proto_valid_username(const char *s, size_t len);
/* 1 when the password is 8..256 bytes of valid UTF-8 without NUL. */
int proto_valid_password(const char *s, size_t len);
/* 1 when s is valid UTF-8 of 1..64 characters without control chars. */
int proto_valid_client_msg_id(const char *s, size_t len);
/* 1 when s is valid UTF-8 (no NUL). */
int proto_valid_utf8(const char *s, size_t len);
/* Number of UTF-8 characters in a valid UTF-8 string. */
size_t proto_utf8_chars(const char *s, size_t len);

/* Parses a client's JSON object strictly: valid UTF-8, depth at most
 * PROTO_JSON_DEPTH, no NUL byte raw or escaped anywhere, an object at the
 * top. Returns the object (caller puts it) or NULL with *why set to a short
 * reason for the error message. */
json_object *proto_parse_object(const char *text, size_t len,
                                const char **why);

/* Field getters: 0 on success, -1 when absent or of another type. */
int proto_get_string(json_object *o, const char *key, const char **s,
                     size_t *len);
int proto_get_int(json_object *o, const char *key, int64_t *v);

/* JSON writers appending to b. */
void proto_json_message(struct util_buf *b, const struct store_msg *m);
void proto_json_user(struct util_buf *b, const struct store_user_brief *u);
void proto_json_conversation(struct util_buf *b, const struct store_conv *c,
                             int with_list_fields);
/* {"error":{"code":...,"message":...}} */
void proto_json_error(struct util_buf *b, const char *code,
                      const char *message);

#endif
