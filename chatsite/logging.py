"""Logging filter that keeps credentials in URLs (session tokens, keys) out of the logs."""

import logging
import re

# Path segments that carry a bearer secret: keep the first 8 characters (what operators see
# in the admin) and drop the rest. Query-string secrets (?key=, ?token=) go entirely.
_SECRET_PATH = re.compile(r"(/(?:api/chat/sessions|ws/chat)/)([^/?#\s]{0,8})[^/?#\s]*")
_SECRET_QUERY = re.compile(r"([?&](?:key|token)=)[^&#\s]*")


def redact(text: str) -> str:
    """The text with every URL secret shortened or removed."""
    return _SECRET_QUERY.sub(r"\1[redacted]", _SECRET_PATH.sub(r"\1\2…", text))


class RedactSecretsFilter(logging.Filter):
    """Redact secrets in a record's message and string arguments before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True
