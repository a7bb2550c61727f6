"""The chat session HTTP API, over real HTTP against a live daphne server."""

from datetime import timedelta

import requests
from django.test import SimpleTestCase, override_settings
from django.utils import timezone

from chat.models import ChatSession
from chat.services import chat_message_create
from tests.support.cases import LiveServerTestCase

TIMEOUT = 30


class LiveApiTestCase(LiveServerTestCase):
    """A live server plus a clean Redis per test."""

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def create(self, body: object = None, *, raw: bytes | None = None) -> requests.Response:
        if raw is not None:
            return requests.post(self.url("/api/chat/sessions"), data=raw, timeout=TIMEOUT)
        return requests.post(self.url("/api/chat/sessions"), json=body, timeout=TIMEOUT)

    def assertError(self, response: requests.Response, status: int, code: str) -> dict:
        self.assertEqual(response.status_code, status, response.text)
        body = response.json()
        self.assertEqual(set(body), {"error"})
        self.assertEqual(body["error"]["code"], code)
        self.assertTrue(body["error"]["message"])
        return body["error"]


class SessionCreateTests(LiveApiTestCase):
    """POST /api/chat/sessions."""

    def test_create_returns_201_with_token_name_expiry_and_no_messages(self) -> None:
        before = timezone.now()
        response = self.create({"name": "Ada"})
        self.assertEqual(response.status_code, 201)
        body = response.json()
        self.assertEqual(set(body), {"token", "name", "created_at", "expires_at", "messages"})
        self.assertEqual(body["name"], "Ada")
        self.assertEqual(body["messages"], [])
        expires = timezone.datetime.fromisoformat(body["expires_at"])
        self.assertGreaterEqual(expires, before + timedelta(minutes=59))
        self.assertLessEqual(expires, timezone.now() + timedelta(minutes=61))

    def test_token_has_at_least_128_random_bits_and_differs_per_session(self) -> None:
        first = self.create({"name": "a"}).json()["token"]
        second = self.create({"name": "b"}).json()["token"]
        self.assertNotEqual(first, second)
        self.assertGreaterEqual(len(first) * 6, 128)  # URL-safe base64: 6 bits a character

    def test_token_is_stored_only_as_a_hash(self) -> None:
        token = self.create({"name": "Ada"}).json()["token"]
        session = ChatSession.objects.get()
        self.assertNotEqual(session.token_hash, token)
        self.assertNotIn(token, session.token_hash)
        self.assertEqual(session.token_prefix, token[:8])

    def test_name_is_trimmed(self) -> None:
        self.assertEqual(self.create({"name": "  Ada  "}).json()["name"], "Ada")

    def test_missing_empty_blank_long_or_non_string_name_is_rejected(self) -> None:
        for body in ({}, {"name": ""}, {"name": "   "}, {"name": "x" * 81}, {"name": 5}):
            with self.subTest(body=body):
                error = self.assertError(self.create(body), 400, "invalid_name")
                self.assertEqual(error["field"], "name")
        self.assertEqual(ChatSession.objects.count(), 0)

    def test_malformed_json_is_400_not_500(self) -> None:
        for raw in (b"{bad", b"NaN", b'"a string"', b"[1, 2]", b"\xff\xfe"):
            with self.subTest(raw=raw):
                self.assertError(self.create(raw=raw), 400, "invalid_json")

    def test_oversized_body_is_413(self) -> None:
        response = self.create({"name": "a", "pad": "x" * 70_000})
        self.assertError(response, 413, "too_large")

    def test_wrong_method_is_405_with_allow_header(self) -> None:
        response = requests.get(self.url("/api/chat/sessions"), timeout=TIMEOUT)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers["Allow"], "POST")

    def test_unknown_api_path_is_json_404(self) -> None:
        response = requests.get(self.url("/api/nothing/here"), timeout=TIMEOUT)
        self.assertError(response, 404, "not_found")


@override_settings(CHAT_SESSION_CREATE_RATE_LIMIT=3)
class SessionCreateRateLimitTests(LiveApiTestCase):
    """Session creation is rate limited per client address."""

    def test_creations_past_the_limit_get_429_with_retry_after(self) -> None:
        for index in range(3):
            self.assertEqual(self.create({"name": f"s{index}"}).status_code, 201)
        response = self.create({"name": "one too many"})
        self.assertError(response, 429, "rate_limited")
        self.assertGreaterEqual(int(response.headers["Retry-After"]), 1)
        self.assertEqual(ChatSession.objects.count(), 3)


