"""The room socket /ws/rooms/<slug> through the real ASGI application and real Redis.

Presence events are set operations by name, and a new member may get events that
happened just before it joined: it joins the group before reading the snapshot, and the
pub/sub channel layer hands a group message to whoever is in the group when the process
reads it. So tests wait for the specific event they expect (receive_until) rather than
"the next frame", and an observer that must see every event about a member joins before
that member. Where a test asserts that something did NOT arrive, it makes a later event
happen (a marker) and checks everything received up to that marker: group events sent
from one process reach a socket in the order they were sent.
"""

import asyncio
import contextlib
import json
import time
from typing import Any
from urllib.parse import quote

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from chat.rooms.models import RoomMessage
from chat.rooms.presence import presence_members
from chat.rooms.services import room_create, room_message_create
from chatsite.asgi import application
from chatsite.redis_clients import get_redis
from tests.support.cases import (
    ORIGIN,
    TIMEOUT,
    LiveServerTestCase,
    SocketTestCase,
    loop_quiesce,
    open_socket,
    receive_until,
)

SLUG = "lobby"
QUICK = 10.0  # seconds: well below ROOM_PRESENCE_TIMEOUT (45 s), so no sweep explains it


def clear_room_keys() -> None:
    """Drop every rooms:* key (presence, owners, the active set); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="rooms:*", count=1000))
    if keys:
        client.delete(*keys)


def presence(event: str, name: str) -> dict[str, Any]:
    return {"type": "presence", "event": event, "member": {"name": name}}


def room_path(slug: str = SLUG, **params: str) -> str:
    query = "&".join(f"{key}={quote(value)}" for key, value in params.items())
    return f"/ws/rooms/{slug}" + (f"?{query}" if query else "")


class RoomSocketTestCase(SocketTestCase):
    """A room "lobby" (capacity 50) and empty presence per test; helpers to talk in it."""

    def setUp(self) -> None:
        super().setUp()
        clear_room_keys()
        self.addCleanup(clear_room_keys)
        self.room = room_create(slug=SLUG, title="Lobby")

    async def join(
        self,
        name: str | None = "Ada",
        *,
        slug: str = SLUG,
        headers: list[tuple[bytes, bytes]] | None = None,
        **params: str,
    ) -> tuple[WebsocketCommunicator, dict[str, Any]]:
        """A member's socket and its `joined` frame."""
        if name is not None:
            params = {"name": name, **params}
        socket = await self.open_socket(room_path(slug, **params), headers=headers)
        joined = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(joined["type"], "joined", joined)
        return socket, joined

    async def refused(self, path: str, error_code: str, close_code: int, **kwargs: Any) -> dict:
        """Open a socket that must get an error frame then a close; the error frame."""
        socket = await self.open_socket(path, **kwargs)
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["type"], error["code"]), ("error", error_code), error)
        self.assertTrue(error["message"])
        closed = await socket.receive_output(timeout=TIMEOUT)
        self.assertEqual(closed["type"], "websocket.close")
        self.assertEqual(closed["code"], close_code)
        return error

    async def send(self, socket: WebsocketCommunicator, frame: dict) -> dict:
        """Send a frame; the first frame back that is not a presence event."""
        await socket.send_json_to(frame)
        frames = await receive_until(socket, lambda f: f["type"] != "presence")
        return frames[-1]

    async def say(self, socket: WebsocketCommunicator, text: str, client_id: str) -> dict:
        """Send a message and return its ack's message."""
        ack = await self.send(socket, {"type": "message", "text": text, "client_id": client_id})
        self.assertEqual(ack["type"], "ack", ack)
        return ack["message"]

    async def assert_still_open(self, socket: WebsocketCommunicator) -> list[dict[str, Any]]:
        """Ping and wait for the pong; the frames that arrived before it."""
        await socket.send_json_to({"type": "ping"})
        frames = await receive_until(socket, lambda f: f == {"type": "pong"})
        return frames[:-1]

    async def ping_until(self, socket: WebsocketCommunicator, frame: dict, *, within: float):
        """Keep a socket alive with pings until `frame` arrives; every frame but pongs.

        For waiting out ROOM_PRESENCE_TIMEOUT, the behaviour under test. Between pings it
        waits up to 0.2 s for a frame (receive_nothing: a timed-out receive_output would
        cancel the application).
        """
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while frame not in frames:
            if time.monotonic() > deadline:
                raise AssertionError(f"{frame} not received within {within}s; got {frames}")
            frames += await self.assert_still_open(socket)
            if frame not in frames:
                await socket.receive_nothing(timeout=0.2)
        return frames

    async def message_count(self) -> int:
        return await sync_to_async(RoomMessage.objects.count)()

    def names(self, joined: dict[str, Any]) -> set[str]:
        return {member["name"] for member in joined["members"]}


