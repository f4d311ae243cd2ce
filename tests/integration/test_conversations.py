"""Conversations over HTTP: creating direct and group conversations, the
de-duplication of direct ones, member validation, and the list with its
order, last message and unread counts."""

import os
import time

from chatd_client import assert_error, is_int, unique_name


def member_set(conv):
    return {(m["user_id"], m["username"]) for m in conv["members"]}


def pause():
    time.sleep(0.02)


def check_conversation_shape(conv):
    assert is_int(conv["conversation_id"]) and conv["conversation_id"] > 0
    assert conv["kind"] in ("direct", "group")
    assert conv["title"] is None or isinstance(conv["title"], str)
    assert isinstance(conv["members"], list)
    for m in conv["members"]:
        assert set(m) == {"user_id", "username"}, m
        assert is_int(m["user_id"])
        assert isinstance(m["username"], str)


# -- create --------------------------------------------------------------------

def test_direct_conversation_created(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    r = client.conversation(alice, bob)
    assert r.status == 201, r
    assert r.header("Content-Type", "").startswith("application/json")
    conv = r.json
    assert set(conv) == {"conversation_id", "kind", "title", "members"}
    check_conversation_shape(conv)
    assert conv["kind"] == "direct"
    assert conv["title"] is None
    assert member_set(conv) == {(alice.user_id, alice.username),
                                (bob.user_id, bob.username)}


def test_direct_conversation_deduplicated_both_ways(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    first = client.conversation(alice, bob)
    assert first.status == 201, first
    cid = first.json["conversation_id"]
    again = client.conversation(alice, bob)
    assert again.status == 200, again
    assert again.json["conversation_id"] == cid
    assert again.json["kind"] == "direct"
    assert member_set(again.json) == member_set(first.json)
    other_side = client.conversation(bob, alice)
    assert other_side.status == 200, other_side
    assert other_side.json["conversation_id"] == cid
    # the name is compared case-insensitively
    upper = client.conversation(bob, alice.username.upper())
    assert upper.status == 200, upper
    assert upper.json["conversation_id"] == cid
    # and both see exactly one conversation between them
    for u in (alice, bob):
        ids = [c["conversation_id"] for c in client.conversations(u)]
        assert ids.count(cid) == 1
        assert len(ids) == 1, ids


def test_duplicate_names_and_creator_are_removed(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    r = client.post("/api/conversations", {
        "members": [bob.username, bob.username, alice.username]},
        token=alice.token)
    assert r.status == 201, r
    assert r.json["kind"] == "direct"
    assert len(r.json["members"]) == 2


def test_group_conversation(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    carol = client.new_user("carol")
    r = client.conversation(alice, bob, carol, title="Team \u00e9")
    assert r.status == 201, r
    conv = r.json
    check_conversation_shape(conv)
    assert conv["kind"] == "group"
    assert conv["title"] == "Team \u00e9"
    assert member_set(conv) == {(alice.user_id, alice.username),
                                (bob.user_id, bob.username),
                                (carol.user_id, carol.username)}
    # groups are never de-duplicated
    r2 = client.conversation(alice, bob, carol, title="Team \u00e9")
    assert r2.status == 201, r2
    assert r2.json["conversation_id"] != conv["conversation_id"]
    # every member sees it
    for u in (alice, bob, carol):
        entry = client.conversation_entry(u, conv["conversation_id"])
        assert entry is not None
        assert entry["kind"] == "group"
        assert entry["title"] == "Team \u00e9"


def test_group_without_title_has_null_title(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    carol = client.new_user("carol")
    r = client.conversation(alice, bob, carol)
    assert r.status == 201, r
    assert r.json["title"] is None


def test_title_bounds(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    carol = client.new_user("carol")
    r = client.conversation(alice, bob, carol, title="t" * 200)
    assert r.status == 201, r
    assert r.json["title"] == "t" * 200
    assert_error(client.conversation(alice, bob, carol, title="t" * 201),
                 400, "invalid_title")
    # 100 two-byte characters = 200 bytes; 101 are over
    r = client.conversation(alice, bob, carol, title="\u00e9" * 100)
    assert r.status == 201, r
    assert_error(client.conversation(alice, bob, carol, title="\u00e9" * 101),
                 400, "invalid_title")
    for bad in (5, ["x"], {"a": 1}, True):
        assert_error(client.post("/api/conversations", {
            "members": [bob.username, carol.username], "title": bad},
            token=alice.token), 400, "invalid_title")


def test_unknown_user_is_404_and_names_them(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    ghost = unique_name("ghost")
    r = client.conversation(alice, bob, ghost)
    assert_error(r, 404, "unknown_user")
    assert ghost in r.json["error"]["message"]
    # nothing was created
    assert client.conversations(alice) == []
    assert client.conversations(bob) == []


def test_invalid_members(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    cases = [
        {"members": []},
        {"members": bob.username},
        {"members": [5]},
        {"members": [bob.username, None]},
        {"members": {"name": bob.username}},
        {"members": [alice.username]},
        {"members": [alice.username, alice.username.upper()]},
        {"members": ["x%03d" % i for i in range(101)]},
    ]
    for body in cases:
        r = client.post("/api/conversations", body, token=alice.token)
        assert_error(r, 400, "invalid_members")
    r = client.post("/api/conversations", {}, token=alice.token)
    assert r.status == 400, r
    assert r.error_code() in ("invalid_members", "invalid_field"), r
    assert client.conversations(alice) == []


def test_hundred_members_pass_the_count_check(client):
    alice = client.new_user("alice")
    names = ["g%s%03d" % (os.urandom(2).hex(), i) for i in range(100)]
    r = client.post("/api/conversations", {"members": names},
                    token=alice.token)
    # 100 is allowed; these people just do not exist
    assert_error(r, 404, "unknown_user")


def test_malformed_member_name(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    for bad in ("b@d", "", "x" * 33, "no"):
        r = client.post("/api/conversations",
                        {"members": [bob.username, bad]}, token=alice.token)
        assert_error(r, 400, "invalid_username")
    assert client.conversations(alice) == []


def test_create_needs_auth(client):
    r = client.post("/api/conversations", {"members": ["someone"]})
    assert_error(r, 401, "unauthorized")
    assert client.get("/api/conversations").status == 401


# -- list --------------------------------------------------------------------

def test_list_shape_and_last_message(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    cid = client.conversation(alice, bob).json["conversation_id"]
    r = client.get("/api/conversations", token=alice.token)
    assert r.status == 200, r
    doc = r.json
    assert set(doc) == {"conversations"}
    (entry,) = doc["conversations"]
    assert set(entry) == {"conversation_id", "kind", "title", "members",
                          "last_message", "unread"}
    check_conversation_shape(entry)
    assert entry["conversation_id"] == cid
    assert entry["last_message"] is None
    assert entry["unread"] == 0
    assert member_set(entry) == {(alice.user_id, alice.username),
                                 (bob.user_id, bob.username)}

    sent = client.send(bob, cid, "hello alice", "m1")
    assert sent.status == 201, sent
    entry = client.conversation_entry(alice, cid)
    assert entry["last_message"] == sent.json
    sent2 = client.send(alice, cid, "hi bob", "m2")
    assert client.conversation_entry(bob, cid)["last_message"] == sent2.json
    assert client.conversation_entry(alice, cid)["last_message"] == sent2.json


def test_list_ordered_by_last_activity(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    carol = client.new_user("carol")
    dave = client.new_user("dave")
    # times have millisecond resolution: keep the steps apart
    c1 = client.conversation(alice, bob).json["conversation_id"]
    pause()
    c2 = client.conversation(alice, carol).json["conversation_id"]
    pause()
    c3 = client.conversation(alice, dave).json["conversation_id"]
    pause()
    # newest first: the newest conversation leads while nothing was said
    ids = [c["conversation_id"] for c in client.conversations(alice)]
    assert ids == [c3, c2, c1]
    assert client.send(bob, c1, "one").status == 201
    pause()
    ids = [c["conversation_id"] for c in client.conversations(alice)]
    assert ids == [c1, c3, c2]
    assert client.send(alice, c2, "two").status == 201
    pause()
    ids = [c["conversation_id"] for c in client.conversations(alice)]
    assert ids == [c2, c1, c3]
    assert client.send(dave, c3, "three").status == 201
    pause()
    ids = [c["conversation_id"] for c in client.conversations(alice)]
    assert ids == [c3, c2, c1]
    # each member sees only their own conversations
    assert [c["conversation_id"] for c in client.conversations(bob)] == [c1]


def test_unread_counts(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    cid = client.conversation(alice, bob).json["conversation_id"]
    for i in range(3):
        assert client.send(bob, cid, "msg %d" % i).status == 201
        assert client.conversation_entry(alice, cid)["unread"] == i + 1
        # own messages are never unread
        assert client.conversation_entry(bob, cid)["unread"] == 0
    assert client.read(alice, cid, 2).status == 204
    assert client.conversation_entry(alice, cid)["unread"] == 1
    assert client.read(alice, cid, 3).status == 204
    assert client.conversation_entry(alice, cid)["unread"] == 0
    # alice answers: bob has one unread, alice none
    assert client.send(alice, cid, "reply").status == 201
    assert client.conversation_entry(bob, cid)["unread"] == 1
    assert client.conversation_entry(alice, cid)["unread"] == 0


def test_unread_in_group(client):
    alice = client.new_user("alice")
    bob = client.new_user("bob")
    carol = client.new_user("carol")
    cid = client.conversation(alice, bob, carol).json["conversation_id"]
    client.send(alice, cid, "a")
    client.send(bob, cid, "b")
    assert client.conversation_entry(alice, cid)["unread"] == 1
    assert client.conversation_entry(bob, cid)["unread"] == 0
    assert client.conversation_entry(carol, cid)["unread"] == 2
