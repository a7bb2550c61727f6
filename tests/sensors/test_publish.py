"""The sensor publish socket through the real ASGI application and real Redis."""

import json
import time
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.test import override_settings

from chatsite.redis_clients import get_redis
from sensors.models import Sensor, stream_key
from sensors.services import sensor_create, sensor_deactivate, sensor_delete, sensor_key_rotate
from tests.support.cases import TIMEOUT, SocketTestCase

SLUG = "greenhouse"


def clear_sensor_keys() -> None:
    """Drop every sensors:* key (streams, last seen, online); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="sensors:*", count=1000))
    if keys:
        client.delete(*keys)


def now_ms() -> int:
    return int(time.time() * 1000)


class PublishSocketTestCase(SocketTestCase):
    """A fresh sensor and an empty stream per test, and helpers to publish and inspect."""

    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        self.sensor, self.key = sensor_create(slug=SLUG, name="Greenhouse")

    async def publisher(self, query: str | None = None, *, slug: str = SLUG, **kwargs: Any):
        """A publish socket; by default authenticated with ?key= and without an Origin."""
        query = f"?key={self.key}" if query is None else query
        kwargs.setdefault("origin", None)
        return await self.open_socket(f"/ws/sensors/{slug}/publish{query}", **kwargs)

    async def publisher_with_headers(self, headers: list[tuple[bytes, bytes]], query: str = ""):
        """A publish socket with exactly these handshake headers (open_socket sets only Origin)."""
        from channels.testing import WebsocketCommunicator

        from chatsite.asgi import application

        socket = WebsocketCommunicator(application, f"/ws/sensors/{SLUG}/publish{query}", headers)
        self._sockets.append(socket)
        connected, _ = await socket.connect(timeout=TIMEOUT)
        self.assertTrue(connected)
        return socket

    async def send(self, socket, frame: Any) -> dict:
        await socket.send_json_to(frame)
        return await socket.receive_json_from(timeout=TIMEOUT)

    async def send_text(self, socket, text: str) -> dict:
        await socket.send_to(text_data=text)
        return await socket.receive_json_from(timeout=TIMEOUT)

    async def stream(self) -> list[tuple[str, dict[str, Any]]]:
        """The sensor's stream entries as (id, {"ts": int, "values": dict})."""
        entries = await sync_to_async(get_redis().xrange)(stream_key(SLUG))
        return [
            (i.decode(), {"ts": int(f[b"ts"]), "values": json.loads(f[b"v"])}) for i, f in entries
        ]

    async def stream_length(self) -> int:
        return await sync_to_async(get_redis().xlen)(stream_key(SLUG))

    async def assert_still_open(self, socket) -> None:
        self.assertEqual(await self.send(socket, {"type": "ping"}), {"type": "pong"})

    async def assert_refused(self, socket) -> dict:
        """The refusal every auth failure gets: an `unauthorized` error frame, then 4401."""
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["type"], error["code"]), ("error", "unauthorized"))
        closed = await socket.receive_output(timeout=TIMEOUT)
        self.assertEqual(closed["type"], "websocket.close")
        self.assertEqual(closed["code"], 4401)
        return error