async def frames_until(socket: WebsocketCommunicator, frame: dict, *, within: float = TIMEOUT):
    """Every frame received up to and including one equal to `frame`."""
    return await receive_until(socket, lambda f: f == frame, within=within)


def login_cookie(username: str, *, is_staff: bool = False) -> list[tuple[bytes, bytes]]:
    """Socket headers carrying a logged-in session of a new user."""
    user = get_user_model().objects.create_user(username=username, is_staff=is_staff)
    client = Client()
    client.force_login(user)
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


class RoomJoinTests(RoomSocketTestCase):
    """Connecting: the joined frame, names, owners, refusals."""

    async def test_joined_frame_has_the_room_me_members_and_messages(self) -> None:
        _, joined = await self.join("Ada")
        self.assertEqual(
            joined,
            {"type": "joined", "room": {"slug": SLUG, "title": "Lobby", "capacity": 50},
             "me": "Ada", "members": [{"name": "Ada"}], "messages": []},
        )  # fmt: skip

    async def test_second_member_sees_both_and_the_first_gets_a_join_event(self) -> None:
        ada, _ = await self.join("Ada")
        _, joined = await self.join("Bob")
        self.assertEqual(self.names(joined), {"Ada", "Bob"})
        await frames_until(ada, presence("join", "Bob"))

    async def test_name_is_trimmed(self) -> None:
        _, joined = await self.join("  Ada  ")
        self.assertEqual(joined["me"], "Ada")

    async def test_missing_blank_or_over_long_name_is_closed_4400_invalid_name(self) -> None:
        for path in (room_path(), room_path(name=""), room_path(name="   "),
                     room_path(name="x" * 81)):  # fmt: skip
            with self.subTest(path=path[:40]):
                await self.refused(path, "invalid_name", 4400)
        self.assertEqual(await presence_members(slug=SLUG), [])

    async def test_name_of_80_characters_is_accepted(self) -> None:
        _, joined = await self.join("x" * 80)
        self.assertEqual(joined["me"], "x" * 80)

    async def test_present_name_of_another_owner_is_closed_4403_name_taken(self) -> None:
        await self.join("Ada", client="browser-one")
        for params in ({"client": "browser-two"}, {}):  # another browser, or no client id
            with self.subTest(params=params):
                await self.refused(room_path(name="Ada", **params), "name_taken", 4403)
        await self.refused(room_path(name=" Ada "), "name_taken", 4403)  # trimmed first

    async def test_without_a_client_id_two_sockets_of_one_name_are_two_owners(self) -> None:
        await self.join("Ada")
        await self.refused(room_path(name="Ada"), "name_taken", 4403)

    async def test_name_is_free_again_once_its_member_left(self) -> None:
        ada, _ = await self.join("Ada", client="browser-one")
        await ada.disconnect()
        _, joined = await self.join("Ada", client="browser-two")
        self.assertEqual(self.names(joined), {"Ada"})

    async def test_unknown_room_is_closed_4404_not_found(self) -> None:
        await self.refused(room_path("no-such-room", name="Ada"), "not_found", 4404)
        await self.refused("/ws/rooms/Bad%20Slug?name=Ada", "not_found", 4404)  # not a slug

    async def test_after_that_is_not_a_message_id_is_closed_4400_invalid_after(self) -> None:
        for after in ("abc", "-1", "1.5", "1e3", "%C2%B2", "9" * 19):
            with self.subTest(after=after):
                path = room_path(name="Ada") + f"&after={after}"
                await self.refused(path, "invalid_after", 4400)

    async def test_foreign_or_missing_origin_is_refused_at_the_handshake(self) -> None:
        for headers in ([(b"origin", b"http://evil.example")], []):
            with self.subTest(headers=headers):
                socket = WebsocketCommunicator(application, room_path(name="Ada"), headers=headers)
                connected, _ = await socket.connect(timeout=TIMEOUT)
                self.assertFalse(connected)

    async def test_refused_socket_leaves_no_presence_and_sends_no_event(self) -> None:
        ada, _ = await self.join("Ada")
        await self.refused(room_path(name="Ada"), "name_taken", 4403)
        await self.refused(room_path(name=""), "invalid_name", 4400)
        await self.join("Bob")  # the marker
        self.assertEqual(
            await frames_until(ada, presence("join", "Bob")), [presence("join", "Bob")]
        )
        self.assertEqual(await presence_members(slug=SLUG), ["Ada", "Bob"])

    async def test_ping_gets_pong(self) -> None:
        socket, _ = await self.join("Ada")
        await self.assert_still_open(socket)

    async def test_logged_in_users_username_is_used_instead_of_name(self) -> None:
        headers = await sync_to_async(login_cookie)("ada_user")
        socket = await self.open_socket(room_path(name="Someone Else"), headers=headers)
        joined = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((joined["type"], joined["me"]), ("joined", "ada_user"))
        # The username is the user's: an anonymous socket cannot take it.
        await self.refused(room_path(name="ada_user", client="x"), "name_taken", 4403)


