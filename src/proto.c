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
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        /* U+0080..U+009F, the C1 controls, are 0xc2 0x80..0x9f. */
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] <= 0x9f)
            return 0;
    }
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

/* A strict RFC 8259 syntax check of the whole text, run before json-c
 * (which accepts single quotes, NaN, raw control characters in strings and
 * cuts keys at an escaped NUL). Also enforces the nesting limit and refuses
 * \u0000. Returns NULL when the text is fine, else the reason. */
struct proto_scan {
    const char *p, *end;
    int depth;
};

static void proto_scan_ws(struct proto_scan *sc)
{
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' ||
                               *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static int proto_hex4(const char *p, const char *end, unsigned *v)
{
    int i;

    if (end - p < 4)
        return -1;
    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            *v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            *v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    return 0;
}

static const char *proto_scan_string(struct proto_scan *sc)
{
    sc->p++;                                   /* the opening quote */
    while (sc->p < sc->end) {
        unsigned char c = (unsigned char)*sc->p;
        unsigned v;
        if (c == '"') {
            sc->p++;
            return NULL;
        }
        if (c < 0x20)
            return "a string holds a raw control character";
        if (c != '\\') {
            sc->p++;
            continue;
        }
        if (sc->end - sc->p < 2)
            break;
        switch (sc->p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            sc->p += 2;
            break;
        case 'u':
            if (proto_hex4(sc->p + 2, sc->end, &v) != 0)
                return "a string holds a bad \\u escape";
            if (v == 0)
                return "a string holds a NUL character";
            sc->p += 6;
            break;
        default:
            return "a string holds a bad escape";
        }
    }
    return "the JSON ends too early";
}

static const char *proto_scan_number(struct proto_scan *sc)
{
    const char *p = sc->p;

    if (p < sc->end && *p == '-')
        p++;
    if (p >= sc->end || !(*p >= '0' && *p <= '9'))
        return "the body is not valid JSON";
    if (*p == '0')
        p++;
    else
        while (p < sc->end && *p >= '0' && *p <= '9')
            p++;
    if (p < sc->end && *p == '.') {
        p++;
        if (p >= sc->end || !(*p >= '0' && *p <= '9'))
            return "the body is not valid JSON";
        while (p < sc->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < sc->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < sc->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= sc->end || !(*p >= '0' && *p <= '9'))
            return "the body is not valid JSON";
        while (p < sc->end && *p >= '0' && *p <= '9')
            p++;
    }
    sc->p = p;
    return NULL;
}

static const char *proto_scan_value(struct proto_scan *sc)
{
    const char *why;
    static const char *const words[] = { "true", "false", "null" };
    size_t i;

    proto_scan_ws(sc);
    if (sc->p >= sc->end)
        return "the JSON ends too early";
    switch (*sc->p) {
    case '"':
        return proto_scan_string(sc);
    case '{':
    case '[': {
        char close = *sc->p == '{' ? '}' : ']';
        int object = close == '}';
        if (++sc->depth > PROTO_JSON_DEPTH)
            return "the JSON is nested too deeply";
        sc->p++;
        proto_scan_ws(sc);
        if (sc->p < sc->end && *sc->p == close) {
            sc->p++;
            sc->depth--;
            return NULL;
        }
        for (;;) {
            if (object) {
                proto_scan_ws(sc);
                if (sc->p >= sc->end || *sc->p != '"')
                    return sc->p >= sc->end ? "the JSON ends too early"
                                            : "the body is not valid JSON";
                if ((why = proto_scan_string(sc)) != NULL)
                    return why;
                proto_scan_ws(sc);
                if (sc->p >= sc->end || *sc->p != ':')
                    return "the body is not valid JSON";
                sc->p++;
            }
            if ((why = proto_scan_value(sc)) != NULL)
                return why;
            proto_scan_ws(sc);
            if (sc->p >= sc->end)
                return "the JSON ends too early";
            if (*sc->p == close) {
                sc->p++;
                sc->depth--;
                return NULL;
            }
            if (*sc->p != ',')
                return "the body is not valid JSON";
            sc->p++;
        }
    }
    default:
        if (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9'))
            return proto_scan_number(sc);
        for (i = 0; i < 3; i++) {
            size_t n = strlen(words[i]);
            if ((size_t)(sc->end - sc->p) >= n &&
                memcmp(sc->p, words[i], n) == 0) {
                sc->p += n;
                return NULL;
            }
        }
        return "the body is not valid JSON";
    }
}

/* Checks text is exactly one JSON object (whitespace around it allowed). */
static const char *proto_scan(const char *text, size_t len)
{
    struct proto_scan sc = { text, text + len, 0 };
    const char *why;

    proto_scan_ws(&sc);
    if (sc.p < sc.end && *sc.p != '{')
        return "the body must be a JSON object";
    if ((why = proto_scan_value(&sc)) != NULL)
        return why;
    proto_scan_ws(&sc);
    if (sc.p != sc.end)
        return "trailing characters after the JSON value";
    return NULL;
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
    /* The scanner has checked syntax and depth; json-c builds the tree.
     * The scanner's recursion is bounded by PROTO_JSON_DEPTH. */
    if ((*why = proto_scan(text, len)) != NULL)
        return NULL;
    tok = json_tokener_new_ex(PROTO_JSON_DEPTH + 2);
    if (tok == NULL) {
        *why = "out of memory";
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    o = json_tokener_parse_ex(tok, text, (int)len);
    jerr = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (o == NULL || jerr != json_tokener_success ||
        !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *why = "the body is not valid JSON";
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
    /* json-c saturates out-of-range integers without saying so: refuse
     * INT64_MIN (no id or seq is negative anyway) and a saturated max. */
    *v = json_object_get_int64(x);
    if (*v == INT64_MIN ||
        (*v == INT64_MAX && json_object_get_uint64(x) > (uint64_t)INT64_MAX))
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