class AuthTests(PublishSocketTestCase):
    """Who may publish: the active sensor's current key, from the header or the query."""

    async def test_missing_key_is_refused_with_unauthorized_then_4401(self) -> None:
        await self.assert_refused(await self.publisher(""))

    async def test_empty_key_is_refused_with_unauthorized_then_4401(self) -> None:
        await self.assert_refused(await self.publisher("?key="))

    async def test_wrong_key_is_refused_with_unauthorized_then_4401(self) -> None:
        await self.assert_refused(await self.publisher("?key=not-the-key"))

    async def test_unknown_sensor_is_refused_with_unauthorized_then_4401(self) -> None:
        await self.assert_refused(await self.publisher(slug="no-such-sensor"))

    async def test_key_of_another_sensor_is_refused_with_unauthorized_then_4401(self) -> None:
        _, other_key = await sync_to_async(sensor_create)(slug="other")
        await self.assert_refused(await self.publisher(f"?key={other_key}"))

    async def test_inactive_sensor_is_refused_with_unauthorized_then_4401(self) -> None:
        await sync_to_async(Sensor.objects.filter(slug=SLUG).update)(active=False)
        await self.assert_refused(await self.publisher())

    async def test_every_refusal_says_the_same_thing(self) -> None:
        await sync_to_async(sensor_create)(slug="asleep")
        await sync_to_async(Sensor.objects.filter(slug="asleep").update)(active=False)
        refusals = [
            await self.assert_refused(await self.publisher("")),
            await self.assert_refused(await self.publisher("?key=wrong")),
            await self.assert_refused(await self.publisher(slug="nobody")),
            await self.assert_refused(await self.publisher(slug="asleep")),
        ]
        self.assertEqual(len({json.dumps(r, sort_keys=True) for r in refusals}), 1, refusals)

    async def test_bearer_header_authenticates(self) -> None:
        socket = await self.publisher_with_headers(
            [(b"authorization", f"Bearer {self.key}".encode())]
        )
        ack = await self.send(socket, {"t": 1})
        self.assertEqual(ack["type"], "ack")

    async def test_bearer_scheme_is_case_insensitive(self) -> None:
        socket = await self.publisher_with_headers(
            [(b"authorization", f"bearer {self.key}".encode())]
        )
        self.assertEqual((await self.send(socket, {"t": 1}))["type"], "ack")

    async def test_wrong_bearer_header_is_refused_even_with_the_right_query_key(self) -> None:
        socket = await self.publisher_with_headers(
            [(b"authorization", b"Bearer wrong")], query=f"?key={self.key}"
        )
        await self.assert_refused(socket)

    async def test_wrong_bearer_header_is_refused_with_unauthorized_then_4401(self) -> None:
        socket = await self.publisher_with_headers([(b"authorization", b"Bearer wrong")])
        await self.assert_refused(socket)

    async def test_publisher_without_origin_is_accepted(self) -> None:
        socket = await self.publisher(origin=None)
        self.assertEqual((await self.send(socket, {"t": 1}))["type"], "ack")

    async def test_publisher_with_a_foreign_origin_is_accepted(self) -> None:
        socket = await self.publisher(origin=b"http://evil.example")
        self.assertEqual((await self.send(socket, {"t": 1}))["type"], "ack")

    async def test_key_rotation_closes_a_connected_publisher_with_4401(self) -> None:
        socket = await self.publisher()
        await self.assert_still_open(socket)
        sensor = await sync_to_async(Sensor.objects.get)(slug=SLUG)
        new_key = await sync_to_async(sensor_key_rotate)(sensor=sensor)
        await self.assert_refused(socket)
        await self.assert_refused(await self.publisher(f"?key={self.key}"))
        fresh = await self.publisher(f"?key={new_key}")
        self.assertEqual((await self.send(fresh, {"t": 1}))["type"], "ack")

    async def test_deactivation_closes_a_connected_publisher_with_4401(self) -> None:
        socket = await self.publisher()
        await self.assert_still_open(socket)
        sensor = await sync_to_async(Sensor.objects.get)(slug=SLUG)
        await sync_to_async(sensor_deactivate)(sensor=sensor)
        await self.assert_refused(socket)

    async def test_deleting_the_sensor_closes_its_publisher_and_drops_its_stream(self) -> None:
        socket = await self.publisher()
        self.assertEqual((await self.send(socket, {"t": 1}))["type"], "ack")
        sensor = await sync_to_async(Sensor.objects.get)(slug=SLUG)
        await sync_to_async(sensor_delete)(sensor=sensor)
        await self.assert_refused(socket)
        self.assertEqual(await self.stream_length(), 0)

    async def test_rotating_another_sensors_key_leaves_this_publisher_open(self) -> None:
        other, _ = await sync_to_async(sensor_create)(slug="other")
        socket = await self.publisher()
        await sync_to_async(sensor_key_rotate)(sensor=other)
        await self.assert_still_open(socket)


