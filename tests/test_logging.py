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

    def test_every_handler_that_request_logs_reach_redacts(self) -> None:
        for name in ("django.request", "django.server", "chat", "celery"):
            logger: logging.Logger | None = logging.getLogger(name)
            handlers: list[logging.Handler] = []
            while logger is not None:
                handlers += logger.handlers
                logger = logger.parent if logger.propagate else None
            with self.subTest(logger=name):
                self.assertTrue(handlers)
                for handler in handlers:
                    if isinstance(handler, logging.NullHandler):
                        continue  # writes nothing
                    self.assertTrue(
                        any(isinstance(f, RedactSecretsFilter) for f in handler.filters), handler
                    )

    def test_daphne_access_log_is_redacted(self) -> None:
        import io

        from chatsite.web import RedactingAccessLogGenerator

        stream = io.StringIO()
        RedactingAccessLogGenerator(stream)(
            "websocket", "connecting", {"path": f"/ws/chat/{TOKEN}", "client": ["1.2.3.4", 5]}
        )
        self.assertIn("/ws/chat/" + TOKEN[:8], stream.getvalue())
        self.assertNotIn(TOKEN, stream.getvalue())
