"""The Procfile's command lines, so tests start processes exactly as `make run` does."""

from pathlib import Path

from django.conf import settings


def procfile_command(name: str) -> str:
    """The command line of one Procfile process."""
    for line in (Path(settings.BASE_DIR) / "Procfile").read_text().splitlines():
        key, _, command = line.partition(":")
        if key.strip() == name:
            return command.strip()
    raise LookupError(name)
