"""The sensor dashboard pages: served by Django, and driven live in headless Chromium.

The browser tests run against the real system: daphne (ChannelsLiveServerTestCase), the
test Redis and database, readings published over the real publish WebSocket, either by the
`simulate_sensors` command in a subprocess or by a small `websockets` client.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import SimpleTestCase, override_settings
from django.utils import timezone

from chatsite.redis_clients import get_redis
from sensors.models import Alert, AlertRule, Reading, Sensor
from sensors.services import sensor_create, sensor_live_send
from tests.support.browser import LiveBrowserTestCase, artifact_path, expect
from tests.support.cases import RedisTransactionTestCase
from tests.support.worker import test_database_url

PAGE_ASSETS = [
    "sensors/sensors.css",
    "sensors/common.js",
    "sensors/dashboard.js",
    "sensors/sensor.js",
    "sensors/icon.svg",
    "vendor/uplot/uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css",
]
XSS_NAME = "Lab <img src=x onerror=alert(1)> bench"
UNITS = {"temperature": "°C", "humidity": "%"}


def clear_sensor_keys() -> None:
    """Drop every sensors:* key (streams, last seen, online); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="sensors:*", count=1000))
    if keys:
        client.delete(*keys)


def page_config(response: Any) -> dict[str, Any]:
    match = re.search(
        r'<script id="sensors-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.S,
    )
    assert match is not None, "the page carries no config"
    return json.loads(match.group(1))


# --- the pages as Django serves them (no browser needed) ----------------------------------------


class SensorPageViewTests(RedisTransactionTestCase):
    """GET /sensors/ and /sensors/<slug>/: config for the scripts, CSP, login, 404."""

    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        self.sensor, _ = sensor_create(slug="lab-1", name=XSS_NAME, units=UNITS)

    def test_dashboard_page_hands_its_script_the_socket_and_api(self) -> None:
        response = self.client.get("/sensors/")
        self.assertEqual(response.status_code, 200)
        config = page_config(response)
        self.assertEqual(config["socketPath"], "/ws/sensors")
        self.assertEqual(config["sensorsUrl"], "/api/sensors")
        self.assertEqual(config["pagePrefix"], "/sensors/")
        self.assertEqual(config["offlineAfterSeconds"], settings.SENSOR_OFFLINE_AFTER)
        self.assertEqual(config["activeAlerts"], [])

    def test_sensor_page_shows_the_name_as_text_and_hands_over_state(self) -> None:
        response = self.client.get("/sensors/lab-1/")
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertNotIn("<img src=x", html)  # escaped in the title, heading and JSON
        self.assertIn("Lab &lt;img src=x onerror=alert(1)&gt; bench", html)
        config = page_config(response)
        self.assertEqual(config["name"], XSS_NAME)
        self.assertEqual(config["units"], UNITS)
        self.assertEqual(config["socketPath"], "/ws/sensors/lab-1")
        self.assertEqual(config["readingsUrl"], "/api/sensors/lab-1/readings")
        self.assertEqual(config["online"], False)
        self.assertIsNone(config["latest"])

    def test_sensor_page_starts_with_active_and_recent_alerts(self) -> None:
        rule = AlertRule.objects.create(
            sensor=self.sensor, name="Too hot", metric="temperature", operator=">", threshold=30
        )
        Alert.objects.create(
            rule=rule, sensor=self.sensor, metric="temperature", value=31.5, stream_id="1-0",
            cleared_at=timezone.now(),
        )  # fmt: skip
        active = Alert.objects.create(
            rule=rule, sensor=self.sensor, metric="temperature", value=32.0, stream_id="2-0"
        )
        alerts = page_config(self.client.get("/sensors/lab-1/"))["alerts"]
        self.assertEqual(len(alerts), 2)
        self.assertEqual(alerts[0]["id"], active.pk)
        self.assertEqual(alerts[0]["rule_name"], "Too hot")
        self.assertEqual(alerts[0]["operator"], ">")
        self.assertIsNone(alerts[0]["cleared_at"])
        dashboard = page_config(self.client.get("/sensors/"))
        self.assertEqual([a["id"] for a in dashboard["activeAlerts"]], [active.pk])

    def test_unknown_sensor_is_404(self) -> None:
        self.assertEqual(self.client.get("/sensors/nope/").status_code, 404)

    def test_without_the_slash_redirects(self) -> None:
        self.assertRedirects(
            self.client.get("/sensors"), "/sensors/", fetch_redirect_response=False
        )

    def test_only_get_and_head(self) -> None:
        self.assertEqual(self.client.head("/sensors/").status_code, 200)
        self.assertEqual(self.client.post("/sensors/").status_code, 405)
        self.assertEqual(self.client.post("/sensors/lab-1/").status_code, 405)

    def test_policy_allows_only_the_pages_own_scripts_and_origin(self) -> None:
        for path in ("/sensors/", "/sensors/lab-1/"):
            with self.subTest(path=path):
                response = self.client.get(path)
                policy = response["Content-Security-Policy"]
                self.assertIn("script-src 'self'", policy)
                self.assertIn("connect-src 'self'", policy)
                self.assertNotIn("unsafe-inline", policy)
                self.assertNotIn("unsafe-eval", policy)
                html = response.content.decode()
                self.assertNotRegex(html, r'(src|href)="(https?:)?//')  # no CDN

    @override_settings(SENSOR_WATCH_REQUIRES_LOGIN=True)
    def test_login_required_redirects_to_the_admin_login(self) -> None:
        for path in ("/sensors/", "/sensors/lab-1/"):
            with self.subTest(path=path):
                response = self.client.get(path)
                self.assertRedirects(
                    response, f"/admin/login/?next={path}", fetch_redirect_response=False
                )
        self.client.force_login(User.objects.create_user("watcher", password="x"))
        self.assertEqual(self.client.get("/sensors/").status_code, 200)
        self.assertEqual(self.client.get("/sensors/lab-1/").status_code, 200)