class PublishTests(PublishSocketTestCase):
    """Good frames: appended to the sensor's stream, then acked with the stream ids."""

    async def test_structured_reading_is_appended_then_acked_with_its_stream_id(self) -> None:
        socket = await self.publisher()
        ack = await self.send(
            socket, {"ts": 1_700_000_000_000, "values": {"temperature": 21.5, "humidity": 40}}
        )
        self.assertEqual(ack["type"], "ack")
        stored = {"ts": 1_700_000_000_000, "values": {"temperature": 21.5, "humidity": 40.0}}
        self.assertEqual(await self.stream(), [(ack["ids"][0], stored)])

    async def test_flat_reading_is_stored_like_the_structured_form(self) -> None:
        socket = await self.publisher()
        ack = await self.send(socket, {"ts": 1_700_000_000_000, "temperature": 21.5, "rh": 40.2})
        entries = await self.stream()
        self.assertEqual([i for i, _ in entries], ack["ids"])
        self.assertEqual(
            entries[0][1], {"ts": 1_700_000_000_000, "values": {"temperature": 21.5, "rh": 40.2}}
        )

    async def test_batch_is_acked_with_one_stream_id_per_reading_in_order(self) -> None:
        socket = await self.publisher()
        ack = await self.send(socket, [{"n": 1}, {"values": {"n": 2}}, {"n": 3}])
        entries = await self.stream()
        self.assertEqual(ack["ids"], [i for i, _ in entries])
        self.assertEqual([e["values"]["n"] for _, e in entries], [1.0, 2.0, 3.0])

    async def test_batch_of_500_readings_is_accepted(self) -> None:
        socket = await self.publisher()
        ack = await self.send(socket, [{"n": i} for i in range(500)])
        self.assertEqual(len(ack["ids"]), 500)
        self.assertEqual(await self.stream_length(), 500)

    async def test_iso_8601_ts_is_stored_as_unix_milliseconds(self) -> None:
        socket = await self.publisher()
        expected = int(datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC).timestamp() * 1000)
        for ts in (
            "2024-05-01T12:00:00.250Z",
            "2024-05-01T14:00:00.250+02:00",
            "2024-05-01T12:00:00.250",  # no offset: UTC
        ):
            with self.subTest(ts=ts):
                ack = await self.send(socket, {"ts": ts, "values": {"t": 1}})
                entries = dict(await self.stream())
                self.assertEqual(entries[ack["ids"][0]]["ts"], expected)

    async def test_unix_millisecond_ts_is_stored_as_given(self) -> None:
        socket = await self.publisher()
        ack = await self.send(socket, {"ts": 1_714_564_800_250, "values": {"t": 1}})
        self.assertEqual(dict(await self.stream())[ack["ids"][0]]["ts"], 1_714_564_800_250)

    async def test_absent_ts_is_the_server_time(self) -> None:
        socket = await self.publisher()
        before = now_ms()
        ack = await self.send(socket, {"t": 1})
        after = now_ms()
        ts = dict(await self.stream())[ack["ids"][0]]["ts"]
        self.assertTrue(before <= ts <= after, (before, ts, after))

    async def test_ts_slightly_in_the_future_within_the_skew_is_accepted(self) -> None:
        socket = await self.publisher()
        ack = await self.send(socket, {"ts": now_ms() + 3_000, "values": {"t": 1}})
        self.assertEqual(ack["type"], "ack")

    async def test_ping_gets_pong(self) -> None:
        await self.assert_still_open(await self.publisher())


