"""The rooms HTTP API, over real HTTP against a live daphne server (and its room socket).

GET /api/rooms lists rooms with online counts; POST /api/rooms creates one (logged-in
users, with CSRF); POST /api/rooms/<slug>/messages posts into a room from outside (an API
token, or a logged-in staff session with CSRF).
"""

import json
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

import requests
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils.crypto import get_random_string
from websockets.sync.client import ClientConnection, connect

from chat.rooms.models import ApiToken, Room, RoomMessage
from chat.rooms.services import api_token_create, room_create
from chatsite.redis_clients import get_redis
from tests.support.cases import LiveServerTestCase

TIMEOUT = 30
PASSWORD = "a long enough test password"


def clear_room_keys() -> None:
    """Drop every rooms:* key (presence, owners, the active set); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="rooms:*", count=1000))
    if keys:
        client.delete(*keys)


class RoomsApiTestCase(LiveServerTestCase):
    """A live server, a room of its own per test, and clients of every kind.

    Each test's room has its own slug: the server lives for the whole class, and the
    pub/sub channel layer hands a group message to whoever is in the group when the
    server reads it, so a late event of an earlier test must not find this test's sockets.
    """

    rooms_created = 0

    def setUp(self) -> None:
        super().setUp()
        clear_room_keys()
        self.addCleanup(clear_room_keys)
        RoomsApiTestCase.rooms_created += 1
        self.slug = f"room-{RoomsApiTestCase.rooms_created}"
        self.room = room_create(slug=self.slug, title="A room")
        self.stack = ExitStack()
        self.addCleanup(self.stack.close)

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def messages_url(self, slug: str | None = None) -> str:
        return self.url(f"/api/rooms/{slug or self.slug}/messages")

    def assertError(self, response: requests.Response, status: int, code: str) -> dict:
        self.assertEqual(response.status_code, status, response.text)
        body = response.json()
        self.assertEqual(set(body), {"error"})
        self.assertEqual(body["error"]["code"], code)
        self.assertTrue(body["error"]["message"])
        return body["error"]

    def token(self) -> str:
        _, raw = api_token_create(name="integration")
        return raw

    def with_token(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def logged_in(self, *, staff: bool, csrf: bool = True) -> requests.Session:
        """A requests session of a new logged-in user, sending a CSRF token unless told not.

        The session cookie comes from Client.force_login; the CSRF cookie is a fresh
        32-character secret, echoed in X-CSRFToken as a browser's script would.
        """
        user = get_user_model().objects.create_user(
            username=f"user{get_user_model().objects.count()}", is_staff=staff
        )
        client = Client()
        client.force_login(user)
        session = self.stack.enter_context(requests.Session())
        session.cookies.set("sessionid", client.cookies["sessionid"].value)
        if csrf:
            secret = get_random_string(32)
            session.cookies.set("csrftoken", secret)
            session.headers["X-CSRFToken"] = secret
        return session

    def admin_login(self) -> requests.Session:
        """A staff member logged in through the admin login form, with its CSRF cookie."""
        get_user_model().objects.create_user(username="staff", password=PASSWORD, is_staff=True)
        session = self.stack.enter_context(requests.Session())
        session.get(self.url("/admin/login/"), timeout=TIMEOUT).raise_for_status()
        response = session.post(
            self.url("/admin/login/?next=/admin/"),
            data={"username": "staff", "password": PASSWORD,
                  "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            timeout=TIMEOUT, allow_redirects=False,
        )  # fmt: skip
        self.assertEqual(response.status_code, 302, response.text[:500])
        self.assertIn("sessionid", session.cookies)
        session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
        return session

    def member(self, name: str, *, slug: str | None = None, **params: str) -> ClientConnection:
        """A member's socket on the live server, past its joined frame."""
        query = "&".join(f"{k}={quote(v)}" for k, v in {"name": name, **params}.items())
        url = f"{self.live_server_ws_url}/ws/rooms/{slug or self.slug}?{query}"
        socket = self.stack.enter_context(connect(url, origin=self.live_server_url, proxy=None))
        joined = json.loads(socket.recv(timeout=TIMEOUT))
        self.assertEqual(joined["type"], "joined", joined)
        return socket