class SensorStaticFilesTests(SimpleTestCase):
    """The pages' files, uPlot included with its licence, are served locally."""

    def test_assets_and_the_vendored_licence_are_found(self) -> None:
        for asset in [*PAGE_ASSETS, "vendor/uplot/LICENSE"]:
            with self.subTest(asset=asset):
                self.assertIsNotNone(finders.find(asset))

    def test_collectstatic_with_the_production_storage(self) -> None:
        with tempfile.TemporaryDirectory() as root:
            backend = "whitenoise.storage.CompressedManifestStaticFilesStorage"
            storages = {**settings.STORAGES, "staticfiles": {"BACKEND": backend}}
            with override_settings(STATIC_ROOT=root, STORAGES=storages):
                call_command("collectstatic", interactive=False, verbosity=0)
            manifest = json.loads((Path(root) / "staticfiles.json").read_text())["paths"]
            for asset in PAGE_ASSETS:
                self.assertIn(asset, manifest)


# --- in the browser ------------------------------------------------------------------------------


def publish(ws_url: str, slug: str, key: str, payload: Any) -> list[str]:
    """Publish like a device: over the real publish socket, key in the header; the acked ids."""
    from websockets.asyncio.client import connect

    async def send() -> list[str]:
        endpoint = f"{ws_url}/ws/sensors/{slug}/publish"
        headers = {"Authorization": f"Bearer {key}"}
        async with connect(endpoint, additional_headers=headers, open_timeout=30) as socket:
            await socket.send(json.dumps(payload))
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
                if frame.get("type") == "ack":
                    return frame["ids"]
                if frame.get("type") == "error":
                    raise AssertionError(f"publish refused: {frame}")

    # Playwright's sync API keeps a loop on this thread: run the client on another one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, send()).result(timeout=90)


def chart_values(page: Any, metric: str) -> list[Any]:
    """The y values the chart of `metric` holds right now."""
    script = "(m) => (window.sensorCharts?.[m] ? window.sensorCharts[m].data[1] : [])"
    return page.evaluate(script, metric)


def wait_for_chart_value(page: Any, metric: str, value: float) -> None:
    page.wait_for_function(
        "([m, v]) => !!(window.sensorCharts && window.sensorCharts[m]"
        " && window.sensorCharts[m].data[1].includes(v))",
        arg=[metric, value],
    )


class DashboardBrowserTestCase(LiveBrowserTestCase):
    """A sensor (with a name full of markup) and its key per test."""

    def setUp(self) -> None:
        super().setUp()
        clear_sensor_keys()
        self.sensor, self.key = sensor_create(
            slug="lab-1", name=XSS_NAME, description="Bench <b>two</b>", units=UNITS
        )

    def publish(self, payload: Any, *, slug: str = "lab-1", key: str | None = None) -> list[str]:
        return publish(self.live_server_ws_url, slug, key or self.key, payload)

    def open(self, path: str, page: Any | None = None) -> Any:
        page = page or self.page
        page.goto(self.live_server_url + path)
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "connected")
        return page

    def card(self, page: Any, slug: str = "lab-1") -> Any:
        return page.locator(f'.card[data-sensor="{slug}"]')

    def assert_no_horizontal_scroll(self, page: Any) -> None:
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        self.assertLessEqual(widths[0], widths[1], f"page scrolls sideways: {widths}")


