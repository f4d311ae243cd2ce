/*
 * pgingest: Postgres's own ingest ceiling on chatd's schema, the baseline
 * that chatd's durable send rate is compared with (docs/benchmarks.md).
 *
 * It writes messages into the real messages table of a database migrated
 * by `chatd migrate up` (the same table, indexes, constraints and foreign
 * keys), in batches of --batch rows per transaction, with
 * synchronous_commit=on, from one connection per client like chatd's one
 * store thread, and reports committed rows/s. Every batch assigns its seqs
 * the way chatd does: one UPDATE of conversations.last_seq per batch
 * (chatd's "bump" statement), then the rows. Three ways to write them:
 *
 *   --mode copy     BEGIN; bump; COPY messages FROM STDIN; COMMIT
 *   --mode unnest   BEGIN; bump; INSERT INTO messages SELECT FROM
 *                   unnest($1..$6); COMMIT
 *   --mode chatd    BEGIN (with chatd's SET LOCAL planner settings);
 *                   chatd's look-up (retries, membership); bump;
 *                   chatd's INSERT, which also moves each sender's read
 *                   marker; COMMIT: chatd's send transaction statement for
 *                   statement, as prepared statements with text arrays,
 *                   one round trip each, as src/store_pg.c runs them
 *
 * The SQL of the chatd mode is a copy of SP_SEND_LOOKUP, SP_SEND_BUMP and
 * SP_SEND_INSERT in src/store_pg.c; keep them the same.
 *
 * It makes its own users and conversations first (--conversations of
 * --conv-size members, direct when 2), sends round-robin over them (each
 * row from the next member of its conversation), and with --clients K
 * runs K connections on disjoint conversations. Rows committed inside the
 * measured window count; the transaction latency is BEGIN to COMMIT's
 * answer.
 *
 * Build: cc -std=gnu11 -O2 -o pgingest pgingest.c \
 *          $(pkg-config --cflags --libs libpq) -pthread -lm
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SP_TS(p) "(timestamptz 'epoch' + (" p ")::bigint * interval '1 millisecond')"
#define SP_MS(c) "(extract(epoch FROM " c ") * 1000)::bigint"
#define SP_MSG_COLS \
    "m.id, m.conversation_id, m.seq, m.sender_id, u.username, " \
    "m.client_msg_id, m.body, " SP_MS("m.created_at")

/* src/store_pg.c, SP_SEND_LOOKUP */
static const char sql_lookup[] =
    "SELECT v.ord, " SP_MSG_COLS ", c.id IS NOT NULL, su.username "
    "FROM unnest($1::bigint[], $2::bigint[], $3::text[]) "
    "WITH ORDINALITY AS v(conv, sender, cid, ord) "
    "LEFT JOIN messages m "
    "ON m.sender_id = v.sender AND m.client_msg_id = v.cid "
    "LEFT JOIN users u ON u.id = m.sender_id "
    "LEFT JOIN conversations c ON c.id = v.conv "
    "LEFT JOIN conversation_members cm "
    "ON cm.conversation_id = c.id AND cm.user_id = v.sender "
    "LEFT JOIN users su ON su.id = cm.user_id ORDER BY v.ord";
/* src/store_pg.c, SP_SEND_BUMP */
static const char sql_bump[] =
    "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], "
    "$3::bigint[]) AS v(id, n, t)), "
    "locked AS MATERIALIZED (SELECT c.id FROM conversations c "
    "WHERE c.id IN (SELECT id FROM v) ORDER BY c.id FOR UPDATE) "
    "UPDATE conversations c SET last_seq = c.last_seq + v.n, "
    "last_activity = greatest(c.last_activity, " SP_TS("v.t") ") "
    "FROM v WHERE c.id = v.id AND c.id IN (SELECT id FROM locked) "
    "RETURNING c.id, c.last_seq";
/* src/store_pg.c, SP_SEND_INSERT */
static const char sql_insert_chatd[] =
    "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], "
    "$3::bigint[], $4::text[], $5::text[], $6::bigint[]) "
    "AS v(conv, seq, sender, cid, body, t)), "
    "ins AS (INSERT INTO messages (conversation_id, seq, sender_id, "
    "client_msg_id, body, created_at) SELECT conv, seq, sender, cid, "
    "body, " SP_TS("t") " FROM v RETURNING id, conversation_id, seq), "
    "rd AS (UPDATE conversation_members cm SET read_seq = r.seq "
    "FROM (SELECT conv, sender, max(seq) AS seq FROM v "
    "GROUP BY conv, sender) r WHERE cm.conversation_id = r.conv "
    "AND cm.user_id = r.sender AND cm.read_seq < r.seq) "
    "SELECT id, conversation_id, seq FROM ins";
