/*
 * chatload: a load generator for chatd that speaks its protocol.
 *
 * It registers users and logs them in over HTTP, puts them in conversations
 * of --conv-size members, opens one chat.v1 WebSocket per user and then
 * drives one of three workloads for --duration seconds:
 *
 *   --rate R    open loop: R messages/s in total, spread evenly over the
 *               users; each message has a scheduled send time and its ack
 *               latency is measured from that time, so a stall of the
 *               server (or of this program) shows in the latency instead of
 *               silently lowering the rate;
 *   --window W  closed loop: every socket keeps up to W sends in flight;
 *   --idle      no traffic: the sockets are only held open (memory).
 *
 * Every user is paced by a client-side token bucket that mirrors the
 * server's per-user rate limit (20 frames/s, bursts of 100), so the
 * aggregate rate of a run is bounded by users x --user-rate; a run that
 * wants more throughput needs more users, not more frames per user.
 *
 * Threads: the main thread parses options, starts --threads load threads,
 * moves the run through its phases (set-up, connect, warm-up, measure,
 * drain, stop) and prints the report. Each load thread first does its
 * users' HTTP set-up with a small blocking HTTP/1.1 client, then runs its
 * own libwebsockets client context (one context per thread, as the
 * library wants) for its users' sockets. The threads share nothing but
 * the phase, a few atomic counters and their statistics, which the main
 * thread reads only after they have stopped.
 *
 * Build: cc -std=gnu11 -O2 -o chatload chatload.c \
 *          $(pkg-config --cflags --libs libwebsockets json-c libuv) -pthread -lm
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <libwebsockets.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* ---- small helpers ------------------------------------------------------ */

static void chatload_die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("chatload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *chatload_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        chatload_die("out of memory");
    return p;
}

static void *chatload_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        chatload_die("out of memory");
    return p;
}

static void *chatload_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        chatload_die("out of memory");
    return p;
}

/* Monotonic nanoseconds: every latency is a difference of two of these,
 * taken in the same process, so the threads agree on the clock. */
static int64_t chatload_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- log-linear latency histogram -------------------------------------- */

/*
 * Values (nanoseconds) below 2^HIST_SUB_BITS have a bucket each; above,
 * every power of two is cut into 2^HIST_SUB_BITS equal buckets, so a
 * bucket is never wider than 1/128 of its value (under 1% error) whatever
 * the magnitude, like HdrHistogram. The exact maximum is kept apart.
 */
#define HIST_SUB_BITS 7
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_GROUPS (64 - HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_GROUPS * HIST_SUB)

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    int64_t max;
};

