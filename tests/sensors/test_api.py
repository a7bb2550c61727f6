"""The sensors HTTP API (and a device socket), over real HTTP against a live daphne server."""

import json
import time
from datetime import UTC, datetime

import requests
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from websockets.sync.client import connect

from chatsite.redis_clients import get_redis
from sensors.models import Reading, Sensor, stream_key
from sensors.services import sensor_create
from tests.support.cases import LiveServerTestCase

TIMEOUT = 30
SLUG = "greenhouse"
T0 = 1_700_000_040_000  # a multiple of 60 000: the start of a one-minute bucket


def clear_redis_keys() -> None:
    """Drop sensor streams and state and rate-limit counters (not Celery's keys)."""
    client = get_redis()
    for pattern in ("sensors:*", "ratelimit:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class SensorApiTestCase(LiveServerTestCase):
    """A live server, a fresh sensor and an empty Redis per test."""

    def setUp(self) -> None:
        super().setUp()
        clear_redis_keys()
        self.sensor, self.key = sensor_create(
            slug=SLUG, name="Greenhouse", units={"temperature": "°C"}
        )

    def url(self, path: str) -> str:
        return self.live_server_url + path

    def readings_url(self, slug: str = SLUG) -> str:
        return self.url(f"/api/sensors/{slug}/readings")

    def post(
        self,
        body: object = None,
        *,
        raw: bytes | None = None,
        key: str | None = None,
        slug: str = SLUG,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> requests.Response:
        """POST readings, by default with the sensor's key as a Bearer header."""
        if headers is None:
            headers = {"Authorization": f"Bearer {key or self.key}"}
        return requests.post(
            self.readings_url(slug),
            data=raw if raw is not None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **headers},
            params=params,
            timeout=TIMEOUT,
        )

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url(path), params=params, timeout=TIMEOUT)

    def stream(self) -> list[tuple[str, dict]]:
        return [
            (i.decode(), {"ts": int(f[b"ts"]), "values": json.loads(f[b"v"])})
            for i, f in get_redis().xrange(stream_key(SLUG))
        ]

    def assertError(self, response: requests.Response, status: int, code: str) -> dict:
        self.assertEqual(response.status_code, status, response.text)
        body = response.json()
        self.assertEqual(set(body), {"error"})
        self.assertEqual(body["error"]["code"], code)
        self.assertTrue(body["error"]["message"])
        return body["error"]

    def store(self, stream_id: str, ts_ms: int, sensor: Sensor | None = None, **values) -> None:
        """A stored reading, as the store processor writes it: one row per metric."""
        sensor = sensor or self.sensor
        Reading.objects.bulk_create(
            Reading(sensor=sensor, stream_id=stream_id, ts_ms=ts_ms, metric=m, value=v)
            for m, v in values.items()
        )