class RoomPresenceTests(RoomSocketTestCase):
    """Presence join and leave, tabs, and the timeout."""

    async def test_clean_disconnect_sends_leave_at_once(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        await bob.disconnect()
        await frames_until(ada, presence("leave", "Bob"), within=QUICK)
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])

    async def test_member_does_not_get_its_own_join(self) -> None:
        ada, _ = await self.join("Ada")
        await self.join("Bob")  # marker
        frames = await frames_until(ada, presence("join", "Bob"))
        self.assertNotIn(presence("join", "Ada"), frames)

    async def test_two_tabs_of_one_browser_are_one_member_until_the_last_leaves(self) -> None:
        bob, _ = await self.join("Bob")  # first, so every event about Ada is news to Bob
        first, _ = await self.join("Ada", client="browser-ada")
        second, joined = await self.join("Ada", client="browser-ada")
        self.assertEqual(joined["members"], [{"name": "Ada"}, {"name": "Bob"}])
        await first.disconnect()
        self.assertEqual(await presence_members(slug=SLUG), ["Ada", "Bob"])
        await self.join("Cy")  # marker: neither the second tab nor the first leaving showed
        self.assertEqual(
            await frames_until(bob, presence("join", "Cy")),
            [presence("join", "Ada"), presence("join", "Cy")],
        )
        await second.disconnect()
        await frames_until(bob, presence("leave", "Ada"), within=QUICK)

    async def test_two_tabs_of_one_logged_in_user_are_one_member(self) -> None:
        headers = await sync_to_async(login_cookie)("ada_user")
        first = await self.open_socket(room_path(), headers=headers)
        second = await self.open_socket(room_path(), headers=headers)
        for socket in (first, second):
            joined = await socket.receive_json_from(timeout=TIMEOUT)
            self.assertEqual(joined["members"], [{"name": "ada_user"}])
        bob, _ = await self.join("Bob")
        await first.disconnect()
        await self.join("Cy")  # marker
        self.assertNotIn(
            presence("leave", "ada_user"), await frames_until(bob, presence("join", "Cy"))
        )
        await second.disconnect()
        await frames_until(bob, presence("leave", "ada_user"), within=QUICK)

    async def test_every_other_member_gets_join_and_leave(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        cy, _ = await self.join("Cy")
        for socket in (ada, bob):
            await frames_until(socket, presence("join", "Cy"))
        await cy.disconnect()
        for socket in (ada, bob):
            await frames_until(socket, presence("leave", "Cy"), within=QUICK)

    @override_settings(ROOM_PRESENCE_TIMEOUT=2.0, ROOM_PRESENCE_SWEEP_INTERVAL=0.2)
    async def test_silent_member_is_dropped_after_the_timeout_and_pinging_one_stays(self) -> None:
        """Ada pings (a ping counts as presence); Bob says nothing and times out.

        The timeout is 2 s, not 1 s: the consumer refreshes presence at most once a
        second (TOUCH_EVERY), so with a 1 s timeout even a pinging member can be swept.
        """
        ada, _ = await self.join("Ada")
        started = time.monotonic()
        bob, _ = await self.join("Bob")
        frames = await self.ping_until(ada, presence("leave", "Bob"), within=TIMEOUT)
        self.assertGreaterEqual(time.monotonic() - started, 1.9)
        self.assertNotIn(presence("leave", "Ada"), frames)
        self.assertEqual(frames.count(presence("leave", "Bob")), 1)
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])
        # Bob's socket is still open; its next frame brings it back, announced again.
        await self.assert_still_open(bob)
        await frames_until(ada, presence("join", "Bob"))
        self.assertEqual(await presence_members(slug=SLUG), ["Ada", "Bob"])

    @override_settings(ROOM_PRESENCE_TIMEOUT=2.0, ROOM_PRESENCE_SWEEP_INTERVAL=0.2)
    async def test_timed_out_member_closing_its_socket_is_not_announced_twice(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        await self.ping_until(ada, presence("leave", "Bob"), within=TIMEOUT)
        await bob.disconnect()
        await self.assert_still_open(ada)  # keeps Ada fresh
        await self.join("Cy")  # marker
        frames = await frames_until(ada, presence("join", "Cy"))
        self.assertNotIn(presence("leave", "Bob"), frames)

    @override_settings(ROOM_PRESENCE_TIMEOUT=2.0, ROOM_PRESENCE_SWEEP_INTERVAL=0.2)
    async def test_timed_out_name_can_be_taken_and_the_old_socket_is_then_closed_4403(
        self,
    ) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")  # no client id: only this socket owns "Bob"
        await self.ping_until(ada, presence("leave", "Bob"), within=TIMEOUT)
        _, joined = await self.join("Bob", client="someone-else")
        self.assertEqual(self.names(joined), {"Ada", "Bob"})
        await bob.send_json_to({"type": "ping"})
        error = await receive_until(bob, lambda f: f["type"] == "error")
        self.assertEqual(error[-1]["code"], "name_taken")
        closed = await bob.receive_output(timeout=TIMEOUT)
        self.assertEqual((closed["type"], closed["code"]), ("websocket.close", 4403))


class RoomCapacityTests(RoomSocketTestCase):
    """A room of two is private; a join beyond capacity is closed 4409."""

    def setUp(self) -> None:
        super().setUp()
        self.private = room_create(slug="pair", title="Pair", capacity=2)

    async def test_third_member_of_a_room_of_two_is_closed_4409_room_full(self) -> None:
        ada, joined = await self.join("Ada", slug="pair")
        self.assertEqual(joined["room"]["capacity"], 2)
        await self.join("Bob", slug="pair")
        await self.refused(room_path("pair", name="Cy"), "room_full", 4409)
        self.assertEqual(await presence_members(slug="pair"), ["Ada", "Bob"])
        await self.say(ada, "still us", "c1")  # marker: no join or leave of Cy before it

    async def test_another_tab_of_a_member_of_a_full_room_is_let_in(self) -> None:
        await self.join("Ada", slug="pair", client="browser-ada")
        await self.join("Bob", slug="pair")
        _, joined = await self.join("Ada", slug="pair", client="browser-ada")
        self.assertEqual(self.names(joined), {"Ada", "Bob"})

    async def test_a_place_frees_up_when_a_member_leaves(self) -> None:
        await self.join("Ada", slug="pair")
        bob, _ = await self.join("Bob", slug="pair")
        await bob.disconnect()
        _, joined = await self.join("Cy", slug="pair")
        self.assertEqual(self.names(joined), {"Ada", "Cy"})

    async def test_full_refusal_does_not_disturb_the_members(self) -> None:
        ada, _ = await self.join("Ada", slug="pair")
        bob, _ = await self.join("Bob", slug="pair")
        await self.refused(room_path("pair", name="Cy"), "room_full", 4409)
        sent = await self.say(bob, "hello", "c1")
        frames = await frames_until(ada, {"type": "message", "message": sent})
        self.assertEqual([f for f in frames if f["type"] == "presence"], [presence("join", "Bob")])


class RoomMessageTests(RoomSocketTestCase):
    """Messages: stored, acked, broadcast, deduplicated by client_id."""

    async def test_message_is_stored_acked_and_broadcast_to_every_other_member(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        cy, _ = await self.join("Cy")
        ack = await self.send(ada, {"type": "message", "text": "hello", "client_id": "m1"})
        self.assertEqual((ack["type"], ack["client_id"]), ("ack", "m1"))
        message = ack["message"]
        self.assertEqual(
            set(message), {"id", "author", "text", "status", "created_at", "reply_to", "client_id"}
        )
        self.assertEqual(
            (message["author"], message["text"], message["status"], message["reply_to"],
             message["client_id"]),
            ("Ada", "hello", "done", None, "m1"),
        )  # fmt: skip
        for socket in (bob, cy):
            await frames_until(socket, {"type": "message", "message": message})
        stored = await sync_to_async(RoomMessage.objects.get)(pk=message["id"])
        self.assertEqual(
            (stored.room_id, stored.author, stored.text), (self.room.pk, "Ada", "hello")
        )
        # No echo to the sender (it may get presence events, see the module docstring).
        self.assertEqual(
            [f for f in await self.assert_still_open(ada) if f["type"] != "presence"], []
        )

    async def test_message_reaches_the_senders_other_tab(self) -> None:
        first, _ = await self.join("Ada", client="browser-ada")
        second, _ = await self.join("Ada", client="browser-ada")
        message = await self.say(first, "from tab one", "t1")
        await frames_until(second, {"type": "message", "message": message})

    async def test_message_without_client_id_is_stored_with_null_client_id(self) -> None:
        ada, _ = await self.join("Ada")
        ack = await self.send(ada, {"type": "message", "text": "hi"})
        self.assertEqual((ack["type"], ack["client_id"]), ("ack", None))
        self.assertIsNone(ack["message"]["client_id"])

    async def test_same_client_id_again_is_acked_with_the_original_and_not_stored(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        first = await self.say(ada, "hi", "same")
        again = await self.say(ada, "hi (resent)", "same")
        self.assertEqual(again, first)
        self.assertEqual(await self.message_count(), 1)
        marker = await self.say(ada, "next", "other")
        frames = await frames_until(bob, {"type": "message", "message": marker})
        self.assertEqual([f["message"]["id"] for f in frames if f["type"] == "message"],
                         [first["id"], marker["id"]])  # fmt: skip

    async def test_same_client_id_from_a_reconnected_socket_is_not_stored_twice(self) -> None:
        ada, _ = await self.join("Ada", client="browser-ada")
        first = await self.say(ada, "hi", "r1")
        await ada.disconnect()
        ada, _ = await self.join("Ada", client="browser-ada")
        self.assertEqual((await self.say(ada, "hi", "r1"))["id"], first["id"])
        self.assertEqual(await self.message_count(), 1)

    async def test_same_client_id_of_two_authors_is_two_messages(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        mine = await self.say(ada, "hi", "c1")
        theirs = await self.say(bob, "hi", "c1")
        self.assertNotEqual(mine["id"], theirs["id"])
        self.assertEqual(await self.message_count(), 2)

    async def test_concurrent_sends_of_one_client_id_store_one_message(self) -> None:
        first, _ = await self.join("Ada", client="browser-ada")
        second, _ = await self.join("Ada", client="browser-ada")
        frame = {"type": "message", "text": "hi", "client_id": "race"}
        await asyncio.gather(first.send_json_to(frame), second.send_json_to(frame))
        acks = []
        for socket in (first, second):
            frames = await receive_until(socket, lambda f: f["type"] == "ack")
            acks.append(frames[-1]["message"])
        self.assertEqual(acks[0]["id"], acks[1]["id"])
        self.assertEqual(await self.message_count(), 1)

    @override_settings(ROOM_HISTORY_COUNT=3)
    async def test_joined_holds_the_last_n_messages_oldest_first(self) -> None:
        ids = [await self.stored(f"m{i}") for i in range(5)]
        _, joined = await self.join("Ada")
        self.assertEqual([m["id"] for m in joined["messages"]], ids[2:])
        self.assertEqual([m["text"] for m in joined["messages"]], ["m2", "m3", "m4"])

    @override_settings(ROOM_HISTORY_COUNT=2)
    async def test_after_resumes_with_exactly_the_missed_messages_past_the_history_count(
        self,
    ) -> None:
        ids = [await self.stored(f"m{i}") for i in range(5)]
        _, joined = await self.join("Ada", after=str(ids[0]))
        self.assertEqual([m["id"] for m in joined["messages"]], ids[1:])

    async def test_after_the_newest_id_resumes_with_nothing_then_goes_live(self) -> None:
        ids = [await self.stored(f"m{i}") for i in range(3)]
        ada, joined = await self.join("Ada", after=str(ids[-1]))
        self.assertEqual(joined["messages"], [])
        bob, _ = await self.join("Bob")
        live = await self.say(bob, "live", "l1")
        await frames_until(ada, {"type": "message", "message": live})

    async def test_after_an_id_from_the_future_resumes_with_nothing(self) -> None:
        await self.stored("m0")
        _, joined = await self.join("Ada", after="999999999")
        self.assertEqual(joined["messages"], [])

    async def test_history_holds_only_this_rooms_messages(self) -> None:
        other = await sync_to_async(room_create)(slug="den", title="Den")
        await sync_to_async(room_message_create)(room=other, author="Eve", text="elsewhere")
        mine = await self.stored("here")
        _, joined = await self.join("Ada")
        self.assertEqual([m["id"] for m in joined["messages"]], [mine])

    async def stored(self, text: str) -> int:
        message, _ = await sync_to_async(room_message_create)(
            room=self.room, author="Eve", text=text
        )
        return message.pk


class RoomTypingTests(RoomSocketTestCase):
    """typing is relayed to the others, at most once a second per socket."""

    async def test_typing_is_relayed_to_the_others_but_not_the_typist(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        await bob.send_json_to({"type": "typing"})
        await frames_until(ada, {"type": "typing", "member": {"name": "Bob"}})
        self.assertNotIn("typing", [f["type"] for f in await self.assert_still_open(bob)])

    async def test_typing_twice_within_a_second_is_relayed_once(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        await bob.send_json_to({"type": "typing"})
        await bob.send_json_to({"type": "typing"})
        marker = await self.say(bob, "done typing", "t1")
        frames = await frames_until(ada, {"type": "message", "message": marker})
        self.assertEqual(frames.count({"type": "typing", "member": {"name": "Bob"}}), 1)

    async def test_typing_sends_nothing_back(self) -> None:
        bob, _ = await self.join("Bob")
        await bob.send_json_to({"type": "typing"})
        self.assertEqual(await self.assert_still_open(bob), [])


class RoomIsolationTests(RoomSocketTestCase):
    """A member of one room never gets another room's messages, presence or typing."""

    async def test_nothing_from_another_room_arrives(self) -> None:
        await sync_to_async(room_create)(slug="den", title="Den")
        watcher, _ = await self.join("Xavier", slug="den")
        # In the lobby: join, typing, a message, a leave, a posted message.
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        await ada.send_json_to({"type": "typing"})
        await self.say(ada, "lobby only", "l1")
        await bob.disconnect()
        await sync_to_async(room_message_create)(room=self.room, author="Bot", text="lobby too")
        await frames_until(ada, {"type": "presence", "event": "leave", "member": {"name": "Bob"}})
        # In the den: a join and a message, the markers.
        yves, _ = await self.join("Yves", slug="den")
        marker = await self.say(yves, "den only", "d1")
        frames = await frames_until(watcher, {"type": "message", "message": marker})
        self.assertEqual(frames, [presence("join", "Yves"), {"type": "message", "message": marker}])

    async def test_one_name_in_two_rooms_is_two_members(self) -> None:
        await sync_to_async(room_create)(slug="den", title="Den")
        await self.join("Ada", client="browser-one")
        _, joined = await self.join("Ada", slug="den", client="browser-two")
        self.assertEqual(self.names(joined), {"Ada"})
        self.assertEqual(await presence_members(slug=SLUG), ["Ada"])


class RoomBadInputTests(RoomSocketTestCase):
    """Every bad frame gets an error frame; nothing is stored; the socket stays open."""

    async def assert_rejected(self, socket, code: str, *, text=None, bytes_=None) -> dict:
        if bytes_ is not None:
            await socket.send_to(bytes_data=bytes_)
        else:
            await socket.send_to(text_data=text)
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["type"], error["code"]), ("error", code), error)
        self.assertTrue(error["message"])
        self.assertEqual(await self.message_count(), 0)
        await self.assert_still_open(socket)
        return error

    async def test_non_json_or_nan_is_invalid_json(self) -> None:
        socket, _ = await self.join("Ada")
        for text in ("hello there", '{"type": "message", "text": NaN}'):
            with self.subTest(text=text):
                await self.assert_rejected(socket, "invalid_json", text=text)

    async def test_binary_frame_is_refused(self) -> None:
        socket, _ = await self.join("Ada")
        await self.assert_rejected(socket, "binary_not_supported", bytes_=b'{"type": "ping"}')

    async def test_non_object_or_typeless_frame_is_invalid_message(self) -> None:
        socket, _ = await self.join("Ada")
        for text in ("[1, 2]", '"ping"', "{}", '{"type": ""}', '{"type": 5}'):
            with self.subTest(text=text):
                await self.assert_rejected(socket, "invalid_message", text=text)

    async def test_unknown_type_is_refused(self) -> None:
        socket, _ = await self.join("Ada")
        for kind in ("launch", "presence", "joined", "ack"):
            with self.subTest(kind=kind):
                frame = json.dumps({"type": kind})
                error = await self.assert_rejected(socket, "unknown_type", text=frame)
                self.assertEqual(error["field"], "type")

    async def test_empty_blank_missing_or_non_string_text_is_invalid_text(self) -> None:
        socket, _ = await self.join("Ada")
        for text in ('{"type": "message", "text": ""}', '{"type": "message", "text": "  \\n "}',
                     '{"type": "message"}', '{"type": "message", "text": ["a"]}'):  # fmt: skip
            with self.subTest(text=text):
                error = await self.assert_rejected(socket, "invalid_text", text=text)
                self.assertEqual(error["field"], "text")

    @override_settings(CHAT_MAX_MESSAGE_CHARS=50)
    async def test_text_over_the_limit_is_text_too_long_with_the_client_id(self) -> None:
        socket, _ = await self.join("Ada")
        frame = json.dumps({"type": "message", "text": "x" * 51, "client_id": "long"})
        error = await self.assert_rejected(socket, "text_too_long", text=frame)
        self.assertEqual(error["client_id"], "long")

    async def test_frame_over_the_size_limit_is_refused_before_parsing(self) -> None:
        socket, _ = await self.join("Ada")
        frame = '{"type": "message", "text": "' + "x" * 40_000 + '"}'
        await self.assert_rejected(socket, "frame_too_large", text=frame)

    async def test_bad_client_id_is_refused(self) -> None:
        socket, _ = await self.join("Ada")
        for client_id in (5, "", "c" * 65):
            with self.subTest(client_id=client_id):
                frame = json.dumps({"type": "message", "text": "hi", "client_id": client_id})
                await self.assert_rejected(socket, "invalid_client_id", text=frame)

    async def test_bad_frames_do_not_reach_the_other_members(self) -> None:
        ada, _ = await self.join("Ada")
        bob, _ = await self.join("Bob")
        await self.assert_rejected(ada, "invalid_text", text='{"type": "message", "text": ""}')
        marker = await self.say(ada, "fine", "ok")
        frames = await frames_until(bob, {"type": "message", "message": marker})
        self.assertEqual(
            [f for f in frames if f["type"] != "presence"], [{"type": "message", "message": marker}]
        )


@override_settings(CHAT_RATE_LIMIT=3, CHAT_RATE_WINDOW=10**9)
class RoomRateLimitTests(RoomSocketTestCase):
    """Messages per member per room per window (a window far from its end)."""

    async def test_messages_past_the_limit_are_rate_limited_and_not_stored(self) -> None:
        ada, _ = await self.join("Ada")
        for index in range(3):
            await self.say(ada, f"m{index}", f"c{index}")
        error = await self.send(ada, {"type": "message", "text": "one more", "client_id": "c3"})
        self.assertEqual((error["type"], error["code"]), ("error", "rate_limited"), error)
        self.assertEqual(error["client_id"], "c3")
        self.assertGreater(error["retry_after"], 0)
        self.assertEqual(await self.message_count(), 3)
        await self.assert_still_open(ada)

    async def test_the_limit_is_per_member_across_its_tabs_not_per_room(self) -> None:
        first, _ = await self.join("Ada", client="browser-ada")
        second, _ = await self.join("Ada", client="browser-ada")
        bob, _ = await self.join("Bob")
        for index in range(3):
            await self.say(first if index % 2 else second, f"m{index}", f"c{index}")
        error = await self.send(first, {"type": "message", "text": "more", "client_id": "c3"})
        self.assertEqual(error["code"], "rate_limited")
        await self.say(bob, "Bob still may", "b1")


class RoomNameWithLineBreakTests(RoomSocketTestCase):
    """A name with a control character is refused (a line break once corrupted presence)."""

    async def test_name_with_a_line_break_does_not_make_another_name_taken(self) -> None:
        with contextlib.suppress(AssertionError):  # accepted or refused: both are fine
            await self.join("Ada\nx", client="browser-one")
        _, joined = await self.join("Ada", client="browser-two")
        self.assertEqual(joined["me"], "Ada")


class LiveRoomTestCase(LiveServerTestCase):
    """Members in two web processes, each with its own channel layer, sharing only Redis.

    One process is a live daphne server (forked at class setup, with its own channel
    layer, Redis clients and presence sweeper); members there connect through
    `websockets`. The other is this test process: members here connect through
    WebsocketCommunicator to the application in-process. That is how two web processes
    behind a load balancer share a room, and closer to it than two
    RedisPubSubChannelLayer instances in one process, which would still share this
    process's Redis clients and sweeper.

    The server lives for the whole class, so each test uses a room of its own: the
    pub/sub layer hands a group message to the sockets in the group when it reads the
    message, so an event of the previous test still unread by the server could
    otherwise reach this test's sockets.
    """

    rooms_created = 0

    def setUp(self) -> None:
        super().setUp()
        clear_room_keys()
        self.addCleanup(clear_room_keys)
        LiveRoomTestCase.rooms_created += 1
        self.slug = f"live-{LiveRoomTestCase.rooms_created}"
        room_create(slug=self.slug, title="Live")

    @contextlib.asynccontextmanager
    async def sockets(self):
        """Every socket opened inside is closed on the way out, even when a test fails."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                self.stack = stack
                yield
        finally:
            await loop_quiesce()

    async def remote(self, name: str, **params: str):
        """A member on the live server: its `websockets` connection and joined frame."""
        from websockets.asyncio.client import connect

        url = self.live_server_ws_url + room_path(self.slug, name=name, **params)
        socket = await connect(url, origin=self.live_server_url, proxy=None)
        self.stack.push_async_callback(socket.close)
        joined = await remote_receive(socket)
        self.assertEqual(joined["type"], "joined", joined)
        return socket, joined

    async def local_socket(self, name: str, **params: str) -> WebsocketCommunicator:
        socket = await open_socket(room_path(self.slug, name=name, **params), origin=ORIGIN)
        self.stack.push_async_callback(socket.disconnect, timeout=TIMEOUT)
        return socket

    async def local(self, name: str, **params: str):
        """A member in this process: its communicator and joined frame."""
        socket = await self.local_socket(name, **params)
        joined = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(joined["type"], "joined", joined)
        return socket, joined


async def remote_receive(socket, *, within: float = TIMEOUT) -> dict[str, Any]:
    """The next JSON frame of a `websockets` connection (cancelling recv() is safe)."""
    return json.loads(await asyncio.wait_for(socket.recv(), within))


async def remote_until(socket, done: Any, *, within: float = TIMEOUT) -> list[dict[str, Any]]:
    """Frames of a `websockets` connection up to and including the one that is `done`.

    `done` is a frame to wait for, or a predicate on frames.
    """
    matches = done if callable(done) else done.__eq__
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while not frames or not matches(frames[-1]):
        try:
            frames.append(await remote_receive(socket, within=deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"{done} not met within {within}s; got {frames}") from None
    return frames


def names(joined: dict[str, Any]) -> set[str]:
    return {member["name"] for member in joined["members"]}


class TwoProcessRoomTests(LiveRoomTestCase):
    """Presence and messages are right across two web processes."""

    async def test_members_in_two_processes_see_each_other_and_each_others_messages(
        self,
    ) -> None:
        async with self.sockets():
            ada, _ = await self.remote("Ada")
            bob, joined = await self.local("Bob")
            self.assertEqual(names(joined), {"Ada", "Bob"})
            await remote_until(ada, presence("join", "Bob"))
            cy, joined = await self.remote("Cy")
            self.assertEqual(names(joined), {"Ada", "Bob", "Cy"})
            await frames_until(bob, presence("join", "Cy"))

            await bob.send_json_to({"type": "message", "text": "from here", "client_id": "b1"})
            ack = (await receive_until(bob, lambda f: f["type"] == "ack"))[-1]
            for socket in (ada, cy):
                await remote_until(socket, {"type": "message", "message": ack["message"]})

            frame = {"type": "message", "text": "from the server", "client_id": "a1"}
            await ada.send(json.dumps(frame))
            ack = (await remote_until(ada, lambda f: f["type"] == "ack"))[-1]
            self.assertEqual((ack["message"]["author"], ack["client_id"]), ("Ada", "a1"))
            await frames_until(bob, {"type": "message", "message": ack["message"]})
            await remote_until(cy, {"type": "message", "message": ack["message"]})

            await ada.close()
            await frames_until(bob, presence("leave", "Ada"), within=QUICK)
            await bob.disconnect()
            await remote_until(cy, presence("leave", "Bob"), within=QUICK)

    async def test_tabs_in_two_processes_are_one_member_until_the_last_leaves(self) -> None:
        async with self.sockets():
            bob, _ = await self.remote("Bob")  # first, so every event about Ada is news to Bob
            here, _ = await self.local("Ada", client="browser-ada")
            there, joined = await self.remote("Ada", client="browser-ada")
            self.assertEqual(names(joined), {"Ada", "Bob"})
            await here.disconnect()  # returns once this process has handled the leave
            await self.local("Cy")  # marker, sent from this process after that
            frames = await remote_until(bob, presence("join", "Cy"))
            self.assertEqual(frames, [presence("join", "Ada"), presence("join", "Cy")])
            await there.close()
            await remote_until(bob, presence("leave", "Ada"), within=QUICK)

    async def test_name_present_in_one_process_is_taken_in_the_other(self) -> None:
        async with self.sockets():
            await self.remote("Ada", client="browser-one")
            socket = await self.local_socket("Ada", client="browser-two")
            error = await socket.receive_json_from(timeout=TIMEOUT)
            self.assertEqual((error["type"], error["code"]), ("error", "name_taken"))
            closed = await socket.receive_output(timeout=TIMEOUT)
            self.assertEqual((closed["type"], closed["code"]), ("websocket.close", 4403))

    async def test_capacity_counts_members_of_both_processes(self) -> None:
        await sync_to_async(room_create)(slug=f"{self.slug}-pair", title="Pair", capacity=2)
        self.slug = f"{self.slug}-pair"
        async with self.sockets():
            await self.remote("Ada")
            await self.local("Bob")
            socket = await self.local_socket("Cy")
            error = await socket.receive_json_from(timeout=TIMEOUT)
            self.assertEqual(error["code"], "room_full")
            closed = await socket.receive_output(timeout=TIMEOUT)
            self.assertEqual(closed["code"], 4409)


@override_settings(ROOM_PRESENCE_TIMEOUT=2.0, ROOM_PRESENCE_SWEEP_INTERVAL=0.2)
class TwoProcessTimeoutTests(LiveRoomTestCase):
    """The timeout sweep across processes.

    The class-level settings are in force when the server process is forked, so they
    hold there too; both processes run a sweeper, and either may announce the leave.
    """

    async def test_silent_member_on_the_server_is_announced_to_a_member_here(self) -> None:
        async with self.sockets():
            await self.remote("Ada")  # sends nothing (protocol pings never reach the consumer)
            bob, _ = await self.local("Bob")
            deadline = time.monotonic() + TIMEOUT
            frames: list[dict[str, Any]] = []
            while presence("leave", "Ada") not in frames:  # Bob pings: a ping is presence
                self.assertLess(time.monotonic(), deadline, frames)
                await bob.send_json_to({"type": "ping"})
                frames += (await receive_until(bob, lambda f: f == {"type": "pong"}))[:-1]
                await bob.receive_nothing(timeout=0.2)
            self.assertEqual(frames, [presence("leave", "Ada")])
            self.assertEqual(await presence_members(slug=self.slug), ["Bob"])

    async def test_silent_member_here_is_announced_to_a_member_on_the_server(self) -> None:
        async with self.sockets():
            ada, _ = await self.remote("Ada")
            await self.local("Bob")  # sends nothing
            deadline = time.monotonic() + TIMEOUT
            frames: list[dict[str, Any]] = []
            while presence("leave", "Bob") not in frames:  # Ada pings: a ping is presence
                self.assertLess(time.monotonic(), deadline, frames)
                await ada.send(json.dumps({"type": "ping"}))
                frames += (await remote_until(ada, {"type": "pong"}))[:-1]
                with contextlib.suppress(TimeoutError):
                    frames.append(await remote_receive(ada, within=0.2))
            self.assertEqual(frames, [presence("join", "Bob"), presence("leave", "Bob")])
            self.assertEqual(await presence_members(slug=self.slug), ["Ada"])
