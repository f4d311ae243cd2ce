/*
 * log.h - structured logs: one JSON object per line on stdout with
 * timestamp, level, service, event_type, trace_id and the event's fields,
 * as the monitoring guide's log format.
 *
 * Lines are formatted by the calling thread and handed to a writer thread
 * through a bounded queue, so no caller (the service thread above all)
 * waits on stdout; when the queue is full the line is dropped and counted.
 * Every string value is escaped so one event stays one line. Callers never
 * pass passwords, tokens or cookies.
 *
 * All functions may be called from any thread after log_init().
 */
#ifndef CHATD_LOG_H
#define CHATD_LOG_H

#include <stdint.h>
#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Starts the writer thread writing to out (stdout when NULL). */
void log_init(FILE *out, enum log_level min_level);
/* Writes what is queued and stops the writer. */
void log_shutdown(void);
void log_set_level(enum log_level level);
int log_enabled(enum log_level level);
/* "debug", "info", "warn", "error" (also "warning"); -1 if none. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);
/* Lines dropped because the queue was full. */
uint64_t log_dropped(void);

/* Field list terminator and typed fields for log_event(). */
enum log_field_type { LF_END = 0, LF_STR, LF_INT, LF_DBL, LF_BOOL };
#define LOG_STR(k, v) LF_STR, (const char *)(k), (const char *)(v)
#define LOG_INT(k, v) LF_INT, (const char *)(k), (int64_t)(v)
#define LOG_DBL(k, v) LF_DBL, (const char *)(k), (double)(v)
#define LOG_BOOL(k, v) LF_BOOL, (const char *)(k), (int)(v)

/* Logs one event: log_event(LOG_INFO, "user_login", trace_id,
 *     LOG_INT("user_id", id), LOG_STR("username", name), LF_END);
 * trace_id may be NULL. A NULL LF_STR value is written as null. */
void log_event(enum log_level level, const char *event_type,
               const char *trace_id, ...);

/* Formats one event line (without the newline) into a malloc'd string;
 * used by log_event and by the tests. ts_ms is the timestamp. */
char *log_format(int64_t ts_ms, enum log_level level, const char *event_type,
                 const char *trace_id, ...);

#endif
