"""A small scripted chat workload, so that the dashboards have data.

    workload.py CHATD_URL REDIS_URL

Through chatd's HTTP API, as any client: registers six users, logs them
in (and fails one login), creates a direct and a group conversation,
sends messages, pages history, moves read markers, asks for a route that
does not exist and logs one user out. Then a few Redis lookups that hit
and miss, so the Redis exporter's keyspace counters move. Exits non-zero,
saying why, if chatd answers anything but what the protocol promises.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request


def request(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, None


def expect(what, got, *statuses):
    if got[0] not in statuses:
        sys.exit("workload: %s answered %d, expected %s: %r"
                 % (what, got[0], statuses, got[1]))
    return got[1]


def main():
    base, redis_url = sys.argv[1], sys.argv[2]
    stem = "mon" + os.urandom(3).hex()
    names = ["%s_%d" % (stem, i) for i in range(6)]
    password = "monitoring-workload"
    tokens = {}
    for n in names:
        expect("register " + n, request(base, "POST", "/api/register",
                                        {"username": n, "password": password}), 201)
    for n in names:
        body = expect("login " + n, request(base, "POST", "/api/login",
                                            {"username": n, "password": password}), 200)
        tokens[n] = body["token"]
    expect("wrong password", request(base, "POST", "/api/login",
                                     {"username": names[0], "password": "not-the-password"}), 401)
    expect("unknown route", request(base, "GET", "/api/no-such-route", token=tokens[names[0]]), 404)

    direct = expect("direct conversation", request(
        base, "POST", "/api/conversations", {"members": [names[1]]}, tokens[names[0]]), 201)
    group = expect("group conversation", request(
        base, "POST", "/api/conversations",
        {"members": names[1:], "title": "monitoring"}, tokens[names[0]]), 201)
    convs = [(direct["conversation_id"], names[:2]), (group["conversation_id"], names)]

    sent = 0
    for cid, members in convs:
        for i in range(20):
            sender = members[i % len(members)]
            expect("send", request(base, "POST", "/api/conversations/%d/messages" % cid,
                                   {"body": "message %d" % i,
                                    "client_msg_id": "%s-%d-%d" % (stem, cid, i)},
                                   tokens[sender]), 201)
            sent += 1
        for m in members:
            expect("history", request(base, "GET", "/api/conversations/%d/messages?limit=10" % cid,
                                      token=tokens[m]), 200)
            expect("read", request(base, "POST", "/api/conversations/%d/read" % cid,
                                   {"seq": 10}, tokens[m]), 204)
        expect("list", request(base, "GET", "/api/conversations", token=tokens[members[0]]), 200)
    expect("logout", request(base, "POST", "/api/logout", token=tokens[names[-1]]), 204)

    # Redis lookups: 30 hits and 10 misses.
    script = "SET monitoring:key v\n" + "GET monitoring:key\n" * 30 \
        + "GET monitoring:absent\n" * 10
    subprocess.run(["redis-cli", "-u", redis_url], input=script.encode(),
                   stdout=subprocess.DEVNULL, check=True)
    print("workload: %d users, %d messages" % (len(names), sent), file=sys.stderr)


if __name__ == "__main__":
    main()