class BadInputTests(PublishSocketTestCase):
    """Bad frames get an error, nothing of them is stored, and the socket stays open."""

    async def assert_invalid_reading(self, socket, frame: Any, index: int) -> dict:
        error = await self.send_text(socket, frame if isinstance(frame, str) else json.dumps(frame))
        self.assertEqual((error["type"], error["code"]), ("error", "invalid_reading"), error)
        self.assertEqual(error["index"], index)
        self.assertTrue(error["message"])
        return error

    async def test_bad_reading_is_invalid_reading_with_nothing_stored(self) -> None:
        socket = await self.publisher()
        future_ts = now_ms() + 60_000
        bad = {
            "string value": {"values": {"t": "21.5"}},
            "string value, flat": {"t": "21.5"},
            "nested object": {"values": {"t": {"celsius": 21.5}}},
            "nested list": {"values": {"t": [21.5]}},
            "flat nested": {"t": {"celsius": 21.5}},
            "boolean": {"values": {"t": True}},
            "null": {"values": {"t": None}},
            "number too big for a float": '{"values": {"t": 1e400}}',
            "upper-case name": {"values": {"Temp": 1}},
            "name starting with a digit": {"values": {"1t": 1}},
            "name with a dash": {"values": {"t-1": 1}},
            "name with a non-ASCII letter": {"values": {"température": 1}},
            "empty name": {"values": {"": 1}},
            "33-character name": {"values": {"t" * 33: 1}},
            "33 metrics": {"values": {f"m{i}": i for i in range(33)}},
            "33 metrics, flat": {f"m{i}": i for i in range(33)},
            "no metrics": {"values": {}},
            "ts only": {"ts": 1_700_000_000_000},
            "empty object": {},
            "values not an object": {"values": 21.5},
            "field beside values": {"values": {"t": 1}, "unit": "C"},
            "future ts": {"ts": future_ts, "values": {"t": 1}},
            "future ISO ts": {"ts": datetime.fromtimestamp(future_ts / 1000, UTC).isoformat(),
                              "values": {"t": 1}},
            "unparseable ts": {"ts": "yesterday", "values": {"t": 1}},
            "negative ts": {"ts": -1, "values": {"t": 1}},
            "boolean ts": {"ts": True, "values": {"t": 1}},
            "object ts": {"ts": {"ms": 1}, "values": {"t": 1}},
            "reading that is a number": 21.5,
            "reading that is a string": "21.5",
            "reading that is null": None,
            "reading that is a list": [[{"t": 1}]],
            "empty batch": [],
        }  # fmt: skip
        for name, frame in bad.items():
            with self.subTest(name):
                await self.assert_invalid_reading(socket, frame, 0)
                self.assertEqual(await self.stream_length(), 0)
        await self.assert_still_open(socket)

    async def test_one_bad_reading_in_a_batch_stores_none_and_names_its_index(self) -> None:
        socket = await self.publisher()
        batch = [{"t": 1}, {"t": 2}, {"t": 3}, {"t": "x"}, {"t": 5}]
        await self.assert_invalid_reading(socket, batch, 3)
        self.assertEqual(await self.stream_length(), 0)
        await self.assert_still_open(socket)

    async def test_first_bad_reading_is_the_one_named(self) -> None:
        socket = await self.publisher()
        await self.assert_invalid_reading(socket, [{"t": 1}, {"T": 2}, {"t": "x"}], 1)

    async def test_nan_and_infinity_literals_are_invalid_json(self) -> None:
        socket = await self.publisher()
        for literal in ("NaN", "Infinity", "-Infinity"):
            with self.subTest(literal=literal):
                error = await self.send_text(socket, f'{{"values": {{"t": {literal}}}}}')
                self.assertEqual(error["code"], "invalid_json")
        self.assertEqual(await self.stream_length(), 0)
        await self.assert_still_open(socket)

    async def test_non_json_text_is_invalid_json(self) -> None:
        socket = await self.publisher()
        for text in ("{bad", "temperature=21.5", '{"t": 1} {"t": 2}'):
            with self.subTest(text=text):
                self.assertEqual((await self.send_text(socket, text))["code"], "invalid_json")
        await self.assert_still_open(socket)

    async def test_binary_frame_is_refused(self) -> None:
        socket = await self.publisher()
        await socket.send_to(bytes_data=b'{"t": 1}')
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(error["code"], "binary_not_supported")
        self.assertEqual(await self.stream_length(), 0)
        await self.assert_still_open(socket)

    async def test_batch_of_501_readings_is_batch_too_large(self) -> None:
        socket = await self.publisher()
        error = await self.send(socket, [{"n": i} for i in range(501)])
        self.assertEqual((error["type"], error["code"]), ("error", "batch_too_large"))
        self.assertEqual(await self.stream_length(), 0)
        await self.assert_still_open(socket)

    async def test_frame_over_512_kib_is_frame_too_large(self) -> None:
        socket = await self.publisher()
        padding = " " * (512 * 1024)
        error = await self.send_text(socket, f'{{"t": 1}}{padding}')
        self.assertEqual((error["type"], error["code"]), ("error", "frame_too_large"))
        self.assertEqual(await self.stream_length(), 0)
        await self.assert_still_open(socket)

    async def test_frame_of_512_kib_is_accepted(self) -> None:
        socket = await self.publisher()
        frame = '{"t": 1}'
        ack = await self.send_text(socket, frame + " " * (512 * 1024 - len(frame)))
        self.assertEqual(ack["type"], "ack")


