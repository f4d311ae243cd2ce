/*
 * log.c - structured JSON logs, one object per line.
 *
 * The calling thread formats the whole line (timestamp, level, service,
 * event_type, trace_id, then the event's fields, every string escaped) and
 * puts it on a bounded queue; one writer thread takes everything queued at
 * once, writes it and flushes. A caller holds the queue's mutex only long
 * enough to store a pointer, so the service thread never waits on stdout;
 * when the queue is full the line is dropped and counted instead.
 *
 * Before log_init() and after log_shutdown() there is no writer, and
 * log_event() writes the line to stderr itself, so errors met while
 * starting or stopping are not lost.
 *
 * Threads: log_event() and log_format() run on any thread; the writer
 * thread runs log_writer_main(); log_init() and log_shutdown() run on the
 * main thread.
 */
#include "log.h"
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

#define LOG_SERVICE "chatd"
/* Lines held for the writer; past this a burst is dropped, not buffered
 * without limit. */
#define LOG_QUEUE_LINES 8192

static const char *const log_level_names[] = {
    [LOG_DEBUG] = "debug",
    [LOG_INFO] = "info",
    [LOG_WARN] = "warn",
    [LOG_ERROR] = "error",
};

/* Read on every log_event(), so a disabled level costs one atomic load. */
static atomic_int log_min_level = LOG_INFO;
static atomic_uint_fast64_t log_dropped_lines;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_cond = PTHREAD_COND_INITIALIZER;
static char **log_queue;        /* ring of lines with '\n'; log_lock */
static size_t log_head;         /* oldest line; log_lock */
static size_t log_count;        /* lines queued; log_lock */
static int log_running;         /* writer accepts lines; log_lock */
static FILE *log_out;           /* set before the writer starts */
static pthread_t log_writer;

static void log_vformat(struct util_buf *b, int64_t ts_ms,
                        enum log_level level, const char *event_type,
                        const char *trace_id, va_list ap)
{
    char ts[UTIL_TIME_LEN];

    util_buf_puts(b, "{\"timestamp\":");
    util_buf_json_str(b, util_format_time(ts_ms, ts));
    util_buf_puts(b, ",\"level\":");
    util_buf_json_str(b, log_level_name(level));
    util_buf_puts(b, ",\"service\":\"" LOG_SERVICE "\",\"event_type\":");
    util_buf_json_str(b, event_type);
    util_buf_puts(b, ",\"trace_id\":");
    util_buf_json_str(b, trace_id);

    for (;;) {
        int type = va_arg(ap, int);
        const char *key;

        /* An unknown type means a malformed list: stop rather than read
         * arguments of a type we cannot know. */
        if (type <= LF_END || type > LF_BOOL)
            break;
        key = va_arg(ap, const char *);
        util_buf_puts(b, ",");
        util_buf_json_str(b, key != NULL ? key : "");
        util_buf_puts(b, ":");
        switch (type) {
        case LF_STR:
            util_buf_json_str(b, va_arg(ap, const char *));
            break;
        case LF_INT:
            util_buf_printf(b, "%lld", (long long)va_arg(ap, int64_t));
            break;
        case LF_DBL: {
            double d = va_arg(ap, double);
            char num[40];

            /* JSON has no NaN or infinity. Otherwise use the shortest of
             * two precisions that reads back as the same value. */
            if (!isfinite(d)) {
                util_buf_puts(b, "null");
                break;
            }
            snprintf(num, sizeof num, "%.15g", d);
            if (strtod(num, NULL) != d)
                snprintf(num, sizeof num, "%.17g", d);
            util_buf_puts(b, num);
            break;
        }
        case LF_BOOL:
            util_buf_puts(b, va_arg(ap, int) ? "true" : "false");
            break;
        }
    }
    util_buf_puts(b, "}");
}

char *log_format(int64_t ts_ms, enum log_level level, const char *event_type,
                 const char *trace_id, ...)
{
    struct util_buf b = { 0 };
    va_list ap;

    va_start(ap, trace_id);
    log_vformat(&b, ts_ms, level, event_type, trace_id, ap);
    va_end(ap);
    return util_buf_steal(&b);
}

