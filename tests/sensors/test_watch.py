"""The sensor watching sockets (one sensor, and the overview) through the real ASGI app."""

import asyncio
import threading
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from chatsite.asgi import application
from chatsite.fanout import live_channel
from chatsite.redis_clients import get_redis
from sensors.models import Sensor, sensor_group_name, stream_key
from sensors.services import readings_append, sensor_create, sensors_offline_sweep
from sensors.validation import readings_validate
from tests.support.cases import ORIGIN, TIMEOUT, SocketTestCase, receive_until, wait_until

SLUG = "greenhouse"


def clear_sensor_keys() -> None:
    """Drop every sensors:* key (streams, last seen, online); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="sensors:*", count=1000))
    if keys:
        client.delete(*keys)


def id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


class WatchSocketTestCase(SocketTestCase):
    """A fresh sensor and an empty stream per test; publishers, watchers and the stream."""

    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        self.sensor, self.key = sensor_create(
            slug=SLUG, name="Greenhouse", units={"temperature": "°C"}
        )

    async def publisher(self, slug: str = SLUG, key: str | None = None):
        return await self.open_socket(
            f"/ws/sensors/{slug}/publish?key={key or self.key}", origin=None
        )

    async def publish(self, socket, frame: Any) -> list[str]:
        """Send readings and return the acked stream ids."""
        await socket.send_json_to(frame)
        ack = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(ack["type"], "ack", ack)
        return ack["ids"]

    async def watch(self, query: str = "", slug: str = SLUG):
        """A watcher of one sensor, and its history readings (all history frames' worth)."""
        socket = await self.open_socket(f"/ws/sensors/{slug}{query}")
        history = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(history["type"], "history", history)
        return socket, history

    async def stream_ids(self, after: str = "-") -> list[str]:
        start = f"({after}" if after != "-" else "-"
        entries = await sync_to_async(get_redis().xrange)(stream_key(SLUG), min=start)
        return [i.decode() for i, _ in entries]

    async def assert_refused_with(self, socket, error_code: str, close_code: int) -> None:
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["type"], error["code"]), ("error", error_code))
        closed = await socket.receive_output(timeout=TIMEOUT)
        self.assertEqual(closed["type"], "websocket.close")
        self.assertEqual(closed["code"], close_code)

    async def assert_still_open(self, socket) -> None:
        await socket.send_json_to({"type": "ping"})
        self.assertEqual(await socket.receive_json_from(timeout=TIMEOUT), {"type": "pong"})


async def readings_until(socket, last_id: str) -> list[dict]:
    """The `reading` frames received up to and including the one with `last_id`."""
    frames = await receive_until(socket, lambda f: f["type"] == "reading" and f["id"] == last_id)
    return [f for f in frames if f["type"] == "reading"]


class SensorWatchConnectTests(WatchSocketTestCase):
    """/ws/sensors/<slug>: refusals, and the history sent on connect."""

    @override_settings(SENSOR_HISTORY_COUNT=3)
    async def test_history_holds_the_last_n_readings_oldest_first(self) -> None:
        ids = await self.publish(
            await self.publisher(), [{"ts": 1_000 + i, "values": {"n": i}} for i in range(5)]
        )
        _, history = await self.watch()
        self.assertEqual(history["sensor"], SLUG)
        self.assertEqual(history["units"], {"temperature": "°C"})
        self.assertEqual(
            history["readings"],
            [{"id": ids[i], "ts": 1_000 + i, "values": {"n": float(i)}} for i in (2, 3, 4)],
        )

    async def test_history_of_a_sensor_without_readings_is_empty(self) -> None:
        _, history = await self.watch()
        self.assertEqual(history["readings"], [])

    async def test_unknown_sensor_is_closed_4404(self) -> None:
        socket = await self.open_socket("/ws/sensors/no-such-sensor")
        await self.assert_refused_with(socket, "not_found", 4404)

    async def test_after_that_is_not_a_stream_id_is_closed_4400(self) -> None:
        for after in ("abc", "-1", "1-", "1-2-3", "1.5", "%2B1"):
            with self.subTest(after=after):
                socket = await self.open_socket(f"/ws/sensors/{SLUG}?after={after}")
                await self.assert_refused_with(socket, "invalid_after", 4400)

    async def test_foreign_or_missing_origin_is_refused_at_the_handshake(self) -> None:
        for path in (f"/ws/sensors/{SLUG}", "/ws/sensors"):
            for headers in ([(b"origin", b"http://evil.example")], []):
                with self.subTest(path=path, headers=headers):
                    socket = WebsocketCommunicator(application, path, headers=headers)
                    connected, _ = await socket.connect(timeout=TIMEOUT)
                    self.assertFalse(connected)

    async def test_watcher_answers_ping_and_refuses_other_frames(self) -> None:
        socket, _ = await self.watch()
        await self.assert_still_open(socket)
        await socket.send_json_to({"t": 1})
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["code"], error["field"]), ("unknown_type", "type"))
        self.assertEqual(await self.stream_ids(), [])


