/*
 * util.h - small helpers every module uses: allocation that aborts on
 * failure (so call sites carry no NULL checks, as tmux's xmalloc.c), wall
 * and monotonic clocks, RFC 3339 time formatting and a growable string
 * buffer.
 *
 * Thread safety: every function here may be called from any thread.
 */
#ifndef CHATD_UTIL_H
#define CHATD_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t util_now_ms(void);
/* Monotonic nanoseconds, for durations only. */
int64_t util_mono_ns(void);

/* Formats ms since the epoch as "2026-11-24T12:00:00.000Z" into out
 * (at least UTIL_TIME_LEN bytes). Returns out. */
#define UTIL_TIME_LEN 32
char *util_format_time(int64_t ms, char *out);

/* Growable NUL-terminated byte buffer. A zeroed struct is an empty buffer;
 * util_buf_free() releases it and leaves it empty again. */
struct util_buf {
    char *data;
    size_t len;
    size_t cap;
};

void util_buf_append(struct util_buf *b, const void *p, size_t n);
void util_buf_puts(struct util_buf *b, const char *s);
void util_buf_printf(struct util_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void util_buf_vprintf(struct util_buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included, escaping quotes,
 * backslashes and every control character (so the output is one line). */
void util_buf_json_str(struct util_buf *b, const char *s);
void util_buf_json_strn(struct util_buf *b, const char *s, size_t n);
/* Hands the data to the caller (who frees it) and empties the buffer. */
char *util_buf_steal(struct util_buf *b);
void util_buf_free(struct util_buf *b);

/* Constant-time comparison of two n-byte areas: 0 when equal. */
int util_ct_memcmp(const void *a, const void *b, size_t n);

/* Lower-hex encoding of n bytes into out (2n+1 bytes). */
void util_hex(const uint8_t *in, size_t n, char *out);

#endif