class PublishTests(SensorApiTestCase):
    """POST /api/sensors/<slug>/readings."""

    def test_reading_is_appended_and_answered_202_with_its_stream_id(self) -> None:
        response = self.post({"ts": T0, "values": {"temperature": 21.5}})
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(
            self.stream(),
            [(response.json()["ids"][0], {"ts": T0, "values": {"temperature": 21.5}})],
        )
        self.assertEqual(set(response.json()), {"ids"})

    def test_batch_with_the_key_in_the_query_is_answered_with_an_id_per_reading(self) -> None:
        response = self.post(
            [{"ts": T0, "temperature": 20}, {"ts": iso(T0 + 1_000), "temperature": 21}],
            headers={},
            params={"key": self.key},
        )
        self.assertEqual(response.status_code, 202, response.text)
        first, second = response.json()["ids"]
        self.assertEqual(
            self.stream(),
            [
                (first, {"ts": T0, "values": {"temperature": 20.0}}),
                (second, {"ts": T0 + 1_000, "values": {"temperature": 21.0}}),
            ],
        )

    def test_missing_wrong_or_foreign_key_unknown_or_inactive_sensor_is_401(self) -> None:
        sensor_create(slug="other")
        _, asleep_key = sensor_create(slug="asleep")
        Sensor.objects.filter(slug="asleep").update(active=False)
        cases = {
            "no key": {"headers": {}},
            "wrong Bearer key": {"key": "wrong"},
            "wrong ?key=": {"headers": {}, "params": {"key": "wrong"}},
            "not a Bearer header": {"headers": {"Authorization": f"Basic {self.key}"}},
            "key of another sensor": {"slug": "other"},
            "unknown sensor": {"slug": "nobody"},
            "inactive sensor": {"slug": "asleep", "key": asleep_key},
        }
        messages = set()
        for name, kwargs in cases.items():
            with self.subTest(name):
                error = self.assertError(self.post({"t": 1}, **kwargs), 401, "unauthorized")
                messages.add(error["message"])
        self.assertEqual(len(messages), 1, messages)  # no hint which
        self.assertEqual(get_redis().xlen(stream_key(SLUG)), 0)

    def test_bad_reading_is_400_invalid_reading_with_nothing_stored(self) -> None:
        for body in (
            {"values": {"t": "21.5"}},
            [{"t": 1}, {"t": {"nested": 1}}],
            {"values": {"Bad-Name": 1}},
            {"values": {f"m{i}": i for i in range(33)}},
            {"ts": int(time.time() * 1000) + 60_000, "values": {"t": 1}},
            [],
        ):
            with self.subTest(body=body):
                self.assertError(self.post(body), 400, "invalid_reading")
        self.assertEqual(self.stream(), [])

    def test_non_json_or_nan_body_is_400_invalid_json(self) -> None:
        for raw in (b"{bad", b'{"t": NaN}', b'{"t": Infinity}', b'"a string"', b"\xff\xfe"):
            with self.subTest(raw=raw):
                self.assertError(self.post(raw=raw), 400, "invalid_json")
        self.assertEqual(self.stream(), [])

    def test_body_over_512_kib_is_413_too_large(self) -> None:
        raw = b'{"t": 1}' + b" " * (512 * 1024)
        self.assertError(self.post(raw=raw), 413, "too_large")
        self.assertEqual(self.stream(), [])

    def test_batch_of_501_readings_is_413_batch_too_large(self) -> None:
        self.assertError(self.post([{"n": i} for i in range(501)]), 413, "batch_too_large")
        self.assertEqual(self.stream(), [])

    def test_batch_of_500_readings_is_accepted(self) -> None:
        response = self.post([{"n": i} for i in range(500)])
        self.assertEqual(response.status_code, 202, response.text)
        self.assertEqual(len(response.json()["ids"]), 500)

    def test_wrong_method_is_405_with_allow_header(self) -> None:
        response = requests.put(self.readings_url(), timeout=TIMEOUT)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers["Allow"], "GET, POST")
        response = requests.post(self.url("/api/sensors"), timeout=TIMEOUT)
        self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(response.headers["Allow"], "GET")

    def test_posted_reading_reaches_a_watching_socket(self) -> None:
        url = self.live_server_ws_url + f"/ws/sensors/{SLUG}"
        with connect(url, origin=self.live_server_url, proxy=None) as socket:
            self.assertEqual(json.loads(socket.recv(timeout=TIMEOUT))["type"], "history")
            [entry_id] = self.post({"ts": T0, "temperature": 21.5}).json()["ids"]
            frame = json.loads(socket.recv(timeout=TIMEOUT))
        self.assertEqual(
            frame,
            {"type": "reading", "sensor": SLUG, "id": entry_id, "ts": T0,
             "values": {"temperature": 21.5}},
        )  # fmt: skip

    def test_device_publishes_over_a_real_socket_without_origin(self) -> None:
        url = self.live_server_ws_url + f"/ws/sensors/{SLUG}/publish"
        headers = {"Authorization": f"Bearer {self.key}"}
        with connect(url, additional_headers=headers, proxy=None) as socket:
            socket.send(json.dumps({"ts": T0, "temperature": 21.5}))
            ack = json.loads(socket.recv(timeout=TIMEOUT))
        self.assertEqual(ack["type"], "ack")
        self.assertEqual([i for i, _ in self.stream()], ack["ids"])


@override_settings(SENSOR_RATE_LIMIT=5, SENSOR_RATE_WINDOW=10**9)
class PublishRateLimitTests(SensorApiTestCase):
    """Readings per sensor per window (a window far from its end: no boundary is crossed)."""

    def test_readings_past_the_limit_get_429_with_retry_after_and_are_not_stored(self) -> None:
        self.assertEqual(self.post([{"n": i} for i in range(5)]).status_code, 202)
        response = self.post({"n": 5})
        self.assertError(response, 429, "rate_limited")
        self.assertGreaterEqual(int(response.headers["Retry-After"]), 1)
        self.assertEqual(len(self.stream()), 5)


