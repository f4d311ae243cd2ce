"""Presence: `online` goes out when a user's first session becomes ready
and `offline` when the last one closes, only to the users who share a
conversation with them; GET /api/users says the same."""

import asyncio

from chatd_client import wait_for
from ws_client import connect, run


def presence(user, online):
    return {"type": "presence", "user_id": user.user_id, "online": online}


def about(user):
    return lambda f: (f.get("type") == "presence"
                      and f.get("user_id") == user.user_id)


def online_flag(client, viewer, user):
    r = client.get("/api/users?prefix=" + user.username, token=viewer.token)
    assert r.status == 200, r
    found = [u for u in r.json["users"] if u["user_id"] == user.user_id]
    assert len(found) == 1, r.json
    return found[0]["online"]


def test_presence_first_and_last_session(client, server):
    alice = client.new_user("pal")
    bob = client.new_user("pbo")
    dave = client.new_user("pda")      # shares a group with alice
    stranger = client.new_user("pst")  # shares a conversation with bob only
    assert client.conversation(alice, bob).status == 201
    assert client.conversation(dave, alice, bob).status == 201
    assert client.conversation(stranger, bob).status == 201
    assert online_flag(client, bob, alice) is False

    async def go():
        b1 = await connect(server, bob.token)
        b2 = await connect(server, cookie=bob.token)
        d1 = await connect(server, dave.token)
        s1 = await connect(server, stranger.token)
        a1 = await connect(server, alice.token)
        for s in (b1, b2, d1):
            assert await s.expect(about(alice)) == presence(alice, True)
        await s1.expect_quiet(about(alice))
        await a1.expect_quiet(about(alice), window=0.1)
        assert await asyncio.to_thread(
            wait_for, lambda: online_flag(client, bob, alice) is True, 5.0)

        # a second session is not news
        a2 = await connect(server, alice.token)
        await b1.expect_quiet(about(alice))
        # closing one of two is not news either
        await a1.close()
        await b1.expect_quiet(about(alice))
        assert online_flag(client, stranger, alice) is True

        # the last one closing is
        await a2.close()
        for s in (b1, b2, d1):
            assert await s.expect(about(alice)) == presence(alice, False)
        await s1.expect_quiet(about(alice), window=0.2)
        assert await asyncio.to_thread(
            wait_for, lambda: online_flag(client, bob, alice) is False, 5.0)
        await asyncio.gather(b1.close(), b2.close(), d1.close(), s1.close())

    run(go())


def test_presence_of_a_cookie_session_and_a_dropped_socket(client, server):
    alice = client.new_user("pcl")
    bob = client.new_user("pcb")
    assert client.conversation(bob, alice).status == 201

    async def go():
        b1 = await connect(server, bob.token)
        a1 = await connect(server, cookie=alice.token)
        assert await b1.expect(about(alice)) == presence(alice, True)
        # a socket that just vanishes (no close handshake) ends too
        a1.conn.transport.abort()
        assert await b1.expect(about(alice), timeout=10.0) == \
            presence(alice, False)
        await b1.close()

    run(go())
    assert wait_for(lambda: online_flag(client, bob, alice) is False, 5.0)


def test_unauthenticated_socket_is_not_online(client, server):
    alice = client.new_user("pun")
    bob = client.new_user("pub")
    assert client.conversation(bob, alice).status == 201

    async def go():
        b1 = await connect(server, bob.token)
        raw = await connect(server)          # never authenticates
        await b1.expect_quiet(about(alice))
        assert online_flag(client, bob, alice) is False
        await asyncio.gather(b1.close(), raw.close())

    run(go())
