"""`manage.py process_readings [--stage NAME ...] [--consumer NAME]`: run the stream processors."""

import os
import signal
import socket
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from sensors.processing import Housekeeping, processors_run
from sensors.stages import STAGES


class Command(BaseCommand):
    """Run stages as consumers of their groups, plus the offline sweep and retention purge.

    Each stage runs in its own thread: a stage blocks in XREADGROUP on its own group, and a
    slow one (SMTP for alerts, a big bulk insert) must not hold up the others. Start the
    command more than once (here or on other hosts) to share the work between consumers.
    The process lowers its CPU priority by SENSOR_PROCESSOR_NICE.
    """

    help = "Process sensor readings from the Redis streams (all stages unless --stage)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--stage", action="append", choices=sorted(STAGES), default=[],
            help="a stage to run (repeatable); default: all of them",
        )  # fmt: skip
        parser.add_argument(
            "--consumer", default=f"{socket.gethostname()}-{os.getpid()}",
            help="consumer name in the groups; unique per running process (default host-pid)",
        )  # fmt: skip
        parser.add_argument(
            "--no-housekeeping", action="store_true",
            help="leave the offline sweep and the retention purge to another process",
        )  # fmt: skip

    def handle(self, *args: Any, stage: list[str], consumer: str, no_housekeeping: bool,
               **options: Any) -> None:  # fmt: skip
        names = list(dict.fromkeys(stage)) or list(STAGES)
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()  # each stage finishes its current batch, then the process exits

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if settings.SENSOR_PROCESSOR_NICE > 0:
            os.nice(settings.SENSOR_PROCESSOR_NICE)
        self.stdout.write(f"Processing stages {', '.join(names)} as consumer {consumer!r}.")
        processors_run(
            stages=[STAGES[name]() for name in names], consumer=consumer, stop=stop,
            housekeeping=None if no_housekeeping else Housekeeping(),
        )  # fmt: skip
        self.stdout.write("Stopped.")