class SimulatedSensorTests(DashboardBrowserTestCase):
    """`manage.py simulate_sensors` publishes; the dashboard and the chart show it live."""

    def start_simulator(self) -> subprocess.Popen:
        env = {
            **os.environ, "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by a cleanup)
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [
                sys.executable, "manage.py", "simulate_sensors", "--count", "1", "--rate", "4",
                "--duration", "120", "--url", self.live_server_ws_url,
            ],
            cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.addCleanup(self.stop_simulator, process, log)
        return process

    def stop_simulator(self, process: subprocess.Popen, log: Any) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
        log.seek(0)
        self.simulator_output = log.read().decode(errors="replace")

    def test_a_simulated_sensors_readings_appear_on_the_chart_and_the_dashboard(self) -> None:
        simulator = self.start_simulator()
        dashboard = self.open("/sensors/")
        # The simulator creates demo-1: the dashboard learns of it from its first reading.
        card = self.card(dashboard, "demo-1")
        expect(card.locator(".card__link")).to_have_text("Demo: Greenhouse")
        for metric in ("temperature", "humidity", "light"):
            value = card.locator(f'.metric[data-metric="{metric}"] .metric__value')
            expect(value).to_have_text(re.compile(r"^-?[\d,]+\.?\d*$"))
        expect(card.locator('.metric[data-metric="temperature"] .metric__unit')).to_have_text("°C")
        expect(card).to_have_attribute("data-online", "true")
        expect(card.locator(".card__state-label")).to_have_text("Online")

        page = self.open("/sensors/demo-1/", self.new_page())
        chart = page.locator('.chart[data-metric="temperature"]')
        expect(chart).not_to_have_attribute("data-points", "0")
        points = int(chart.get_attribute("data-points"))
        expect(chart).not_to_have_attribute("data-points", str(points))  # still growing
        temperatures = chart_values(page, "temperature")
        self.assertTrue(all(5 < t < 45 for t in temperatures), temperatures)
        expect(chart.locator(".chart__value")).to_have_text(re.compile(r"^\d+\.\d$"))
        expect(page.locator('.chart[data-metric="light"]')).not_to_have_attribute(
            "data-points", "0"
        )
        dashboard.screenshot(path=str(artifact_path("sensor-dashboard.png")), full_page=True)
        page.screenshot(path=str(artifact_path("sensor-page.png")), full_page=True)

        # SIGTERM ends the simulator cleanly (it flushes, closes its sockets, exits 0).
        os.killpg(simulator.pid, signal.SIGTERM)
        self.assertEqual(simulator.wait(timeout=20), 0)


class DashboardLiveTests(DashboardBrowserTestCase):
    """Readings, status and alerts reach both pages live; text stays text."""

    def test_reading_updates_the_card_and_the_chart(self) -> None:
        page = self.open("/sensors/lab-1/")
        expect(page.locator("#sensor-name")).to_have_text(XSS_NAME)
        expect(page.locator("#sensor-description")).to_have_text("Bench <b>two</b>")
        expect(page.locator("#charts-empty")).to_be_hidden()  # the units name the charts
        temperature = page.locator('.chart[data-metric="temperature"]')
        expect(temperature.locator(".chart__name")).to_have_text("Temperature")
        expect(temperature.locator(".chart__unit")).to_have_text("(°C)")
        expect(temperature).to_have_attribute("data-points", "0")

        dashboard = self.open("/sensors/", self.new_page())
        card = self.card(dashboard)
        expect(card.locator(".card__link")).to_have_text(XSS_NAME)
        expect(card.locator(".card__link")).to_have_attribute("href", "/sensors/lab-1/")
        expect(card.locator(".card__nodata")).to_be_visible()
        expect(card.locator(".card__state-label")).to_have_text("Offline")

        self.publish({"temperature": 23.4, "humidity": 41.0})
        wait_for_chart_value(page, "temperature", 23.4)
        expect(temperature).to_have_attribute("data-points", "1")
        expect(temperature.locator(".chart__value")).to_have_text("23.4")
        expect(page.locator("#sensor-state-label")).to_have_text("Online")
        expect(page.locator("#sensor-seen")).to_have_text("just now")
        value = card.locator('.metric[data-metric="temperature"] .metric__value')
        expect(value).to_have_text("23.4")
        expect(card.locator('.metric[data-metric="humidity"] .metric__value')).to_have_text("41.0")
        expect(card.locator(".card__state-label")).to_have_text("Online")
        expect(card.locator(".card__seen-time")).to_have_text("just now")

        # A batch, and a metric the units did not name: a new chart and a new card row.
        self.publish([{"temperature": 24.6}, {"temperature": 25.1, "co2": 612.0}])
        expect(value).to_have_text("25.1")
        wait_for_chart_value(page, "temperature", 25.1)
        self.assertEqual(chart_values(page, "temperature"), [23.4, 24.6, 25.1])
        expect(page.locator('.chart[data-metric="co2"] .chart__name')).to_have_text("Co2")
        expect(card.locator('.metric[data-metric="co2"] .metric__value')).to_have_text("612")
        self.assertEqual(self.page_errors, [])

    def test_page_back_fills_on_load_and_resumes_after_a_reconnect(self) -> None:
        first = self.publish([{"temperature": 20.5}, {"temperature": 20.7}])
        page = self.open("/sensors/lab-1/")
        chart = page.locator('.chart[data-metric="temperature"]')
        expect(chart).to_have_attribute("data-points", "2")  # the back-fill, not just the latest
        self.assertEqual(chart_values(page, "temperature"), [20.5, 20.7])
        self.assertRegex(page.evaluate("window.sensorPage.socketUrls[0]"), r"\?after=\d+$")
        self.assertEqual(page.evaluate("window.sensorPage.lastId"), first[-1])

        page.evaluate("window.sensorPage.debugDropSocket(3000)")  # no reconnect for 3 s
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "reconnecting")
        missed = self.publish([{"temperature": 21.1}, {"temperature": 21.3}])
        expect(page.locator("#conn-status")).to_have_attribute("data-state", "connected")
        wait_for_chart_value(page, "temperature", 21.3)
        urls = page.evaluate("window.sensorPage.socketUrls")
        self.assertEqual(len(urls), 2, urls)
        self.assertTrue(urls[1].endswith(f"?after={first[-1]}"), urls)
        self.assertEqual(page.evaluate("window.sensorPage.lastId"), missed[-1])
        latest = self.publish({"temperature": 21.6})
        wait_for_chart_value(page, "temperature", 21.6)
        self.assertEqual(chart_values(page, "temperature"), [20.5, 20.7, 21.1, 21.3, 21.6])
        self.assertEqual(page.evaluate("window.sensorPage.lastId"), latest[-1])

    def test_alerts_appear_live_as_text_and_clear(self) -> None:
        page = self.open("/sensors/lab-1/")
        expect(page.locator("#alerts-empty")).to_be_visible()
        dashboard = self.open("/sensors/", self.new_page())
        card = self.card(dashboard)
        expect(card.locator(".card__alert")).to_be_hidden()

        alert = {
            "id": 7, "rule": 3, "rule_name": "<b>Too hot</b>", "sensor": "lab-1",
            "metric": "temperature", "operator": ">", "threshold": 30.0, "value": 31.25,
            "fired_at": "2026-01-02T03:04:05+00:00", "cleared_at": None, "stream_id": "5-0",
        }  # fmt: skip
        sensor_live_send(slug="lab-1", payload={"type": "alert", "alert": alert})
        item = page.locator('#alerts li[data-alert-id="7"]')
        expect(item).to_have_attribute("data-state", "active")
        expect(item.locator(".alert__title")).to_have_text("<b>Too hot</b>: Temperature > 30.0 °C")
        expect(item.locator(".alert__detail")).to_contain_text("Value 31.3 °C")
        expect(page.locator("#alerts b")).to_have_count(0)
        expect(page.locator("#alerts-empty")).to_be_hidden()
        expect(card.locator(".card__alert")).to_have_text(
            "Alert: <b>Too hot</b>: Temperature > 30.0 °C"
        )
        expect(dashboard.locator("#summary")).to_contain_text("1 active alert")

        cleared = {**alert, "cleared_at": "2026-01-02T03:09:05+00:00"}
        sensor_live_send(slug="lab-1", payload={"type": "alert", "alert": cleared})
        expect(item).to_have_attribute("data-state", "cleared")
        expect(item.locator(".alert__state")).to_have_text("Cleared")
        expect(page.locator("#alerts li")).to_have_count(1)
        expect(card.locator(".card__alert")).to_be_hidden()

    def test_status_frames_switch_online_and_offline(self) -> None:
        dashboard = self.open("/sensors/")
        page = self.open("/sensors/lab-1/", self.new_page())
        self.publish({"temperature": 22.0})
        card = self.card(dashboard)
        expect(card).to_have_attribute("data-online", "true")
        expect(page.locator("#sensor-state")).to_have_attribute("data-online", "true")
        status = {"type": "status", "sensor": "lab-1", "online": False}
        sensor_live_send(slug="lab-1", payload=status)
        expect(card).to_have_attribute("data-online", "false")
        expect(card.locator(".card__state-label")).to_have_text("Offline")
        expect(page.locator("#sensor-state-label")).to_have_text("Offline")


