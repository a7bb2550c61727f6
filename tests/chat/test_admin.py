"""The Django admin for chat sessions and messages."""

import json
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from chat.services import chat_session_create

LIST_URL = reverse("admin:chat_chatsession_changelist")
MESSAGES_URL = reverse("admin:chat_chatmessage_changelist")


def add_exchange(session: ChatSession, question: str, answer: str, *, status: str = "done"):
    """A user message and its reply, stored directly."""
    user = ChatMessage.objects.create(session=session, role="user", text=question)
    reply = ChatMessage.objects.create(
        session=session, role="assistant", text=answer, status=status, reply_to=user,
        error="The inference API refused the request (400)." if status == "failed" else "",
    )  # fmt: skip
    return user, reply


class AdminTestCase(TestCase):
    """A logged-in superuser and two sessions: Ada's (active, 4 messages) and Bob's (expired)."""

    def setUp(self) -> None:
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        self.ada, self.ada_token = chat_session_create(name="Ada")
        self.bob, self.bob_token = chat_session_create(name="Bob")
        ChatSession.objects.filter(pk=self.bob.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )
        add_exchange(self.ada, "first question", "first answer")
        self.failed_question, self.failed = add_exchange(self.ada, "second", "", status="failed")

    def changelist(self, **params: str):
        response = self.client.get(LIST_URL, params)
        self.assertEqual(response.status_code, 200)
        return response

    def listed(self, response) -> set[str]:
        return {s.name for s in response.context["cl"].result_list}


class SessionListTests(AdminTestCase):
    def test_list_shows_name_token_prefix_dates_count_and_expiry_but_never_the_token(self):
        response = self.changelist()
        html = response.content.decode()
        for column in ("Name", "Token", "Created at", "Last activity at", "Expires at"):
            self.assertIn(column, html)
        self.assertIn(f"{self.ada.token_prefix}…", html)
        self.assertNotIn(self.ada_token, html)
        self.assertNotIn(self.bob_token, html)
        rows = {s.name: s for s in response.context["cl"].result_list}
        self.assertEqual(rows["Ada"]._message_count, 4)
        self.assertEqual(rows["Bob"]._message_count, 0)
        self.assertIn('alt="False"', html)  # Ada: not expired
        self.assertIn('alt="True"', html)  # Bob: expired

    def test_filter_by_active_or_expired(self):
        self.assertEqual(self.listed(self.changelist(state="active")), {"Ada"})
        self.assertEqual(self.listed(self.changelist(state="expired")), {"Bob"})
        self.assertEqual(self.listed(self.changelist()), {"Ada", "Bob"})

    def test_filter_by_date(self):
        ChatSession.objects.filter(pk=self.bob.pk).update(
            created_at=timezone.now() - timedelta(days=30)
        )
        today = timezone.localdate()
        day = {"created_at__year": today.year, "created_at__month": today.month}
        response = self.changelist(**day, created_at__day=today.day)
        self.assertEqual(self.listed(response), {"Ada"})

    def test_search_by_name_token_prefix_or_whole_token(self):
        self.assertEqual(self.listed(self.changelist(q="ada")), {"Ada"})
        self.assertEqual(self.listed(self.changelist(q=self.bob.token_prefix)), {"Bob"})
        self.assertEqual(self.listed(self.changelist(q=self.bob_token)), {"Bob"})
        self.assertEqual(self.listed(self.changelist(q="nobody")), set())

    def test_no_add_button(self):
        self.assertEqual(self.client.get(reverse("admin:chat_chatsession_add")).status_code, 403)


class SessionPageTests(AdminTestCase):
    def test_session_page_shows_its_messages_in_order_read_only_without_the_token(self):
        response = self.client.get(reverse("admin:chat_chatsession_change", args=[self.ada.pk]))
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertNotIn(self.ada_token, html)
        self.assertIn(f"{self.ada.token_prefix}…", html)
        positions = [html.index(text) for text in ("first question", "first answer", "second")]
        self.assertEqual(positions, sorted(positions))
        self.assertIn("<p>Failed</p>", html)
        self.assertIn("refused the request", html)
        formset = response.context["inline_admin_formsets"][0]
        self.assertFalse(formset.has_add_permission)
        self.assertFalse(formset.has_change_permission)
        self.assertFalse(formset.has_delete_permission)
        self.assertNotIn('name="messages-0-text"', html)  # shown, not editable


class SessionActionTests(AdminTestCase):
    def act(self, action: str, *sessions: ChatSession):
        return self.client.post(
            LIST_URL, {"action": action, "_selected_action": [s.pk for s in sessions]}
        )

    def test_expire_selected_sessions_now(self):
        response = self.act("expire_now", self.ada)
        self.assertEqual(response.status_code, 302)
        self.ada.refresh_from_db()
        self.assertTrue(self.ada.is_expired())
        messages = [str(m) for m in response.wsgi_request._messages]
        self.assertEqual(messages, ["Expired 1 session(s)."])

    def test_export_selected_transcripts_as_json(self):
        response = self.act("export_transcripts", self.ada, self.bob)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "application/json; charset=utf-8")
        self.assertIn("attachment;", response["Content-Disposition"])
        body = response.content.decode()
        self.assertNotIn(self.ada_token, body)
        sessions = {s["name"]: s for s in json.loads(body)}
        self.assertEqual(set(sessions), {"Ada", "Bob"})
        ada = sessions["Ada"]
        self.assertEqual(ada["token_prefix"], self.ada.token_prefix)
        self.assertEqual(
            [(m["role"], m["text"], m["status"]) for m in ada["messages"]],
            [
                ("user", "first question", "done"),
                ("assistant", "first answer", "done"),
                ("user", "second", "done"),
                ("assistant", "", "failed"),
            ],
        )
        self.assertEqual(sessions["Bob"]["messages"], [])


class MessageListTests(AdminTestCase):
    def listed_ids(self, **params: str) -> set[int]:
        response = self.client.get(MESSAGES_URL, params)
        self.assertEqual(response.status_code, 200)
        return {m.pk for m in response.context["cl"].result_list}

    def test_list_shows_session_role_status_created_and_short_text(self):
        ChatMessage.objects.create(session=self.ada, role="user", text="long " * 100)
        html = self.client.get(MESSAGES_URL).content.decode()
        for column in ("Session", "Role", "Status", "Created at", "Text"):
            self.assertIn(column, html)
        self.assertIn("first question", html)
        self.assertNotIn("long " * 30, html)
        self.assertIn("…", html)
        self.assertNotIn(self.ada_token, html)

    def test_filter_by_status_finds_failed_replies(self):
        self.assertEqual(self.listed_ids(status="failed"), {self.failed.pk})

    def test_filter_by_role(self):
        users = set(ChatMessage.objects.filter(role="user").values_list("pk", flat=True))
        self.assertEqual(self.listed_ids(role="user"), users)

    def test_messages_are_read_only(self):
        url = reverse("admin:chat_chatmessage_change", args=[self.failed.pk])
        response = self.client.get(url)
        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, 'name="text"')
        self.client.post(url, {"text": "changed"})
        self.failed.refresh_from_db()
        self.assertEqual(self.failed.text, "")
