"""The Django admin for rooms, room messages and API tokens."""

import re
import time
from unittest import mock

import redis
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import TestCase
from django.urls import reverse

from chat.rooms.models import ApiToken, Room, RoomMessage
from chat.rooms.presence import presence_counts
from chat.rooms.services import api_token_create, room_create
from chatsite.credentials import credential_hash
from chatsite.redis_clients import get_redis
from tests.support.cases import SocketTestCase, receive_until

ROOMS_URL = reverse("admin:chat_room_changelist")
MESSAGES_URL = reverse("admin:chat_roommessage_changelist")
TOKENS_URL = reverse("admin:chat_apitoken_changelist")
TOKEN_ADD_URL = reverse("admin:chat_apitoken_add")


def clear_room_keys() -> None:
    """Drop every room presence key (tests.support.cases.reset_redis leaves rooms:*)."""
    client = get_redis()
    keys = list(client.scan_iter(match="rooms:*", count=1000))
    if keys:
        client.delete(*keys)


def be_present(slug: str, *entries: str) -> None:
    """Mark `<name>\\n<channel>` entries fresh in a room's presence set, as sockets do."""
    now = int(time.time() * 1000)
    get_redis().zadd(f"rooms:presence:{slug}", {entry: now for entry in entries})


def messages_shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


class RoomAdminTestCase(TestCase):
    """A logged-in superuser; a lobby with three messages and an empty private room."""

    def setUp(self) -> None:
        clear_room_keys()
        self.addCleanup(clear_room_keys)
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        self.lobby = room_create(slug="lobby", title="Lobby")
        self.pair = room_create(slug="pair", title="Ada and Bob", capacity=2)
        self.hello = RoomMessage.objects.create(room=self.lobby, author="Ada", text="hello all")
        self.long = RoomMessage.objects.create(room=self.lobby, author="Bob", text="long " * 100)
        self.failed = RoomMessage.objects.create(
            room=self.lobby, author="assistant", status="failed", reply_to=self.hello,
            error="The inference API refused the request (400).",
        )  # fmt: skip

    def get(self, url: str, **params: str):
        response = self.client.get(url, params)
        self.assertEqual(response.status_code, 200)
        return response

    def listed(self, url: str, **params: str) -> list:
        return list(self.get(url, **params).context["cl"].result_list)


# --- rooms ---------------------------------------------------------------------------------


