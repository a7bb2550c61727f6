"""Stream processors against the test run's real Redis: groups, reclaim, dead letters, alerts."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from io import StringIO
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.test import override_settings

from chatsite.redis_clients import get_redis
from sensors.models import Alert, AlertRule, DeadLetter, Reading, Sensor, stream_key
from sensors.processing import DEAD_LETTER_STREAM, ERRORS_KEY, Entry, Housekeeping, StageRunner
from sensors.services import (
    LAST_SEEN_KEY,
    readings_append,
    sensor_create,
    sensors_offline_sweep,
)
from sensors.services_processing import DAY_MS, StreamReading, readings_purge, readings_store
from sensors.stages import AlertStage, StoreStage
from sensors.validation import readings_validate
from tests.support.cases import (
    TIMEOUT,
    RedisTransactionTestCase,
    SocketTestCase,
    receive_until,
    wait_until,
)
from tests.support.worker import test_database_url

SLUG = "boiler"
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


def clear_sensor_keys() -> None:
    """Drop every sensors:* key (streams with their groups, last seen, online, errors)."""
    client = get_redis()
    keys = list(client.scan_iter(match="sensors:*", count=1000))
    if keys:
        client.delete(*keys)


def now_ms() -> int:
    return int(time.time() * 1000)


def publish(*readings: dict[str, Any], slug: str = SLUG) -> list[str]:
    """Append readings through the real service; returns their stream ids."""
    return readings_append(slug=slug, readings=readings_validate(list(readings)))


def reading_fields(temperature: float = 1.0) -> dict[bytes, bytes]:
    """The fields of a stream entry as the append script writes them."""
    return {b"ts": str(now_ms()).encode(), b"v": json.dumps({"temperature": temperature}).encode()}


def pending(group: str, slug: str = SLUG) -> int:
    return get_redis().xpending(stream_key(slug), group)["pending"]


def drain(*runners: StageRunner) -> None:
    """Step the runners in turn, without blocking, until none has anything left."""
    while sum(runner.step(block_ms=0) for runner in runners):
        pass


class Crash(BaseException):
    """Stands for the process dying mid-batch: nothing in the runner catches it."""


class CrashingStore(StoreStage):
    def handle(self, entries: list[Entry]) -> None:
        raise Crash


class KillingStore(StoreStage):
    """Brings the process down whenever a batch holds one particular entry."""

    def __init__(self, kill_id: str) -> None:
        super().__init__()
        self.kill_id = kill_id
        self.kills = 0

    def handle(self, entries: list[Entry]) -> None:
        if any(e.id == self.kill_id for e in entries):
            self.kills += 1
            raise Crash
        super().handle(entries)


class SmallBatchStore(StoreStage):
    batch_size = 2


class PoisonedStore(StoreStage):
    """Fails for one entry, every time; counts how often it was tried."""

    def __init__(self, poison_id: str) -> None:
        super().__init__()
        self.poison_id = poison_id
        self.poison_attempts = 0

    def handle(self, entries: list[Entry]) -> None:
        if any(e.id == self.poison_id for e in entries):
            if len(entries) == 1:
                self.poison_attempts += 1
            raise ValueError(f"poisoned entry {self.poison_id}")
        super().handle(entries)


class ProcessingTestCase(RedisTransactionTestCase):
    """A fresh sensor and empty sensors:* keys per test."""

    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        self.sensor, _ = sensor_create(slug=SLUG, units={"temperature": "°C"})

    def runner(self, stage: Any = None, consumer: str = "a") -> StageRunner:
        return StageRunner(stage or StoreStage(), consumer=consumer)

    def stored(self) -> list[tuple[str, str, float]]:
        return sorted(
            Reading.objects.filter(sensor=self.sensor).values_list("stream_id", "metric", "value")
        )


class StoreStageTests(ProcessingTestCase):
    def test_stores_each_metric_of_each_reading_once(self) -> None:
        base = now_ms() - 60_000
        ids = publish(
            {"ts": base, "temperature": 20.5, "pressure": 1.2},
            {"ts": base + 1000, "temperature": 21},
        )
        runner = self.runner()
        drain(runner)

        self.assertEqual(
            self.stored(),
            sorted([(ids[0], "temperature", 20.5), (ids[0], "pressure", 1.2),
                    (ids[1], "temperature", 21.0)]),
        )  # fmt: skip
        self.assertEqual(
            Reading.objects.get(stream_id=ids[1]).ts_ms, base + 1000, "reading time, not now"
        )
        self.assertEqual(pending("store"), 0)
        self.assertEqual(runner.processed, 2)
        self.sensor.refresh_from_db()
        self.assertIsNotNone(self.sensor.last_seen_at)

        # Handing the same entries over again (a redelivery) adds no rows.
        raw = get_redis().xrange(stream_key(SLUG))
        StoreStage().handle([Entry(stream_key(SLUG), i.decode(), f) for i, f in raw])
        self.assertEqual(len(self.stored()), 3)

    def test_a_new_group_starts_with_what_the_stream_already_holds(self) -> None:
        # Published before any processor ran: the group is created at 0, not $.
        ids = publish({"temperature": 1}, {"temperature": 2})
        runner = self.runner()
        self.assertEqual(runner.step(block_ms=0), 2)
        self.assertEqual([r[0] for r in self.stored()], sorted(ids))

    def test_two_consumers_in_the_group_share_the_work_without_duplicates(self) -> None:
        ids = publish(*[{"temperature": n} for n in range(10)])
        first = self.runner(SmallBatchStore(), "first")
        second = self.runner(SmallBatchStore(), "second")
        drain(first, second)

        self.assertGreater(first.processed, 0)
        self.assertGreater(second.processed, 0)
        self.assertEqual(first.processed + second.processed, 10)
        self.assertEqual([r[0] for r in self.stored()], sorted(ids))
        self.assertEqual(pending("store"), 0)

    def test_two_consumers_running_concurrently_store_everything_exactly_once(self) -> None:
        logs = self.enterContext(self.assertLogs("sensors.processing", "INFO"))
        stop = threading.Event()
        runners = [StageRunner(SmallBatchStore(), consumer=name, stop=stop) for name in ("x", "y")]
        threads = [threading.Thread(target=r.run) for r in runners]
        for thread in threads:
            thread.start()
        try:
            ids = []
            for batch in range(5):
                ids += publish(*[{"temperature": batch * 10 + n} for n in range(10)])
            wait_until(lambda: Reading.objects.count() >= 50)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=TIMEOUT)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual([r[0] for r in self.stored()], sorted(ids))
        self.assertEqual(sum(r.processed for r in runners), 50, "no entry handled twice")
        self.assertIn("INFO:sensors.processing:stage store: consumer x stopped", logs.output)
        self.assertEqual(pending("store"), 0)

    def test_readings_of_a_sensor_that_no_longer_exists_are_skipped(self) -> None:
        gone = StreamReading("deleted-sensor", "5-0", now_ms(), {"temperature": 9.0})
        kept = StreamReading(SLUG, "6-0", now_ms(), {"temperature": 1.0})
        readings_store(readings=[gone, kept])
        self.assertEqual(self.stored(), [("6-0", "temperature", 1.0)])
        self.assertEqual(Reading.objects.count(), 1)

    def test_the_last_seen_time_is_copied_at_most_once_an_interval(self) -> None:
        stage = StoreStage()
        stage.last_seen_every = 3600.0
        for reading_ms in (1_000_000, 2_000_000):
            get_redis().hset(LAST_SEEN_KEY, SLUG, reading_ms)
            stage.handle([Entry(stream_key(SLUG), f"{reading_ms}-0", reading_fields())])
        self.sensor.refresh_from_db()
        self.assertEqual(self.sensor.last_seen_at.timestamp(), 1000, "the first batch's copy")
        self.assertEqual(len(self.stored()), 2, "every batch is still stored")

    def test_the_offline_sweep_copies_the_last_seen_time(self) -> None:
        publish({"temperature": 1})
        seen_ms = int(get_redis().hget(LAST_SEEN_KEY, SLUG))
        later = seen_ms + (settings.SENSOR_OFFLINE_AFTER + 1) * 1000
        self.assertEqual(sensors_offline_sweep(now_ms=later), [SLUG])
        self.sensor.refresh_from_db()
        self.assertEqual(int(self.sensor.last_seen_at.timestamp() * 1000), seen_ms)


class ReclaimTests(ProcessingTestCase):
    @override_settings(SENSOR_RECLAIM_IDLE=1.0)
    def test_entries_of_a_dead_consumer_are_reclaimed_after_the_idle_timeout_and_stored_once(
        self,
    ) -> None:
        ids = publish({"temperature": 1}, {"temperature": 2}, {"temperature": 3})
        dead = self.runner(CrashingStore(), "dead")
        with self.assertRaises(Crash):
            dead.step(block_ms=0)  # read with XREADGROUP, then died before XACK
        self.assertEqual(pending("store"), 3)

        survivor = self.runner(StoreStage(), "survivor")
        self.assertEqual(survivor.read(block_ms=0), 0, "pending entries are not new ones")
        self.assertEqual(survivor.reclaim(), 0, "not idle long enough yet")
        self.assertEqual(self.stored(), [])

        wait_until(survivor.reclaim, timeout=TIMEOUT)  # waits out SENSOR_RECLAIM_IDLE

        self.assertEqual([r[0] for r in self.stored()], sorted(ids))
        self.assertEqual(pending("store"), 0)
        self.assertEqual(survivor.processed, 3)
        drain(survivor)
        self.assertEqual(survivor.reclaim(), 0)
        self.assertEqual(len(self.stored()), 3, "processed once")


class DeadLetterTests(ProcessingTestCase):
    @override_settings(SENSOR_RECLAIM_IDLE=0.05, SENSOR_MAX_DELIVERIES=3)
    def test_an_entry_that_keeps_failing_is_dead_lettered_and_the_others_are_processed(
        self,
    ) -> None:
        ids = publish({"temperature": 1}, {"temperature": 2}, {"temperature": 3})
        stage = PoisonedStore(poison_id=ids[1])
        logs = self.enterContext(self.assertLogs("sensors.processing", "WARNING"))
        runner = self.runner(stage)

        self.assertEqual(runner.read(block_ms=0), 2, "the batch retried entry by entry")
        self.assertEqual([r[0] for r in self.stored()], sorted([ids[0], ids[2]]))
        self.assertEqual(pending("store"), 1)
        self.assertFalse(DeadLetter.objects.exists())
        error_key = ERRORS_KEY.format(group="store")
        self.assertIn(b"poisoned", get_redis().hget(error_key, f"{stream_key(SLUG)} {ids[1]}"))

        # Redelivered after each idle timeout until the third failure dead-letters it.
        wait_until(lambda: runner.reclaim() is not None and DeadLetter.objects.exists())

        self.assertEqual(stage.poison_attempts, 3)
        dead = DeadLetter.objects.get()
        self.assertIn(f"entry {stream_key(SLUG)} {ids[1]} dead-lettered after delivery 3",
                      logs.output[-1])  # fmt: skip
        self.assertEqual(
            (dead.stream, dead.group, dead.entry_id, dead.deliveries),
            (stream_key(SLUG), "store", ids[1], 3),
        )
        self.assertEqual(json.loads(dead.fields["v"]), {"temperature": 2.0})
        self.assertIn("ValueError: poisoned entry", dead.error)
        [(_, letter)] = get_redis().xrange(DEAD_LETTER_STREAM)
        self.assertEqual(letter[b"id"].decode(), ids[1])
        self.assertEqual(letter[b"group"], b"store")
        self.assertEqual(letter[b"stream"].decode(), stream_key(SLUG))
        self.assertIn(b"poisoned entry", letter[b"error"])
        self.assertEqual(json.loads(letter[b"fields"])["ts"], dead.fields["ts"])
        self.assertEqual(pending("store"), 0)
        self.assertFalse(get_redis().exists(error_key))

        # No longer in the way: what comes next is processed, the dead letter stays put.
        later = publish({"temperature": 4})
        drain(runner)
        self.assertEqual([r[0] for r in self.stored()], sorted([ids[0], ids[2], *later]))
        self.assertEqual(stage.poison_attempts, 3)

    @override_settings(SENSOR_MAX_DELIVERIES=1)
    def test_a_malformed_entry_is_dead_lettered_by_the_real_store_stage(self) -> None:
        logs = self.enterContext(self.assertLogs("sensors.processing", "WARNING"))
        good = publish({"temperature": 1})
        bad = get_redis().xadd(stream_key(SLUG), {"ts": "soon", "v": "{"}).decode()
        runner = self.runner()
        self.assertEqual(runner.step(block_ms=0), 1)

        self.assertEqual([r[0] for r in self.stored()], good)
        dead = DeadLetter.objects.get()
        self.assertEqual((dead.entry_id, dead.fields), (bad, {"ts": "soon", "v": "{"}))
        self.assertIn("ValueError", dead.error)
        self.assertIn("dead-lettered after delivery 1", logs.output[-1])
        self.assertEqual(get_redis().xlen(DEAD_LETTER_STREAM), 1)
        self.assertEqual(pending("store"), 0)

    @override_settings(SENSOR_RECLAIM_IDLE=0.05, SENSOR_MAX_DELIVERIES=2)
    def test_an_entry_that_kills_every_consumer_is_dead_lettered_alone(self) -> None:
        ids = publish({"temperature": 1}, {"temperature": 2}, {"temperature": 3})
        stage = KillingStore(kill_id=ids[1])
        logs = self.enterContext(self.assertLogs("sensors.processing", "ERROR"))
        with self.assertRaises(Crash):
            self.runner(stage, "first").step(block_ms=0)  # the whole batch is left pending

        def next_consumer_reclaims() -> bool:
            try:
                self.runner(stage, f"c{time.monotonic_ns()}").reclaim()
            except Crash:
                return False
            return DeadLetter.objects.exists()

        # Reclaimed one by one: the neighbours are done, the killer alone comes back.
        wait_until(next_consumer_reclaims)

        dead = DeadLetter.objects.get()
        self.assertEqual((dead.entry_id, dead.deliveries), (ids[1], 2))
        self.assertIn("never acknowledged", dead.error)
        self.assertIn("dead-lettered after delivery 2", logs.output[-1])
        self.assertEqual(stage.kills, 2, "not handled a third time")
        self.assertEqual([r[0] for r in self.stored()], sorted([ids[0], ids[2]]))
        self.assertEqual(pending("store"), 0)


@override_settings(EMAIL_BACKEND=LOCMEM, ALERT_EMAIL_TO=["oncall@example.com"])
class AlertRuleTests(ProcessingTestCase):
    def rule(self, **kwargs: Any) -> AlertRule:
        fields = {"metric": "temperature", "operator": ">", "threshold": 30.0, **kwargs}
        return AlertRule.objects.create(sensor=self.sensor, **fields)

    def test_operators(self) -> None:
        from sensors.services_processing import rule_holds

        cases = [
            (">", 31, True), (">", 30, False), (">=", 30, True), (">=", 29.9, False),
            ("<", 29, True), ("<", 30, False), ("<=", 30, True), ("<=", 30.1, False),
        ]  # fmt: skip
        for operator, value, holds in cases:
            with self.subTest(operator=operator, value=value):
                rule = AlertRule(operator=operator, threshold=30.0)
                self.assertIs(rule_holds(rule=rule, value=value), holds)

    def test_the_condition_must_hold_for_the_duration_in_reading_time(self) -> None:
        rule = self.rule(operator=">=", duration_seconds=60)
        runner = self.runner(AlertStage())
        base = now_ms() - 10 * 60_000

        def step(offset_s: int, value: float) -> None:
            publish({"ts": base + offset_s * 1000, "temperature": value})
            drain(runner)

        step(0, 35)
        rule.refresh_from_db()
        self.assertEqual(rule.condition_since_ms, base)
        step(30, 35)
        step(45, 20)  # back in range: the clock restarts
        rule.refresh_from_db()
        self.assertIsNone(rule.condition_since_ms)
        step(50, 35)
        step(100, 36)  # 50 s since it started holding again
        self.assertFalse(Alert.objects.exists())
        step(111, 37)  # 61 s

        alert = Alert.objects.get()
        self.assertEqual((alert.value, alert.cleared_at), (37.0, None))
        self.assertEqual(int(alert.fired_at.timestamp() * 1000), base + 111_000)
        rule.refresh_from_db()
        self.assertIsNone(rule.condition_since_ms)
        self.assertEqual([m.to for m in mail.outbox], [["oncall@example.com"]])

    def test_readings_of_sensors_without_rules_are_not_evaluated(self) -> None:
        rule = self.rule()
        sensor_create(slug="cellar")
        unruled = Entry(stream_key("cellar"), "1-0", {b"ts": b"soon", b"v": b"{"})
        ruled = Entry(stream_key(SLUG), "2-0", reading_fields(40))
        # The cellar's (malformed) entry is never decoded: no rule could use it.
        AlertStage().handle([unruled, ruled])
        self.assertEqual(Alert.objects.get().rule, rule)

    def test_a_redelivered_reading_fires_nothing_more(self) -> None:
        self.rule()
        publish({"temperature": 40})
        raw = get_redis().xrange(stream_key(SLUG))
        entries = [Entry(stream_key(SLUG), i.decode(), f) for i, f in raw]
        AlertStage().handle(entries)
        AlertStage().handle(entries)
        self.assertEqual(Alert.objects.count(), 1)
        self.assertEqual(len(mail.outbox), 1)

    def test_inactive_rules_and_other_metrics_are_ignored(self) -> None:
        self.rule(active=False)
        self.rule(metric="pressure")
        publish({"temperature": 40, "humidity": 99})
        drain(self.runner(AlertStage()))
        self.assertFalse(Alert.objects.exists())
        self.assertEqual(mail.outbox, [])


@override_settings(EMAIL_BACKEND=LOCMEM)
class AlertPushTests(SocketTestCase):
    """The alert frames, through the real sockets of watchers."""

    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        self.sensor, _ = sensor_create(slug=SLUG)
        self.rule = AlertRule.objects.create(
            sensor=self.sensor, name="Too hot", metric="temperature", operator=">",
            threshold=30.0, notify_email="boiler-room@example.com",
        )  # fmt: skip
        self.runner = StageRunner(AlertStage(), consumer="a")

    def publish_and_process(self, *values: float) -> list[str]:
        ids = publish(*[{"temperature": v} for v in values])
        drain(self.runner)
        return ids

    async def test_an_alert_fires_once_pushes_emails_and_clears(self) -> None:
        watcher = await self.open_socket(f"/ws/sensors/{SLUG}")
        self.assertEqual((await watcher.receive_json_from(timeout=TIMEOUT))["type"], "history")
        overview = await self.open_socket("/ws/sensors")
        self.assertEqual((await overview.receive_json_from(timeout=TIMEOUT))["type"], "snapshot")

        ids = await sync_to_async(self.publish_and_process)(31, 32)

        alert = await sync_to_async(Alert.objects.get)()
        self.assertEqual((alert.value, alert.stream_id, alert.cleared_at), (31.0, ids[0], None))
        for socket in (watcher, overview):
            frames = await receive_until(socket, lambda f: f["type"] == "alert")
            fired = frames[-1]["alert"]
            self.assertEqual(
                fired,
                {"id": alert.pk, "rule": self.rule.pk, "rule_name": "Too hot", "sensor": SLUG,
                 "metric": "temperature",
                 "operator": ">", "threshold": 30.0, "value": 31.0,
                 "fired_at": alert.fired_at.isoformat(), "cleared_at": None, "stream_id": ids[0]},
            )  # fmt: skip
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(mail.outbox[0].to, ["boiler-room@example.com"])
        self.assertIn("Too hot", mail.outbox[0].subject)
        self.assertIn("temperature = 31", mail.outbox[0].body)

        [back] = await sync_to_async(self.publish_and_process)(25)

        frames = await receive_until(watcher, lambda f: f["type"] == "alert")
        self.assertEqual(frames[0]["id"], back, "no second alert (for 32) came before")
        cleared = frames[-1]["alert"]
        await sync_to_async(alert.refresh_from_db)()
        self.assertIsNotNone(alert.cleared_at)
        self.assertEqual(
            (cleared["id"], cleared["cleared_at"], cleared["value"]),
            (alert.pk, alert.cleared_at.isoformat(), 31.0),
        )
        frames = await receive_until(overview, lambda f: f.get("alert", {}).get("cleared_at"))
        self.assertEqual(frames[-1]["alert"]["id"], alert.pk)
        self.assertEqual(len(mail.outbox), 1, "no email on clearing")
        self.assertEqual(await sync_to_async(Alert.objects.count)(), 1)

        # Out of range again later: a new alert.
        await sync_to_async(self.publish_and_process)(33)
        self.assertEqual(await sync_to_async(Alert.objects.filter(cleared_at=None).count)(), 1)
        self.assertEqual(await sync_to_async(Alert.objects.count)(), 2)
        self.assertEqual(len(mail.outbox), 2)


class RetentionTests(ProcessingTestCase):
    def setUp(self) -> None:
        super().setUp()
        now = now_ms()
        self.old = StreamReading(SLUG, "1-0", now - 31 * DAY_MS, {"temperature": 1.0, "rh": 2.0})
        self.new = StreamReading(SLUG, "2-0", now - 29 * DAY_MS, {"temperature": 3.0})
        readings_store(readings=[self.old, self.new])

    def test_purge_deletes_readings_older_than_the_retention(self) -> None:
        self.assertEqual(readings_purge(older_than_days=30), 2)
        self.assertEqual(self.stored(), [("2-0", "temperature", 3.0)])
        self.assertEqual(readings_purge(older_than_days=30), 0)

    def test_purge_command(self) -> None:
        out = StringIO()
        call_command("purge_readings", "--days", "30", stdout=out)
        self.assertIn("Deleted 2 readings", out.getvalue())
        self.assertEqual(len(self.stored()), 1)

    @override_settings(SENSOR_RETENTION_DAYS=30)
    def test_the_processor_housekeeping_purges(self) -> None:
        with self.assertLogs("sensors.processing", "INFO") as logs:
            Housekeeping().tick()
        self.assertEqual(len(self.stored()), 1)
        self.assertIn("retention: deleted 2 readings", logs.output[-1])


class OfflineSweepTests(SocketTestCase):
    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        sensor_create(slug=SLUG)

    async def test_the_housekeeping_sweep_pushes_offline_status(self) -> None:
        await sync_to_async(publish)({"temperature": 1})  # online now
        watcher = await self.open_socket(f"/ws/sensors/{SLUG}")
        self.assertEqual((await watcher.receive_json_from(timeout=TIMEOUT))["type"], "history")

        later = now_ms() + (settings.SENSOR_OFFLINE_AFTER + 1) * 1000
        await sync_to_async(Housekeeping().tick)(now_ms=later)

        frames = await receive_until(watcher, lambda f: f["type"] == "status")
        self.assertEqual(frames[-1], {"type": "status", "sensor": SLUG, "online": False})


class CommandTests(ProcessingTestCase):
    """`manage.py process_readings`, twice, as real processes."""

    def start(self, name: str) -> tuple[subprocess.Popen, Path]:
        log = Path(tempfile.mkstemp(prefix="process-readings-", suffix=".log")[1])
        self.addCleanup(log.unlink, missing_ok=True)
        env = {**os.environ, "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL,
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "process_readings", "--consumer", name],
                cwd=settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.addCleanup(self.kill, process)
        return process, log

    def kill(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)

    def test_two_processes_share_the_groups_and_stop_cleanly_on_sigterm(self) -> None:
        AlertRule.objects.create(sensor=self.sensor, metric="temperature", operator=">",
                                 threshold=30.0)  # fmt: skip
        processes = [self.start("proc-1"), self.start("proc-2")]

        def blocked_readers() -> int:
            clients = get_redis().client_list()
            return sum(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in clients)

        # Both processes, both stages, waiting in XREADGROUP: Redis hands each new entry to
        # the reader that has waited longest, so the work is split between the two.
        try:
            wait_until(lambda: blocked_readers() == 4)
        except AssertionError:
            logs = "\n".join(log.read_text() for _, log in processes)
            self.fail(f"the processors are not reading:\n{logs}")
        ids = []
        for batch in range(4):
            # All over the threshold: one alert, whichever consumer gets which batch first.
            ids += publish(*[{"temperature": 31 + batch * 5 + n} for n in range(5)])

        wait_until(lambda: Reading.objects.count() >= 20 and Alert.objects.exists())
        for group in ("store", "alerts"):
            infos = get_redis().xinfo_consumers(stream_key(SLUG), group)
            self.assertEqual({i["name"].decode() for i in infos}, {"proc-1", "proc-2"}, group)
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)
        for process, log in processes:
            self.assertEqual(process.wait(timeout=TIMEOUT), 0, log.read_text())
            self.assertIn("Stopped.", log.read_text())

        self.assertEqual([r[0] for r in self.stored()], sorted(ids))
        self.assertEqual(Alert.objects.count(), 1)
        self.assertEqual(pending("store"), 0)
        self.assertEqual(pending("alerts"), 0)
        self.assertTrue(Sensor.objects.get().last_seen_at)

    def test_the_processors_run_at_a_lower_cpu_priority(self) -> None:
        process, log = self.start("proc-nice")
        # The command lowers its priority before it says it is processing.
        wait_until(lambda: "Processing stages" in log.read_text())
        self.assertEqual(
            os.getpriority(os.PRIO_PROCESS, process.pid),
            min(19, os.getpriority(os.PRIO_PROCESS, 0) + settings.SENSOR_PROCESSOR_NICE),
        )
