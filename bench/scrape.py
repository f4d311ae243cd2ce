#!/usr/bin/env python3
"""Scrapes chatd's /metrics like Prometheus would, many times, and reports
the latency percentiles of the scrapes and what the collector says of its
own queries (chat_collector_query_duration_seconds).

    bench/scrape.py --url http://127.0.0.1:8080 [--scrapes N] [--rate R]

Each scrape is a new TCP connection, a GET and the whole body read, timed
from connect to the last byte. Scrapes are paced at R per second (open
loop: a slow scrape does not delay the schedule's clock, and the latency
is measured from the scheduled time, so it includes the client's own
late wake-ups); `svc` is the same scrape timed from the connect call to
the last byte, what the server and the network take; `server` is chatd's
own measure of its /metrics answers (http_request_duration_seconds for
the route, read from the last scrape): the smallest bucket bound that
holds 99% of them. The collector's figures are taken
from every scrape; each query's last duration changes once per collector
run, so the distinct values seen are its runs, and a cycle is the sum of
the durations of one run of every query.
"""

import argparse
import http.client
import math
import re
import sys
import time
from urllib.parse import urlparse

DUR = re.compile(r'^chat_collector_query_duration_seconds\{query="([^"]+)"\} (\S+)$', re.M)
SRV = re.compile(r'^http_request_duration_seconds_bucket\{method="GET",'
                 r'route="/metrics",le="([^"]+)"\} (\S+)$', re.M)
ERR = re.compile(r'^chat_collector_query_errors_total\{query="([^"]+)"\} (\S+)$', re.M)


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[max(0, math.ceil(q * len(sorted_vals)) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--scrapes", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    u = urlparse(args.url)
    lat = []
    svc = []
    size = 0
    runs = {}      # query -> list of distinct successive durations
    errors = {}
    t0 = time.monotonic()
    for i in range(args.scrapes):
        sched = t0 + i / args.rate
        now = time.monotonic()
        if sched > now:
            time.sleep(sched - now)
        start = time.monotonic()
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        end = time.monotonic()
        c.close()
        if r.status != 200:
            sys.exit("scrape.py: /metrics answered %d" % r.status)
        lat.append((end - max(sched, now)) * 1000.0)
        svc.append((end - start) * 1000.0)
        size = len(body)
        text = body.decode()
        for q, v in DUR.findall(text):
            seen = runs.setdefault(q, [])
            if not seen or seen[-1] != v:
                seen.append(v)
        for q, v in ERR.findall(text):
            errors[q] = float(v)
    lat.sort()
    svc.sort()
    buckets = [(float(le), float(n)) for le, n in SRV.findall(text)]
    total = max((n for _, n in buckets), default=0.0)
    srv_p99 = min((le for le, n in buckets if n >= 0.99 * total),
                  default=float("nan")) * 1000.0
    print("scrapes      %d at %.0f/s, %d bytes each" % (len(lat), args.rate, size))
    print("latency ms   p50 %.2f  p90 %.2f  p99 %.2f  max %.2f" %
          (pct(lat, .5), pct(lat, .9), pct(lat, .99), lat[-1]))
    print("svc ms       p50 %.2f  p90 %.2f  p99 %.2f  max %.2f" %
          (pct(svc, .5), pct(svc, .9), pct(svc, .99), svc[-1]))
    print("server ms    p99 <= %g (chatd's histogram, %d answers)" %
          (srv_p99, total))
    print("collector query durations (ms), one value per run seen:")
    cycle_max = 0.0
    ncycles = min((len(v) for v in runs.values()), default=0)
    for q in sorted(runs):
        vals = [float(v) * 1000 for v in runs[q] if float(v) > 0]
        print("  %-32s %s  (errors %d)" % (q, " ".join("%.1f" % v for v in vals),
                                          errors.get(q, 0)))
    # A cycle: the k-th run of every query (the first value of a query may
    # be 0 before its first run; those are dropped above).
    per_query = {q: [float(v) * 1000 for v in vals if float(v) > 0]
                 for q, vals in runs.items()}
    ncycles = min((len(v) for v in per_query.values()), default=0)
    cycles = [sum(v[k] for v in per_query.values()) for k in range(ncycles)]
    if cycles:
        cycle_max = max(cycles)
    print("cycles ms    %s" % " ".join("%.1f" % c for c in cycles))
    slowest = max(per_query, key=lambda q: max(per_query[q] or [0])) if per_query else "-"
    print("RESULT scrapes=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f "
          "svc_p50_ms=%.2f svc_p99_ms=%.2f server_p99_le_ms=%g bytes=%d "
          "cycles=%d cycle_ms_max=%.1f cycle_ms_median=%.1f slowest_query=%s "
          "slowest_ms=%.1f errors=%d" %
          (len(lat), pct(lat, .5), pct(lat, .99), lat[-1], pct(svc, .5),
           pct(svc, .99), srv_p99, size, len(cycles),
           cycle_max, pct(sorted(cycles), .5) if cycles else float("nan"), slowest,
           max(per_query.get(slowest, [0]) or [0]), sum(errors.values())))


if __name__ == "__main__":
    main()