class RoomsListTests(RoomsApiTestCase):
    """GET /api/rooms."""

    def rooms(self) -> dict[str, dict[str, Any]]:
        response = requests.get(self.url("/api/rooms"), timeout=TIMEOUT)
        self.assertEqual(response.status_code, 200, response.text)
        return {room["slug"]: room for room in response.json()["rooms"]}

    def test_lists_every_room_by_slug_with_capacity_privacy_and_online_count(self) -> None:
        room_create(slug="a-pair", title="Two of us", capacity=2)
        response = requests.get(self.url("/api/rooms"), timeout=TIMEOUT)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            response.json(),
            {"rooms": [
                {"slug": "a-pair", "title": "Two of us", "capacity": 2, "private": True,
                 "online": 0},
                {"slug": self.slug, "title": "A room", "capacity": 50, "private": False,
                 "online": 0},
            ]},
        )  # fmt: skip

    def test_online_counts_members_not_sockets(self) -> None:
        room_create(slug="elsewhere", title="Elsewhere")
        self.member("Ada", client="browser-ada")
        self.member("Ada", client="browser-ada")
        self.member("Bob")
        rooms = self.rooms()
        self.assertEqual((rooms[self.slug]["online"], rooms["elsewhere"]["online"]), (2, 0))

    def test_online_drops_when_a_member_leaves(self) -> None:
        ada = self.member("Ada")
        bob = self.member("Bob")
        bob.close()
        json.loads(ada.recv(timeout=TIMEOUT))  # Bob's join
        leave = json.loads(ada.recv(timeout=TIMEOUT))  # the leave is sent after presence
        self.assertEqual(leave["event"], "leave")
        self.assertEqual(self.rooms()[self.slug]["online"], 1)

    def test_online_skips_members_silent_past_the_timeout(self) -> None:
        # A presence entry (see chat/rooms/presence.py) last seen an hour ago.
        get_redis().zadd(f"rooms:presence:{self.slug}", {"Ghost\nchannel-1": 1_000})
        self.assertEqual(self.rooms()[self.slug]["online"], 0)

    def test_wrong_method_is_405_with_allow_header(self) -> None:
        response = requests.put(self.url("/api/rooms"), timeout=TIMEOUT)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers["Allow"], "GET, POST")


class RoomCreateTests(RoomsApiTestCase):
    """POST /api/rooms: logged-in users, with CSRF."""

    def create(self, session: Any, body: Any) -> requests.Response:
        return session.post(self.url("/api/rooms"), json=body, timeout=TIMEOUT)

    def test_logged_in_user_creates_a_room(self) -> None:
        response = self.create(self.logged_in(staff=False), {"slug": "new", "title": "New"})
        self.assertEqual(response.status_code, 201, response.text)
        self.assertEqual(
            response.json(),
            {"slug": "new", "title": "New", "capacity": 50, "private": False, "online": 0},
        )
        room = Room.objects.get(slug="new")
        self.assertEqual((room.title, room.capacity), ("New", 50))

    def test_capacity_2_makes_a_private_room(self) -> None:
        body = {"slug": "pair", "title": "Pair", "capacity": 2}
        response = self.create(self.logged_in(staff=False), body)
        self.assertEqual(response.status_code, 201, response.text)
        self.assertEqual((response.json()["capacity"], response.json()["private"]), (2, True))

    def test_created_room_can_be_joined(self) -> None:
        self.create(self.logged_in(staff=False), {"slug": "fresh", "title": "Fresh"})
        self.member("Ada", slug="fresh")

    def test_anonymous_is_401_and_nothing_is_created(self) -> None:
        self.assertError(
            self.create(requests, {"slug": "new", "title": "New"}), 401, "unauthorized"
        )
        self.assertFalse(Room.objects.filter(slug="new").exists())

    def test_api_token_does_not_create_rooms(self) -> None:
        response = requests.post(
            self.url("/api/rooms"), json={"slug": "new", "title": "New"},
            headers=self.with_token(self.token()), timeout=TIMEOUT,
        )  # fmt: skip
        self.assertError(response, 401, "unauthorized")

    def test_missing_or_wrong_csrf_token_is_403_csrf_failed(self) -> None:
        session = self.logged_in(staff=False, csrf=False)
        self.assertError(self.create(session, {"slug": "new", "title": "New"}), 403, "csrf_failed")
        session = self.logged_in(staff=False)
        session.headers["X-CSRFToken"] = get_random_string(32)
        self.assertError(self.create(session, {"slug": "new", "title": "New"}), 403, "csrf_failed")
        self.assertFalse(Room.objects.filter(slug="new").exists())

    def test_bad_slug_is_400_invalid_slug(self) -> None:
        session = self.logged_in(staff=False)
        for slug in ("Bad Slug", "", "-dash", "x" * 51, 5, None, self.slug):
            with self.subTest(slug=slug):
                body = {"title": "T"} | ({} if slug is None else {"slug": slug})
                error = self.assertError(self.create(session, body), 400, "invalid_slug")
                self.assertEqual(error["field"], "slug")
        self.assertEqual(Room.objects.count(), 1)

    def test_bad_capacity_is_400_invalid_capacity(self) -> None:
        session = self.logged_in(staff=False)
        for capacity in (1, 0, -3, "3", True, 2.5, None):
            with self.subTest(capacity=capacity):
                body = {"slug": "new", "title": "T", "capacity": capacity}
                error = self.assertError(self.create(session, body), 400, "invalid_capacity")
                self.assertEqual(error["field"], "capacity")

    def test_bad_title_is_400_invalid_title(self) -> None:
        session = self.logged_in(staff=False)
        for body in ({"slug": "new"}, {"slug": "new", "title": ""},
                     {"slug": "new", "title": "x" * 101}):  # fmt: skip
            with self.subTest(body=str(body)[:40]):
                error = self.assertError(self.create(session, body), 400, "invalid_title")
                self.assertEqual(error["field"], "title")

    def test_malformed_json_is_400_invalid_json(self) -> None:
        session = self.logged_in(staff=False)
        for raw in (b"{bad", b"[1, 2]", b"NaN"):
            with self.subTest(raw=raw):
                response = session.post(self.url("/api/rooms"), data=raw, timeout=TIMEOUT)
                self.assertError(response, 400, "invalid_json")


