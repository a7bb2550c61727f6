"""The chat page: served by Django, and driven end to end in headless Chromium.

The browser tests run against the real system: daphne, the test Redis, a real Celery
worker, and either the offline stand-in or the scriptable inference server.
"""

import json
import re
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import SimpleTestCase, override_settings
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from chat.providers import offline_notice
from tests.support.browser import LiveBrowserTestCase, artifact_path, expect
from tests.support.cases import wait_until
from tests.support.inference_server import Fail, InferenceServer, Reply

PAGE_ASSETS = [
    "chat/app.js",
    "chat/app.css",
    "chat/icon.svg",
    "vendor/marked/marked.umd.js",
    "vendor/dompurify/purify.min.js",
]
XSS = "<img src=x onerror=alert(1)>"
# The offline stand-in echoes the question a word per OFFLINE_CHUNK_DELAY: this one keeps a
# reply streaming for about ten seconds, long enough to act on it mid-stream.
LONG_QUESTION = " ".join(f"w{index}" for index in range(200))
REPLY_END = "as the README shows."  # the stand-in's last words


# --- the page as Django serves it (no browser needed) ----------------------------------------


class ChatPageViewTests(SimpleTestCase):
    """GET / renders the page with its settings and a strict Content-Security-Policy."""

    def config(self, response: Any) -> dict[str, Any]:
        match = re.search(
            r'<script id="chat-config" type="application/json">(.*?)</script>',
            response.content.decode(),
            re.S,
        )
        self.assertIsNotNone(match)
        return json.loads(match.group(1))

    def test_page_exposes_limits_and_urls_to_its_script(self) -> None:
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "text/html; charset=utf-8")
        config = self.config(response)
        self.assertEqual(config["maxMessageChars"], settings.CHAT_MAX_MESSAGE_CHARS)
        self.assertEqual(config["maxNameChars"], settings.CHAT_NAME_MAX_CHARS)
        self.assertEqual(config["sessionTtlSeconds"], settings.CHAT_SESSION_TTL)
        self.assertEqual(config["sessionsUrl"], "/api/chat/sessions")
        self.assertEqual(config["socketPath"], "/ws/chat/")

    @override_settings(CHAT_MAX_MESSAGE_CHARS=123)
    def test_message_limit_follows_the_setting(self) -> None:
        self.assertEqual(self.config(self.client.get("/"))["maxMessageChars"], 123)

    @override_settings(INFERENCE_PROVIDER="offline")
    def test_offline_provider_notice_is_shown(self) -> None:
        response = self.client.get("/")
        self.assertEqual(self.config(response)["offlineNotice"], offline_notice())
        self.assertContains(response, 'id="offline-notice"')
        self.assertContains(response, "Not a real model")
        self.assertNotContains(response, 'id="model-line"')  # the notice says who answers

    @override_settings(INFERENCE_PROVIDER="openai")
    def test_real_provider_gets_the_model_line_instead(self) -> None:
        self.assertContains(self.client.get("/"), 'id="model-line"')

    @override_settings(INFERENCE_PROVIDER="openai")
    def test_no_notice_with_a_real_provider(self) -> None:
        response = self.client.get("/")
        self.assertIsNone(self.config(response)["offlineNotice"])
        self.assertNotContains(response, 'id="offline-notice"')

    def test_policy_allows_only_the_pages_own_scripts_and_origin(self) -> None:
        policy = self.client.get("/")["Content-Security-Policy"]
        self.assertIn("script-src 'self'", policy)
        self.assertIn("connect-src 'self'", policy)
        self.assertIn("object-src 'none'", policy)
        self.assertNotIn("unsafe-inline", policy)
        self.assertNotIn("unsafe-eval", policy)

    def test_page_loads_no_third_party_resources(self) -> None:
        html = self.client.get("/").content.decode()
        self.assertNotRegex(html, r'(src|href)="(https?:)?//')
        for asset in PAGE_ASSETS:
            self.assertIn(f"/static/{asset}", html)

    def test_only_get_and_head(self) -> None:
        self.assertEqual(self.client.head("/").status_code, 200)
        self.assertEqual(self.client.post("/").status_code, 405)