class SensorListTests(SensorApiTestCase):
    """GET /api/sensors."""

    def test_lists_every_active_sensor_with_latest_values_last_seen_and_online(self) -> None:
        sensor_create(slug="cellar", name="Cellar", description="Under the house")
        sensor_create(slug="retired")
        Sensor.objects.filter(slug="retired").update(active=False)
        self.post({"ts": T0, "values": {"temperature": 20.0}})
        before = int(time.time() * 1000)
        [latest] = self.post({"ts": T0 + 1_000, "values": {"temperature": 21.5}}).json()["ids"]
        after = int(time.time() * 1000)
        response = self.get("/api/sensors")
        self.assertEqual(response.status_code, 200, response.text)
        sensors = response.json()["sensors"]
        self.assertEqual([s["sensor"] for s in sensors], ["cellar", SLUG])
        cellar, greenhouse = sensors
        self.assertEqual(
            cellar,
            {"sensor": "cellar", "name": "Cellar", "description": "Under the house",
             "units": {}, "online": False, "last_seen": None, "latest": None, "alerts": []},
        )  # fmt: skip
        self.assertTrue(before <= greenhouse.pop("last_seen") <= after)
        self.assertEqual(
            greenhouse,
            {"sensor": SLUG, "name": "Greenhouse", "description": "",
             "units": {"temperature": "°C"}, "online": True,
             "latest": {"id": latest, "ts": T0 + 1_000, "values": {"temperature": 21.5}},
             "alerts": []},
        )  # fmt: skip


class HistoryTests(SensorApiTestCase):
    """GET /api/sensors/<slug>/readings: stored readings, newest last."""

    def setUp(self) -> None:
        super().setUp()
        for n in range(5):
            self.store(f"{T0 + n * 1_000}-0", T0 + n * 1_000, temperature=20.0 + n, humidity=40.0)
        other, _ = sensor_create(slug="other")
        self.store(f"{T0}-0", T0, sensor=other, temperature=99.0)

    def readings(self, **params) -> list[dict]:
        response = self.get(f"/api/sensors/{SLUG}/readings", **params)
        self.assertEqual(response.status_code, 200, response.text)
        self.assertEqual(response.json()["sensor"], SLUG)
        return response.json()["readings"]

    def test_readings_are_listed_newest_last_with_all_their_metrics(self) -> None:
        self.assertEqual(
            self.readings(),
            [{"id": f"{T0 + n * 1_000}-0", "ts": T0 + n * 1_000,
              "values": {"temperature": 20.0 + n, "humidity": 40.0}} for n in range(5)],
        )  # fmt: skip

    def test_limit_keeps_the_newest_readings(self) -> None:
        self.assertEqual([r["ts"] for r in self.readings(limit=2)], [T0 + 3_000, T0 + 4_000])

    def test_since_and_until_in_milliseconds_are_inclusive(self) -> None:
        self.assertEqual(
            [r["ts"] for r in self.readings(since=T0 + 1_000, until=T0 + 3_000)],
            [T0 + 1_000, T0 + 2_000, T0 + 3_000],
        )

    def test_since_and_until_in_iso_8601(self) -> None:
        self.assertEqual(
            [r["ts"] for r in self.readings(since=iso(T0 + 3_000))], [T0 + 3_000, T0 + 4_000]
        )
        self.assertEqual(
            [r["ts"] for r in self.readings(until=iso(T0 + 1_000).replace("Z", "+00:00"))],
            [T0, T0 + 1_000],
        )

    def test_since_and_limit_together_keep_the_newest_in_range(self) -> None:
        self.assertEqual(
            [r["ts"] for r in self.readings(until=T0 + 3_000, limit=2)], [T0 + 2_000, T0 + 3_000]
        )

    def test_sensor_without_stored_readings_has_an_empty_history(self) -> None:
        sensor_create(slug="empty")
        response = self.get("/api/sensors/empty/readings")
        self.assertEqual(response.json(), {"sensor": "empty", "readings": []})

    def test_unknown_sensor_is_404(self) -> None:
        self.assertError(self.get("/api/sensors/nobody/readings"), 404, "not_found")

    def test_invalid_query_parameters_are_400_invalid_query_naming_the_field(self) -> None:
        cases = [
            ("since", "yesterday"), ("since", "-5"), ("until", "2024-13-01"),
            ("limit", "0"), ("limit", "10001"), ("limit", "ten"), ("limit", "1.5"),
            ("limit", "-1"), ("bucket", "0"), ("bucket", "60s"), ("bucket", str(365 * 86400 + 1)),
        ]  # fmt: skip
        for name, value in cases:
            with self.subTest(name=name, value=value):
                response = self.get(f"/api/sensors/{SLUG}/readings", **{name: value})
                error = self.assertError(response, 400, "invalid_query")
                self.assertEqual(error["field"], name)