class RoomListTests(RoomAdminTestCase):
    def test_list_shows_capacity_private_online_and_message_counts(self):
        be_present("lobby", "Ada\nchannel-1", "Bob\nchannel-2", "Bob\nchannel-3")  # Bob: 2 tabs
        response = self.get(ROOMS_URL)
        html = response.content.decode()
        for column in ("Slug", "Title", "Capacity", "Private", "Online", "Messages"):
            self.assertIn(column, html)
        rows = {room.slug: room for room in response.context["cl"].result_list}
        self.assertEqual(rows["lobby"]._online, 2)
        self.assertEqual(rows["pair"]._online, 0)
        self.assertEqual(rows["lobby"]._message_count, 3)
        self.assertEqual(rows["pair"]._message_count, 0)
        self.assertIn('alt="True"', html)  # pair: private
        self.assertIn('alt="False"', html)  # lobby: not private

    def test_online_counts_are_read_in_one_call_per_page(self):
        room_create(slug="third", title="Third")
        with mock.patch("chat.rooms.admin.presence_counts", wraps=presence_counts) as counts:
            self.get(ROOMS_URL)
        counts.assert_called_once()
        self.assertEqual(sorted(counts.call_args.kwargs["slugs"]), ["lobby", "pair", "third"])

    def test_without_redis_the_list_still_shows_and_says_why(self):
        failing = mock.patch(
            "chat.rooms.admin.presence_counts", side_effect=redis.ConnectionError("down")
        )
        with failing, self.assertLogs("chatsite.admin_mixins", "WARNING"):
            response = self.get(ROOMS_URL)
        self.assertIn("Redis is unavailable: online counts unknown.", messages_shown(response))
        self.assertEqual({r._online for r in response.context["cl"].result_list}, {None})

    def test_search_by_slug_or_title(self):
        self.assertEqual([r.slug for r in self.listed(ROOMS_URL, q="bob")], ["pair"])
        self.assertEqual([r.slug for r in self.listed(ROOMS_URL, q="lobby")], ["lobby"])

    def test_add_a_room_then_its_slug_is_read_only(self):
        response = self.client.post(
            reverse("admin:chat_room_add"), {"slug": "new-room", "title": "New", "capacity": 5}
        )
        self.assertEqual(response.status_code, 302)
        room = Room.objects.get(slug="new-room")
        self.assertEqual(room.capacity, 5)
        change = self.get(reverse("admin:chat_room_change", args=[room.pk]))
        self.assertNotContains(change, 'name="slug"')
        self.assertContains(change, 'name="title"')

    def test_add_refuses_a_bad_slug_and_a_capacity_of_one(self):
        response = self.client.post(
            reverse("admin:chat_room_add"), {"slug": "Bad Slug", "title": "x", "capacity": 1}
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(set(response.context["adminform"].form.errors), {"slug", "capacity"})


# --- messages --------------------------------------------------------------------------------


class RoomMessageListTests(RoomAdminTestCase):
    def ids(self, **params: str) -> set[int]:
        return {m.pk for m in self.listed(MESSAGES_URL, **params)}

    def test_list_shows_room_author_status_created_and_short_text(self):
        html = self.get(MESSAGES_URL).content.decode()
        for column in ("Room", "Author", "Status", "Created at", "Text"):
            self.assertIn(column, html)
        self.assertIn("hello all", html)
        self.assertNotIn("long " * 30, html)
        self.assertIn("…", html)
        self.assertIn("[The inference API refused the request (400).]", html)

    def test_search_by_text_author_or_room(self):
        self.assertEqual(self.ids(q="hello"), {self.hello.pk})
        self.assertEqual(self.ids(q="bob"), {self.long.pk})
        other = RoomMessage.objects.create(room=self.pair, author="Cy", text="hi")
        self.assertEqual(self.ids(q="pair"), {other.pk})
        self.assertEqual(self.ids(q="Ada and"), {other.pk})  # by room title
        self.assertEqual(self.ids(q="nothing like it"), set())

    def test_filter_by_room_and_status(self):
        other = RoomMessage.objects.create(room=self.pair, author="Cy", text="hi")
        self.assertEqual(self.ids(room__id__exact=str(self.pair.pk)), {other.pk})
        self.assertEqual(self.ids(status__exact="failed"), {self.failed.pk})

    def test_messages_cannot_be_added_or_edited(self):
        with self.assertLogs("django.request", "WARNING"):  # 403, logged
            response = self.client.get(reverse("admin:chat_roommessage_add"))
        self.assertEqual(response.status_code, 403)
        url = reverse("admin:chat_roommessage_change", args=[self.hello.pk])
        self.assertNotContains(self.get(url), 'name="text"')
        with self.assertLogs("django.request", "WARNING"):  # 403, logged
            self.client.post(url, {"text": "changed"})
        self.hello.refresh_from_db()
        self.assertEqual(self.hello.text, "hello all")

    def test_delete_goes_through_the_service(self):
        url = reverse("admin:chat_roommessage_delete", args=[self.hello.pk])
        with mock.patch("chat.rooms.admin.room_messages_delete", return_value=1) as delete:
            self.client.post(url, {"post": "yes"})
        delete.assert_called_once_with(message_ids=[self.hello.pk])
        with mock.patch("chat.rooms.admin.room_messages_delete", return_value=2) as delete:
            self.client.post(
                MESSAGES_URL,
                {
                    "action": "delete_selected",
                    "_selected_action": [self.hello.pk, self.long.pk],
                    "post": "yes",
                },
            )
        delete.assert_called_once()
        self.assertEqual(
            sorted(delete.call_args.kwargs["message_ids"]), sorted([self.hello.pk, self.long.pk])
        )


# --- API tokens ------------------------------------------------------------------------------


class ApiTokenTests(RoomAdminTestCase):
    def test_new_token_is_shown_once_and_only_its_prefix_after(self):
        response = self.client.post(TOKEN_ADD_URL, {"name": "deploy bot"}, follow=True)
        self.assertEqual(response.status_code, 200)
        shown = [m for m in messages_shown(response) if "<code>" in m]
        self.assertEqual(len(shown), 1, messages_shown(response))
        self.assertIn("shown only this once", shown[0])
        raw = re.search(r"<code>([^<]+)</code>", shown[0]).group(1)
        token = ApiToken.objects.get()
        self.assertEqual(token.name, "deploy bot")
        self.assertTrue(token.active)
        self.assertEqual(token.token_hash, credential_hash(raw))
        self.assertEqual(token.token_prefix, raw[:8])

        listing = self.get(TOKENS_URL).content.decode()
        self.assertIn(f"{token.token_prefix}…", listing)
        self.assertNotIn(raw, listing)
        change = self.get(reverse("admin:chat_apitoken_change", args=[token.pk]))
        self.assertNotContains(change, raw)
        self.assertNotContains(change, token.token_hash)
        self.assertNotContains(change, 'name="token_hash"')

    def test_add_form_asks_only_for_a_name(self):
        form = self.get(TOKEN_ADD_URL).context["adminform"].form
        self.assertEqual(list(form.fields), ["name"])

    def test_deactivate_selected_tokens(self):
        first, _ = api_token_create(name="first")
        second, _ = api_token_create(name="second")
        response = self.client.post(
            TOKENS_URL, {"action": "deactivate", "_selected_action": [first.pk]}, follow=True
        )
        self.assertIn("Deactivated 1 token(s).", messages_shown(response))
        first.refresh_from_db()
        second.refresh_from_db()
        self.assertFalse(first.active)
        self.assertTrue(second.active)

    def test_search_by_name_or_prefix_and_filter_by_active(self):
        first, _ = api_token_create(name="first")
        second, _ = api_token_create(name="second")
        ApiToken.objects.filter(pk=second.pk).update(active=False)
        self.assertEqual([t.pk for t in self.listed(TOKENS_URL, q="first")], [first.pk])
        found = self.listed(TOKENS_URL, q=second.token_prefix)
        self.assertEqual([t.pk for t in found], [second.pk])
        self.assertEqual([t.pk for t in self.listed(TOKENS_URL, active__exact="1")], [first.pk])


# --- deleting removes the message live ------------------------------------------------------


class LiveDeleteTests(SocketTestCase):
    """A member's socket is told when the admin deletes a message, one or several at once."""

    def setUp(self) -> None:
        super().setUp()
        clear_room_keys()
        self.addCleanup(clear_room_keys)
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        self.lobby = room_create(slug="lobby", title="Lobby")
        self.first, self.second, self.third = (
            RoomMessage.objects.create(room=self.lobby, author="Ada", text=text)
            for text in ("one", "two", "three")
        )

    async def join(self) -> object:
        socket = await self.open_socket("/ws/rooms/lobby?name=Watcher&client=watcher-browser")
        joined = await socket.receive_json_from(timeout=10)
        self.assertEqual(joined["type"], "joined")
        self.assertEqual(len(joined["messages"]), 3)
        return socket

    async def test_deleting_one_message_sends_deleted_to_members(self):
        socket = await self.join()
        url = reverse("admin:chat_roommessage_delete", args=[self.second.pk])
        response = await sync_to_async(self.client.post)(url, {"post": "yes"})
        self.assertEqual(response.status_code, 302)
        frames = await receive_until(socket, lambda f: f["type"] == "deleted", within=10)
        self.assertEqual(frames[-1], {"type": "deleted", "message_id": self.second.pk})
        ids = await sync_to_async(lambda: set(RoomMessage.objects.values_list("pk", flat=True)))()
        self.assertEqual(ids, {self.first.pk, self.third.pk})

    async def test_bulk_delete_action_sends_deleted_for_each(self):
        socket = await self.join()
        chosen = [self.first.pk, self.third.pk]
        response = await sync_to_async(self.client.post)(
            MESSAGES_URL, {"action": "delete_selected", "_selected_action": chosen, "post": "yes"}
        )
        self.assertEqual(response.status_code, 302)
        seen: set[int] = set()

        def both_deleted(frame: dict) -> bool:
            if frame["type"] == "deleted":
                seen.add(frame["message_id"])
            return seen == set(chosen)

        await receive_until(socket, both_deleted, within=10)
        count = await sync_to_async(RoomMessage.objects.count)()
        self.assertEqual(count, 1)