/* The same INSERT alone, without the read markers: the plain ingest. */
static const char sql_insert_plain[] =
    "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, "
    "body, created_at) SELECT conv, seq, sender, cid, body, " SP_TS("t") " "
    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], "
    "$5::text[], $6::bigint[]) AS v(conv, seq, sender, cid, body, t) "
    "RETURNING id";

enum mode { MODE_COPY, MODE_UNNEST, MODE_CHATD };

static struct {
    const char *url;
    enum mode mode;
    int batch;
    double duration, warmup;
    int clients;
    int conversations;
    int conv_size;
    int body_bytes;
    int pg_pid;
} opt = {
    .mode = MODE_UNNEST,
    .batch = 1000,
    .duration = 10,
    .warmup = 2,
    .clients = 1,
    .conversations = 1500,
    .conv_size = 2,
    .body_bytes = 64,
};

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("pgingest: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a growing string --------------------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("out of memory");
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_add(b, tmp, (size_t)n);
}

/* Text array literals, as chatd builds them: {1,2} and {"a","b"}. */
static void arr_int(struct buf *b, int64_t v, int first)
{
    buf_printf(b, "%s%" PRId64, first ? "{" : ",", v);
}

static void arr_text(struct buf *b, const char *s, int first)
{
    buf_add(b, first ? "{\"" : ",\"", 2);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_add(b, "\\", 1);
        buf_add(b, s, 1);
    }
    buf_add(b, "\"", 1);
}

static void arr_end(struct buf *b)
{
    if (b->len == 0)
        buf_add(b, "{", 1);
    buf_add(b, "}", 1);
}

/* ---- latency histogram (log-linear, as chatload's) -------------------- */

#define HIST_SUB_BITS 7
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS) * HIST_SUB)

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
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static int64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t want, seen = 0;

    if (h->total == 0)
        return 0;
    want = (uint64_t)ceil(q * (double)h->total);
    if (want < 1)
        want = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            int64_t top = hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* ---- the database ------------------------------------------------------- */

static PGconn *db_connect(void)
{
    PGconn *c = PQconnectdb(opt.url);
    PGresult *r;

    if (PQstatus(c) != CONNECTION_OK)
        die("cannot connect: %s", PQerrorMessage(c));
    /* chatd's store session (src/store_pg.c, STORE_PG_SESSION_SQL),
     * with a longer statement timeout for the set-up */
    r = PQexec(c, "SET synchronous_commit = on; SET lock_timeout = '2s'");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        die("%s", PQerrorMessage(c));
    PQclear(r);
    return c;
}

static PGresult *db_ok(PGconn *c, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_COPY_IN)
        die("%s: %s", what, PQerrorMessage(c));
    return r;
}

static void db_exec(PGconn *c, const char *sql, const char *what)
{
    PQclear(db_ok(c, PQexec(c, sql), what));
}

/* ---- one client --------------------------------------------------------- */

struct conv {
    int64_t id;
    int64_t members[128];
    int next_member;
};

struct client {
    int index;
    pthread_t thread;
    PGconn *db;
    struct conv *convs;
    int nconvs, next_conv;
    char nonce[24];
    uint64_t sent;           /* rows written, for client_msg_ids */
    uint64_t rows_measured, tx_measured;
    struct hist tx;          /* ns, transactions that ended in the window */
};

static _Atomic int phase;    /* 0 warm-up, 1 measure, 2 stop */
static int64_t t_measure, t_end;
static char *body_text;

/* Creates the client's users and conversations (plain SQL, as chatd's
 * conv_create would leave them: members with read_seq 0). */