class BucketTests(SensorApiTestCase):
    """?bucket=<seconds>: min, avg, max and count per metric per bucket, by hand."""

    def setUp(self) -> None:
        super().setUp()
        self.store(f"{T0}-0", T0, temperature=20.0, humidity=40.0)
        self.store(f"{T0 + 10_000}-0", T0 + 10_000, temperature=22.0, humidity=50.0)
        self.store(f"{T0 + 59_999}-0", T0 + 59_999, temperature=27.5)
        self.store(f"{T0 + 60_000}-0", T0 + 60_000, temperature=10.0, humidity=30.0)
        # nothing in the third minute: no bucket for it
        self.store(f"{T0 + 200_000}-0", T0 + 200_000, humidity=45.5)
        self.store(f"{T0 + 239_999}-0", T0 + 239_999, humidity=44.5)
        self.store(f"{T0 + 240_000}-0", T0 + 240_000, temperature=-5.0)

    def buckets(self, **params) -> list[dict]:
        response = self.get(f"/api/sensors/{SLUG}/readings", **params)
        self.assertEqual(response.status_code, 200, response.text)
        body = response.json()
        self.assertEqual((body["sensor"], body["bucket"]), (SLUG, int(params["bucket"])))
        return body["buckets"]

    def assertBucketsEqual(self, actual: list[dict], expected: list[dict]) -> None:
        self.assertEqual(
            [(b["ts"], sorted(b["metrics"])) for b in actual],
            [(b["ts"], sorted(b["metrics"])) for b in expected],
        )
        for got, want in zip(actual, expected, strict=True):
            for metric, stats in want["metrics"].items():
                with self.subTest(ts=want["ts"], metric=metric):
                    got_stats = got["metrics"][metric]
                    self.assertEqual(set(got_stats), {"min", "avg", "max", "count"})
                    for name in ("min", "max", "count"):
                        self.assertEqual(got_stats[name], stats[name], name)
                    self.assertAlmostEqual(got_stats["avg"], stats["avg"], places=9)

    def test_one_minute_buckets_hold_each_metrics_min_avg_max_and_count(self) -> None:
        self.assertBucketsEqual(
            self.buckets(bucket=60),
            [
                {"ts": T0, "metrics": {
                    "temperature": {"min": 20.0, "avg": 69.5 / 3, "max": 27.5, "count": 3},
                    "humidity": {"min": 40.0, "avg": 45.0, "max": 50.0, "count": 2}}},
                {"ts": T0 + 60_000, "metrics": {
                    "temperature": {"min": 10.0, "avg": 10.0, "max": 10.0, "count": 1},
                    "humidity": {"min": 30.0, "avg": 30.0, "max": 30.0, "count": 1}}},
                {"ts": T0 + 180_000, "metrics": {
                    "humidity": {"min": 44.5, "avg": 45.0, "max": 45.5, "count": 2}}},
                {"ts": T0 + 240_000, "metrics": {
                    "temperature": {"min": -5.0, "avg": -5.0, "max": -5.0, "count": 1}}},
            ],
        )  # fmt: skip

    def test_two_minute_buckets_merge_the_minutes(self) -> None:
        self.assertBucketsEqual(
            self.buckets(bucket=120),
            [
                {"ts": T0, "metrics": {
                    "temperature": {"min": 10.0, "avg": 79.5 / 4, "max": 27.5, "count": 4},
                    "humidity": {"min": 30.0, "avg": 40.0, "max": 50.0, "count": 3}}},
                {"ts": T0 + 120_000, "metrics": {
                    "humidity": {"min": 44.5, "avg": 45.0, "max": 45.5, "count": 2}}},
                {"ts": T0 + 240_000, "metrics": {
                    "temperature": {"min": -5.0, "avg": -5.0, "max": -5.0, "count": 1}}},
            ],
        )  # fmt: skip

    def test_since_and_until_limit_the_readings_aggregated(self) -> None:
        self.assertBucketsEqual(
            self.buckets(bucket=60, since=T0 + 10_000, until=iso(T0 + 60_000)),
            [
                {"ts": T0, "metrics": {
                    "temperature": {"min": 22.0, "avg": 24.75, "max": 27.5, "count": 2},
                    "humidity": {"min": 50.0, "avg": 50.0, "max": 50.0, "count": 1}}},
                {"ts": T0 + 60_000, "metrics": {
                    "temperature": {"min": 10.0, "avg": 10.0, "max": 10.0, "count": 1},
                    "humidity": {"min": 30.0, "avg": 30.0, "max": 30.0, "count": 1}}},
            ],
        )  # fmt: skip

    def test_limit_keeps_the_newest_buckets_oldest_first(self) -> None:
        self.assertBucketsEqual(
            self.buckets(bucket=60, limit=2),
            [
                {"ts": T0 + 180_000, "metrics": {
                    "humidity": {"min": 44.5, "avg": 45.0, "max": 45.5, "count": 2}}},
                {"ts": T0 + 240_000, "metrics": {
                    "temperature": {"min": -5.0, "avg": -5.0, "max": -5.0, "count": 1}}},
            ],
        )  # fmt: skip

    def test_limit_is_checked_with_bucket(self) -> None:
        response = self.get(f"/api/sensors/{SLUG}/readings", bucket=60, limit=10_001)
        self.assertEqual(self.assertError(response, 400, "invalid_query")["field"], "limit")

    def test_range_without_readings_has_no_buckets(self) -> None:
        self.assertEqual(self.buckets(bucket=60, since=T0 + 300_000), [])


