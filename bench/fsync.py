#!/usr/bin/python3
"""How long the disk takes to make a small write durable: the floor under
every durable ack. Writes SIZE bytes and calls fdatasync(), COUNT times,
in a file beside the database (--dir), and prints the latency percentiles,
for writes that overwrite a reused region (as SQLite's WAL and Postgres's
WAL segments mostly do) and for writes that append (the file grows, so
the file system's journal commits too).

    bench/fsync.py [--dir DIR] [--count N] [--size BYTES] [--gap-us US]

--gap-us paces the writes (default 0: back to back), as a server at a
given commit rate would. Stops by itself; removes its file.
"""
import argparse
import os
import tempfile
import time


def percentile(sorted_ms, q):
    i = min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms))) - 1))
    return sorted_ms[i]


def run(path, mode, count, size, gap_s):
    buf = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if mode == "overwrite":
            region = 256 * size
            os.pwrite(fd, b"\0" * region, 0)
            os.fsync(fd)
        lat = []
        for i in range(count):
            off = (i % 256) * size if mode == "overwrite" else i * size
            os.pwrite(fd, buf, off)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1000.0)
            if gap_s:
                time.sleep(gap_s)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    print("RESULT mode=%s count=%d size=%d p50_ms=%.3f p90_ms=%.3f "
          "p99_ms=%.3f p999_ms=%.3f max_ms=%.3f per_s=%.0f" % (
              mode, count, size, percentile(lat, 0.5), percentile(lat, 0.9),
              percentile(lat, 0.99), percentile(lat, 0.999), lat[-1],
              1000.0 / (sum(lat) / len(lat))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--gap-us", type=int, default=0)
    a = ap.parse_args()
    path = os.path.join(a.dir, "fsync-probe.%d" % os.getpid())
    for mode in ("overwrite", "append"):
        run(path, mode, a.count, a.size, a.gap_us / 1e6)


if __name__ == "__main__":
    main()