class RateLimitTests(PublishSocketTestCase):
    """Readings per sensor per window; a window far from its end, so no boundary is crossed."""

    @override_settings(SENSOR_RATE_LIMIT=5, SENSOR_RATE_WINDOW=10**9)
    async def test_readings_past_the_limit_are_rate_limited_and_not_stored(self) -> None:
        socket = await self.publisher()
        self.assertEqual((await self.send(socket, [{"n": i} for i in range(5)]))["type"], "ack")
        error = await self.send(socket, {"n": 5})
        self.assertEqual((error["type"], error["code"]), ("error", "rate_limited"))
        self.assertGreater(error["retry_after"], 0)
        self.assertEqual(await self.stream_length(), 5)
        await self.assert_still_open(socket)

    @override_settings(SENSOR_RATE_LIMIT=5, SENSOR_RATE_WINDOW=10**9)
    async def test_batch_that_would_pass_the_limit_is_refused_whole(self) -> None:
        socket = await self.publisher()
        self.assertEqual((await self.send(socket, [{"n": 0}, {"n": 1}]))["type"], "ack")
        error = await self.send(socket, [{"n": i} for i in range(4)])
        self.assertEqual(error["code"], "rate_limited")
        self.assertEqual(await self.stream_length(), 2)
        self.assertEqual((await self.send(socket, [{"n": 2}, {"n": 3}, {"n": 4}]))["type"], "ack")

    @override_settings(SENSOR_RATE_LIMIT=5, SENSOR_RATE_WINDOW=10**9)
    async def test_the_limit_is_per_sensor_across_sockets(self) -> None:
        first, second = await self.publisher(), await self.publisher()
        await self.send(first, [{"n": i} for i in range(5)])
        self.assertEqual((await self.send(second, {"n": 5}))["code"], "rate_limited")

    @override_settings(SENSOR_RATE_LIMIT=5, SENSOR_RATE_WINDOW=10**9)
    async def test_another_sensor_is_not_limited_by_this_one(self) -> None:
        _, other_key = await sync_to_async(sensor_create)(slug="other")
        await self.send(await self.publisher(), [{"n": i} for i in range(5)])
        other = await self.publisher(f"?key={other_key}", slug="other")
        self.assertEqual((await self.send(other, {"n": 0}))["type"], "ack")

    @override_settings(SENSOR_RATE_LIMIT=5, SENSOR_RATE_WINDOW=10**9)
    async def test_invalid_frames_do_not_count_against_the_limit(self) -> None:
        socket = await self.publisher()
        for _ in range(6):
            self.assertEqual((await self.send(socket, {"t": "x"}))["code"], "invalid_reading")
        self.assertEqual((await self.send(socket, [{"n": i} for i in range(5)]))["type"], "ack")


class EdgeCaseTests(PublishSocketTestCase):
    """Edge cases that once broke: huge integers, pre-1970 timestamps."""

    async def send_and_expect_invalid_reading(self, text: str) -> None:
        socket = await self.publisher()
        await socket.send_to(text_data=text)
        error = await socket.receive_json_from(timeout=60)
        self.assertEqual((error["code"], error["index"]), ("invalid_reading", 0))
        await self.assert_still_open(socket)

    async def test_integer_too_big_for_a_float_is_invalid_reading(self) -> None:
        # math.isfinite(10**400) raises OverflowError: it once crashed the socket.
        await self.send_and_expect_invalid_reading('{"values": {"t": 1' + "0" * 400 + "}}")

    async def test_ts_too_big_for_a_float_is_invalid_reading(self) -> None:
        # math.isfinite(10**400) raises OverflowError: it once crashed the socket.
        await self.send_and_expect_invalid_reading('{"ts": 1' + "0" * 400 + ', "values": {"t": 1}}')

    async def test_iso_ts_before_1970_is_invalid_reading_like_a_negative_number(self) -> None:
        # The ts >= 0 check once covered numbers but not ISO strings.
        await self.send_and_expect_invalid_reading(
            '{"ts": "1969-12-31T23:59:59Z", "values": {"t": 1}}'
        )