class StaticFilesTests(SimpleTestCase):
    """The page's files, vendored libraries included, are served locally and collect cleanly."""

    def test_assets_and_vendored_licenses_are_found(self) -> None:
        for asset in [*PAGE_ASSETS, "vendor/marked/LICENSE", "vendor/dompurify/LICENSE"]:
            with self.subTest(asset=asset):
                self.assertIsNotNone(finders.find(asset))

    def test_collectstatic_with_the_production_storage(self) -> None:
        with tempfile.TemporaryDirectory() as root:
            backend = "whitenoise.storage.CompressedManifestStaticFilesStorage"
            storages = {**settings.STORAGES, "staticfiles": {"BACKEND": backend}}
            with override_settings(STATIC_ROOT=root, STORAGES=storages):
                call_command("collectstatic", interactive=False, verbosity=0)
            manifest = json.loads((Path(root) / "staticfiles.json").read_text())["paths"]
            for asset in PAGE_ASSETS:
                self.assertIn(asset, manifest)


# --- browser helpers ---------------------------------------------------------------------------


def send(page: Any, text: str) -> None:
    """Type a message into the composer and press Enter."""
    page.locator("#composer-input").fill(text)
    page.locator("#composer-input").press("Enter")


def message_ids(page: Any) -> list[str]:
    """The data-id of every message element, in page order."""
    return page.locator("#messages > li").evaluate_all("items => items.map(i => i.dataset.id)")


def stop_button(page: Any) -> Any:
    """The composer's Stop button."""
    return page.get_by_role("button", name="Stop", exact=True)


def words(text: str) -> str:
    """Text with its whitespace runs made single spaces (as rendered Markdown reads)."""
    return " ".join(text.split())


class PageTestCase(LiveBrowserTestCase):
    """Helpers shared by the browser tests."""

    def start_session(self, page: Any, name: str = "Ada") -> None:
        """Start a session from the start form and wait until the socket is up."""
        page.get_by_label("Display name").fill(name)
        page.get_by_role("button", name="Start chat").click()
        self.expect_connection(page, "connected")
        expect(page.locator("#session-name")).to_have_text(name)

    def expect_connection(self, page: Any, state: str) -> None:
        expect(page.locator("#conn-status")).to_have_attribute("data-state", state)

    def assert_no_duplicates(self, page: Any) -> list[str]:
        ids = message_ids(page)
        self.assertTrue(all(ids), ids)
        self.assertEqual(len(ids), len(set(ids)), ids)
        return ids

    def assert_no_horizontal_scroll(self, page: Any) -> None:
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        self.assertLessEqual(widths[0], widths[1], f"page scrolls sideways: {widths}")

    def expire_sessions(self) -> None:
        ChatSession.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    def expect_stopped(self, page: Any) -> str:
        """The one reply shows as stopped, with its text so far and no Stop; returns that text."""
        reply = page.locator("li.msg--assistant")
        expect(reply).to_have_attribute("data-status", "stopped")
        expect(reply.locator(".msg__stopped")).to_be_visible()
        expect(reply.locator(".msg__stopped")).to_have_text("Stopped")
        expect(reply.locator(".msg__typing")).to_be_hidden()
        expect(reply).to_have_attribute("aria-busy", "false")
        expect(stop_button(page)).to_be_hidden()
        return reply.locator(".msg__body").inner_text()


# --- with the offline stand-in -----------------------------------------------------------------