@override_settings(SENSOR_WATCH_REQUIRES_LOGIN=True)
class LoginRequiredTests(SensorApiTestCase):
    """SENSOR_WATCH_REQUIRES_LOGIN: reading the API needs a session; publishing does not."""

    def session_cookies(self) -> dict[str, str]:
        user = get_user_model().objects.create_user("ada", password="pw-not-used")
        client = Client()
        client.force_login(user)
        return {"sessionid": client.cookies["sessionid"].value}

    def test_anonymous_reads_are_401_login_required(self) -> None:
        for path in ("/api/sensors", f"/api/sensors/{SLUG}/readings"):
            with self.subTest(path=path):
                self.assertError(self.get(path), 401, "login_required")

    def test_logged_in_user_may_read(self) -> None:
        cookies = self.session_cookies()
        for path in ("/api/sensors", f"/api/sensors/{SLUG}/readings"):
            with self.subTest(path=path):
                response = requests.get(self.url(path), cookies=cookies, timeout=TIMEOUT)
                self.assertEqual(response.status_code, 200, response.text)

    def test_publishing_needs_only_the_key(self) -> None:
        self.assertEqual(self.post({"t": 1}).status_code, 202)


class EdgeCaseTests(SensorApiTestCase):
    """Edge cases that once broke: huge numbers in queries, tie order in history."""

    def test_readings_with_the_same_ts_are_in_stream_order_and_limit_keeps_the_newest(self):
        # As text "T-10" sorts before "T-9": ties must be ordered by the numeric id.
        ids = [f"{T0}-{seq}" for seq in range(12)]
        for seq, stream_id in enumerate(ids):
            self.store(stream_id, T0, n=float(seq))
        response = self.get(f"/api/sensors/{SLUG}/readings")
        self.assertEqual([r["id"] for r in response.json()["readings"]], ids)
        response = self.get(f"/api/sensors/{SLUG}/readings", limit=2)
        self.assertEqual([r["id"] for r in response.json()["readings"]], ids[-2:])

    def test_time_too_big_for_a_float_is_400_invalid_query(self) -> None:
        # sensors/validation.py _as_ms: math.isfinite(10**400) raises OverflowError (500).
        response = self.get(f"/api/sensors/{SLUG}/readings", since="1" + "0" * 400)
        self.assertError(response, 400, "invalid_query")

    def test_posted_integer_too_big_for_a_float_is_400_invalid_reading(self) -> None:
        # sensors/validation.py _values: math.isfinite(10**400) raises OverflowError (500).
        response = self.post(raw=b'{"t": 1' + b"0" * 400 + b"}")
        self.assertError(response, 400, "invalid_reading")
