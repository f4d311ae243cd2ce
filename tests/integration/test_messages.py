"""Messages over HTTP: sending (seq, idempotency, limits), history paging
and read markers."""

import pytest

from chatd_client import RFC3339_MS, assert_error, is_int

MESSAGE_FIELDS = {"message_id", "conversation_id", "seq", "sender_id",
                  "sender", "body", "client_msg_id", "created_at"}


def check_message(m, conversation_id=None, sender=None):
    assert set(m) == MESSAGE_FIELDS, m
    assert is_int(m["message_id"]) and m["message_id"] > 0
    assert is_int(m["conversation_id"])
    assert is_int(m["seq"]) and m["seq"] >= 1
    assert is_int(m["sender_id"])
    assert isinstance(m["sender"], str)
    assert isinstance(m["body"], str)
    assert isinstance(m["client_msg_id"], str)
    assert RFC3339_MS.match(m["created_at"]), m["created_at"]
    if conversation_id is not None:
        assert m["conversation_id"] == conversation_id
    if sender is not None:
        assert m["sender_id"] == sender.user_id
        assert m["sender"] == sender.username


def pair(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    r = client.conversation(alice, bob)
    assert r.status == 201, r
    return alice, bob, r.json["conversation_id"]


def seqs(r):
    assert r.status == 200, r
    return [m["seq"] for m in r.json["messages"]]


# -- send --------------------------------------------------------------------

def test_send_returns_message(client):
    alice, bob, cid = pair(client)
    r = client.send(alice, cid, "hello \u00e9\U0001F600", "first-msg")
    assert r.status == 201, r
    assert r.header("Content-Type", "").startswith("application/json")
    m = r.json
    check_message(m, cid, alice)
    assert m["seq"] == 1
    assert m["body"] == "hello \u00e9\U0001F600"
    assert m["client_msg_id"] == "first-msg"
    # the other member reads the same message in history
    h = client.history(bob, cid)
    assert h.status == 200, h
    assert h.json == {"messages": [m], "has_more": False}


def test_seq_is_gapless_per_conversation(client):
    alice, bob, cid = pair(client)
    carol = client.new_user("carol")
    other = client.conversation(alice, carol).json["conversation_id"]
    got = []
    for i in range(6):
        sender = alice if i % 2 else bob
        r = client.send(sender, cid, "m%d" % i)
        assert r.status == 201, r
        got.append(r.json["seq"])
        if i == 2:
            # another conversation has its own numbering
            r2 = client.send(carol, other, "elsewhere")
            assert r2.json["seq"] == 1
    assert got == [1, 2, 3, 4, 5, 6]
    ids = [m["message_id"] for m in client.history(alice, cid).json["messages"]]
    assert len(set(ids)) == 6


def test_same_client_msg_id_returns_same_message(client):
    alice, bob, cid = pair(client)
    carol = client.new_user("carol")
    other = client.conversation(alice, carol).json["conversation_id"]
    first = client.send(alice, cid, "original", "retry-me")
    assert first.status == 201, first
    again = client.send(alice, cid, "original", "retry-me")
    assert again.status == 200, again
    assert again.json == first.json
    # another body: still the first message
    changed = client.send(alice, cid, "changed body", "retry-me")
    assert changed.status == 200, changed
    assert changed.json == first.json
    # another conversation: still the first message, in its first place
    moved = client.send(alice, other, "elsewhere", "retry-me")
    assert moved.status == 200, moved
    assert moved.json == first.json
    # stored once
    assert client.history(alice, cid).json["messages"] == [first.json]
    assert client.history(alice, other).json["messages"] == []
    assert client.conversation_entry(carol, other)["last_message"] is None
    # the next message takes the next seq: no gap from the retries
    assert client.send(alice, cid, "next").json["seq"] == 2


def test_client_msg_id_is_per_sender(client):
    alice, bob, cid = pair(client)
    a = client.send(alice, cid, "from alice", "shared-id")
    b = client.send(bob, cid, "from bob", "shared-id")
    assert a.status == 201 and b.status == 201, (a, b)
    assert a.json["message_id"] != b.json["message_id"]
    assert b.json["seq"] == 2


def test_body_limits(client):
    alice, bob, cid = pair(client)
    assert_error(client.send(alice, cid, ""), 400, "empty_message")
    r = client.send(alice, cid, "x" * 16384)
    assert r.status == 201, r
    assert r.json["body"] == "x" * 16384
    assert_error(client.send(alice, cid, "x" * 16385),
                 413, "message_too_large")
    # counted in bytes: 8192 two-byte characters fit, one more byte does not
    r = client.send(alice, cid, "\u00e9" * 8192)
    assert r.status == 201, r
    assert_error(client.send(alice, cid, "\u00e9" * 8192 + "x"),
                 413, "message_too_large")
    assert_error(client.send(alice, cid, "\U0001F600" * 4097),
                 413, "message_too_large")
    # only the two accepted ones were stored
    assert seqs(client.history(alice, cid)) == [1, 2]


def test_body_wrong_type_or_missing(client):
    alice, bob, cid = pair(client)
    path = "/api/conversations/%d/messages" % cid
    for body in ({"client_msg_id": "a1"},
                 {"body": 5, "client_msg_id": "a2"},
                 {"body": None, "client_msg_id": "a3"},
                 {"body": ["x"], "client_msg_id": "a4"}):
        r = client.post(path, body, token=alice.token)
        assert r.status == 400, (body, r)
        assert r.error_code() in ("invalid_field", "empty_message"), r
    assert seqs(client.history(alice, cid)) == []


def test_client_msg_id_limits(client):
    alice, bob, cid = pair(client)
    r = client.send(alice, cid, "ok", "k" * 64)
    assert r.status == 201, r
    assert r.json["client_msg_id"] == "k" * 64
    assert_error(client.send(alice, cid, "no", "k" * 65),
                 400, "invalid_client_msg_id")
    assert_error(client.send(alice, cid, "no", ""),
                 400, "invalid_client_msg_id")
    path = "/api/conversations/%d/messages" % cid
    for body in ({"body": "no"}, {"body": "no", "client_msg_id": 7},
                 {"body": "no", "client_msg_id": None}):
        assert_error(client.post(path, body, token=alice.token),
                     400, "invalid_client_msg_id")
    assert seqs(client.history(alice, cid)) == [1]


def test_non_member_cannot_send(client):
    alice, bob, cid = pair(client)
    eve = client.new_user("eve")
    r = client.send(eve, cid, "let me in", "eve-1")
    assert_error(r, 403, "not_a_member")
    assert seqs(client.history(alice, cid)) == []
    assert client.conversation_entry(alice, cid)["last_message"] is None
    assert client.conversation_entry(alice, cid)["unread"] == 0
    # the rejected client_msg_id was not taken
    other = client.conversation(eve, alice).json["conversation_id"]
    r = client.send(eve, other, "hi", "eve-1")
    assert r.status == 201, r
    assert r.json["conversation_id"] == other


def test_send_to_unknown_conversation(client):
    alice, bob, cid = pair(client)
    assert_error(client.send(alice, 999999999, "x"), 404, "not_found")
    for bad in ("0", "-1", "abc", "1.5"):
        r = client.post("/api/conversations/%s/messages" % bad,
                        {"body": "x", "client_msg_id": "z"},
                        token=alice.token)
        assert_error(r, 404, "not_found")


def test_send_needs_auth(client):
    alice, bob, cid = pair(client)
    r = client.post("/api/conversations/%d/messages" % cid,
                    {"body": "x", "client_msg_id": "noauth"})
    assert_error(r, 401, "unauthorized")
    assert seqs(client.history(alice, cid)) == []


# -- history -----------------------------------------------------------------

@pytest.fixture(scope="module")
def long_conversation(client):
    """A conversation with 120 messages, bodies "m1".."m120"."""
    alice, bob, cid = pair(client)
    for i in range(1, 121):
        sender = alice if i % 3 else bob
        r = client.send(sender, cid, "m%d" % i, "h-%d" % i)
        assert r.status == 201, r
        assert r.json["seq"] == i
    return alice, bob, cid


def test_history_default_is_newest_fifty(client, long_conversation):
    alice, bob, cid = long_conversation
    r = client.history(alice, cid)
    assert r.status == 200, r
    doc = r.json
    assert set(doc) == {"messages", "has_more"}
    assert doc["has_more"] is True
    assert [m["seq"] for m in doc["messages"]] == list(range(71, 121))
    for m in doc["messages"]:
        check_message(m, cid)
        assert m["body"] == "m%d" % m["seq"]
        assert m["client_msg_id"] == "h-%d" % m["seq"]
    # the other member sees the same page
    assert client.history(bob, cid).json == doc


def test_history_limit_bounds(client, long_conversation):
    alice, bob, cid = long_conversation
    assert seqs(client.history(alice, cid, "limit=1")) == [120]
    r = client.history(alice, cid, "limit=200")
    assert seqs(r) == list(range(1, 121))
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "limit=120")
    assert seqs(r) == list(range(1, 121))
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "limit=119")
    assert seqs(r) == list(range(2, 121))
    assert r.json["has_more"] is True
    for bad in ("0", "201", "-1", "abc", "1.5", "99999999999999999999"):
        r = client.history(alice, cid, "limit=" + bad)
        assert r.status == 400, ("limit=" + bad, r)
        assert_error(r, 400, "invalid_parameter")