static int hist_index(int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    int msb, group;

    if (u < HIST_SUB)
        return (int)u;
    msb = 63 - __builtin_clzll(u);
    group = msb - HIST_SUB_BITS + 1;
    return group * HIST_SUB + (int)((u >> (msb - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The highest value that falls in bucket i: a percentile is reported as
 * the top of its bucket, so it is never understated. */
static int64_t hist_bucket_top(int i)
{
    int group = i / HIST_SUB, sub = i % HIST_SUB;
    uint64_t lo;

    if (group == 0)
        return sub;
    lo = ((uint64_t)HIST_SUB + sub) << (group - 1);
    return (int64_t)(lo + ((uint64_t)1 << (group - 1)) - 1);
}

static void hist_record(struct hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(struct hist *dst, const struct hist *src)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* The value at or below which fraction q of the samples lie. */
static int64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t want, seen = 0;
    int64_t top;

    if (h->total == 0)
        return 0;
    want = (uint64_t)ceil(q * (double)h->total);
    if (want < 1)
        want = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            top = hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* ---- options ------------------------------------------------------------ */

enum chatload_mode { CHATLOAD_OPEN, CHATLOAD_CLOSED, CHATLOAD_IDLE };

static struct {
    char host[256];
    int port;
    int users;
    int conv_size;
    double rate;
    int window;
    enum chatload_mode mode;
    double duration;
    double warmup;
    double drain;
    int threads;
    int body_bytes;
    int chatd_pid;
    int pg_pid;
    double user_rate;
    double user_burst;
    char prefix[24];
    const char *accounts;   /* "USERNAME TOKEN" lines: no register/login */
    int fast_parse;         /* message and ack frames without json-c */
    const char *password;
    int connect_timeout;
} chatload_opt = {
    .host = "127.0.0.1",
    .port = 8080,
    .users = 200,
    .conv_size = 2,
    .mode = CHATLOAD_CLOSED,
    .window = 8,
    .duration = 10,
    .warmup = 2,
    .drain = 5,
    .threads = 2,
    .body_bytes = 64,
    .user_rate = 19,
    .user_burst = 90,
    .password = "bench-password",
    .connect_timeout = 60,
    .fast_parse = 1,
};

/* ---- the run's shared state ------------------------------------------- */

enum chatload_phase {
    PHASE_SETUP,    /* HTTP set-up and connecting */
    PHASE_WARMUP,   /* sending, not yet counted */
    PHASE_MEASURE,  /* sending and counted */
    PHASE_DRAIN,    /* no new sends; waiting for the last acks */
    PHASE_STOP,
};

static _Atomic int chatload_phase = PHASE_SETUP;
static _Atomic int chatload_ready;      /* sockets that got `ready` */
static _Atomic int chatload_failed;     /* sockets that failed or closed */
static _Atomic int64_t chatload_inflight; /* sends not yet acked or refused */
static int64_t chatload_t_start;        /* ns: start of sending (warm-up) */
static int64_t chatload_t_measure;      /* ns: start of the measured window */
static int64_t chatload_t_end;          /* ns: end of the measured window */
static pthread_barrier_t chatload_barrier;

struct user;

/* One error code and how often it came. */
struct code_count {
    char code[40];
    uint64_t n;
};

#define CHATLOAD_MAX_CODES 32

struct thread_stats {
    struct hist ack;       /* send (scheduled) -> ack, measured window */
    struct hist deliver;   /* send (scheduled) -> message frame elsewhere */
    uint64_t sent, sent_measured;
    uint64_t acked, acked_measured;
    uint64_t delivered, delivered_measured;
    uint64_t refused;      /* error frames answering a send */
    uint64_t dup_acks;
    uint64_t unknown_acks; /* acks naming nothing we sent */
    uint64_t other_frames;
    uint64_t conn_errors, closes;
    uint64_t deferred_by_bucket; /* send slots delayed by our own pacing */
    struct code_count codes[CHATLOAD_MAX_CODES];
    int n_codes;
    struct code_count close_codes[CHATLOAD_MAX_CODES];
    int n_close_codes;
};

static void stats_count_code(struct code_count *tab, int *n, const char *code)
{
    for (int i = 0; i < *n; i++)
        if (strcmp(tab[i].code, code) == 0) {
            tab[i].n++;
            return;
        }
    if (*n < CHATLOAD_MAX_CODES) {
        snprintf(tab[*n].code, sizeof tab[*n].code, "%s", code);
        tab[*n].n = 1;
        (*n)++;
    }
}

/* A send this program made: when it was scheduled, and whether its ack
 * came (INT64_MIN once acked or refused, so a second ack is a duplicate). */
#define SEND_DONE INT64_MIN

struct user {
    int index;               /* global user number */
    struct load_thread *lt;
    char name[40];
    char cmid_stem[48];      /* client_msg_id before "-seq", new each run */
    char token[128];
    int64_t user_id;
    int64_t conv_id;
    struct lws *wsi;
    int state;               /* USER_* */
    int want_auth;
    /* the user's sends, by sequence number (the tail of client_msg_id) */
    int64_t *sends;
    size_t n_sends, cap_sends;
    int inflight;
    /* open loop: scheduled times not yet written, a FIFO */
    int64_t *pending;
    size_t pend_head, pend_len, pend_cap;
    /* client-side copy of the server's token bucket */
    double tokens;
    int64_t bucket_ns;
};

enum { USER_IDLE, USER_CONNECTING, USER_OPEN, USER_READY, USER_CLOSED };

struct load_thread {
    int index;
    pthread_t thread;
    struct user *users;      /* a slice of the global array */
    int n_users;
    struct lws_context *ctx;
    uv_loop_t loop;          /* the thread's own libuv loop, lent to lws */
    lws_sorted_usec_list_t tick;
    int next_connect;        /* next user to connect */
    int connecting;          /* handshakes in progress */
    /* open loop: this thread's k-th message is due at start + k/rate */
    double rate;
    uint64_t next_k;
    int rr;                  /* round-robin user for the next message */
    struct json_tokener *tok;
    char *body;              /* --body-bytes of padding */
    struct thread_stats st;
};

static struct user *chatload_users;
static struct load_thread *chatload_threads;

/* ---- blocking HTTP/1.1 for the set-up --------------------------------- */

/*
 * One request per connection (Connection: close), body read to EOF: the
 * set-up makes a few requests per user and is dominated by the server's
 * password hashing, so keep-alive would buy nothing here. Returns the
 * status code and the parsed JSON body in *out (NULL if none), or -1 when
 * the server could not be reached.
 */
static int http_request(const char *method, const char *path,
                        const char *token, const char *body,
                        struct json_object **out)
{
    struct sockaddr_in sa;
    char head[1024];
    char *resp = NULL, *p;
    size_t len = 0, cap = 0;
    int fd, status = -1, hlen;
    ssize_t r;

    *out = NULL;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)chatload_opt.port);
    if (inet_pton(AF_INET, chatload_opt.host, &sa.sin_addr) != 1) {
        struct hostent *he = gethostbyname(chatload_opt.host);

        if (!he || he->h_addrtype != AF_INET)
            chatload_die("cannot resolve %s", chatload_opt.host);
        memcpy(&sa.sin_addr, he->h_addr_list[0], sizeof sa.sin_addr);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    hlen = snprintf(head, sizeof head,
                    "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                    "%s%s%s"
                    "Content-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    method, path, chatload_opt.host, chatload_opt.port,
                    token ? "Authorization: Bearer " : "", token ? token : "",
                    token ? "\r\n" : "", body ? strlen(body) : 0);
    if (write(fd, head, (size_t)hlen) != hlen ||
        (body && write(fd, body, strlen(body)) != (ssize_t)strlen(body))) {
        close(fd);
        return -1;
    }
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            resp = chatload_xrealloc(resp, cap);
        }
        r = read(fd, resp + len, cap - len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!resp)
        return -1;
    resp[len] = '\0';
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
        status = -1;
    p = strstr(resp, "\r\n\r\n");
    if (p && p[4])
        *out = json_tokener_parse(p + 4);
    free(resp);
    return status;
}

static void user_setup_account(struct user *u)
{
    char body[256];
    struct json_object *j, *v;
    int st;

    snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"%s\"}",
             u->name, chatload_opt.password);
    st = http_request("POST", "/api/register", NULL, body, &j);
    json_object_put(j);
    if (st != 201 && st != 409)
        chatload_die("register %s: status %d", u->name, st);
    st = http_request("POST", "/api/login", NULL, body, &j);
    if (st != 200 || !json_object_object_get_ex(j, "token", &v))
        chatload_die("login %s: status %d (an old user with another "
                     "password? use another --prefix)", u->name, st);
    snprintf(u->token, sizeof u->token, "%s", json_object_get_string(v));
    if (json_object_object_get_ex(j, "user_id", &v))
        u->user_id = json_object_get_int64(v);
    json_object_put(j);
}

/* The first member of each group creates the conversation and names the
 * others; every member learns its id (the groups are fixed by index). */
static void user_setup_conversation(struct user *u)
{
    int first = u->index, last = u->index + chatload_opt.conv_size - 1;
    struct json_object *req, *arr, *j, *v;
    int st;

    if (last >= chatload_opt.users)
        last = chatload_opt.users - 1;
    req = json_object_new_object();
    arr = json_object_new_array();
    for (int i = first + 1; i <= last; i++)
        json_object_array_add(arr, json_object_new_string(chatload_users[i].name));
    if (last == first) /* a lone user at the end talks with user 0 */
        json_object_array_add(arr, json_object_new_string(chatload_users[0].name));
    json_object_object_add(req, "members", arr);
    st = http_request("POST", "/api/conversations", u->token,
                      json_object_to_json_string(req), &j);
    json_object_put(req);
    if ((st != 201 && st != 200) ||
        !json_object_object_get_ex(j, "conversation_id", &v))
        chatload_die("create conversation for %s: status %d", u->name, st);
    for (int i = first; i <= last; i++)
        chatload_users[i].conv_id = json_object_get_int64(v);
    json_object_put(j);
}

/* ---- pacing ------------------------------------------------------------- */

/* Takes one token from the user's bucket if it has one. */
static int user_bucket_take(struct user *u, int64_t now)
{
    u->tokens += (double)(now - u->bucket_ns) * 1e-9 * chatload_opt.user_rate;
    if (u->tokens > chatload_opt.user_burst)
        u->tokens = chatload_opt.user_burst;
    u->bucket_ns = now;
    if (u->tokens < 1.0)
        return 0;
    u->tokens -= 1.0;
    return 1;
}

static void user_pending_push(struct user *u, int64_t sched)
{
    if (u->pend_len == u->pend_cap) {
        size_t ncap = u->pend_cap ? u->pend_cap * 2 : 16;
        int64_t *n = chatload_xmalloc(ncap * sizeof *n);

        for (size_t i = 0; i < u->pend_len; i++)
            n[i] = u->pending[(u->pend_head + i) % u->pend_cap];
        free(u->pending);
        u->pending = n;
        u->pend_head = 0;
        u->pend_cap = ncap;
    }
    u->pending[(u->pend_head + u->pend_len) % u->pend_cap] = sched;
    u->pend_len++;
}

/* Whether the user has a send to write now (the bucket is not touched). */
static int user_has_work(const struct user *u, int phase)
{
    if (u->state != USER_READY)
        return 0;
    if (phase != PHASE_WARMUP && phase != PHASE_MEASURE)
        return 0;
    if (chatload_opt.mode == CHATLOAD_OPEN)
        return u->pend_len > 0;
    if (chatload_opt.mode == CHATLOAD_CLOSED)
        return u->inflight < chatload_opt.window;
    return 0;
}

/* ---- the WebSocket client ---------------------------------------------- */

static void user_connect(struct load_thread *lt, struct user *u)
{
    struct lws_client_connect_info ci;

    memset(&ci, 0, sizeof ci);
    ci.context = lt->ctx;
    ci.address = chatload_opt.host;
    ci.port = chatload_opt.port;
    ci.path = "/ws";
    ci.host = chatload_opt.host;
    ci.origin = NULL; /* a program, not a page: no Origin header */
    ci.protocol = "chat.v1";
    ci.local_protocol_name = "chat.v1";
    ci.opaque_user_data = u;
    ci.pwsi = &u->wsi;
    u->state = USER_CONNECTING;
    lt->connecting++;
    if (!lws_client_connect_via_info(&ci)) {
        u->state = USER_CLOSED;
        lt->connecting--;
        lt->st.conn_errors++;
        atomic_fetch_add(&chatload_failed, 1);
    }
}

/* Writes one frame for the user: the auth frame, or one send. One
 * lws_write per WRITEABLE callback, as lws wants. */
static int user_write(struct load_thread *lt, struct user *u)
{
    char buf[LWS_PRE + 512 + 65536];
    char *p = buf + LWS_PRE;
    int64_t now = chatload_now_ns(), sched;
    int phase = atomic_load(&chatload_phase);
    size_t seq;
    int n, body_at, pad;

    if (u->want_auth) {
        n = snprintf(p, 512, "{\"type\":\"auth\",\"token\":\"%s\"}", u->token);
        u->want_auth = 0;
        return lws_write(u->wsi, (unsigned char *)p, (size_t)n, LWS_WRITE_TEXT) < n ? -1 : 0;
    }
    if (!user_has_work(u, phase))
        return 0;
    if (!user_bucket_take(u, now)) {
        lt->st.deferred_by_bucket++;
        return 0; /* the tick asks again once a token is due */
    }
    if (chatload_opt.mode == CHATLOAD_OPEN) {
        sched = u->pending[u->pend_head];
        u->pend_head = (u->pend_head + 1) % u->pend_cap;
        u->pend_len--;
    } else {
        sched = now;
    }
    if (u->n_sends == u->cap_sends) {
        u->cap_sends = u->cap_sends ? u->cap_sends * 2 : 256;
        u->sends = chatload_xrealloc(u->sends, u->cap_sends * sizeof *u->sends);
    }
    seq = u->n_sends++;
    u->sends[seq] = sched;
    u->inflight++;
    atomic_fetch_add(&chatload_inflight, 1);
    lt->st.sent++;
    if (phase == PHASE_MEASURE)
        lt->st.sent_measured++;
    /* The body starts with the scheduled time so that a receiver can
     * measure delivery latency; the rest is padding to --body-bytes. */
    n = snprintf(p, 512,
                 "{\"type\":\"send\",\"conversation_id\":%" PRId64
                 ",\"client_msg_id\":\"%s-%zu\",\"body\":\"",
                 u->conv_id, u->cmid_stem, seq);
    body_at = n;
    n += snprintf(p + n, 64, "t%" PRId64 "%c", sched,
                  phase == PHASE_MEASURE ? 'm' : 'w');
    pad = chatload_opt.body_bytes - (n - body_at);
    if (pad > 0) {
        memcpy(p + n, lt->body, (size_t)pad);
        n += pad;
    }
    memcpy(p + n, "\"}", 2);
    n += 2;
    if (lws_write(u->wsi, (unsigned char *)p, (size_t)n, LWS_WRITE_TEXT) < n)
        return -1;
    if (user_has_work(u, phase))
        lws_callback_on_writable(u->wsi);
    return 0;
}

/* Parses "stem-seq" back to the user's send slot; NULL if not ours. */
static int64_t *user_send_slot(struct user *u, const char *cmid)
{
    size_t nl = strlen(u->cmid_stem);
    char *end;
    unsigned long long seq;

    if (strncmp(cmid, u->cmid_stem, nl) != 0 || cmid[nl] != '-')
        return NULL;
    seq = strtoull(cmid + nl + 1, &end, 10);
    if (*end || seq >= u->n_sends)
        return NULL;
    return &u->sends[seq];
}

static void user_ack_cmid(struct load_thread *lt, struct user *u,
                          const char *cmid, int refused)
{
    int64_t *slot, now;

    slot = user_send_slot(u, cmid);
    if (!slot) {
        lt->st.unknown_acks++;
        return;
    }
    if (*slot == SEND_DONE) {
        lt->st.dup_acks++;
        return;
    }
    now = chatload_now_ns();
    if (!refused) {
        lt->st.acked++;
        if (now >= chatload_t_measure && now < chatload_t_end &&
            atomic_load(&chatload_phase) >= PHASE_MEASURE)
            lt->st.acked_measured++;
        /* latency of the sends scheduled inside the measured window */
        if (*slot >= chatload_t_measure && chatload_t_measure &&
            (chatload_t_end == 0 || *slot < chatload_t_end))
            hist_record(&lt->st.ack, now - *slot);
    } else {
        lt->st.refused++;
    }
    *slot = SEND_DONE;
    u->inflight--;
    atomic_fetch_sub(&chatload_inflight, 1);
    if (user_has_work(u, atomic_load(&chatload_phase)))
        lws_callback_on_writable(u->wsi);
}

static void user_on_ack(struct load_thread *lt, struct user *u,
                        struct json_object *frame, int refused)
{
    struct json_object *v;

    if (!json_object_object_get_ex(frame, refused ? "ref" : "client_msg_id", &v)) {
        lt->st.unknown_acks++;
        return;
    }
    user_ack_cmid(lt, u, json_object_get_string(v), refused);
}

/* A `message` frame: count it; its body's leading "t<ns>m" is the send's
 * scheduled time, from which the delivery latency is measured. body may
 * be NULL (a message that is not ours). */
static void user_on_message_body(struct load_thread *lt, const char *body)
{
    int64_t now = chatload_now_ns(), sched;
    char *end;

    lt->st.delivered++;
    if (now >= chatload_t_measure && chatload_t_measure &&
        atomic_load(&chatload_phase) >= PHASE_MEASURE &&
        (chatload_t_end == 0 || now < chatload_t_end))
        lt->st.delivered_measured++;
    if (!body || body[0] != 't')
        return;
    sched = strtoll(body + 1, &end, 10);
    if (*end == 'm')
        hist_record(&lt->st.deliver, now - sched);
}

static void user_on_message(struct load_thread *lt, struct json_object *frame)
{
    struct json_object *m, *b;

    if (!json_object_object_get_ex(frame, "message", &m) ||
        !json_object_object_get_ex(m, "body", &b)) {
        user_on_message_body(lt, NULL);
        return;
    }
    user_on_message_body(lt, json_object_get_string(b));
}

/*
 * The two frames that make up nearly all the traffic, `message` and
 * `ack`, are recognised by their fixed beginning (chatd writes them in
 * one fixed field order: src/proto.c, src/ws_chat.c) and the one field
 * needed is read in place, without building a JSON tree: with json-c for
 * every frame, chatload spent more CPU than chatd on the fan-out
 * workloads. Anything else, or a frame that does not look exactly as
 * expected, goes through json-c. Returns 1 when the frame was handled.
 */
#define FRAME_MESSAGE "{\"type\":\"message\",\"message\":{\"message_id\":"
#define FRAME_ACK "{\"type\":\"ack\",\"client_msg_id\":\""
static int user_on_frame_fast(struct load_thread *lt, struct user *u,
                              const char *in, size_t len)
{
    char cmid[128];
    const char *p, *q, *end = in + len;

    if (len > sizeof FRAME_MESSAGE && memcmp(in, FRAME_MESSAGE, sizeof FRAME_MESSAGE - 1) == 0) {
        p = memmem(in, len, ",\"body\":\"", 9);
        if (!p || end[-1] != '}' || end[-2] != '}')
            return 0;
        p += 9;
        /* our bodies are "t<digits>m" then padding, no escapes */
        for (q = p; q < end && *q != '"' && *q != '\\'; q++)
            ;
        if (q == end || *q != '"')
            return 0;
        /* only the leading "t<ns>m" matters */
        len = (size_t)(q - p) < 32 ? (size_t)(q - p) : 32;
        memcpy(cmid, p, len);
        cmid[len] = '\0';
        user_on_message_body(lt, cmid);
        return 1;
    }
    if (len > sizeof FRAME_ACK && memcmp(in, FRAME_ACK, sizeof FRAME_ACK - 1) == 0) {
        p = in + sizeof FRAME_ACK - 1;
        for (q = p; q < end && *q != '"' && *q != '\\'; q++)
            ;
        if (q == end || *q != '"' || (size_t)(q - p) >= sizeof cmid || end[-1] != '}')
            return 0;
        memcpy(cmid, p, (size_t)(q - p));
        cmid[q - p] = '\0';
        user_ack_cmid(lt, u, cmid, 0);
        return 1;
    }
    return 0;
}

static void user_on_frame(struct load_thread *lt, struct user *u,
                          const char *in, size_t len)
{
    struct json_object *frame, *t, *c;
    const char *type;

    if (chatload_opt.fast_parse && user_on_frame_fast(lt, u, in, len))
        return;
    json_tokener_reset(lt->tok);
    frame = json_tokener_parse_ex(lt->tok, in, (int)len);
    if (!frame) {
        stats_count_code(lt->st.codes, &lt->st.n_codes, "(unparseable frame)");
        return;
    }
    if (!json_object_object_get_ex(frame, "type", &t)) {
        json_object_put(frame);
        return;
    }
    type = json_object_get_string(t);
    if (strcmp(type, "message") == 0) {
        user_on_message(lt, frame);
    } else if (strcmp(type, "ack") == 0) {
        user_on_ack(lt, u, frame, 0);
    } else if (strcmp(type, "ready") == 0) {
        if (u->state != USER_READY) {
            u->state = USER_READY;
            u->bucket_ns = chatload_now_ns();
            u->tokens = 0; /* the auth frame may have used the server's */
            lt->connecting--;
            atomic_fetch_add(&chatload_ready, 1);
        }
    } else if (strcmp(type, "error") == 0) {
        const char *code = json_object_object_get_ex(frame, "code", &c)
                               ? json_object_get_string(c) : "(no code)";

        stats_count_code(lt->st.codes, &lt->st.n_codes, code);
        /* a refused send names its client_msg_id in ref */
        user_on_ack(lt, u, frame, 1);
    } else {
        lt->st.other_frames++; /* presence, read, typing, pong */
    }
    json_object_put(frame);
}

static void user_on_close(struct load_thread *lt, struct user *u, int code)
{
    char buf[16];

    if (u->state == USER_CONNECTING || u->state == USER_OPEN)
        lt->connecting--;
    if (u->state == USER_READY)
        atomic_fetch_sub(&chatload_ready, 1);
    if (u->state != USER_CLOSED) {
        atomic_fetch_add(&chatload_failed, 1);
        /* sends in flight on a dead socket will never be acked: they
         * remain counted as lost */
    }
    u->state = USER_CLOSED;
    u->wsi = NULL;
    if (code >= 0) {
        snprintf(buf, sizeof buf, "%d", code);
        stats_count_code(lt->st.close_codes, &lt->st.n_close_codes, buf);
    }
    lt->st.closes++;
}

static int chatload_ws_cb(struct lws *wsi, enum lws_callback_reasons reason,
                          void *user, void *in, size_t len)
{
    struct user *u = lws_get_opaque_user_data(wsi);
    struct load_thread *lt = u ? u->lt : NULL;
    int code;

    (void)user; /* the user is the connection's opaque pointer instead */
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        u->state = USER_OPEN;
        u->want_auth = 1;
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        return user_write(lt, u);
    case LWS_CALLBACK_CLIENT_RECEIVE:
        /* chatd sends every frame whole; a fragmented one would be
         * refused by the parser and counted */
        if (lws_is_first_fragment(wsi) && lws_is_final_fragment(wsi))
            user_on_frame(lt, u, in, len);
        else
            stats_count_code(lt->st.codes, &lt->st.n_codes, "(fragmented frame)");
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        code = len >= 2 ? (((unsigned char *)in)[0] << 8) | ((unsigned char *)in)[1] : -1;
        if (u && code >= 0) {
            char buf[16];

            snprintf(buf, sizeof buf, "peer %d", code);
            stats_count_code(lt->st.close_codes, &lt->st.n_close_codes, buf);
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (u) {
            lt->st.conn_errors++;
            stats_count_code(lt->st.codes, &lt->st.n_codes, "(connection error)");
            user_on_close(lt, u, -1);
        }
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (u)
            user_on_close(lt, u, -1);
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols chatload_protocols[] = {
    { "chat.v1", chatload_ws_cb, 0, 65536, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};

/*
 * The thread's 1 ms tick: starts connections a few at a time (so the
 * server's listen queue is not flooded), turns the open loop's schedule
 * into pending sends, and wakes users whose bucket has refilled.
 */
static void load_thread_tick(lws_sorted_usec_list_t *sul)
{
    struct load_thread *lt = lws_container_of(sul, struct load_thread, tick);
    int phase = atomic_load(&chatload_phase);
    int64_t now = chatload_now_ns();

    while (lt->next_connect < lt->n_users && lt->connecting < 64)
        user_connect(lt, &lt->users[lt->next_connect++]);

    if (phase == PHASE_WARMUP || phase == PHASE_MEASURE) {
        if (chatload_opt.mode == CHATLOAD_OPEN && lt->rate > 0) {
            for (;;) {
                int64_t due = chatload_t_start +
                              (int64_t)((double)lt->next_k * 1e9 / lt->rate);
                struct user *u;

                if (due > now)
                    break;
                u = &lt->users[lt->rr];
                lt->rr = (lt->rr + 1) % lt->n_users;
                lt->next_k++;
                if (u->state != USER_READY)
                    continue; /* a dead socket: its share is not sent */
                user_pending_push(u, due);
                lws_callback_on_writable(u->wsi);
            }
        }
        /* Users held back by the bucket get another chance; a token
         * comes every 1/user_rate s, so this costs little. */
        for (int i = 0; i < lt->n_users; i++) {
            struct user *u = &lt->users[i];

            if (u->wsi && user_has_work(u, phase) &&
                u->tokens + (double)(now - u->bucket_ns) * 1e-9 *
                                chatload_opt.user_rate >= 1.0)
                lws_callback_on_writable(u->wsi);
        }
    }
    /* The tick is also what wakes the loop so that the thread sees the
     * phase change; once stopping, it is not needed any more. */
    if (phase != PHASE_STOP)
        lws_sul_schedule(lt->ctx, 0, &lt->tick, load_thread_tick, 1000);
}

static void *load_thread_main(void *arg)
{
    struct load_thread *lt = arg;
    struct lws_context_creation_info info;
    void *loops[1];

    if (!chatload_opt.accounts)
        for (int i = 0; i < lt->n_users; i++)
            user_setup_account(&lt->users[i]);
    pthread_barrier_wait(&chatload_barrier);
    /* Idle sockets send nothing: accounts made in bulk keep the
     * conversations they came with (their contacts still get presence). */
    for (int i = 0; i < lt->n_users; i++)
        if (lt->users[i].index % chatload_opt.conv_size == 0 &&
            !(chatload_opt.accounts && chatload_opt.mode == CHATLOAD_IDLE))
            user_setup_conversation(&lt->users[i]);
    pthread_barrier_wait(&chatload_barrier);

    memset(&info, 0, sizeof info);
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = chatload_protocols;
    info.fd_limit_per_thread = (unsigned int)lt->n_users + 64;
    /* poll() walks every socket on every wakeup; libuv uses epoll */
    info.options = LWS_SERVER_OPTION_LIBUV;
    /* Our own loop, run below one turn at a time, so that the thread can
     * look at the phase between turns (lws_service on a libuv context runs
     * the loop without returning). */
    uv_loop_init(&lt->loop);
    loops[0] = &lt->loop;
    info.foreign_loops = loops;
    lt->ctx = lws_create_context(&info);
    if (!lt->ctx)
        chatload_die("thread %d: lws_create_context failed", lt->index);
    lt->tok = json_tokener_new();
    lws_sul_schedule(lt->ctx, 0, &lt->tick, load_thread_tick, 1000);
    while (atomic_load(&chatload_phase) != PHASE_STOP)
        uv_run(&lt->loop, UV_RUN_ONCE);
    lws_context_destroy(lt->ctx);
    /* lws closes its handles on the loop: let them finish, then close it */
    uv_run(&lt->loop, UV_RUN_DEFAULT);
    uv_loop_close(&lt->loop);
    json_tokener_free(lt->tok);
    return NULL;
}

/* ---- CPU and memory of other processes -------------------------------- */

/* utime + stime of a process, in seconds; -1 if it cannot be read. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut, st;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                     &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int proc_ppid(int pid)
{
    char path[64], buf[1024], *p;
    int ppid;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %d", &ppid) != 1)
        return -1;
    return ppid;
}

/* CPU of a process and its children (Postgres: the postmaster and its
 * backends). A backend that exits between two samples takes its time with
 * it; chatd's connections live as long as chatd, so that is rare. */
static double proc_tree_cpu_s(int pid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    double sum = proc_cpu_s(pid), c;

    if (sum < 0 || !d) {
        if (d)
            closedir(d);
        return -1;
    }
    while ((e = readdir(d))) {
        int child = atoi(e->d_name);

        if (child > 0 && child != pid && proc_ppid(child) == pid &&
            (c = proc_cpu_s(child)) >= 0)
            sum += c;
    }
    closedir(d);
    return sum;
}

/* Resident memory of a process in KiB; -1 if unknown. */
static long proc_rss_kib(int pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* CPU seconds the whole machine spent busy (every core, every process,
 * the kernel included), from /proc/stat; -1 if unknown. What is left
 * after chatd, Postgres and chatload is what others took from the run. */
static double machine_cpu_s(void)
{
    unsigned long long v[8] = { 0 };
    FILE *f = fopen("/proc/stat", "r");
    int n;

    if (!f)
        return -1;
    n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1;
    /* user nice system idle iowait irq softirq steal: all but idle, iowait */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) /
           (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* ---- main --------------------------------------------------------------- */

static void chatload_usage(FILE *f)
{
    fputs("usage: chatload [--url http://HOST:PORT] [--users N] [--conv-size K]\n"
          "                (--rate MSGS_PER_S | --window W | --idle)\n"
          "                [--duration S] [--warmup S] [--drain S] [--threads T]\n"
          "                [--body-bytes B] [--chatd-pid PID] [--pg-pid PID]\n"
          "                [--user-rate R] [--user-burst B] [--prefix P]\n"
          "                [--accounts FILE] [--json-every-frame]\n"
          "\n"
          "  --url          chatd's address (http://127.0.0.1:8080)\n"
          "  --users        users, one socket each (200)\n"
          "  --conv-size    members per conversation; users are grouped in\n"
          "                 order, each sends to its own group (2)\n"
          "  --rate         open loop: messages/s in total, latency from the\n"
          "                 scheduled send time\n"
          "  --window       closed loop: sends in flight per socket (8, the\n"
          "                 default mode)\n"
          "  --idle         hold the sockets open without traffic\n"
          "  --duration     measured seconds (10), after --warmup (2)\n"
          "  --drain        seconds to wait for the last acks (5)\n"
          "  --threads      load threads, one lws context each (2)\n"
          "  --body-bytes   message body size (64, at least 24)\n"
          "  --chatd-pid    report the CPU time and memory of this chatd\n"
          "  --pg-pid       report the CPU time of this postmaster and its\n"
          "                 children\n"
          "  --user-rate    frames/s per user (19, under chatd's limit of 20)\n"
          "  --user-burst   bucket size per user (90, under chatd's 100)\n"
          "  --prefix       username prefix (random); reuse it to reuse users\n"
          "  --accounts     users that exist already, one \"USERNAME TOKEN\" line\n"
          "                 each (a session token; bench/bulkload.py makes\n"
          "                 them): no registration or login, so thousands of\n"
          "                 users set up in seconds; with --idle, no\n"
          "                 conversations are made either\n"
          "  --json-every-frame  parse message and ack frames with json-c too\n"
          "                 (by default they are read in place: cheaper)\n",
          f);
}

static void chatload_parse_url(const char *url)
{
    const char *p = url, *colon;

    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "ws://", 5) == 0)
        p += 5;
    else
        chatload_die("--url must start with http:// or ws://");
    colon = strchr(p, ':');
    if (colon) {
        if ((size_t)(colon - p) >= sizeof chatload_opt.host)
            chatload_die("--url: host too long");
        memcpy(chatload_opt.host, p, (size_t)(colon - p));
        chatload_opt.host[colon - p] = '\0';
        chatload_opt.port = atoi(colon + 1);
    } else {
        snprintf(chatload_opt.host, sizeof chatload_opt.host, "%.*s",
                 (int)strcspn(p, "/"), p);
        chatload_opt.port = 80;
    }
    if (chatload_opt.port <= 0 || chatload_opt.port > 65535)
        chatload_die("--url: bad port");
}

static void chatload_parse(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "url", required_argument, NULL, 'u' },
        { "users", required_argument, NULL, 'n' },
        { "conv-size", required_argument, NULL, 'k' },
        { "rate", required_argument, NULL, 'r' },
        { "window", required_argument, NULL, 'w' },
        { "idle", no_argument, NULL, 'i' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'W' },
        { "drain", required_argument, NULL, 'D' },
        { "threads", required_argument, NULL, 't' },
        { "body-bytes", required_argument, NULL, 'b' },
        { "chatd-pid", required_argument, NULL, 'p' },
        { "pg-pid", required_argument, NULL, 'P' },
        { "user-rate", required_argument, NULL, 'R' },
        { "user-burst", required_argument, NULL, 'B' },
        { "prefix", required_argument, NULL, 'x' },
        { "accounts", required_argument, NULL, 'a' },
        { "json-every-frame", no_argument, NULL, 'J' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;

    snprintf(chatload_opt.prefix, sizeof chatload_opt.prefix, "b%x%04x",
             (unsigned)getpid(), (unsigned)(chatload_now_ns() & 0xffff));
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': chatload_parse_url(optarg); break;
        case 'n': chatload_opt.users = atoi(optarg); break;
        case 'k': chatload_opt.conv_size = atoi(optarg); break;
        case 'r':
            chatload_opt.rate = atof(optarg);
            chatload_opt.mode = CHATLOAD_OPEN;
            break;
        case 'w':
            chatload_opt.window = atoi(optarg);
            chatload_opt.mode = CHATLOAD_CLOSED;
            break;
        case 'i': chatload_opt.mode = CHATLOAD_IDLE; break;
        case 'd': chatload_opt.duration = atof(optarg); break;
        case 'W': chatload_opt.warmup = atof(optarg); break;
        case 'D': chatload_opt.drain = atof(optarg); break;
        case 't': chatload_opt.threads = atoi(optarg); break;
        case 'b': chatload_opt.body_bytes = atoi(optarg); break;
        case 'p': chatload_opt.chatd_pid = atoi(optarg); break;
        case 'P': chatload_opt.pg_pid = atoi(optarg); break;
        case 'R': chatload_opt.user_rate = atof(optarg); break;
        case 'B': chatload_opt.user_burst = atof(optarg); break;
        case 'a': chatload_opt.accounts = optarg; break;
        case 'J': chatload_opt.fast_parse = 0; break;
        case 'x':
            snprintf(chatload_opt.prefix, sizeof chatload_opt.prefix, "%s", optarg);
            break;
        case 'h': chatload_usage(stdout); exit(0);
        default: chatload_usage(stderr); exit(2);
        }
    }
    if (optind != argc) {
        chatload_usage(stderr);
        exit(2);
    }
    if (chatload_opt.users < 2)
        chatload_die("--users must be at least 2");
    if (chatload_opt.conv_size < 2 || chatload_opt.conv_size > 101)
        chatload_die("--conv-size must be 2 to 101");
    if (chatload_opt.threads < 1 || chatload_opt.threads > chatload_opt.users)
        chatload_die("--threads must be 1 to --users");
    if (chatload_opt.body_bytes < 24 || chatload_opt.body_bytes > 16384)
        chatload_die("--body-bytes must be 24 to 16384 (the body carries "
                     "its send time)");
    if (chatload_opt.duration <= 0 || chatload_opt.warmup < 0 ||
        chatload_opt.drain < 0)
        chatload_die("--duration must be positive, --warmup and --drain not negative");
    if (chatload_opt.mode == CHATLOAD_OPEN && chatload_opt.rate <= 0)
        chatload_die("--rate must be positive");
    if (chatload_opt.mode == CHATLOAD_CLOSED && chatload_opt.window < 1)
        chatload_die("--window must be at least 1");
    if (chatload_opt.user_rate <= 0 || chatload_opt.user_burst < 1)
        chatload_die("--user-rate must be positive, --user-burst at least 1");
    if (chatload_opt.mode == CHATLOAD_OPEN &&
        chatload_opt.rate / chatload_opt.users > chatload_opt.user_rate)
        fprintf(stderr, "chatload: warning: %.1f messages/s per user is over "
                "--user-rate %.1f; the sends queue up and the latency grows "
                "(use more --users)\n",
                chatload_opt.rate / chatload_opt.users, chatload_opt.user_rate);
}

/* --accounts: user i is line i of the file, "USERNAME TOKEN". */
static void chatload_load_accounts(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512], name[64], token[160];
    int i = 0;

    if (!f)
        chatload_die("--accounts %s: %s", path, strerror(errno));
    while (i < chatload_opt.users && fgets(line, sizeof line, f)) {
        struct user *u = &chatload_users[i];

        if (sscanf(line, "%63s %159s", name, token) != 2 ||
            strlen(name) >= sizeof u->name || strlen(token) >= sizeof u->token)
            chatload_die("--accounts %s: line %d is not \"USERNAME TOKEN\"",
                         path, i + 1);
        memcpy(u->name, name, strlen(name) + 1);
        memcpy(u->token, token, strlen(token) + 1);
        i++;
    }
    fclose(f);
    if (i < chatload_opt.users)
        chatload_die("--accounts %s: %d accounts for --users %d", path, i,
                     chatload_opt.users);
}

static void chatload_sleep_until(int64_t t)
{
    int64_t now;

    while ((now = chatload_now_ns()) < t) {
        int64_t d = t - now;
        struct timespec ts = { d / 1000000000, d % 1000000000 };

        nanosleep(&ts, NULL);
    }
}

static void chatload_print_codes(const char *what, struct code_count *tab, int n)
{
    printf("%-22s", what);
    if (n == 0)
        printf(" none");
    for (int i = 0; i < n; i++)
        printf(" %s=%" PRIu64, tab[i].code, tab[i].n);
    printf("\n");
}

int main(int argc, char **argv)
{
    struct thread_stats tot;
    struct code_count codes[CHATLOAD_MAX_CODES], closes[CHATLOAD_MAX_CODES];
    int n_codes = 0, n_closes = 0, nt;
    int64_t t0, deadline;
    double chatd_cpu0 = -1, chatd_cpu1 = -1, pg_cpu0 = -1, pg_cpu1 = -1;
    double self0, self1, machine0, machine1, secs;
    long rss_before = -1, rss_after = -1;
    uint64_t lost, run_nonce;
    struct timespec rt;

    signal(SIGPIPE, SIG_IGN);
    clock_gettime(CLOCK_REALTIME, &rt);
    run_nonce = ((uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec) ^
                ((uint64_t)getpid() << 40);
    chatload_parse(argc, argv);
    lws_set_log_level(LLL_ERR, NULL);
    nt = chatload_opt.threads;

    chatload_users = chatload_xcalloc((size_t)chatload_opt.users, sizeof *chatload_users);
    chatload_threads = chatload_xcalloc((size_t)nt, sizeof *chatload_threads);
    for (int i = 0; i < chatload_opt.users; i++) {
        snprintf(chatload_users[i].name, sizeof chatload_users[i].name,
                 "%s_%d", chatload_opt.prefix, i);
        chatload_users[i].index = i;
        /* A client_msg_id the user has used before is a retry to chatd:
         * it answers with the old message and stores nothing. Users are
         * reused across runs (--prefix), so every run names its sends
         * afresh. */
        snprintf(chatload_users[i].cmid_stem, sizeof chatload_users[i].cmid_stem,
                 "%" PRIx64 ".%d", run_nonce, i);
    }
    if (chatload_opt.accounts)
        chatload_load_accounts(chatload_opt.accounts);
    for (int t = 0; t < nt; t++) {
        struct load_thread *lt = &chatload_threads[t];
        int a = (int)((int64_t)chatload_opt.users * t / nt);
        int b = (int)((int64_t)chatload_opt.users * (t + 1) / nt);

        lt->index = t;
        lt->users = &chatload_users[a];
        lt->n_users = b - a;
        lt->rate = chatload_opt.rate * (double)lt->n_users / chatload_opt.users;
        lt->body = chatload_xmalloc((size_t)chatload_opt.body_bytes + 1);
        memset(lt->body, 'x', (size_t)chatload_opt.body_bytes);
        for (int i = 0; i < lt->n_users; i++)
            lt->users[i].lt = lt;
    }

    if (chatload_opt.chatd_pid)
        rss_before = proc_rss_kib(chatload_opt.chatd_pid);
    pthread_barrier_init(&chatload_barrier, NULL, (unsigned)nt);
    t0 = chatload_now_ns();
    fprintf(stderr, "chatload: setting up %d users (prefix %s)...\n",
            chatload_opt.users, chatload_opt.prefix);
    for (int t = 0; t < nt; t++)
        if (pthread_create(&chatload_threads[t].thread, NULL, load_thread_main,
                           &chatload_threads[t]) != 0)
            chatload_die("pthread_create failed");

    /* Every socket must be ready (or have failed) before the clock starts. */
    deadline = 0;
    for (;;) {
        int ready = atomic_load(&chatload_ready);
        int failed = atomic_load(&chatload_failed);

        if (ready + failed >= chatload_opt.users)
            break;
        if (ready > 0 && deadline == 0)
            deadline = chatload_now_ns() + (int64_t)chatload_opt.connect_timeout * 1000000000;
        if (deadline && chatload_now_ns() > deadline) {
            fprintf(stderr, "chatload: only %d of %d sockets ready after %ds\n",
                    ready, chatload_opt.users, chatload_opt.connect_timeout);
            break;
        }
        usleep(10000);
    }
    fprintf(stderr, "chatload: %d sockets ready after %.1f s (%d failed)\n",
            atomic_load(&chatload_ready), (double)(chatload_now_ns() - t0) * 1e-9,
            atomic_load(&chatload_failed));
    if (atomic_load(&chatload_ready) == 0)
        chatload_die("no socket became ready");
    usleep(200000); /* let presence frames of the last connections pass */
    if (chatload_opt.chatd_pid)
        rss_after = proc_rss_kib(chatload_opt.chatd_pid);

    chatload_t_start = chatload_now_ns();
    chatload_t_measure = chatload_t_start + (int64_t)(chatload_opt.warmup * 1e9);
    chatload_t_end = chatload_t_measure + (int64_t)(chatload_opt.duration * 1e9);
    atomic_store(&chatload_phase, PHASE_WARMUP);
    chatload_sleep_until(chatload_t_measure);
    if (chatload_opt.chatd_pid)
        chatd_cpu0 = proc_cpu_s(chatload_opt.chatd_pid);
    if (chatload_opt.pg_pid)
        pg_cpu0 = proc_tree_cpu_s(chatload_opt.pg_pid);
    self0 = self_cpu_s();
    machine0 = machine_cpu_s();
    atomic_store(&chatload_phase, PHASE_MEASURE);
    chatload_sleep_until(chatload_t_end);
    atomic_store(&chatload_phase, PHASE_DRAIN);
    if (chatload_opt.chatd_pid)
        chatd_cpu1 = proc_cpu_s(chatload_opt.chatd_pid);
    if (chatload_opt.pg_pid)
        pg_cpu1 = proc_tree_cpu_s(chatload_opt.pg_pid);
    self1 = self_cpu_s();
    machine1 = machine_cpu_s();
    if (chatload_opt.mode == CHATLOAD_IDLE && chatload_opt.chatd_pid)
        rss_after = proc_rss_kib(chatload_opt.chatd_pid);

    /* Drain: wait for the acks still due, at most --drain seconds. */
    deadline = chatload_now_ns() + (int64_t)(chatload_opt.drain * 1e9);
    while (atomic_load(&chatload_inflight) > 0 && chatload_now_ns() < deadline)
        usleep(10000);
    usleep(100000); /* deliveries of the last acked messages */
    atomic_store(&chatload_phase, PHASE_STOP);
    for (int t = 0; t < nt; t++) {
        if (chatload_threads[t].ctx)
            lws_cancel_service(chatload_threads[t].ctx);
        pthread_join(chatload_threads[t].thread, NULL);
    }

    memset(&tot, 0, sizeof tot);
    for (int t = 0; t < nt; t++) {
        struct thread_stats *s = &chatload_threads[t].st;

        hist_merge(&tot.ack, &s->ack);
        hist_merge(&tot.deliver, &s->deliver);
        tot.sent += s->sent;
        tot.sent_measured += s->sent_measured;
        tot.acked += s->acked;
        tot.acked_measured += s->acked_measured;
        tot.delivered += s->delivered;
        tot.delivered_measured += s->delivered_measured;
        tot.refused += s->refused;
        tot.dup_acks += s->dup_acks;
        tot.unknown_acks += s->unknown_acks;
        tot.other_frames += s->other_frames;
        tot.conn_errors += s->conn_errors;
        tot.deferred_by_bucket += s->deferred_by_bucket;
        for (int i = 0; i < s->n_codes; i++)
            for (uint64_t k = 0; k < s->codes[i].n; k++)
                stats_count_code(codes, &n_codes, s->codes[i].code);
        for (int i = 0; i < s->n_close_codes; i++)
            for (uint64_t k = 0; k < s->close_codes[i].n; k++)
                stats_count_code(closes, &n_closes, s->close_codes[i].code);
    }
    secs = chatload_opt.duration;
    lost = tot.sent - tot.acked - tot.refused;

    printf("workload               %s, %d users, conversations of %d, %d threads, "
           "body %d B, %.0f s measured\n",
           chatload_opt.mode == CHATLOAD_OPEN ? "open loop" :
           chatload_opt.mode == CHATLOAD_CLOSED ? "closed loop" : "idle",
           chatload_opt.users, chatload_opt.conv_size, nt,
           chatload_opt.body_bytes, secs);
    if (chatload_opt.mode == CHATLOAD_OPEN)
        printf("offered                %.0f msg/s\n", chatload_opt.rate);
    if (chatload_opt.mode == CHATLOAD_CLOSED)
        printf("window                 %d per socket\n", chatload_opt.window);
    printf("acked                  %.0f msg/s (%" PRIu64 " in the window)\n",
           (double)tot.acked_measured / secs, tot.acked_measured);
    printf("deliveries             %.0f msg/s (%" PRIu64 " in the window)\n",
           (double)tot.delivered_measured / secs, tot.delivered_measured);
    printf("ack latency            p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  "
           "max %.3f ms  (%" PRIu64 " samples)\n",
           hist_quantile(&tot.ack, 0.50) / 1e6, hist_quantile(&tot.ack, 0.99) / 1e6,
           hist_quantile(&tot.ack, 0.999) / 1e6, tot.ack.max / 1e6, tot.ack.total);
    printf("delivery latency       p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  "
           "max %.3f ms  (%" PRIu64 " samples)\n",
           hist_quantile(&tot.deliver, 0.50) / 1e6,
           hist_quantile(&tot.deliver, 0.99) / 1e6,
           hist_quantile(&tot.deliver, 0.999) / 1e6, tot.deliver.max / 1e6,
           tot.deliver.total);
    printf("sent / acked / refused %" PRIu64 " / %" PRIu64 " / %" PRIu64 " (all phases)\n",
           tot.sent, tot.acked, tot.refused);
    printf("lost                   %" PRIu64 " (sent, neither acked nor refused by "
           "the end of the drain)\n", lost);
    printf("duplicate acks         %" PRIu64 "\n", tot.dup_acks);
    printf("unmatched acks/errors  %" PRIu64 "\n", tot.unknown_acks);
    chatload_print_codes("error frames", codes, n_codes);
    chatload_print_codes("closes", closes, n_closes);
    printf("connection errors      %" PRIu64 "\n", tot.conn_errors);
    printf("paced by user bucket   %" PRIu64 " times\n", tot.deferred_by_bucket);
    if (chatd_cpu0 >= 0 && chatd_cpu1 >= 0)
        printf("chatd cpu              %.1f%% of one core (%.2f s)\n",
               100.0 * (chatd_cpu1 - chatd_cpu0) / secs, chatd_cpu1 - chatd_cpu0);
    if (pg_cpu0 >= 0 && pg_cpu1 >= 0)
        printf("postgres cpu           %.1f%% of one core (%.2f s)\n",
               100.0 * (pg_cpu1 - pg_cpu0) / secs, pg_cpu1 - pg_cpu0);
    printf("chatload cpu           %.1f%% of one core (%.2f s)\n",
           100.0 * (self1 - self0) / secs, self1 - self0);
    if (machine0 >= 0 && machine1 >= 0)
        printf("machine cpu            %.1f%% of one core (all %ld cores, "
               "everything running)\n", 100.0 * (machine1 - machine0) / secs,
               sysconf(_SC_NPROCESSORS_ONLN));
    if (rss_before >= 0 && rss_after >= 0)
        printf("chatd rss              %ld KiB before the sockets, %ld KiB with "
               "them (%.2f KiB per socket)\n", rss_before, rss_after,
               (double)(rss_after - rss_before) / chatload_opt.users);

    /* One line for scripts. */
    printf("RESULT mode=%s users=%d conv=%d acked_per_s=%.0f deliveries_per_s=%.0f "
           "p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f lost=%" PRIu64
            " dup=%" PRIu64 " refused=%" PRIu64 " chatd_cpu=%.0f pg_cpu=%.0f self_cpu=%.0f"
           " machine_cpu=%.0f\n",
           chatload_opt.mode == CHATLOAD_OPEN ? "open" :
           chatload_opt.mode == CHATLOAD_CLOSED ? "closed" : "idle",
           chatload_opt.users, chatload_opt.conv_size,
           (double)tot.acked_measured / secs, (double)tot.delivered_measured / secs,
           hist_quantile(&tot.ack, 0.50) / 1e6, hist_quantile(&tot.ack, 0.99) / 1e6,
           hist_quantile(&tot.ack, 0.999) / 1e6, tot.ack.max / 1e6, lost,
           tot.dup_acks, tot.refused,
           chatd_cpu0 >= 0 ? 100.0 * (chatd_cpu1 - chatd_cpu0) / secs : -1.0,
           pg_cpu0 >= 0 ? 100.0 * (pg_cpu1 - pg_cpu0) / secs : -1.0,
           100.0 * (self1 - self0) / secs,
           machine0 >= 0 && machine1 >= 0 ? 100.0 * (machine1 - machine0) / secs : -1.0);

    for (int i = 0; i < chatload_opt.users; i++) {
        free(chatload_users[i].sends);
        free(chatload_users[i].pending);
    }
    for (int t = 0; t < nt; t++)
        free(chatload_threads[t].body);
    free(chatload_users);
    free(chatload_threads);
    return lost || tot.dup_acks ? 1 : 0;
}