class SensorWatchLiveTests(WatchSocketTestCase):
    """/ws/sensors/<slug>: live readings, and resuming with ?after= without gap or repeat."""

    async def test_published_reading_reaches_the_watcher(self) -> None:
        socket, _ = await self.watch()
        [entry_id] = await self.publish(await self.publisher(), {"ts": 5_000, "temperature": 21.5})
        [reading] = await readings_until(socket, entry_id)
        self.assertEqual(
            reading,
            {"type": "reading", "sensor": SLUG, "id": entry_id, "ts": 5_000,
             "values": {"temperature": 21.5}},
        )  # fmt: skip

    async def test_watchers_in_one_process_share_one_subscription(self) -> None:
        channel = live_channel(sensor_group_name(SLUG))

        def subscriptions() -> int:
            [(_, count)] = get_redis().pubsub_numsub(channel)
            return count

        first, _ = await self.watch()
        second, _ = await self.watch()
        self.assertEqual(subscriptions(), 1)  # one for both sockets
        await first.disconnect(timeout=TIMEOUT)  # one leaving stops no other
        [entry_id] = await self.publish(await self.publisher(), {"temperature": 1.0})
        self.assertEqual(len(await readings_until(second, entry_id)), 1)
        await second.disconnect(timeout=TIMEOUT)
        wait_until(lambda: subscriptions() == 0)  # the last one out unsubscribed

    async def test_batch_reaches_the_watcher_as_one_reading_frame_each_in_order(self) -> None:
        socket, _ = await self.watch()
        ids = await self.publish(await self.publisher(), [{"n": i} for i in range(4)])
        readings = await readings_until(socket, ids[-1])
        self.assertEqual([r["id"] for r in readings], ids)
        self.assertEqual([r["values"]["n"] for r in readings], [0.0, 1.0, 2.0, 3.0])

    async def test_first_reading_of_an_offline_sensor_also_says_it_came_online(self) -> None:
        socket, _ = await self.watch()
        await self.publish(await self.publisher(), {"t": 1})
        frames = await receive_until(socket, lambda f: f["type"] == "status")
        self.assertEqual(frames[-1], {"type": "status", "sensor": SLUG, "online": True})

    async def test_readings_of_another_sensor_do_not_reach_the_watcher(self) -> None:
        _, other_key = await sync_to_async(sensor_create)(slug="other")
        socket, _ = await self.watch()
        await self.publish(await self.publisher("other", other_key), {"t": 1})
        [mine] = await self.publish(await self.publisher(), {"t": 2})
        readings = await readings_until(socket, mine)
        self.assertEqual([r["sensor"] for r in readings], [SLUG])

    async def test_after_replays_exactly_the_missed_readings_then_goes_live(self) -> None:
        publisher = await self.publisher()
        ids = await self.publish(publisher, [{"n": i} for i in range(6)])
        socket, history = await self.watch(f"?after={ids[2]}")
        self.assertEqual([r["id"] for r in history["readings"]], ids[3:])
        [live] = await self.publish(publisher, {"n": 6})
        self.assertEqual([r["id"] for r in await readings_until(socket, live)], [live])

    async def test_after_the_newest_id_replays_nothing_then_goes_live(self) -> None:
        publisher = await self.publisher()
        ids = await self.publish(publisher, [{"n": i} for i in range(3)])
        socket, history = await self.watch(f"?after={ids[-1]}")
        self.assertEqual(history["readings"], [])
        [live] = await self.publish(publisher, {"n": 3})
        self.assertEqual([r["id"] for r in await readings_until(socket, live)], [live])

    async def test_after_of_only_milliseconds_means_sequence_0_of_that_millisecond(self) -> None:
        ids = await self.publish(await self.publisher(), [{"n": i} for i in range(3)])
        ms = ids[0].split("-")[0]
        _, history = await self.watch(f"?after={ms}")
        self.assertEqual(
            [r["id"] for r in history["readings"]], [i for i in ids if id_order(i) > (int(ms), 0)]
        )

    async def connect_while_publishing(self, query_of: Any) -> None:
        """Connect a watcher while readings keep arriving; it must see each exactly once.

        A thread appends one reading after another (the HTTP path: XADD, then the group
        send) before, during and after the watcher's connect, so some land between the
        watcher joining the live group and reading the stream. `query_of(ids)` builds the
        watcher's query from the ids appended so far.
        """
        appended: list[str] = []
        enough_before = threading.Event()
        stop = threading.Event()

        def keep_appending() -> None:
            while not stop.is_set():
                readings = readings_validate({"n": len(appended)})
                appended.extend(readings_append(slug=SLUG, readings=readings))
                if len(appended) >= 10:
                    enough_before.set()

        thread = threading.Thread(target=keep_appending, daemon=True)
        thread.start()
        try:
            self.assertTrue(await asyncio.to_thread(enough_before.wait, TIMEOUT))
            socket, history = await self.watch(query_of(list(appended)))
            some_after = len(appended) + 5
            await asyncio.to_thread(wait_until, lambda: len(appended) >= some_after)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, TIMEOUT)
        live = await readings_until(socket, appended[-1])
        received = [r["id"] for r in history["readings"]] + [r["id"] for r in live]
        self.assertEqual(received, sorted(received, key=id_order))
        self.assertEqual(len(received), len(set(received)))
        return received

    async def test_resume_while_readings_arrive_loses_and_repeats_none(self) -> None:
        after: list[str] = []

        def query_of(ids: list[str]) -> str:
            after.append(ids[2])
            return f"?after={ids[2]}"

        received = await self.connect_while_publishing(query_of)
        self.assertEqual(received, await self.stream_ids(after=after[0]))

    async def test_connect_while_readings_arrive_loses_and_repeats_none(self) -> None:
        received = await self.connect_while_publishing(lambda ids: "")
        everything = await self.stream_ids()
        self.assertEqual(received, everything[everything.index(received[0]) :])