def test_history_pages_back_with_before_seq(client, long_conversation):
    alice, bob, cid = long_conversation
    r = client.history(alice, cid, "before_seq=71")
    assert seqs(r) == list(range(21, 71))
    assert r.json["has_more"] is True
    r = client.history(alice, cid, "before_seq=21")
    assert seqs(r) == list(range(1, 21))
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "before_seq=1")
    assert seqs(r) == []
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "before_seq=0")
    assert seqs(r) == []
    r = client.history(alice, cid, "before_seq=11&limit=10")
    assert seqs(r) == list(range(1, 11))
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "before_seq=12&limit=10")
    assert seqs(r) == list(range(2, 12))
    assert r.json["has_more"] is True
    # beyond the end: the newest page
    r = client.history(alice, cid, "before_seq=1000&limit=5")
    assert seqs(r) == list(range(116, 121))


def test_history_walks_back_to_the_start(client, long_conversation):
    alice, bob, cid = long_conversation
    seen = []
    r = client.history(alice, cid, "limit=30")
    while True:
        page = seqs(r)
        assert page == sorted(page)
        seen = page + seen
        if not r.json["has_more"]:
            break
        r = client.history(alice, cid, "limit=30&before_seq=%d" % page[0])
    assert seen == list(range(1, 121))