static void client_setup(struct client *cl)
{
    char sql[2048];
    PGresult *r;
    int k = opt.conv_size, n = cl->nconvs;

    snprintf(cl->nonce, sizeof cl->nonce, "i%x%x%d", (unsigned)getpid(),
             (unsigned)(now_ns() & 0xffffff), cl->index);
    db_exec(cl->db, "BEGIN", "begin");
    snprintf(sql, sizeof sql,
             "INSERT INTO users (username, password_hash) "
             "SELECT '%s_' || g, '*' FROM generate_series(0, %d) g",
             cl->nonce, n * k - 1);
    db_exec(cl->db, sql, "create users");
    snprintf(sql, sizeof sql,
             "CREATE TEMP TABLE pgi_u ON COMMIT DROP AS "
             "SELECT id, (substring(username from '_([0-9]+)$'))::int AS i "
             "FROM users WHERE username LIKE '%s\\_%%'", cl->nonce);
    db_exec(cl->db, sql, "list users");
    /* conversation c holds users c*k .. c*k+k-1; created_by the first */
    snprintf(sql, sizeof sql,
             "CREATE TEMP TABLE pgi_c ON COMMIT DROP AS "
             "WITH ins AS (INSERT INTO conversations (kind, direct_key, "
             "created_by, last_activity) "
             "SELECT CASE WHEN %d = 2 THEN 'direct' ELSE 'group' END, "
             "CASE WHEN %d = 2 THEN least(a.id, b.id) || ':' || greatest(a.id, b.id) END, "
             "a.id, now() "
             "FROM generate_series(0, %d) c "
             "JOIN pgi_u a ON a.i = c * %d "
             "LEFT JOIN pgi_u b ON b.i = c * %d + 1 AND %d = 2 "
             "ORDER BY c RETURNING id, created_by) SELECT * FROM ins",
             k, k, n - 1, k, k, k);
    db_exec(cl->db, sql, "create conversations");
    snprintf(sql, sizeof sql,
             "INSERT INTO conversation_members (conversation_id, user_id) "
             "SELECT c.id, m.id FROM pgi_c c JOIN pgi_u f ON f.id = c.created_by "
             "JOIN pgi_u m ON m.i / %d = f.i / %d", k, k);
    db_exec(cl->db, sql, "add members");
    r = db_ok(cl->db, PQexec(cl->db,
              "SELECT c.id, array_agg(m.user_id ORDER BY m.user_id) FROM pgi_c c "
              "JOIN conversation_members m ON m.conversation_id = c.id "
              "GROUP BY c.id ORDER BY c.id"), "read conversations");
    if (PQntuples(r) != n)
        die("set-up: %d conversations, wanted %d", PQntuples(r), n);
    for (int i = 0; i < n; i++) {
        struct conv *c = &cl->convs[i];
        char *p = PQgetvalue(r, i, 1) + 1, *end;
        int m = 0;

        c->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        while (*p && *p != '}' && m < 128) {
            c->members[m++] = strtoll(p, &end, 10);
            p = *end == ',' ? end + 1 : end;
        }
        if (m != k)
            die("set-up: conversation %" PRId64 " has %d members", c->id, m);
    }
    PQclear(r);
    db_exec(cl->db, "COMMIT", "commit set-up");
    if (opt.mode != MODE_COPY) {
        PQclear(db_ok(cl->db, PQprepare(cl->db, "bump", sql_bump, 0, NULL), "prepare"));
        PQclear(db_ok(cl->db, PQprepare(cl->db, "lookup", sql_lookup, 0, NULL), "prepare"));
        PQclear(db_ok(cl->db, PQprepare(cl->db, "insert",
                                        opt.mode == MODE_CHATD ? sql_insert_chatd
                                                               : sql_insert_plain,
                                        0, NULL), "prepare"));
    } else {
        PQclear(db_ok(cl->db, PQprepare(cl->db, "bump", sql_bump, 0, NULL), "prepare"));
    }
}

struct row {
    int64_t conv, seq, sender;
    char cid[48];
    int ci;                  /* index in convs */
};

struct bump {
    int64_t id, n, next;
};

static int bump_cmp(const void *a, const void *b)
{
    const struct bump *x = a, *y = b;

    return (x->id > y->id) - (x->id < y->id);
}