class SessionDetailTests(LiveApiTestCase):
    """GET /api/chat/sessions/<token> and POST .../refresh."""

    def setUp(self) -> None:
        super().setUp()
        created = self.create({"name": "Ada"}).json()
        self.token = created["token"]
        self.session = ChatSession.objects.get()

    def detail(self) -> requests.Response:
        return requests.get(self.url(f"/api/chat/sessions/{self.token}"), timeout=TIMEOUT)

    def refresh(self) -> requests.Response:
        return requests.post(self.url(f"/api/chat/sessions/{self.token}/refresh"), timeout=TIMEOUT)

    def expire(self) -> None:
        ChatSession.objects.filter(pk=self.session.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )

    def test_detail_returns_full_history_oldest_first(self) -> None:
        first, _ = chat_message_create(session_id=self.session.pk, text="one", client_id="c1")
        second, _ = chat_message_create(session_id=self.session.pk, text="two", client_id="c2")
        body = self.detail().json()
        self.assertEqual(body["name"], "Ada")
        users = [m for m in body["messages"] if m["role"] == "user"]
        self.assertEqual([m["text"] for m in users], ["one", "two"])
        ids = [m["id"] for m in body["messages"]]
        self.assertEqual(ids, sorted(ids))
        replies = [m for m in body["messages"] if m["role"] == "assistant"]
        self.assertEqual([m["reply_to"] for m in replies], [first.pk, second.pk])
        self.assertEqual(
            set(body["messages"][0]),
            {"id", "role", "text", "status", "created_at", "reply_to", "client_id"},
        )
        self.assertEqual(users[0]["client_id"], "c1")

    def test_unknown_token_is_404(self) -> None:
        response = requests.get(self.url("/api/chat/sessions/not-a-token"), timeout=TIMEOUT)
        self.assertError(response, 404, "not_found")

    def test_expired_session_is_404_but_kept_in_the_database(self) -> None:
        self.expire()
        self.assertError(self.detail(), 404, "not_found")
        self.assertTrue(ChatSession.objects.filter(pk=self.session.pk).exists())

    def test_refresh_extends_the_expiry(self) -> None:
        ChatSession.objects.filter(pk=self.session.pk).update(
            expires_at=timezone.now() + timedelta(minutes=1)
        )
        response = self.refresh()
        self.assertEqual(response.status_code, 200)
        expires = timezone.datetime.fromisoformat(response.json()["expires_at"])
        self.assertGreater(expires, timezone.now() + timedelta(minutes=58))
        self.session.refresh_from_db()
        self.assertEqual(self.session.expires_at, expires)

    def test_refresh_of_an_expired_session_is_404(self) -> None:
        self.expire()
        self.assertError(self.refresh(), 404, "not_found")

    def test_detail_refuses_post_and_refresh_refuses_get(self) -> None:
        response = requests.post(self.url(f"/api/chat/sessions/{self.token}"), timeout=TIMEOUT)
        self.assertError(response, 405, "method_not_allowed")
        response = requests.get(
            self.url(f"/api/chat/sessions/{self.token}/refresh"), timeout=TIMEOUT
        )
        self.assertError(response, 405, "method_not_allowed")


class AssistantDetailTests(SimpleTestCase):
    """GET /api/chat/assistant: which provider, model and URL answer (the settings' view)."""

    def get(self) -> dict:
        response = self.client.get("/api/chat/assistant")
        self.assertEqual(response.status_code, 200)
        return response.json()

    @override_settings(
        INFERENCE_PROVIDER="openai",
        INFERENCE_URL="http://user:secret@127.0.0.1:8081/v1?api_key=abc#x",
        INFERENCE_MODEL="tiny-model",
    )
    def test_names_provider_model_and_url_without_credentials(self) -> None:
        self.assertEqual(
            self.get(),
            {"provider": "openai", "model": "tiny-model", "url": "http://127.0.0.1:8081/v1"},
        )

    @override_settings(INFERENCE_PROVIDER="huggingface", INFERENCE_URL="", INFERENCE_MODEL="gpt2")
    def test_an_unset_url_is_the_providers_default(self) -> None:
        self.assertEqual(self.get()["url"], "https://api-inference.huggingface.co/models/gpt2")

    @override_settings(INFERENCE_PROVIDER="offline", INFERENCE_URL="", INFERENCE_MODEL="")
    def test_the_offline_stand_in_has_no_url(self) -> None:
        self.assertEqual(self.get(), {"provider": "offline", "model": "", "url": ""})

    def test_only_get_is_allowed(self) -> None:
        response = self.client.post("/api/chat/assistant")
        self.assertEqual(response.status_code, 405)
        self.assertEqual(response.json()["error"]["code"], "method_not_allowed")