def test_history_pages_forward_with_after_seq(client, long_conversation):
    alice, bob, cid = long_conversation
    r = client.history(alice, cid, "after_seq=0")
    assert seqs(r) == list(range(1, 51))
    assert r.json["has_more"] is True
    r = client.history(alice, cid, "after_seq=50")
    assert seqs(r) == list(range(51, 101))
    assert r.json["has_more"] is True
    r = client.history(alice, cid, "after_seq=100")
    assert seqs(r) == list(range(101, 121))
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "after_seq=110&limit=10")
    assert seqs(r) == list(range(111, 121))
    assert r.json["has_more"] is False
    r = client.history(alice, cid, "after_seq=109&limit=10")
    assert seqs(r) == list(range(110, 120))
    assert r.json["has_more"] is True
    r = client.history(alice, cid, "after_seq=120")
    assert seqs(r) == []
    assert r.json["has_more"] is False


def test_history_both_bounds(client, long_conversation):
    alice, bob, cid = long_conversation
    r = client.history(alice, cid, "after_seq=10&before_seq=20")
    assert seqs(r) == list(range(11, 20))
    r = client.history(alice, cid, "before_seq=20&after_seq=10&limit=200")
    assert seqs(r) == list(range(11, 20))
    r = client.history(alice, cid, "after_seq=10&before_seq=11")
    assert seqs(r) == []