@override_settings(INFERENCE_PROVIDER="offline")
class OfflinePageTests(PageTestCase):
    """The whole page flow with the offline stand-in answering."""

    worker_env: ClassVar[dict[str, str]] = {
        "INFERENCE_PROVIDER": "offline",
        "OFFLINE_CHUNK_DELAY": "0.05",
    }

    def test_conversation_streams_and_survives_a_reload_and_a_new_tab(self) -> None:
        page = self.open_chat()
        expect(page.locator("#offline-notice")).to_be_visible()
        expect(page.locator("#offline-notice")).to_contain_text("Not a real model")
        expect(page.locator("#model-line")).to_have_count(0)  # one place says who answers
        self.start_session(page, "Ada")
        send(page, "Hello **there**")

        user = page.locator("li.msg--user")
        reply = page.locator("li.msg--assistant")
        expect(user.locator(".msg__body")).to_have_text("Hello **there**")  # plain text
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(reply.locator(".msg__typing")).to_be_visible()
        expect(reply).to_have_attribute("data-status", "done")
        expect(reply.locator(".msg__typing")).to_be_hidden()
        expect(reply.locator(".msg__body")).to_contain_text("You said")
        expect(reply.locator(".msg__body strong")).to_have_text("there")  # Markdown
        expect(page.locator("li.msg time[datetime]")).to_have_count(2)
        self.assertRegex(user.locator("time").inner_text(), r"\d")
        user_box, reply_box = user.bounding_box(), reply.bounding_box()
        self.assertGreater(user_box["x"] + user_box["width"], reply_box["x"] + reply_box["width"])
        self.assertLess(reply_box["x"], user_box["x"])
        page.screenshot(path=str(artifact_path("chat-conversation.png")))
        ids = self.assert_no_duplicates(page)

        page.reload()
        expect(page.locator("#messages > li")).to_have_count(2)
        expect(page.locator("#session-name")).to_have_text("Ada")
        self.expect_connection(page, "connected")
        self.assertEqual(message_ids(page), ids)

        tab = page.context.new_page()
        self.open_chat(tab)
        expect(tab.locator("#messages > li")).to_have_count(2)
        self.assertEqual(message_ids(tab), ids)
        self.expect_connection(tab, "connected")
        send(tab, "from the second tab")
        for each in (page, tab):
            expect(each.locator("li.msg--assistant[data-status=done]")).to_have_count(2)
            expect(each.locator("li.msg--user").last).to_contain_text("from the second tab")
            self.assert_no_duplicates(each)

    def test_dropped_socket_reconnects_resumes_and_sends_the_waiting_message_once(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        send(page, "first")
        expect(page.locator("li.msg--assistant[data-status=done]")).to_have_count(1)
        last_id = message_ids(page)[-1]

        page.evaluate("window.chatApp.debugDropSocket(3000)")
        self.expect_connection(page, "reconnecting")
        expect(page.locator("#conn-status")).to_contain_text("Reconnecting")
        send(page, "sent while the socket was down")
        waiting = page.locator("li.msg--user").last
        expect(waiting.locator(".msg__state")).to_have_text("Waiting for the connection…")

        self.expect_connection(page, "connected")
        expect(page.locator("li.msg--assistant[data-status=done]")).to_have_count(2)
        expect(page.locator("#messages > li")).to_have_count(4)
        expect(waiting.locator(".msg__state")).to_have_text("")
        self.assert_no_duplicates(page)
        urls = page.evaluate("window.chatApp.socketUrls")
        self.assertEqual(len(urls), 2, urls)
        self.assertTrue(urls[1].endswith(f"?after={last_id}"), urls)
        texts = ChatMessage.objects.filter(role="user").values_list("text", flat=True)
        self.assertEqual(sorted(texts), ["first", "sent while the socket was down"])

    def test_expired_session_on_reload_offers_a_new_session(self) -> None:
        page = self.open_chat()
        self.start_session(page, "Ada")
        self.expire_sessions()
        page.reload()
        expect(page.locator("#expired")).to_be_visible()
        expect(page.locator("#expired")).to_contain_text("expired")
        expect(page.locator("#composer")).to_be_hidden()
        self.expect_connection(page, "ended")

        page.get_by_role("button", name="Start a new session").click()
        expect(page.locator("#start-view")).to_be_visible()
        expect(page.get_by_label("Display name")).to_have_value("Ada")
        self.start_session(page, "Ada again")
        expect(page.locator("#messages > li")).to_have_count(0)
        self.assertEqual(ChatSession.objects.count(), 2)

    def test_session_expiring_while_open_closes_with_the_prompt(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        send(page, "hello")
        expect(page.locator("li.msg--assistant[data-status=done]")).to_have_count(1)
        self.expire_sessions()
        page.evaluate("window.chatApp.debugDropSocket()")  # the reconnect meets close 4401
        expect(page.locator("#expired")).to_be_visible()
        self.expect_connection(page, "ended")
        expect(page.locator("#messages > li")).to_have_count(2)  # the history stays readable

    def test_activity_keeps_the_session_alive_and_notices_an_expiry(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        soon = timezone.now() + timedelta(minutes=5)
        ChatSession.objects.update(expires_at=soon)
        page.evaluate("window.chatApp.debugKeepAlive()")
        wait_until(lambda: ChatSession.objects.get().expires_at > soon + timedelta(minutes=10))
        self.expire_sessions()  # as the admin's "expire now" does
        page.evaluate("window.chatApp.debugKeepAlive()")
        expect(page.locator("#expired")).to_be_visible()
        self.expect_connection(page, "ended")

    def test_html_in_a_message_and_in_the_reply_shows_as_text(self) -> None:
        page = self.open_chat()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        self.start_session(page)
        send(page, XSS)
        expect(page.locator("li.msg--user .msg__body")).to_have_text(XSS)
        reply = page.locator("li.msg--assistant")
        expect(reply).to_have_attribute("data-status", "done")
        expect(reply.locator(".msg__body")).to_contain_text(XSS)  # the stand-in echoes it
        expect(page.locator("#messages img")).to_have_count(0)
        self.assertEqual(dialogs, [])

    def test_phone_width_has_no_horizontal_scroll(self) -> None:
        page = self.new_page(width=375, height=740)
        self.open_chat(page)
        self.start_session(page, "A rather long display name for a small phone screen")
        send(page, "A long unbroken word: " + "x" * 300 + "\nand https://example.com/" + "a" * 200)
        expect(page.locator("li.msg--assistant[data-status=done]")).to_have_count(1)
        for locator in ("#composer-input", "#send-button", "#new-chat", "#conn-status"):
            expect(page.locator(locator)).to_be_in_viewport()
        self.assert_no_horizontal_scroll(page)
        page.screenshot(path=str(artifact_path("chat-phone.png")))

    def test_composer_keys_limits_and_labels(self) -> None:
        page = self.open_chat()
        page.get_by_label("Display name").press_sequentially("Kim")
        page.get_by_label("Display name").press("Enter")  # keyboard only
        self.expect_connection(page, "connected")
        box = page.get_by_label("Message to the assistant")
        button = page.get_by_role("button", name="Send message")
        expect(button).to_be_disabled()
        box.fill("   ")
        expect(button).to_be_disabled()

        box.fill("line one")
        height = box.bounding_box()["height"]
        box.press("Shift+Enter")
        box.press_sequentially("line two")
        expect(box).to_have_value("line one\nline two")
        self.assertGreater(box.bounding_box()["height"], height)  # it grows
        expect(page.locator("#messages > li")).to_have_count(0)
        expect(button).to_be_enabled()
        box.press("Enter")
        expect(page.locator("li.msg--user .msg__body")).to_have_text("line one\nline two")
        expect(box).to_have_value("")
        expect(box).to_be_focused()

        counter = page.locator("#composer-counter")
        expect(counter).to_be_hidden()
        limit = settings.CHAT_MAX_MESSAGE_CHARS
        box.fill("y" * (limit - 10))
        expect(counter).to_be_visible()
        expect(counter).to_have_text(f"10 of {limit} characters left")
        expect(counter).to_have_attribute("data-level", "warn")
        box.fill("y" * (limit + 2))
        expect(counter).to_have_attribute("data-level", "over")
        expect(counter).to_contain_text("2 characters over")
        expect(button).to_be_disabled()
        box.press("Enter")
        expect(page.locator("li.msg--assistant[data-status=done]")).to_have_count(1)
        expect(page.locator("li.msg--user")).to_have_count(1)  # the long one was not sent

    def test_stop_ends_a_streaming_reply_with_its_text_so_far(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        expect(stop_button(page)).to_be_hidden()
        send(page, LONG_QUESTION)
        reply = page.locator("li.msg--assistant").first
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(reply.locator(".msg__body")).to_contain_text("You said")
        expect(stop_button(page)).to_be_visible()
        page.screenshot(path=str(artifact_path("chat-stop.png")))
        stop_button(page).click()

        partial = self.expect_stopped(page)
        self.assertIn("You said", partial)
        self.assertNotIn(REPLY_END, partial)
        stored = ChatMessage.objects.get(role="assistant")
        self.assertEqual(stored.status, "stopped")
        self.assertEqual(words(partial), words(stored.text))
        expect(page.locator("#composer-input")).to_be_focused()  # the composer is usable

        send(page, "and a short one")
        answer = page.locator("li.msg--assistant").last
        expect(page.locator("li.msg--assistant")).to_have_count(2)
        expect(answer).to_have_attribute("data-status", "done")
        expect(answer.locator(".msg__body")).to_contain_text("and a short one")
        expect(answer.locator(".msg__stopped")).to_be_hidden()
        expect(stop_button(page)).to_be_hidden()
        # The stopped reply took nothing more meanwhile: no late chunk changed it.
        expect(reply).to_have_attribute("data-status", "stopped")
        self.assertEqual(reply.locator(".msg__body").inner_text(), partial)
        self.assert_no_duplicates(page)

    def test_a_reply_stopped_in_one_tab_shows_as_stopped_in_the_other(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        tab = self.open_chat(page.context.new_page())  # the same conversation
        self.expect_connection(tab, "connected")
        send(page, LONG_QUESTION)
        for each in (page, tab):
            expect(each.locator("li.msg--assistant .msg__body")).to_contain_text("You said")
            expect(stop_button(each)).to_be_visible()
        stop_button(tab).click()

        texts = [self.expect_stopped(each) for each in (page, tab)]
        self.assertEqual(words(texts[0]), words(texts[1]))
        self.assertEqual(words(texts[0]), words(ChatMessage.objects.get(role="assistant").text))

    def test_reload_mid_stream_shows_the_text_so_far_then_the_whole_reply(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        send(page, LONG_QUESTION)
        reply = page.locator("li.msg--assistant")
        expect(reply.locator(".msg__body")).to_contain_text("w12 w13")
        question_id, reply_id = message_ids(page)

        page.reload()
        # Before the reply ends, the page shows what was written before the reload: the
        # history has it with no text, so it can only come from the resumed stream.
        streaming = page.locator("li.msg--assistant[data-status=streaming] .msg__body")
        expect(streaming).to_contain_text("You said: \u201cw0 w1 w2")
        expect(reply).to_have_attribute("data-status", "done")
        expect(reply.locator(".msg__body")).to_contain_text("w198 w199\u201d. I have 0 earlier")
        expect(reply.locator(".msg__body")).to_contain_text(REPLY_END)
        self.assertEqual(reply.locator(".msg__body").inner_text().count("You said"), 1)
        self.assertEqual(self.assert_no_duplicates(page), [question_id, reply_id])
        # The socket resumed from before the unfinished reply, so the history brought it.
        urls = page.evaluate("window.chatApp.socketUrls")
        self.assertEqual(len(urls), 1, urls)
        after = re.fullmatch(r".*\?after=(\d+)", urls[0])
        self.assertIsNotNone(after, urls)
        self.assertLess(int(after.group(1)), int(reply_id))

    def test_new_chat_starts_a_fresh_session_that_a_reload_keeps(self) -> None:
        page = self.open_chat()
        self.start_session(page, "Ada")
        send(page, "hello")
        expect(page.locator("li.msg--assistant[data-status=done]")).to_have_count(1)
        page.get_by_role("button", name="New chat").click()
        expect(page.locator("#start-view")).to_be_visible()
        self.start_session(page, "Bob")
        expect(page.locator("#messages > li")).to_have_count(0)
        page.reload()
        expect(page.locator("#session-name")).to_have_text("Bob")
        self.expect_connection(page, "connected")
        expect(page.locator("#messages > li")).to_have_count(0)


# --- with a scripted model -------------------------------------------------------------------


# The web process's own inference settings are what GET /api/chat/assistant reports (the
# model line); the worker, which does the talking, gets the scripted server's URL instead.
PAGE_INFERENCE_URL = "http://page-user:page-secret@inference.test:8000/v1"
PAGE_INFERENCE_KEY = "sk-page-test-key"


@override_settings(
    INFERENCE_PROVIDER="openai",
    INFERENCE_MODEL="test-model",
    INFERENCE_URL=PAGE_INFERENCE_URL,
    INFERENCE_API_KEY=PAGE_INFERENCE_KEY,
    CHAT_RATE_LIMIT=2,
    CHAT_RATE_WINDOW=60,
)
class ModelPageTests(PageTestCase):
    """Replies from the scriptable inference server through the openai provider."""

    @classmethod
    def start_services(cls) -> None:
        cls.server = InferenceServer().start()
        cls.addClassCleanup(cls.server.stop)
        super().start_services()

    @classmethod
    def worker_environment(cls) -> dict[str, str]:
        return {
            "INFERENCE_PROVIDER": "openai",
            "INFERENCE_URL": cls.server.openai_url,
            "INFERENCE_MODEL": "test-model",
            "INFERENCE_TIMEOUT": "5",
            "INFERENCE_MAX_ATTEMPTS": "1",
            "CHAT_DELTA_INTERVAL": "0",
        }

    def setUp(self) -> None:
        super().setUp()
        self.server.reset()

    def test_markdown_reply_renders_and_html_in_it_stays_text(self) -> None:
        self.server.script(
            Reply(
                [
                    "**bold** and a list:\n\n- one\n- two\n\n",
                    f"{XSS} <script>window.pwned=1</script>\n\n",
                    "```\nprint('a long line of code " + "z" * 150 + "')\n```\n\n",
                    "[a link](https://example.com/) and [bad](javascript:alert(1))",
                ]
            )
        )
        page = self.open_chat()
        expect(page.locator("#offline-notice")).to_have_count(0)
        self.start_session(page)
        send(page, "show me markdown")
        body = page.locator("li.msg--assistant .msg__body")
        expect(page.locator("li.msg--assistant")).to_have_attribute("data-status", "done")
        expect(body.locator("strong")).to_have_text("bold")
        expect(body.locator("li")).to_have_text(["one", "two"])
        expect(body.locator("pre code")).to_contain_text("print('a long line")
        link = body.locator("a", has_text="a link")
        expect(link).to_have_attribute("href", "https://example.com/")
        expect(link).to_have_attribute("rel", re.compile("noopener"))
        expect(body).to_contain_text(XSS)
        expect(body).to_contain_text("<script>window.pwned=1</script>")
        expect(page.locator("#messages img, #messages script")).to_have_count(0)
        expect(page.locator('#messages a[href^="javascript"]')).to_have_count(0)
        self.assertEqual(page.evaluate("typeof window.pwned"), "undefined")
        font = body.locator("pre code").evaluate("el => getComputedStyle(el).fontFamily")
        self.assertIn("monospace", font)

        page.set_viewport_size({"width": 375, "height": 740})
        self.assert_no_horizontal_scroll(page)

    def test_model_line_says_which_model_answers_without_credentials(self) -> None:
        page = self.open_chat()
        line = page.locator("#model-line")
        expect(line).to_be_visible()
        expect(line).to_contain_text("Answered by test-model via openai at")
        expect(line).to_contain_text("inference.test:8000")
        expect(line.locator(".model-line__model")).to_have_text("test-model")
        expect(line).to_have_attribute("data-provider", "openai")
        expect(page.locator("#offline-notice")).to_have_count(0)
        html = page.content()
        for secret in ("page-secret", "page-user", PAGE_INFERENCE_KEY):
            self.assertNotIn(secret, html)
        self.start_session(page)
        expect(line).to_be_visible()  # it stays once the conversation starts

    def test_reply_streams_chunk_by_chunk_and_a_dropped_socket_shows_nothing_twice(self) -> None:
        chunks = ["Counting: ", "one, ", "two, ", "three, ", "four, ", "five."]
        self.server.script(Reply(chunks, delay=0.5))
        page = self.open_chat()
        self.start_session(page)
        send(page, "count")
        reply = page.locator("li.msg--assistant")
        expect(reply).to_have_attribute("data-status", "streaming")
        expect(reply.locator(".msg__body")).to_contain_text("Counting:")
        self.assertNotIn("five.", reply.locator(".msg__body").inner_text())

        page.evaluate("window.chatApp.debugDropSocket(800)")
        self.expect_connection(page, "reconnecting")
        self.expect_connection(page, "connected")
        expect(reply).to_have_attribute("data-status", "done")
        expect(reply.locator(".msg__body")).to_have_text("".join(chunks))
        expect(page.locator("#messages > li")).to_have_count(2)
        self.assert_no_duplicates(page)

    def test_failed_reply_offers_retry_which_answers(self) -> None:
        self.server.script(Fail(400, body={"error": "bad request"}))
        page = self.open_chat()
        self.start_session(page)
        send(page, "please fail")
        reply = page.locator("li.msg--assistant")
        expect(reply).to_have_attribute("data-status", "failed")
        expect(reply.locator(".msg__error-text")).to_contain_text("could not answer")
        retry = reply.get_by_role("button", name="Retry this reply")
        expect(retry).to_be_visible()
        retry.click()
        expect(reply).to_have_attribute("data-status", "done")
        expect(retry).to_be_hidden()
        expect(reply.locator(".msg__body")).to_have_text("echo: please fail")
        expect(page.locator("#messages > li")).to_have_count(2)
        self.assertEqual(ChatMessage.objects.get(role="assistant").status, "done")

    def test_rate_limited_message_waits_and_the_notice_goes_away_by_itself(self) -> None:
        page = self.open_chat()
        self.start_session(page)
        # Five quick messages span at most two rate windows of two, so one is refused.
        for index in range(5):
            send(page, f"quick {index}")
        toast = page.locator("#toasts .toast")
        expect(toast.first).to_contain_text("Please wait")
        waiting = page.locator("li.msg--user .msg__state", has_text="Waiting to send")
        expect(waiting).not_to_have_count(0)
        expect(toast).to_have_count(0)
        expect(page.locator("li.msg--user")).to_have_count(5)
