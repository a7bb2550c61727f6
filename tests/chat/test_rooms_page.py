"""The rooms page: served by Django, and two people chatting in one room in headless Chromium.

The browser tests run against the real system (daphne, the test Redis, a Celery worker
with the offline stand-in answering @assistant), each person in their own browser
context, so each has their own localStorage: their own name and client id.
"""

import base64
import json
import re
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import SimpleTestCase, override_settings

from chat.rooms.models import RoomMessage
from chat.rooms.services import room_create, room_messages_delete
from chat.views import PAGE_CSP
from chatsite.redis_clients import get_redis
from tests.support.browser import LiveBrowserTestCase, artifact_path, expect

ROOM_ASSETS = [
    "chat/rooms.js",
    "chat/rooms.css",
    "chat/app.css",
    "vendor/marked/marked.umd.js",
    "vendor/dompurify/purify.min.js",
]
XSS = "<img src=x onerror=alert(1)>"
# The offline stand-in echoes the question a word per OFFLINE_CHUNK_DELAY: this one keeps a
# reply streaming for about ten seconds, long enough to act on it mid-stream.
LONG_QUESTION = "@assistant " + " ".join(f"w{index}" for index in range(200))


# --- the page as Django serves it (no browser needed) ----------------------------------------


class RoomsPageViewTests(SimpleTestCase):
    """GET /rooms/ renders the page with its settings and the chat page's strict CSP."""

    def config(self, response: Any) -> dict[str, Any]:
        match = re.search(
            r'<script id="rooms-config" type="application/json">(.*?)</script>',
            response.content.decode(),
            re.S,
        )
        self.assertIsNotNone(match)
        return json.loads(match.group(1))

    def test_page_exposes_urls_and_limits_to_its_script(self):
        response = self.client.get("/rooms/")
        self.assertEqual(response.status_code, 200)
        config = self.config(response)
        self.assertEqual(config["roomsUrl"], "/api/rooms")
        self.assertEqual(config["socketPath"], "/ws/rooms/")
        self.assertEqual(config["maxMessageChars"], settings.CHAT_MAX_MESSAGE_CHARS)
        self.assertEqual(config["maxNameChars"], settings.CHAT_NAME_MAX_CHARS)
        self.assertEqual(config["assistantName"], "assistant")
        self.assertLess(config["pingEveryMs"], settings.ROOM_PRESENCE_TIMEOUT * 1000)

    @override_settings(ROOM_PRESENCE_TIMEOUT=6)
    def test_pings_come_well_within_the_presence_timeout(self):
        self.assertEqual(self.config(self.client.get("/rooms/"))["pingEveryMs"], 2000)

    def test_policy_is_the_chat_pages(self):
        policy = self.client.get("/rooms/")["Content-Security-Policy"]
        self.assertEqual(policy, PAGE_CSP)
        self.assertNotIn("unsafe-inline", policy)

    def test_page_loads_only_its_own_assets(self):
        html = self.client.get("/rooms/").content.decode()
        self.assertNotRegex(html, r'(src|href)="(https?:)?//')
        for asset in ROOM_ASSETS:
            with self.subTest(asset=asset):
                self.assertIn(f"/static/{asset}", html)
                self.assertIsNotNone(finders.find(asset))

    def test_only_get_and_head(self):
        self.assertEqual(self.client.head("/rooms/").status_code, 200)
        self.assertEqual(self.client.post("/rooms/").status_code, 405)


# --- browser helpers -----------------------------------------------------------------------------


def send(page: Any, text: str) -> None:
    """Type a message into the composer and press Enter."""
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def message_ids(page: Any, slug: str = "lobby") -> list[str]:
    """The data-id of every message element of a room, in page order."""
    return page.locator(f"#panel-{slug} .messages > li").evaluate_all(
        "items => items.map(i => i.dataset.id)"
    )


