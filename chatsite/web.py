"""`python -m chatsite.web [daphne options] chatsite.asgi:application`: daphne, redacted.

Daphne's access log writes request paths as they are, and session tokens travel in
paths; this runs daphne's own command line with an access log that redacts them.
"""

from typing import Any

import daphne.cli
from daphne.access import AccessLogGenerator

from chatsite.logging import redact


class RedactingAccessLogGenerator(AccessLogGenerator):
    """Daphne's NCSA access log with secrets in paths shortened or removed."""

    def write_entry(self, host: Any, date: Any, request: str, *args: Any, **kwargs: Any) -> None:
        super().write_entry(host, date, redact(request), *args, **kwargs)


def main() -> None:
    """Run daphne's CLI with the redacting access log."""
    daphne.cli.AccessLogGenerator = RedactingAccessLogGenerator
    daphne.cli.CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