class OverviewTests(WatchSocketTestCase):
    """/ws/sensors: a snapshot of every sensor, then all readings and status changes."""

    async def overview(self):
        socket = await self.open_socket("/ws/sensors")
        snapshot = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(snapshot["type"], "snapshot", snapshot)
        return socket, {s["sensor"]: s for s in snapshot["sensors"]}

    async def test_snapshot_lists_every_active_sensor_with_latest_reading_and_state(self) -> None:
        await sync_to_async(sensor_create)(slug="cellar", name="Cellar")
        await sync_to_async(sensor_create)(slug="retired")
        await sync_to_async(Sensor.objects.filter(slug="retired").update)(active=False)
        publisher = await self.publisher()
        await self.publish(publisher, {"ts": 1_000, "temperature": 20})
        [latest] = await self.publish(publisher, {"ts": 2_000, "temperature": 21.5})
        _, sensors = await self.overview()
        self.assertEqual(sorted(sensors), ["cellar", SLUG])
        greenhouse = sensors[SLUG]
        self.assertEqual(greenhouse["name"], "Greenhouse")
        self.assertEqual(greenhouse["units"], {"temperature": "°C"})
        self.assertEqual(
            greenhouse["latest"], {"id": latest, "ts": 2_000, "values": {"temperature": 21.5}}
        )
        self.assertTrue(greenhouse["online"])
        self.assertAlmostEqual(greenhouse["last_seen"] / 1000, time.time(), delta=TIMEOUT)
        self.assertEqual(
            {k: sensors["cellar"][k] for k in ("latest", "online", "last_seen")},
            {"latest": None, "online": False, "last_seen": None},
        )

    async def test_overview_relays_new_readings_of_every_sensor(self) -> None:
        _, other_key = await sync_to_async(sensor_create)(slug="cellar")
        socket, _ = await self.overview()
        [first] = await self.publish(await self.publisher(), {"t": 1})
        [second] = await self.publish(await self.publisher("cellar", other_key), {"t": 2})
        readings = await readings_until(socket, second)
        self.assertEqual(
            [(r["sensor"], r["id"], r["values"]) for r in readings],
            [(SLUG, first, {"t": 1.0}), ("cellar", second, {"t": 2.0})],
        )

    async def test_overview_says_when_a_sensor_comes_online(self) -> None:
        socket, sensors = await self.overview()
        self.assertFalse(sensors[SLUG]["online"])
        await self.publish(await self.publisher(), {"t": 1})
        frames = await receive_until(socket, lambda f: f["type"] == "status")
        self.assertEqual(frames[-1], {"type": "status", "sensor": SLUG, "online": True})

    async def test_online_status_is_sent_only_when_it_changes(self) -> None:
        socket, _ = await self.overview()
        publisher = await self.publisher()
        await self.publish(publisher, {"t": 1})
        [last] = await self.publish(publisher, {"t": 2})
        frames = await receive_until(socket, lambda f: f.get("id") == last)
        self.assertEqual([f["type"] for f in frames].count("status"), 1, frames)

    async def test_silent_sensor_is_announced_offline_by_the_sweep(self) -> None:
        await self.publish(await self.publisher(), {"t": 1})
        socket, sensors = await self.overview()
        watcher, _ = await self.watch()
        self.assertTrue(sensors[SLUG]["online"])
        later = int(time.time() * 1000) + 61_000  # past SENSOR_OFFLINE_AFTER (60 s)
        gone = await sync_to_async(sensors_offline_sweep)(now_ms=later)
        self.assertEqual(gone, [SLUG])
        offline = {"type": "status", "sensor": SLUG, "online": False}
        for each in (socket, watcher):
            frames = await receive_until(each, lambda f: f["type"] == "status")
            self.assertEqual(frames[-1], offline)
        _, sensors = await self.overview()
        self.assertFalse(sensors[SLUG]["online"])

    async def test_sweep_leaves_a_sensor_that_published_recently_online(self) -> None:
        await self.publish(await self.publisher(), {"t": 1})
        soon = int(time.time() * 1000) + 30_000
        self.assertEqual(await sync_to_async(sensors_offline_sweep)(now_ms=soon), [])
        _, sensors = await self.overview()
        self.assertTrue(sensors[SLUG]["online"])

    async def test_sensor_that_publishes_again_comes_back_online(self) -> None:
        publisher = await self.publisher()
        await self.publish(publisher, {"t": 1})
        await sync_to_async(sensors_offline_sweep)(now_ms=int(time.time() * 1000) + 61_000)
        socket, _ = await self.overview()
        await self.publish(publisher, {"t": 2})
        frames = await receive_until(socket, lambda f: f["type"] == "status")
        self.assertEqual(frames[-1], {"type": "status", "sensor": SLUG, "online": True})


