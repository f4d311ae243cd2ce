/*
 * proto.c - validation of client input and the JSON that chatd sends.
 * See proto.h.
 */
#include "proto.h"

#include <errno.h>
#include <string.h>

int proto_valid_username(const char *s, size_t len)
{
    size_t i;

    if (len < PROTO_USERNAME_MIN || len > PROTO_USERNAME_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* Length of the UTF-8 sequence at s (at most n bytes), 0 if invalid:
 * overlong forms, surrogates and code points past U+10FFFF are refused. */
static size_t proto_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return c == 0 ? 0 : 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0)
            return 0;
        if (c == 0xed && s[1] >= 0xa0)
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
            (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90)
            return 0;
        if (c == 0xf4 && s[1] >= 0x90)
            return 0;
        return 4;
    }
    return 0;
}

int proto_valid_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t k = proto_utf8_seq(p + i, len - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

size_t proto_utf8_chars(const char *s, size_t len)
{
    size_t i, n = 0;

    for (i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            n++;
    return n;
}

int proto_valid_password(const char *s, size_t len)
{
    return len >= PROTO_PASSWORD_MIN && len <= PROTO_PASSWORD_MAX &&
           proto_valid_utf8(s, len);
}

int proto_valid_client_msg_id(const char *s, size_t len)
{
    size_t i, chars;

    if (len == 0 || !proto_valid_utf8(s, len))
        return 0;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    chars = proto_utf8_chars(s, len);
    return chars >= 1 && chars <= PROTO_CLIENT_MSG_ID_MAX &&
           len <= STORE_CLIENT_MSG_ID_MAX * 4;
}

/* 1 when no string (key or value) in the tree holds a NUL byte. */
static int proto_no_nul(json_object *o)
{
    size_t i, n;

    switch (json_object_get_type(o)) {
    case json_type_string:
        return strlen(json_object_get_string(o)) ==
               (size_t)json_object_get_string_len(o);
    case json_type_array:
        n = json_object_array_length(o);
        for (i = 0; i < n; i++)
            if (!proto_no_nul(json_object_array_get_idx(o, i)))
                return 0;
        return 1;
    case json_type_object: {
        json_object_object_foreach(o, key, val) {
            (void)key;
            if (!proto_no_nul(val))
                return 0;
        }
        return 1;
    }
    default:
        return 1;
    }
}

json_object *proto_parse_object(const char *text, size_t len,
                                const char **why)
{
    struct json_tokener *tok;
    json_object *o;
    enum json_tokener_error jerr;

    *why = NULL;
    if (len == 0) {
        *why = "the request needs a JSON object body";
        return NULL;
    }
    if (memchr(text, '\0', len) != NULL) {
        *why = "the body holds a NUL byte";
        return NULL;
    }
    if (!proto_valid_utf8(text, len)) {
        *why = "the body is not valid UTF-8";
        return NULL;
    }
    /* json-c counts the depth of the top level as 1; a limit of n allows
     * n - 1 levels of nesting below the top object. */
    tok = json_tokener_new_ex(PROTO_JSON_DEPTH + 1);
    if (tok == NULL) {
        *why = "out of memory";
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    o = json_tokener_parse_ex(tok, text, (int)len);
    jerr = json_tokener_get_error(tok);
    if (o != NULL && jerr == json_tokener_success &&
        tok->char_offset < (int)len) {
        /* Trailing bytes after the value: only whitespace may follow. */
        size_t i;
        for (i = (size_t)tok->char_offset; i < len; i++)
            if (text[i] != ' ' && text[i] != '\t' && text[i] != '\n' &&
                text[i] != '\r') {
                json_object_put(o);
                o = NULL;
                *why = "trailing characters after the JSON value";
                break;
            }
    } else if (o == NULL || jerr != json_tokener_success) {
        if (jerr == json_tokener_error_depth)
            *why = "the JSON is nested too deeply";
        else if (jerr == json_tokener_continue)
            *why = "the JSON ends too early";
        else
            *why = "the body is not valid JSON";
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    if (o == NULL)
        return NULL;
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *why = "the body must be a JSON object";
        return NULL;
    }
    if (!proto_no_nul(o)) {
        json_object_put(o);
        *why = "a string holds a NUL character";
        return NULL;
    }
    return o;
}

int proto_get_string(json_object *o, const char *key, const char **s,
                     size_t *len)
{
    json_object *v;

    if (!json_object_object_get_ex(o, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return -1;
    *s = json_object_get_string(v);
    if (len)
        *len = (size_t)json_object_get_string_len(v);
    return 0;
}

int proto_get_int(json_object *o, const char *key, int64_t *v)
{
    json_object *x;

    if (!json_object_object_get_ex(o, key, &x) ||
        !json_object_is_type(x, json_type_int))
        return -1;
    /* json-c saturates out-of-range integers; refuse those. */
    errno = 0;
    *v = json_object_get_int64(x);
    if ((*v == INT64_MAX || *v == INT64_MIN) && errno != 0)
        return -1;
    return 0;
}

void proto_json_message(struct util_buf *b, const struct store_msg *m)
{
    char ts[UTIL_TIME_LEN];

    util_buf_printf(b, "{\"message_id\":%lld,\"conversation_id\":%lld,"
                    "\"seq\":%lld,\"sender_id\":%lld,\"sender\":",
                    (long long)m->message_id, (long long)m->conversation_id,
                    (long long)m->seq, (long long)m->sender_id);
    util_buf_json_str(b, m->sender);
    util_buf_puts(b, ",\"body\":");
    util_buf_json_str(b, m->body ? m->body : "");
    util_buf_puts(b, ",\"client_msg_id\":");
    util_buf_json_str(b, m->client_msg_id);
    util_buf_printf(b, ",\"created_at\":\"%s\"}",
                    util_format_time(m->created_at, ts));
}

void proto_json_user(struct util_buf *b, const struct store_user_brief *u)
{
    util_buf_printf(b, "{\"user_id\":%lld,\"username\":", (long long)u->id);
    util_buf_json_str(b, u->username);
    util_buf_puts(b, "}");
}

void proto_json_conversation(struct util_buf *b, const struct store_conv *c,
                             int with_list_fields)
{
    size_t i;

    util_buf_printf(b, "{\"conversation_id\":%lld,\"kind\":\"%s\",\"title\":",
                    (long long)c->id, c->kind);
    util_buf_json_str(b, c->title);
    util_buf_puts(b, ",\"members\":[");
    for (i = 0; i < c->nmembers; i++) {
        if (i)
            util_buf_puts(b, ",");
        proto_json_user(b, &c->members[i]);
    }
    util_buf_puts(b, "]");
    if (with_list_fields) {
        int64_t unread = c->last_seq - c->read_seq;
        util_buf_puts(b, ",\"last_message\":");
        if (c->has_last)
            proto_json_message(b, &c->last_message);
        else
            util_buf_puts(b, "null");
        util_buf_printf(b, ",\"unread\":%lld", (long long)(unread > 0 ? unread : 0));
    }
    util_buf_puts(b, "}");
}

void proto_json_error(struct util_buf *b, const char *code,
                      const char *message)
{
    util_buf_puts(b, "{\"error\":{\"code\":");
    util_buf_json_str(b, code);
    util_buf_puts(b, ",\"message\":");
    util_buf_json_str(b, message);
    util_buf_puts(b, "}}");
}
