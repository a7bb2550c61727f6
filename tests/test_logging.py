"""Secrets in URLs never reach the logs."""

import logging

from django.test import SimpleTestCase

from chatsite.logging import RedactSecretsFilter, redact

TOKEN = "Nk5R9e63ZJfbGfKJSOHge-6N041ykpQGBn2I3GQ5InY"


class RedactTests(SimpleTestCase):
    """The redaction filter on the console handler."""

    def test_session_token_in_api_and_socket_paths_is_cut_to_its_prefix(self) -> None:
        for path in (f"/api/chat/sessions/{TOKEN}", f"/api/chat/sessions/{TOKEN}/refresh",
                     f"/ws/chat/{TOKEN}?after=3"):  # fmt: skip
            with self.subTest(path=path):
                out = redact(f"Not Found: {path}")
                self.assertNotIn(TOKEN, out)
                self.assertIn(TOKEN[:8] + "…", out)

    def test_key_and_token_query_parameters_are_removed(self) -> None:
        out = redact("GET /ws/sensors/x/publish?key=supersecret&a=1")
        self.assertNotIn("supersecret", out)
        self.assertIn("a=1", out)

    def test_filter_redacts_arguments_of_a_django_request_record(self) -> None:
        record = logging.LogRecord(
            "django.request", logging.WARNING, __file__, 1, "%s: %s",
            ("Not Found", f"/api/chat/sessions/{TOKEN}"), None,
        )  # fmt: skip
        RedactSecretsFilter().filter(record)
        self.assertNotIn(TOKEN, record.getMessage())

    def test_configured_console_handler_carries_the_filter(self) -> None:
        handlers = logging.getLogger().handlers
        self.assertTrue(
            any(isinstance(f, RedactSecretsFilter) for h in handlers for f in h.filters)
        )