void log_event(enum log_level level, const char *event_type,
               const char *trace_id, ...)
{
    struct util_buf b = { 0 };
    va_list ap;
    char *line;

    if (!log_enabled(level))
        return;
    va_start(ap, trace_id);
    log_vformat(&b, util_now_ms(), level, event_type, trace_id, ap);
    va_end(ap);
    util_buf_append(&b, "\n", 1);

    pthread_mutex_lock(&log_lock);
    if (!log_running) {
        pthread_mutex_unlock(&log_lock);
        /* One fwrite, so the line is not interleaved with other writers. */
        fwrite(b.data, 1, b.len, stderr);
        util_buf_free(&b);
        return;
    }
    if (log_count == LOG_QUEUE_LINES) {
        pthread_mutex_unlock(&log_lock);
        metrics_counter_inc(metrics_log_lines_dropped);
        atomic_fetch_add_explicit(&log_dropped_lines, 1,
                                  memory_order_relaxed);
        util_buf_free(&b);
        return;
    }
    line = util_buf_steal(&b);
    log_queue[(log_head + log_count) % LOG_QUEUE_LINES] = line;
    log_count++;
    pthread_cond_signal(&log_cond);
    pthread_mutex_unlock(&log_lock);
}

/*
 * The writer thread: takes every queued line in one go, then writes them
 * without the lock so callers keep queueing meanwhile. Exits once stopped
 * and the queue is empty, so nothing queued before log_shutdown() is lost.
 */
static void *log_writer_main(void *arg)
{
    char **batch = xcalloc(LOG_QUEUE_LINES, sizeof *batch);
    size_t n, i;

    (void)arg;
    for (;;) {
        pthread_mutex_lock(&log_lock);
        while (log_count == 0 && log_running)
            pthread_cond_wait(&log_cond, &log_lock);
        if (log_count == 0 && !log_running) {
            pthread_mutex_unlock(&log_lock);
            break;
        }
        for (n = 0; n < log_count; n++)
            batch[n] = log_queue[(log_head + n) % LOG_QUEUE_LINES];
        log_head = (log_head + n) % LOG_QUEUE_LINES;
        log_count = 0;
        pthread_mutex_unlock(&log_lock);

        for (i = 0; i < n; i++) {
            fputs(batch[i], log_out);
            free(batch[i]);
        }
        fflush(log_out);
    }
    free(batch);
    return NULL;
}

void log_init(FILE *out, enum log_level min_level)
{
    log_set_level(min_level);
    pthread_mutex_lock(&log_lock);
    if (log_running) {
        pthread_mutex_unlock(&log_lock);
        return;
    }
    log_out = out != NULL ? out : stdout;
    log_queue = xcalloc(LOG_QUEUE_LINES, sizeof *log_queue);
    log_head = log_count = 0;
    log_running = 1;
    if (pthread_create(&log_writer, NULL, log_writer_main, NULL) != 0) {
        /* Without a writer, lines keep going to stderr synchronously. */
        log_running = 0;
        free(log_queue);
        log_queue = NULL;
        pthread_mutex_unlock(&log_lock);
        fputs("chatd: cannot start the log writer thread; "
              "logging to stderr\n", stderr);
        return;
    }
    pthread_mutex_unlock(&log_lock);
}

void log_shutdown(void)
{
    pthread_mutex_lock(&log_lock);
    if (!log_running) {
        pthread_mutex_unlock(&log_lock);
        return;
    }
    log_running = 0;
    pthread_cond_signal(&log_cond);
    pthread_mutex_unlock(&log_lock);

    pthread_join(log_writer, NULL);
    /* The writer emptied the queue before it returned. */
    pthread_mutex_lock(&log_lock);
    free(log_queue);
    log_queue = NULL;
    fflush(log_out);
    pthread_mutex_unlock(&log_lock);
}

void log_set_level(enum log_level level)
{
    if ((int)level < LOG_DEBUG)
        level = LOG_DEBUG;
    if ((int)level > LOG_ERROR)
        level = LOG_ERROR;
    atomic_store_explicit(&log_min_level, (int)level, memory_order_relaxed);
}

int log_enabled(enum log_level level)
{
    return (int)level >=
           atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

int log_level_parse(const char *s)
{
    int i;

    if (s == NULL)
        return -1;
    for (i = LOG_DEBUG; i <= LOG_ERROR; i++)
        if (strcasecmp(s, log_level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_WARN;
    return -1;
}

const char *log_level_name(enum log_level level)
{
    if ((int)level < LOG_DEBUG || (int)level > LOG_ERROR)
        return "unknown";
    return log_level_names[level];
}

uint64_t log_dropped(void)
{
    return (uint64_t)atomic_load_explicit(&log_dropped_lines,
                                          memory_order_relaxed);
}