class RangeAndLayoutTests(DashboardBrowserTestCase):
    """The longer ranges chart stored history in buckets; phones get no sideways scrolling."""

    def test_longer_ranges_chart_bucketed_history_and_fold_in_new_readings(self) -> None:
        now_ms = int(time.time() * 1000)
        for index, (minutes_ago, value) in enumerate([(40, 18.0), (40, 20.0), (20, 22.0)]):
            start = (now_ms - minutes_ago * 60_000) // 15_000 * 15_000  # a 15 s bucket's start
            Reading.objects.create(
                sensor=self.sensor, stream_id=f"{start}-{index}", ts_ms=start + 1000 + index,
                metric="temperature", value=value,
            )  # fmt: skip
        page = self.open("/sensors/lab-1/")
        with page.expect_response(re.compile(r"/api/sensors/lab-1/readings\?")) as response:
            page.get_by_text("1 hour", exact=True).click()
        self.assertIn("bucket=15", response.value.url)
        self.assertIn("range=1h", page.url)
        chart = page.locator('.chart[data-metric="temperature"]')
        expect(chart).to_have_attribute("data-points", "2")
        series = page.evaluate("window.sensorCharts.temperature.data")
        self.assertEqual(len(series), 4)  # time, average, min, max
        averages = [v for v in series[1] if v is not None]
        self.assertEqual(averages, [19.0, 22.0])
        self.assertEqual([v for v in series[2] if v is not None], [18.0, 22.0])
        self.assertEqual([v for v in series[3] if v is not None], [20.0, 22.0])
        expect(page.locator("#range-note")).to_contain_text("Averages per 15 s")

        self.publish({"temperature": 26.0})  # after the stored buckets: folded in live
        expect(chart).to_have_attribute("data-points", "3")
        expect(chart.locator(".chart__value")).to_have_text("26.0")

        page.get_by_text("7 days", exact=True).click()
        expect(page.locator("#range-note")).to_contain_text("Averages per 30 min")
        expect(chart).not_to_have_attribute("data-points", "0")
        page.get_by_text("Live · 5 min", exact=True).click()
        expect(chart).to_have_attribute("data-points", "1")  # the stored ones are older
        self.assertEqual(chart_values(page, "temperature"), [26.0])

        page.goto(self.live_server_url + "/sensors/lab-1/?range=24h")  # a range can be linked
        expect(page.locator("#range-24h")).to_be_checked()
        expect(chart).not_to_have_attribute("data-points", "0")

    def test_phone_width_pages_do_not_scroll_sideways(self) -> None:
        long_name = "A sensor with a rather long name that must wrap on a phone screen " * 2
        Sensor.objects.filter(pk=self.sensor.pk).update(name=long_name.strip())
        self.publish({"temperature": 123456.78, "humidity": 99.9, "a_long_metric_name": 1.5})
        phone = self.new_page(width=360, height=740)
        dashboard = self.open("/sensors/", phone)
        expect(self.card(dashboard).locator(".metric")).to_have_count(3)
        self.assert_no_horizontal_scroll(dashboard)
        dashboard.screenshot(path=str(artifact_path("sensor-dashboard-phone.png")), full_page=True)
        page = self.open("/sensors/lab-1/", phone)
        expect(page.locator('.chart[data-metric="temperature"]')).to_have_attribute(
            "data-points", "1"
        )
        page.get_by_text("24 hours", exact=True).click()
        expect(page.locator("#range-note")).to_contain_text("Averages")
        self.assert_no_horizontal_scroll(page)
        box = page.locator(".chart").first.bounding_box()
        self.assertLessEqual(box["x"] + box["width"], 360)
        # Every range button can be reached and is labelled.
        for label in ("Live · 5 min", "1 hour", "24 hours", "7 days"):
            expect(page.get_by_label(label, exact=True)).to_have_count(1)
        page.screenshot(path=str(artifact_path("sensor-page-phone.png")), full_page=True)