def test_history_bad_bounds(client, long_conversation):
    alice, bob, cid = long_conversation
    for q in ("before_seq=-1", "before_seq=abc", "before_seq=1.5",
              "after_seq=-1", "after_seq=x", "after_seq=1e3",
              "before_seq=99999999999999999999999"):
        r = client.history(alice, cid, q)
        assert r.status == 400, (q, r)
        assert_error(r, 400, "invalid_parameter")


def test_history_non_member_and_unknown(client, long_conversation):
    alice, bob, cid = long_conversation
    eve = client.new_user("eve")
    assert_error(client.history(eve, cid), 403, "not_a_member")
    assert_error(client.history(eve, cid, "after_seq=0"), 403, "not_a_member")
    assert_error(client.history(alice, 999999999), 404, "not_found")
    for bad in ("0", "-3", "abc"):
        r = client.get("/api/conversations/%s/messages" % bad,
                       token=alice.token)
        assert_error(r, 404, "not_found")
    r = client.get("/api/conversations/%d/messages" % cid)
    assert_error(r, 401, "unauthorized")


# -- read --------------------------------------------------------------------

def test_read_moves_forward_only(client):
    alice, bob, cid = pair(client)
    for i in range(5):
        client.send(bob, cid, "m%d" % i)
    r = client.read(alice, cid, 4)
    assert r.status == 204, r
    assert r.body == b""
    assert client.conversation_entry(alice, cid)["unread"] == 1
    # a lower seq does not move the marker back
    assert client.read(alice, cid, 2).status == 204
    assert client.conversation_entry(alice, cid)["unread"] == 1
    assert client.read(alice, cid, 0).status == 204
    assert client.conversation_entry(alice, cid)["unread"] == 1
    # reading is per member: bob's count is untouched
    assert client.conversation_entry(bob, cid)["unread"] == 0


def test_read_beyond_last_seq_is_clamped(client):
    alice, bob, cid = pair(client)
    for i in range(3):
        client.send(bob, cid, "m%d" % i)
    assert client.read(alice, cid, 1000).status == 204
    assert client.conversation_entry(alice, cid)["unread"] == 0
    # the marker stopped at 3, so new messages count again
    client.send(bob, cid, "m3")
    client.send(bob, cid, "m4")
    assert client.conversation_entry(alice, cid)["unread"] == 2


def test_read_invalid_seq(client):
    alice, bob, cid = pair(client)
    client.send(bob, cid, "m")
    path = "/api/conversations/%d/read" % cid
    for body in ({"seq": -1}, {"seq": "1"}, {"seq": 1.5}, {"seq": None},
                 {"seq": True}, {"seq": [1]}):
        assert_error(client.post(path, body, token=alice.token),
                     400, "invalid_seq")
    r = client.post(path, {}, token=alice.token)
    assert r.status == 400, r
    assert r.error_code() in ("invalid_seq", "invalid_field"), r
    assert client.conversation_entry(alice, cid)["unread"] == 1


def test_read_non_member_unknown_and_unauthenticated(client):
    alice, bob, cid = pair(client)
    client.send(bob, cid, "m")
    eve = client.new_user("eve")
    assert_error(client.read(eve, cid, 1), 403, "not_a_member")
    assert_error(client.read(alice, 999999999, 1), 404, "not_found")
    r = client.post("/api/conversations/%d/read" % cid, {"seq": 1})
    assert_error(r, 401, "unauthorized")
    assert client.conversation_entry(alice, cid)["unread"] == 1