class RoomPostTests(RoomsApiTestCase):
    """POST /api/rooms/<slug>/messages: an API token, or a staff session with CSRF."""

    def post(self, body: Any, *, token: str | None = None, session: Any = requests, slug=None):
        headers = self.with_token(token) if token else {}
        return session.post(self.messages_url(slug), json=body, headers=headers, timeout=TIMEOUT)

    def test_api_token_posts_a_message(self) -> None:
        token = self.token()
        response = self.post({"text": "Deploy finished", "author": "  CI bot "}, token=token)
        self.assertEqual(response.status_code, 201, response.text)
        message = response.json()["message"]
        self.assertEqual(
            set(message), {"id", "author", "text", "status", "created_at", "reply_to", "client_id"}
        )
        self.assertEqual(
            (message["author"], message["text"], message["status"], message["client_id"]),
            ("CI bot", "Deploy finished", "done", None),
        )
        stored = RoomMessage.objects.get(pk=message["id"])
        self.assertEqual((stored.room_id, stored.author), (self.room.pk, "CI bot"))
        self.assertIsNotNone(ApiToken.objects.get().last_used_at)

    def test_posted_message_reaches_every_member_socket(self) -> None:
        ada = self.member("Ada")
        bob = self.member("Bob")
        response = self.post({"text": "hello room", "author": "Announcer"}, token=self.token())
        expected = {"type": "message", "message": response.json()["message"]}
        for socket in (ada, bob):
            frames = [json.loads(socket.recv(timeout=TIMEOUT))]
            while frames[-1]["type"] == "presence":
                frames.append(json.loads(socket.recv(timeout=TIMEOUT)))
            self.assertEqual(frames[-1], expected)

    def test_posted_message_is_in_the_history_of_a_member_who_joins_later(self) -> None:
        message = self.post({"text": "earlier", "author": "Bot"}, token=self.token()).json()
        url = f"{self.live_server_ws_url}/ws/rooms/{self.slug}?name=Ada"
        with connect(url, origin=self.live_server_url, proxy=None) as socket:
            joined = json.loads(socket.recv(timeout=TIMEOUT))
        self.assertEqual(joined["messages"], [message["message"]])

    def test_staff_logged_in_through_the_admin_posts_with_csrf(self) -> None:
        response = self.post({"text": "from staff", "author": "Staff"}, session=self.admin_login())
        self.assertEqual(response.status_code, 201, response.text)
        self.assertEqual(RoomMessage.objects.get().text, "from staff")

    def test_staff_session_with_csrf_posts(self) -> None:
        response = self.post({"text": "hi", "author": "Staff"}, session=self.logged_in(staff=True))
        self.assertEqual(response.status_code, 201, response.text)

    def test_anonymous_is_401_in_the_error_shape(self) -> None:
        self.assertError(self.post({"text": "hi", "author": "Eve"}), 401, "unauthorized")
        self.assertEqual(RoomMessage.objects.count(), 0)

    def test_unknown_or_inactive_token_is_401(self) -> None:
        token = self.token()
        ApiToken.objects.update(active=False)
        for value in (token, "not-a-token"):
            with self.subTest(value=value[:4]):
                response = self.post({"text": "hi", "author": "Eve"}, token=value)
                self.assertError(response, 401, "unauthorized")
        self.assertEqual(RoomMessage.objects.count(), 0)

    def test_authorization_that_is_not_bearer_is_no_token(self) -> None:
        token = self.token()
        for header in (f"Token {token}", "Bearer ", token):
            with self.subTest(header=header[:8]):
                response = requests.post(
                    self.messages_url(), json={"text": "hi", "author": "Eve"},
                    headers={"Authorization": header}, timeout=TIMEOUT,
                )  # fmt: skip
                self.assertError(response, 401, "unauthorized")

    def test_bearer_scheme_is_case_insensitive(self) -> None:
        response = requests.post(
            self.messages_url(), json={"text": "hi", "author": "Eve"},
            headers={"Authorization": f"bearer {self.token()}"}, timeout=TIMEOUT,
        )  # fmt: skip
        self.assertEqual(response.status_code, 201, response.text)

    def test_logged_in_user_who_is_not_staff_is_403_forbidden(self) -> None:
        response = self.post({"text": "hi", "author": "Eve"}, session=self.logged_in(staff=False))
        self.assertError(response, 403, "forbidden")
        self.assertEqual(RoomMessage.objects.count(), 0)

    def test_staff_session_without_or_with_a_wrong_csrf_token_is_403_csrf_failed(self) -> None:
        session = self.logged_in(staff=True, csrf=False)
        self.assertError(
            self.post({"text": "hi", "author": "S"}, session=session), 403, "csrf_failed"
        )
        session = self.logged_in(staff=True)
        session.headers["X-CSRFToken"] = get_random_string(32)
        self.assertError(
            self.post({"text": "hi", "author": "S"}, session=session), 403, "csrf_failed"
        )
        self.assertEqual(RoomMessage.objects.count(), 0)

    def test_unknown_room_is_404_not_found(self) -> None:
        response = self.post({"text": "hi", "author": "Eve"}, token=self.token(), slug="nope")
        self.assertError(response, 404, "not_found")

    def test_unknown_room_without_credentials_is_401_not_404(self) -> None:
        self.assertError(
            self.post({"text": "hi", "author": "Eve"}, slug="nope"), 401, "unauthorized"
        )

    def test_bad_text_is_400(self) -> None:
        token = self.token()
        cases = [
            ({"author": "Eve"}, "invalid_text"),
            ({"author": "Eve", "text": ""}, "invalid_text"),
            ({"author": "Eve", "text": "  "}, "invalid_text"),
            ({"author": "Eve", "text": 5}, "invalid_text"),
            ({"author": "Eve", "text": "x" * 4001}, "text_too_long"),
        ]
        for body, code in cases:
            with self.subTest(body=str(body)[:40]):
                error = self.assertError(self.post(body, token=token), 400, code)
                self.assertEqual(error["field"], "text")
        self.assertEqual(RoomMessage.objects.count(), 0)

    def test_bad_author_is_400_invalid_name(self) -> None:
        token = self.token()
        for author in (None, "", "   ", "x" * 81, 5):
            with self.subTest(author=str(author)[:10]):
                body = {"text": "hi"} | ({} if author is None else {"author": author})
                self.assertError(self.post(body, token=token), 400, "invalid_name")
        self.assertEqual(RoomMessage.objects.count(), 0)

    def test_malformed_json_is_400_invalid_json(self) -> None:
        for raw in (b"{bad", b"[1]", b"NaN"):
            with self.subTest(raw=raw):
                response = requests.post(
                    self.messages_url(), data=raw, headers=self.with_token(self.token()),
                    timeout=TIMEOUT,
                )  # fmt: skip
                self.assertError(response, 400, "invalid_json")

    def test_wrong_method_is_405_with_allow_header(self) -> None:
        response = requests.get(self.messages_url(), timeout=TIMEOUT)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers["Allow"], "POST")


class RoomPostAuthorFieldTests(RoomsApiTestCase):
    """A bad author is reported under the request's own field, "author"."""

    def test_bad_author_error_names_the_author_field(self) -> None:
        response = requests.post(
            self.messages_url(), json={"text": "hi", "author": ""},
            headers=self.with_token(self.token()), timeout=TIMEOUT,
        )  # fmt: skip
        self.assertEqual(response.status_code, 400)
        self.assertEqual(response.json()["error"]["field"], "author")