@override_settings(SENSOR_WATCH_REQUIRES_LOGIN=True)
class LoginRequiredTests(WatchSocketTestCase):
    """SENSOR_WATCH_REQUIRES_LOGIN: anonymous watchers are closed, logged-in users served."""

    async def connect_as_user(self, path: str) -> WebsocketCommunicator:
        def session_cookie() -> bytes:
            user = get_user_model().objects.create_user("ada", password="pw-not-used")
            client = Client()
            client.force_login(user)
            return f"sessionid={client.cookies['sessionid'].value}".encode()

        headers = [(b"origin", ORIGIN), (b"cookie", await sync_to_async(session_cookie)())]
        socket = WebsocketCommunicator(application, path, headers=headers)
        self._sockets.append(socket)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        self.assertTrue(connected)
        return socket

    async def test_anonymous_sensor_watcher_is_closed_4401_login_required(self) -> None:
        socket = await self.open_socket(f"/ws/sensors/{SLUG}")
        await self.assert_refused_with(socket, "login_required", 4401)

    async def test_anonymous_overview_watcher_is_closed_4401_login_required(self) -> None:
        socket = await self.open_socket("/ws/sensors")
        await self.assert_refused_with(socket, "login_required", 4401)

    async def test_logged_in_user_may_watch_a_sensor(self) -> None:
        socket = await self.connect_as_user(f"/ws/sensors/{SLUG}")
        self.assertEqual((await socket.receive_json_from(timeout=TIMEOUT))["type"], "history")

    async def test_logged_in_user_may_watch_the_overview(self) -> None:
        socket = await self.connect_as_user("/ws/sensors")
        self.assertEqual((await socket.receive_json_from(timeout=TIMEOUT))["type"], "snapshot")

    async def test_publishing_needs_no_login(self) -> None:
        await self.publish(await self.publisher(), {"t": 1})


class EdgeCaseTests(WatchSocketTestCase):
    """Edge cases that once broke: stream ids Redis rejects."""

    async def assert_invalid_after(self, after: str) -> None:
        socket = await self.open_socket(f"/ws/sensors/{SLUG}?after={after}")
        error = await socket.receive_json_from(timeout=60)
        self.assertEqual(error["code"], "invalid_after")
        closed = await socket.receive_output(timeout=60)
        self.assertEqual(closed["code"], 4400)

    async def test_after_past_the_largest_stream_id_is_closed_4400(self) -> None:
        # Redis refuses ids over 2**64 - 1; XRANGE once raised and the socket died with 1011.
        await self.assert_invalid_after("99999999999999999999")

    async def test_after_with_non_ascii_digits_is_closed_4400(self) -> None:
        # \d also matches other scripts' digits ("٣"), which Redis refuses.
        await self.assert_invalid_after("%D9%A3")