/* One batch in one transaction. Returns the rows committed. */
static int client_batch(struct client *cl, struct row *rows, struct bump *bumps)
{
    int b = opt.batch, nb = 0, i;
    int64_t now = wall_ms();
    struct buf a[6] = { { 0 } };
    const char *v[6];
    PGresult *r;

    for (i = 0; i < b; i++) {
        struct conv *c = &cl->convs[cl->next_conv];
        struct row *w = &rows[i];

        w->ci = cl->next_conv;
        w->conv = c->id;
        w->sender = c->members[c->next_member];
        c->next_member = (c->next_member + 1) % opt.conv_size;
        cl->next_conv = (cl->next_conv + 1) % cl->nconvs;
        snprintf(w->cid, sizeof w->cid, "%s.%" PRIu64, cl->nonce, cl->sent++);
    }
    /* chatd's send transaction plans index probes only (STORE_PG_SEND_BEGIN
     * in src/store_pg.c); the chatd mode does the same */
    db_exec(cl->db, opt.mode == MODE_CHATD ?
            "BEGIN; SET LOCAL enable_seqscan = off" : "BEGIN", "begin");
    if (opt.mode == MODE_CHATD) {
        for (i = 0; i < b; i++) {
            arr_int(&a[0], rows[i].conv, i == 0);
            arr_int(&a[1], rows[i].sender, i == 0);
            arr_text(&a[2], rows[i].cid, i == 0);
        }
        for (i = 0; i < 3; i++) {
            arr_end(&a[i]);
            v[i] = a[i].p;
        }
        r = db_ok(cl->db, PQexecPrepared(cl->db, "lookup", 3, v, NULL, NULL, 0),
                  "lookup");
        if (PQntuples(r) != b)
            die("lookup: %d rows for %d sends", PQntuples(r), b);
        for (i = 0; i < b; i++)
            if (!PQgetisnull(r, i, 1) || PQgetisnull(r, i, 10))
                die("lookup: send %d is a retry or from a non-member", i);
        PQclear(r);
        for (i = 0; i < 3; i++)
            a[i].len = 0;
    }
    /* the bump: each conversation once, in id order */
    for (i = 0; i < b; i++) {
        int k;

        for (k = 0; k < nb && bumps[k].id != rows[i].conv; k++)
            ;
        if (k == nb) {
            bumps[nb].id = rows[i].conv;
            bumps[nb].n = 0;
            nb++;
        }
        bumps[k].n++;
    }
    qsort(bumps, (size_t)nb, sizeof *bumps, bump_cmp);
    for (i = 0; i < nb; i++) {
        arr_int(&a[0], bumps[i].id, i == 0);
        arr_int(&a[1], bumps[i].n, i == 0);
        arr_int(&a[2], now, i == 0);
    }
    for (i = 0; i < 3; i++) {
        arr_end(&a[i]);
        v[i] = a[i].p;
    }
    r = db_ok(cl->db, PQexecPrepared(cl->db, "bump", 3, v, NULL, NULL, 0), "bump");
    if (PQntuples(r) != nb)
        die("bump: %d rows for %d conversations", PQntuples(r), nb);
    for (i = 0; i < nb; i++) {
        struct bump key = { .id = strtoll(PQgetvalue(r, i, 0), NULL, 10) }, *hit;

        hit = bsearch(&key, bumps, (size_t)nb, sizeof *bumps, bump_cmp);
        hit->next = strtoll(PQgetvalue(r, i, 1), NULL, 10) - hit->n + 1;
    }
    PQclear(r);
    for (i = 0; i < b; i++) {
        struct bump key = { .id = rows[i].conv }, *hit;

        hit = bsearch(&key, bumps, (size_t)nb, sizeof *bumps, bump_cmp);
        rows[i].seq = hit->next++;
    }
    for (i = 0; i < 6; i++)
        a[i].len = 0;

    if (opt.mode == MODE_COPY) {
        struct buf data = { 0 };
        time_t secs = (time_t)(now / 1000);
        struct tm tm;
        char ts[64];

        gmtime_r(&secs, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
        db_ok(cl->db, PQexec(cl->db, "COPY messages (conversation_id, seq, "
                             "sender_id, client_msg_id, body, created_at) "
                             "FROM STDIN"), "copy");
        for (i = 0; i < b; i++)
            buf_printf(&data, "%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%s\t%s\t%s.%03d+00\n",
                       rows[i].conv, rows[i].seq, rows[i].sender, rows[i].cid,
                       body_text, ts, (int)(now % 1000));
        if (PQputCopyData(cl->db, data.p, (int)data.len) != 1 ||
            PQputCopyEnd(cl->db, NULL) != 1)
            die("copy: %s", PQerrorMessage(cl->db));
        free(data.p);
        r = PQgetResult(cl->db);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            die("copy: %s", PQerrorMessage(cl->db));
        PQclear(r);
        while ((r = PQgetResult(cl->db)))
            PQclear(r);
    } else {
        for (i = 0; i < b; i++) {
            arr_int(&a[0], rows[i].conv, i == 0);
            arr_int(&a[1], rows[i].seq, i == 0);
            arr_int(&a[2], rows[i].sender, i == 0);
            arr_text(&a[3], rows[i].cid, i == 0);
            arr_text(&a[4], body_text, i == 0);
            arr_int(&a[5], now, i == 0);
        }
        for (i = 0; i < 6; i++) {
            arr_end(&a[i]);
            v[i] = a[i].p;
        }
        r = db_ok(cl->db, PQexecPrepared(cl->db, "insert", 6, v, NULL, NULL, 0),
                  "insert");
        if (PQntuples(r) != b)
            die("insert: %d rows for %d sends", PQntuples(r), b);
        PQclear(r);
    }
    db_exec(cl->db, "COMMIT", "commit");
    for (i = 0; i < 6; i++)
        free(a[i].p);
    return b;
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct row *rows = calloc((size_t)opt.batch, sizeof *rows);
    struct bump *bumps = calloc((size_t)opt.batch, sizeof *bumps);

    if (!rows || !bumps)
        die("out of memory");
    while (atomic_load(&phase) < 2) {
        int64_t t0 = now_ns(), t1;
        int n = client_batch(cl, rows, bumps);

        t1 = now_ns();
        if (t1 >= t_measure && t1 < t_end) {
            cl->rows_measured += (uint64_t)n;
            cl->tx_measured++;
            hist_record(&cl->tx, t1 - t0);
        }
    }
    free(rows);
    free(bumps);
    return NULL;
}

/* ---- CPU of other processes (as chatload) ------------------------------ */

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
    p = strrchr(buf, ')');
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

/* Busy CPU seconds of the whole machine, from /proc/stat (as chatload). */
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

static void usage(FILE *f)
{
    fputs("usage: pgingest --url POSTGRES_URL [--mode copy|unnest|chatd]\n"
          "                [--batch ROWS] [--duration S] [--warmup S]\n"
          "                [--clients K] [--conversations C] [--conv-size K]\n"
          "                [--body-bytes B] [--pg-pid PID]\n"
          "\n"
          "  --url            a database migrated by `chatd migrate up`\n"
          "  --mode           copy, unnest (default) or chatd (see the source)\n"
          "  --batch          rows per transaction (1000)\n"
          "  --duration       measured seconds (10), after --warmup (2)\n"
          "  --clients        connections, on disjoint conversations (1)\n"
          "  --conversations  per client (1500)\n"
          "  --conv-size      members per conversation (2: direct)\n"
          "  --body-bytes     message body size (64)\n"
          "  --pg-pid         report the CPU of this postmaster and children\n",
          f);
}

static void sleep_until(int64_t t)
{
    int64_t now;

    while ((now = now_ns()) < t) {
        int64_t d = t - now;
        struct timespec ts = { d / 1000000000, d % 1000000000 };

        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "url", required_argument, NULL, 'u' },
        { "mode", required_argument, NULL, 'm' },
        { "batch", required_argument, NULL, 'b' },
        { "duration", required_argument, NULL, 'd' },
        { "warmup", required_argument, NULL, 'W' },
        { "clients", required_argument, NULL, 'c' },
        { "conversations", required_argument, NULL, 'C' },
        { "conv-size", required_argument, NULL, 'k' },
        { "body-bytes", required_argument, NULL, 'B' },
        { "pg-pid", required_argument, NULL, 'P' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct client *cls;
    static struct hist tot;
    uint64_t rows = 0, txs = 0;
    double pg0 = -1, pg1 = -1, self0, self1, m0, m1;
    int c;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': opt.url = optarg; break;
        case 'm':
            if (strcmp(optarg, "copy") == 0)
                opt.mode = MODE_COPY;
            else if (strcmp(optarg, "unnest") == 0)
                opt.mode = MODE_UNNEST;
            else if (strcmp(optarg, "chatd") == 0)
                opt.mode = MODE_CHATD;
            else
                die("--mode must be copy, unnest or chatd");
            break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'C': opt.conversations = atoi(optarg); break;
        case 'k': opt.conv_size = atoi(optarg); break;
        case 'B': opt.body_bytes = atoi(optarg); break;
        case 'P': opt.pg_pid = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!opt.url || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (opt.batch < 1 || opt.clients < 1 || opt.conversations < 1 ||
        opt.conv_size < 2 || opt.conv_size > 128 || opt.body_bytes < 1 ||
        opt.body_bytes > 16384 || opt.duration <= 0 || opt.warmup < 0)
        die("bad arguments (see --help)");
    body_text = malloc((size_t)opt.body_bytes + 1);
    memset(body_text, 'x', (size_t)opt.body_bytes);
    body_text[opt.body_bytes] = '\0';

    cls = calloc((size_t)opt.clients, sizeof *cls);
    for (int i = 0; i < opt.clients; i++) {
        cls[i].index = i;
        cls[i].nconvs = opt.conversations;
        cls[i].convs = calloc((size_t)opt.conversations, sizeof *cls[i].convs);
        cls[i].db = db_connect();
        client_setup(&cls[i]);
    }
    fprintf(stderr, "pgingest: %d client(s) ready, %d conversations of %d each\n",
            opt.clients, opt.conversations, opt.conv_size);
    t_measure = now_ns() + (int64_t)(opt.warmup * 1e9);
    t_end = t_measure + (int64_t)(opt.duration * 1e9);
    for (int i = 0; i < opt.clients; i++)
        if (pthread_create(&cls[i].thread, NULL, client_main, &cls[i]) != 0)
            die("pthread_create failed");
    sleep_until(t_measure);
    if (opt.pg_pid)
        pg0 = proc_tree_cpu_s(opt.pg_pid);
    self0 = self_cpu_s();
    m0 = machine_cpu_s();
    sleep_until(t_end);
    if (opt.pg_pid)
        pg1 = proc_tree_cpu_s(opt.pg_pid);
    self1 = self_cpu_s();
    m1 = machine_cpu_s();
    atomic_store(&phase, 2);
    for (int i = 0; i < opt.clients; i++) {
        pthread_join(cls[i].thread, NULL);
        rows += cls[i].rows_measured;
        txs += cls[i].tx_measured;
        for (int b = 0; b < HIST_BUCKETS; b++)
            tot.counts[b] += cls[i].tx.counts[b];
        tot.total += cls[i].tx.total;
        if (cls[i].tx.max > tot.max)
            tot.max = cls[i].tx.max;
        PQfinish(cls[i].db);
        free(cls[i].convs);
    }
    printf("mode %s, batch %d, %d client(s), %d conversations of %d per client, "
           "body %d B, %.0f s measured\n",
           opt.mode == MODE_COPY ? "copy" : opt.mode == MODE_UNNEST ? "unnest" : "chatd",
           opt.batch, opt.clients, opt.conversations, opt.conv_size,
           opt.body_bytes, opt.duration);
    printf("rows committed   %.0f rows/s (%" PRIu64 " in %" PRIu64 " transactions)\n",
           (double)rows / opt.duration, rows, txs);
    printf("transaction      p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
           hist_quantile(&tot, 0.5) / 1e6, hist_quantile(&tot, 0.99) / 1e6,
           tot.max / 1e6);
    if (pg0 >= 0 && pg1 >= 0)
        printf("postgres cpu     %.1f%% of one core\n", 100.0 * (pg1 - pg0) / opt.duration);
    printf("pgingest cpu     %.1f%% of one core\n", 100.0 * (self1 - self0) / opt.duration);
    printf("RESULT mode=%s batch=%d clients=%d rows_per_s=%.0f tx_per_s=%.1f "
           "tx_p50_ms=%.3f tx_p99_ms=%.3f pg_cpu=%.0f self_cpu=%.0f machine_cpu=%.0f\n",
           opt.mode == MODE_COPY ? "copy" : opt.mode == MODE_UNNEST ? "unnest" : "chatd",
           opt.batch, opt.clients, (double)rows / opt.duration,
           (double)txs / opt.duration, hist_quantile(&tot, 0.5) / 1e6,
           hist_quantile(&tot, 0.99) / 1e6,
           pg0 >= 0 ? 100.0 * (pg1 - pg0) / opt.duration : -1.0,
           100.0 * (self1 - self0) / opt.duration,
           m0 >= 0 && m1 >= 0 ? 100.0 * (m1 - m0) / opt.duration : -1.0);
    free(cls);
    free(body_text);
    return 0;
}