@override_settings(INFERENCE_PROVIDER="offline")
class RoomsPageTests(LiveBrowserTestCase):
    """Two people (two browser contexts) in rooms, with the offline stand-in answering."""

    worker_env: ClassVar[dict[str, str]] = {
        "INFERENCE_PROVIDER": "offline",
        "OFFLINE_CHUNK_DELAY": "0.05",
    }

    def setUp(self) -> None:
        super().setUp()
        client = get_redis()  # presence from an earlier test must not hold names here
        keys = list(client.scan_iter(match="rooms:*", count=1000))
        if keys:
            client.delete(*keys)
        self.lobby = room_create(slug="lobby", title="Lobby")

    def enter(self, page: Any, name: str, slug: str | None = "lobby") -> Any:
        """Open the page (at a room, or at the list), pick a name, wait until joined."""
        page.goto(self.live_server_url + "/rooms/" + (f"#{slug}" if slug else ""))
        page.get_by_label("Display name").fill(name)
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#me-name")).to_have_text(name)
        if slug:
            self.expect_connection(page, "connected")
        return page

    def expect_connection(self, page: Any, state: str) -> None:
        expect(page.locator("#conn-status")).to_have_attribute("data-state", state)

    def member(self, page: Any, name: str) -> Any:
        return page.locator(f'#members li[data-name="{name}"]')

    def by(self, page: Any, author: str, slug: str = "lobby") -> Any:
        """The messages of one author in a room, as the page shows them."""
        return page.locator(f'#panel-{slug} li.msg[data-author="{author}"]')

    def assert_no_duplicates(self, page: Any, slug: str = "lobby") -> list[str]:
        ids = message_ids(page, slug)
        self.assertTrue(all(ids), ids)
        self.assertEqual(len(ids), len(set(ids)), ids)
        return ids

    def assert_no_horizontal_scroll(self, page: Any) -> None:
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        self.assertLessEqual(widths[0], widths[1], f"page scrolls sideways: {widths}")

    def screenshot_side_by_side(self, pages: dict[str, Any], name: str) -> None:
        """Screenshots of several pages next to each other, captioned, in one image."""
        figures = "".join(
            f'<figure><figcaption>{caption}</figcaption><img src="data:image/png;base64,'
            f'{base64.b64encode(page.screenshot()).decode()}"></figure>'
            for caption, page in pages.items()
        )
        style = (
            "body{margin:0;display:flex;gap:16px;padding:16px;background:#9aa3ad;"
            "font:600 18px system-ui,sans-serif}figure{margin:0}"
            "figcaption{margin:0 0 8px}img{display:block;border:1px solid #555}"
        )
        sheet = self.browser.new_page(viewport={"width": 400, "height": 300})
        try:
            sheet.set_content(f"<!doctype html><style>{style}</style><body>{figures}</body>")
            sheet.screenshot(path=str(artifact_path(name)), full_page=True)
        finally:
            sheet.close()

    # --- the whole story: join, see each other, chat, type, drop and resume -----------------

    def test_two_people_chat_see_typing_and_a_dropped_page_catches_up(self):
        ada = self.new_page(width=1100, height=760)
        self.page.close()  # the default page is not needed
        bob = self.new_page(width=1100, height=760)
        self.enter(ada, "Ada")
        self.enter(bob, "Bob")
        for page, other in ((ada, "Bob"), (bob, "Ada")):
            expect(self.member(page, other)).to_have_attribute("data-online", "true")
            expect(page.locator("#members-title")).to_have_text("Members · 2 online")

        send(ada, "Hello Bob")
        expect(self.by(bob, "Ada").locator(".msg__body")).to_have_text("Hello Bob")
        expect(self.by(bob, "Ada").locator(".msg__author")).to_have_text("Ada")
        expect(bob.locator("li.msg--other")).to_have_count(1)
        send(bob, "Hi Ada, **plain** text")
        expect(self.by(ada, "Bob").locator(".msg__body")).to_have_text("Hi Ada, **plain** text")
        for page in (ada, bob):  # each sees their own message on their side, settled
            mine = page.locator("li.msg--user")
            expect(mine).to_have_count(1)
            expect(mine.locator(".msg__state")).to_have_text("")

        # Typing: Bob sees it while Ada types, and it goes away after she stops.
        box = ada.locator("#composer-input")
        box.press_sequentially("I am typing something longer now", delay=100)
        expect(bob.locator("#typing")).to_have_text("Ada is typing…")
        expect(ada.locator("#typing")).to_have_text("")
        box.fill("")
        expect(bob.locator("#typing")).to_have_text("")

        # Bob's connection drops; Ada sees him go and writes twice meanwhile.
        last_id = message_ids(bob)[-1]
        bob.evaluate("window.roomsApp.debugDropSocket(4000)")
        self.expect_connection(bob, "reconnecting")
        expect(self.member(ada, "Bob")).to_have_attribute("data-online", "false")
        send(ada, "while you were away (1)")
        send(ada, "while you were away (2)")
        expect(ada.locator("li.msg--user .msg__state", has_text="…")).to_have_count(0)
        expect(ada.locator("li.msg--user")).to_have_count(3)

        # He comes back, resumes after the last message he had, and sees both exactly once.
        self.expect_connection(bob, "connected")
        away = self.by(bob, "Ada").filter(has_text="while you were away")
        expect(away.locator(".msg__body")).to_have_text(
            ["while you were away (1)", "while you were away (2)"]
        )
        expect(bob.locator("#panel-lobby .messages > li")).to_have_count(4)
        self.assertEqual(self.assert_no_duplicates(bob), self.assert_no_duplicates(ada))
        urls = bob.evaluate("window.roomsApp.socketUrls()")
        self.assertEqual(len(urls), 2, urls)
        self.assertTrue(urls[1].endswith(f"&after={last_id}"), urls)
        self.assertNotIn("after=", urls[0])
        expect(self.member(ada, "Bob")).to_have_attribute("data-online", "true")
        self.screenshot_side_by_side({"Ada": ada, "Bob": bob}, "rooms-two-pages.png")
        self.assertEqual(RoomMessage.objects.count(), 4)

    def test_assistant_answers_where_everyone_sees_it(self):
        ada = self.enter(self.page, "Ada")
        bob = self.enter(self.new_page(), "Bob")
        send(ada, "@assistant hello **there**")
        expect(self.by(ada, "Ada").locator(".msg__body")).to_have_text(
            "@assistant hello **there**"  # a person's text stays plain
        )
        for page in (ada, bob):
            reply = self.by(page, "assistant")
            expect(reply).to_have_count(1)
            expect(reply).to_have_attribute("data-status", "done")
            expect(reply).to_have_class(re.compile(r"\bmsg--assistant\b"))
            expect(reply.locator(".msg__author")).to_have_text("Assistant")
            expect(reply.locator(".msg__body")).to_contain_text("hello")
            expect(reply.locator(".msg__body strong")).to_have_text("there")  # Markdown
            expect(reply.locator(".msg__typing")).to_be_hidden()
            self.assert_no_duplicates(page)
        reply = RoomMessage.objects.get(author="assistant")
        self.assertEqual(reply.status, "done")
        self.assertEqual(message_ids(ada)[-1], str(reply.pk))

    def test_the_asker_stops_the_assistants_reply_for_everyone(self):
        ada = self.enter(self.page, "Ada")
        bob = self.enter(self.new_page(), "Bob")
        send(ada, LONG_QUESTION)
        for page in (ada, bob):
            expect(self.by(page, "assistant")).to_have_attribute("data-status", "streaming")
            expect(self.by(page, "assistant").locator(".msg__body")).to_contain_text("You said")
        stop = self.by(ada, "assistant").get_by_role("button", name="Stop", exact=True)
        expect(stop).to_be_visible()
        expect(self.by(bob, "assistant").locator(".msg__stop")).to_be_hidden()  # not his question
        stop.click()

        texts = []
        for page in (ada, bob):
            reply = self.by(page, "assistant")
            expect(reply).to_have_attribute("data-status", "stopped")
            expect(reply.locator(".msg__stopped")).to_be_visible()
            expect(reply.locator(".msg__stopped")).to_have_text("Stopped")
            expect(reply.locator(".msg__typing")).to_be_hidden()
            expect(reply.locator(".msg__stop")).to_be_hidden()
            texts.append(" ".join(reply.locator(".msg__body").inner_text().split()))
        stored = RoomMessage.objects.get(author="assistant")
        self.assertEqual(stored.status, "stopped")
        self.assertIn("You said", texts[0])
        self.assertNotIn("w199", texts[0])
        self.assertEqual(texts, [" ".join(stored.text.split())] * 2)
        expect(ada.locator("#composer-input")).to_be_focused()

    def test_html_in_messages_shows_as_text(self):
        dialogs: list[str] = []
        ada = self.enter(self.page, "Ada")
        bob = self.enter(self.new_page(), "Bob")
        for page in (ada, bob):
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        send(ada, XSS)
        send(bob, f"@assistant {XSS} <script>window.pwned=1</script>")
        expect(self.by(bob, "Ada").locator(".msg__body")).to_have_text(XSS)
        for page in (ada, bob):
            reply = self.by(page, "assistant")
            expect(reply).to_have_attribute("data-status", "done")
            expect(reply.locator(".msg__body")).to_contain_text(XSS)  # the stand-in echoes it
            expect(page.locator(".messages img, .messages script")).to_have_count(0)
            self.assertEqual(page.evaluate("typeof window.pwned"), "undefined")
        expect(self.by(ada, "Bob").locator(".msg__body")).to_contain_text("<script>")
        self.assertEqual(dialogs, [])

    def test_room_list_tabs_and_unread_counts(self):
        room_create(slug="random", title="Random chatter")
        ada = self.enter(self.page, "Ada", slug=None)
        directory = ada.locator("#directory")
        expect(directory.locator("li")).to_have_count(2)
        expect(directory.locator("li", has_text="Lobby")).to_contain_text("0 online")
        directory.get_by_role("button", name=re.compile("Lobby")).click()
        self.expect_connection(ada, "connected")
        expect(ada.locator("#room-title")).to_have_text("Lobby")
        directory.get_by_role("button", name=re.compile("Random chatter")).click()
        self.expect_connection(ada, "connected")
        tabs = ada.get_by_role("tab")
        expect(tabs).to_have_count(2)
        expect(ada.get_by_role("tab", name=re.compile("Random chatter"))).to_have_attribute(
            "aria-selected", "true"
        )

        bob = self.enter(self.new_page(), "Bob")
        expect(directory.locator("li", has_text="Lobby")).to_contain_text("2 online")
        send(bob, "one for the lobby")
        send(bob, "and another")
        lobby_tab = ada.locator('#tabs li[data-slug="lobby"]')
        expect(lobby_tab.locator(".tab__unread")).to_have_text("2")
        expect(ada).to_have_title("(2) Rooms")
        lobby_tab.get_by_role("tab").click()
        expect(ada.locator("#room-title")).to_have_text("Lobby")
        expect(lobby_tab.locator(".tab__unread")).to_be_hidden()
        expect(ada).to_have_title("Rooms")
        expect(self.by(ada, "Bob")).to_have_count(2)
        self.assertEqual(ada.evaluate("location.hash"), "#lobby")

        # A reload keeps the name, the open rooms and the one in view, with nothing unread.
        ada.reload()
        self.expect_connection(ada, "connected")
        expect(ada.locator("#room-title")).to_have_text("Lobby")
        expect(tabs).to_have_count(2)
        expect(ada.locator(".tab__unread:visible")).to_have_count(0)
        expect(self.by(ada, "Bob")).to_have_count(2)

        ada.get_by_role("button", name="Close Random chatter").click()
        expect(tabs).to_have_count(1)
        ada.reload()
        self.expect_connection(ada, "connected")
        expect(tabs).to_have_count(1)

    def test_taken_name_asks_for_another(self):
        self.enter(self.page, "Ada")
        other = self.new_page()
        other.goto(self.live_server_url + "/rooms/#lobby")
        other.get_by_label("Display name").fill("Ada")
        other.get_by_role("button", name="Continue").click()
        problem = other.locator("#panel-lobby .panel__problem")
        expect(problem).to_contain_text("already using the name “Ada”")
        self.expect_connection(other, "ended")
        expect(other.locator("#send-button")).to_be_disabled()
        problem.get_by_role("button", name="Change name").click()
        other.get_by_label("Display name").fill("Ada Two")
        other.get_by_role("button", name="Continue").click()
        self.expect_connection(other, "connected")
        expect(problem).to_be_hidden()
        expect(self.member(other, "Ada")).to_have_attribute("data-online", "true")
        expect(self.member(self.page, "Ada Two")).to_have_attribute("data-online", "true")

    def test_a_deleted_message_disappears_from_every_page(self):
        ada = self.enter(self.page, "Ada")
        bob = self.enter(self.new_page(), "Bob")
        send(ada, "keep this")
        send(ada, "delete this")
        for page in (ada, bob):
            expect(self.by(page, "Ada")).to_have_count(2)
        doomed = RoomMessage.objects.get(text="delete this")
        room_messages_delete(message_ids=[doomed.pk])  # as the admin does
        for page in (ada, bob):
            expect(self.by(page, "Ada")).to_have_count(1)
            expect(self.by(page, "Ada").locator(".msg__body")).to_have_text("keep this")

    def test_phone_width_has_no_horizontal_scroll(self):
        room_create(slug="random", title="Random chatter with a long title for a phone")
        self.page.close()
        page = self.new_page(width=375, height=740)
        self.enter(page, "A rather long display name for a small phone screen")
        send(page, "A long unbroken word: " + "x" * 300 + "\nand https://example.com/" + "a" * 200)
        expect(page.locator("li.msg--user .msg__state")).to_have_text("")
        for locator in ("#composer-input", "#send-button", "#conn-status", "#members-toggle"):
            expect(page.locator(locator)).to_be_in_viewport()
        self.assert_no_horizontal_scroll(page)
        page.screenshot(path=str(artifact_path("rooms-phone.png")))

        page.get_by_role("button", name="All rooms").click()  # the list replaces the room
        expect(page.locator("#directory li")).to_have_count(2)
        expect(page.locator("#composer-input")).to_be_hidden()
        page.locator("#directory").get_by_role("button", name=re.compile("Random")).click()
        self.expect_connection(page, "connected")
        expect(page.get_by_role("tab")).to_have_count(2)
        self.assert_no_horizontal_scroll(page)

        page.locator("#members-toggle").click()  # the members drawer
        expect(page.locator("#members-panel")).to_be_in_viewport()
        expect(page.locator("#members li")).to_have_count(1)
        self.assert_no_horizontal_scroll(page)
        page.get_by_role("button", name="Close", exact=True).click()
        expect(page.locator("#members-panel")).to_be_hidden()
