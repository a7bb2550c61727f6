"""`manage.py serve`: run the whole system (Redis, web, worker) until Ctrl-C."""

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from honcho.environ import parse_procfile
from honcho.manager import Manager

from chat.providers import offline_notice
from chatsite.redis_server import port_in_use, redis_server_command


class Command(BaseCommand):
    """Start every process of the Procfile (plus the embedded Redis) under honcho."""

    help = "Run Redis (embedded unless REDIS_URL is set) and every process of the Procfile."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        procfile = parse_procfile((Path(settings.BASE_DIR) / "Procfile").read_text())
        env = {**os.environ, "HOST": host, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        manager = Manager()
        if settings.REDIS_URL_IS_EMBEDDED:
            if port_in_use(settings.EMBEDDED_REDIS_PORT):
                raise CommandError(
                    f"Port {settings.EMBEDDED_REDIS_PORT} is taken: stop what uses it, or set "
                    "EMBEDDED_REDIS_PORT to another port, or REDIS_URL to use your own Redis."
                )
            command = redis_server_command(
                port=settings.EMBEDDED_REDIS_PORT, data_dir=settings.VAR_DIR / "redis"
            )
            manager.add_process("redis", shlex.join(command), env=env)
            env["REDIS_URL"] = settings.REDIS_URL
        for name, command in procfile.processes.items():
            if name == "simulator" and not settings.DEMO_SENSORS:
                continue
            manager.add_process(name, command, env=env)
        self.stdout.write(
            self.style.SUCCESS(f"\n  chatsite is starting: open http://{host}:{port}/")
        )
        self.stdout.write(f"  admin: http://{host}:{port}/admin/  (manage.py createsuperuser)")
        embedded = " (embedded)" if settings.REDIS_URL_IS_EMBEDDED else ""
        self.stdout.write(f"  Redis: {settings.REDIS_URL}{embedded}")
        notice = offline_notice()
        if notice:
            self.stdout.write(self.style.WARNING("  " + notice))
        self.stdout.write("  Ctrl-C stops everything.\n")
        manager.loop()
        sys.exit(manager.returncode)
