"""The Django admin for sensors, readings, alert rules, alerts and dead letters."""

import re
from datetime import timedelta
from unittest import mock

import redis
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from chatsite.credentials import credential_hash
from chatsite.redis_clients import get_redis
from sensors import selectors
from sensors.errors import SensorError
from sensors.models import Alert, AlertRule, DeadLetter, Reading, Sensor, stream_key
from sensors.selectors import sensor_authenticate
from sensors.services import LAST_SEEN_KEY, ONLINE_KEY, readings_append, sensor_create
from sensors.validation import ValidReading

SENSORS_URL = reverse("admin:sensors_sensor_changelist")
ADD_SENSOR_URL = reverse("admin:sensors_sensor_add")
READINGS_URL = reverse("admin:sensors_reading_changelist")
RULES_URL = reverse("admin:sensors_alertrule_changelist")
ALERTS_URL = reverse("admin:sensors_alert_changelist")
DEAD_LETTERS_URL = reverse("admin:sensors_deadletter_changelist")
KEY_IN_MESSAGE = re.compile(r"<code>([A-Za-z0-9_-]{40,})</code>")


def flush_sensor_keys() -> None:
    client = get_redis()
    keys = list(client.scan_iter(match="sensors:*", count=1000))
    if keys:
        client.delete(*keys)


class AdminTestCase(TestCase):
    """A logged-in superuser, a clean Redis and two sensors: "alpha" and "beta"."""

    def setUp(self) -> None:
        flush_sensor_keys()
        self.addCleanup(flush_sensor_keys)
        admin = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
        self.client.force_login(admin)
        self.alpha, self.alpha_key = sensor_create(slug="alpha", name="Alpha")
        self.beta, self.beta_key = sensor_create(slug="beta", name="Beta")

    def get(self, url: str, params: dict | None = None):
        response = self.client.get(url, params or {})
        self.assertEqual(response.status_code, 200)
        return response

    def forbidden(self, url: str, data: dict | None = None):
        """A request the admin refuses (its "Forbidden" warning kept out of the output)."""
        with self.assertLogs("django.request", "WARNING"):
            if data is None:
                return self.client.get(url)
            return self.client.post(url, data)

    def keys_shown(self, response) -> list[str]:
        return KEY_IN_MESSAGE.findall(response.content.decode())

    def act(self, action: str, *sensors: Sensor):
        """Run a sensor list action; returns the list page shown after it."""
        response = self.client.post(
            SENSORS_URL,
            {"action": action, "_selected_action": [s.pk for s in sensors]},
            follow=True,
        )
        self.assertEqual(response.status_code, 200)
        return response

    def assert_key_works(self, slug: str, key: str) -> None:
        self.assertEqual(sensor_authenticate(slug=slug, key=key).slug, slug)

    def assert_key_fails(self, slug: str, key: str) -> None:
        with self.assertRaises(SensorError):
            sensor_authenticate(slug=slug, key=key)


class SensorAddTests(AdminTestCase):
    def test_adding_a_sensor_shows_its_key_exactly_once(self):
        form = self.get(ADD_SENSOR_URL).content.decode()
        self.assertNotIn("key_hash", form)
        self.assertNotIn('name="active"', form)

        response = self.client.post(
            ADD_SENSOR_URL,
            {"slug": "gamma", "name": "Gamma", "description": "roof",
             "units": '{"temperature": "°C"}'},
        )  # fmt: skip
        self.assertEqual(response.status_code, 302)
        shown = self.get(response["Location"])
        keys = self.keys_shown(shown)
        self.assertEqual(len(keys), 1)
        key = keys[0]
        self.assertContains(shown, "shown only this once")
        self.assertEqual(shown.content.decode().count(key), 1)

        sensor = Sensor.objects.get(slug="gamma")
        self.assert_key_works("gamma", key)
        self.assertNotEqual(sensor.key_hash, key)
        self.assertEqual(sensor.key_hash, credential_hash(key))
        self.assertEqual(sensor.key_prefix, key[:8])
        self.assertEqual(sensor.units, {"temperature": "°C"})
        self.assertEqual(sensor.description, "roof")
        self.assertTrue(sensor.active)

        for url in (response["Location"], SENSORS_URL,
                    reverse("admin:sensors_sensor_change", args=[sensor.pk]),
                    reverse("admin:sensors_sensor_history", args=[sensor.pk])):  # fmt: skip
            self.assertNotIn(key, self.get(url).content.decode())
        logged = LogEntry.objects.get(object_id=str(sensor.pk))
        self.assertNotIn(key, f"{logged.object_repr} {logged.change_message}")

    def test_name_defaults_to_the_slug(self):
        response = self.client.post(ADD_SENSOR_URL, {"slug": "delta", "name": "", "units": ""})
        self.assertEqual(response.status_code, 302)
        sensor = Sensor.objects.get(slug="delta")
        self.assertEqual((sensor.name, sensor.units), ("delta", {}))

    def test_bad_units_or_slug_are_refused(self):
        for slug, units in [
            ("e1", '["°C"]'),
            ("e2", '{"temperature": 1}'),
            ("e3", '{"Temperature": "°C"}'),
            ("e4", "{not json"),
            ("Bad Slug", "{}"),
            ("alpha", "{}"),
        ]:
            with self.subTest(slug=slug, units=units):
                response = self.client.post(
                    ADD_SENSOR_URL, {"slug": slug, "name": "x", "units": units}
                )
                self.assertEqual(response.status_code, 200)  # the form again, with errors
                self.assertTrue(response.context["adminform"].form.errors)
                self.assertEqual(self.keys_shown(response), [])
        self.assertEqual(Sensor.objects.count(), 2)


class SensorListTests(AdminTestCase):
    def test_list_shows_key_prefix_but_never_the_key(self):
        html = self.get(SENSORS_URL).content.decode()
        for column in ("Slug", "Name", "Active", "Online", "Last seen", "Key", "Created at"):
            self.assertIn(column, html)
        self.assertIn(f"{self.alpha.key_prefix}…", html)
        self.assertIn(f"{self.beta.key_prefix}…", html)
        self.assertNotIn(self.alpha_key, html)
        self.assertNotIn(self.beta_key, html)
        self.assertNotIn(self.alpha.key_hash, html)

    def test_online_state_comes_from_one_redis_read_for_the_page(self):
        seen_ms = int((timezone.now() - timedelta(seconds=5)).timestamp() * 1000)
        get_redis().sadd(ONLINE_KEY, "alpha")
        get_redis().hset(LAST_SEEN_KEY, "alpha", seen_ms)
        with mock.patch("sensors.admin.sensor_state", wraps=selectors.sensor_state) as state:
            response = self.get(SENSORS_URL)
            html = response.content.decode()  # rendered: every row's columns computed
        state.assert_called_once_with(slugs=["alpha", "beta"])
        rows = {s.slug: s for s in response.context["cl"].result_list}
        self.assertTrue(rows["alpha"]._live_state["online"])
        self.assertFalse(rows["beta"]._live_state["online"])
        self.assertIn('alt="True"', html)
        self.assertIn('alt="False"', html)

    def test_list_still_works_when_redis_is_down(self):
        with (
            mock.patch("sensors.admin.sensor_state", side_effect=redis.ConnectionError("down")),
            self.assertLogs("chatsite.admin_mixins", "WARNING"),
        ):
            response = self.get(SENSORS_URL)
        self.assertContains(response, "online state unknown")
        self.assertContains(response, 'alt="None"')
        self.assertContains(response, f"{self.alpha.key_prefix}…")

    def test_search_and_filter_by_active(self):
        Sensor.objects.filter(pk=self.beta.pk).update(active=False)

        def listed(**params):
            return {s.slug for s in self.get(SENSORS_URL, params).context["cl"].result_list}

        self.assertEqual(listed(active__exact="1"), {"alpha"})
        self.assertEqual(listed(active__exact="0"), {"beta"})
        self.assertEqual(listed(q="Alph"), {"alpha"})
        self.assertEqual(listed(q=self.beta.key_prefix), {"beta"})


class SensorChangeTests(AdminTestCase):
    def test_change_form_shows_the_prefix_only_and_saves_edits(self):
        url = reverse("admin:sensors_sensor_change", args=[self.alpha.pk])
        html = self.get(url).content.decode()
        self.assertNotIn(self.alpha_key, html)
        self.assertNotIn(self.alpha.key_hash, html)
        self.assertNotIn("key_hash", html)
        self.assertIn(f"{self.alpha.key_prefix}…", html)
        self.assertNotIn('name="slug"', html)  # the slug names the stream: not editable

        response = self.client.post(
            url, {"name": "Alpha 2", "description": "", "units": '{"rh": "%"}', "active": "on"}
        )
        self.assertEqual(response.status_code, 302)
        self.alpha.refresh_from_db()
        self.assertEqual((self.alpha.slug, self.alpha.name), ("alpha", "Alpha 2"))
        self.assertEqual(self.alpha.units, {"rh": "%"})
        self.assert_key_works("alpha", self.alpha_key)  # editing keeps the key

    def test_change_form_refuses_bad_units(self):
        url = reverse("admin:sensors_sensor_change", args=[self.alpha.pk])
        response = self.client.post(url, {"name": "A", "units": '{"rh": ["%"]}', "active": "on"})
        self.assertEqual(response.status_code, 200)
        self.assertIn("units", response.context["adminform"].form.errors)


class SensorActionTests(AdminTestCase):
    def test_rotate_key_gives_a_new_working_key_shown_once(self):
        page = self.act("rotate_keys", self.alpha)
        keys = self.keys_shown(page)
        self.assertEqual(len(keys), 1)
        new_key = keys[0]
        self.assertContains(page, "shown only this once")
        self.assertNotEqual(new_key, self.alpha_key)
        self.assert_key_works("alpha", new_key)
        self.assert_key_fails("alpha", self.alpha_key)
        self.assert_key_works("beta", self.beta_key)  # not selected: unchanged
        self.alpha.refresh_from_db()
        self.assertEqual(self.alpha.key_prefix, new_key[:8])
        self.assertNotIn(new_key, self.get(SENSORS_URL).content.decode())
        for entry in LogEntry.objects.all():
            self.assertNotIn(new_key, entry.change_message)

    def test_rotating_several_keys_shows_each_slug_with_its_key_in_one_message(self):
        page = self.act("rotate_keys", self.alpha, self.beta)
        messages = [str(m) for m in page.context["messages"]]
        self.assertEqual(len(messages), 1)
        found = re.findall(r"“([a-z0-9_-]+)”: <code>([A-Za-z0-9_-]+)</code>", messages[0])
        self.assertEqual([slug for slug, _ in found], ["alpha", "beta"])
        keys = dict(found)
        self.assert_key_works("alpha", keys["alpha"])
        self.assert_key_works("beta", keys["beta"])
        self.assert_key_fails("alpha", self.alpha_key)
        self.assert_key_fails("beta", self.beta_key)

    def test_deactivate_makes_authentication_fail(self):
        self.assert_key_works("alpha", self.alpha_key)
        page = self.act("deactivate", self.alpha)
        self.assertContains(page, "Deactivated 1 sensor(s).")
        self.assert_key_fails("alpha", self.alpha_key)
        self.assert_key_works("beta", self.beta_key)
        self.alpha.refresh_from_db()
        self.assertFalse(self.alpha.active)


class SensorDeleteTests(AdminTestCase):
    """Deleting in the admin also drops the sensor's stream and live state in Redis."""

    def setUp(self) -> None:
        super().setUp()
        for slug in ("alpha", "beta"):
            readings_append(slug=slug, readings=[ValidReading(ts_ms=1, values={"t": 1.0})])

    def assert_gone_from_redis(self, slug: str) -> None:
        client = get_redis()
        self.assertEqual(client.exists(stream_key(slug)), 0)
        self.assertIsNone(client.hget(LAST_SEEN_KEY, slug))
        self.assertFalse(client.sismember(ONLINE_KEY, slug))

    def test_deleting_a_sensor_drops_its_stream_and_live_state(self):
        url = reverse("admin:sensors_sensor_delete", args=[self.alpha.pk])
        with self.captureOnCommitCallbacks(execute=True):
            self.assertEqual(self.client.post(url, {"post": "yes"}).status_code, 302)
        self.assertFalse(Sensor.objects.filter(slug="alpha").exists())
        self.assert_gone_from_redis("alpha")
        self.assertEqual(get_redis().xlen(stream_key("beta")), 1)  # the others stay
        self.assertTrue(get_redis().sismember(ONLINE_KEY, "beta"))

    def test_deleting_selected_sensors_drops_each_stream(self):
        selected = {"_selected_action": [self.alpha.pk, self.beta.pk]}
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post(
                SENSORS_URL, {"action": "delete_selected", "post": "yes", **selected}
            )
        self.assertEqual(response.status_code, 302)
        self.assertFalse(Sensor.objects.exists())
        self.assert_gone_from_redis("alpha")
        self.assert_gone_from_redis("beta")


class ReadingAdminTests(AdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        ts = int(timezone.now().timestamp() * 1000)
        Reading.objects.create(sensor=self.alpha, stream_id=f"{ts}-0", ts_ms=ts,
                               metric="temperature", value=21.5)  # fmt: skip
        self.humidity = Reading.objects.create(
            sensor=self.beta, stream_id=f"{ts}-1", ts_ms=ts, metric="humidity", value=40.0
        )

    def test_readings_list_is_read_only_without_add_button(self):
        response = self.get(READINGS_URL)
        html = response.content.decode()
        for column in ("Sensor", "Stream id", "Time", "Metric", "Value"):
            self.assertIn(column, html)
        self.assertNotIn(reverse("admin:sensors_reading_add"), html)
        self.assertFalse(response.context["has_add_permission"])
        self.assertEqual(self.forbidden(reverse("admin:sensors_reading_add")).status_code, 403)
        self.assertIn(str(timezone.now().year), html)  # the time shown as a date

        url = reverse("admin:sensors_reading_change", args=[self.humidity.pk])
        self.assertNotContains(self.get(url), 'name="value"')
        self.assertEqual(self.forbidden(url, {"value": "99"}).status_code, 403)
        self.humidity.refresh_from_db()
        self.assertEqual(self.humidity.value, 40.0)

    def test_filter_by_sensor_and_metric(self):
        def listed(**params):
            return {r.metric for r in self.get(READINGS_URL, params).context["cl"].result_list}

        self.assertEqual(listed(metric="humidity"), {"humidity"})
        self.assertEqual(listed(sensor__id__exact=str(self.alpha.pk)), {"temperature"})


class AlertAdminTests(AdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.rule = AlertRule.objects.create(
            sensor=self.alpha, metric="temperature", operator=">", threshold=30,
            duration_seconds=60, notify_email="ops@example.com",
        )  # fmt: skip
        other = AlertRule.objects.create(sensor=self.beta, metric="humidity", operator="<",
                                         threshold=20)  # fmt: skip
        now = timezone.now()
        self.cleared = Alert.objects.create(
            rule=self.rule, sensor=self.alpha, metric="temperature", value=31, stream_id="1-0",
            fired_at=now - timedelta(minutes=1), cleared_at=now,
        )  # fmt: skip
        self.active = Alert.objects.create(
            rule=other, sensor=self.beta, metric="humidity", value=10, stream_id="2-0",
            fired_at=now - timedelta(hours=1),
        )  # fmt: skip

    def test_rule_list_shows_its_settings_and_links_to_its_alerts(self):
        html = self.get(RULES_URL).content.decode()
        for text in ("Sensor", "Metric", "Operator", "Threshold", "Duration", "Notify email",
                     "60 s", "ops@example.com", "1 alert(s)"):  # fmt: skip
            self.assertIn(text, html)
        link = f"{ALERTS_URL}?rule__id__exact={self.rule.pk}"
        self.assertIn(link.replace("&", "&amp;"), html)
        alerts = self.get(ALERTS_URL, {"rule__id__exact": self.rule.pk})
        self.assertEqual(list(alerts.context["cl"].result_list), [self.cleared])

    def test_operators_create_rules(self):
        url = reverse("admin:sensors_alertrule_add")
        data = {"sensor": self.alpha.pk, "name": "hot", "metric": "temperature",
                "operator": ">=", "threshold": "35", "duration_seconds": "0",
                "notify_email": "", "active": "on"}  # fmt: skip
        self.assertEqual(self.client.post(url, data).status_code, 302)
        self.assertTrue(AlertRule.objects.filter(name="hot", operator=">=").exists())
        response = self.client.post(url, {**data, "name": "bad", "metric": "Temp C"})
        self.assertEqual(response.status_code, 200)
        self.assertFalse(AlertRule.objects.filter(name="bad").exists())

    def test_alerts_list_active_first_with_filters_and_is_read_only(self):
        response = self.get(ALERTS_URL)
        self.assertEqual(list(response.context["cl"].result_list), [self.active, self.cleared])
        self.assertFalse(response.context["has_add_permission"])

        def listed(**params):
            return list(self.get(ALERTS_URL, params).context["cl"].result_list)

        self.assertEqual(listed(state="active"), [self.active])
        self.assertEqual(listed(state="cleared"), [self.cleared])
        self.assertEqual(listed(sensor__id__exact=str(self.alpha.pk)), [self.cleared])
        url = reverse("admin:sensors_alert_change", args=[self.active.pk])
        self.assertNotContains(self.get(url), 'name="value"')


class DeadLetterAdminTests(AdminTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.error = "ValueError: could not convert string to float: 'abc'\n" + "x" * 200
        self.letter = DeadLetter.objects.create(
            stream="sensors:readings:alpha", group="store", entry_id="1-0",
            fields={"ts": "1", "v": '{"t": "abc"}'}, error=self.error, deliveries=5,
        )  # fmt: skip
        DeadLetter.objects.create(stream="sensors:readings:beta", group="alerts",
                                  entry_id="2-0", error="boom", deliveries=5)  # fmt: skip

    def test_list_shows_the_error_shortened(self):
        response = self.get(DEAD_LETTERS_URL)
        html = response.content.decode()
        for column in ("Created at", "Group", "Stream", "Entry id", "Deliveries", "Error"):
            self.assertIn(column, html)
        self.assertIn("could not convert string to float", html)
        self.assertNotIn("x" * 200, html)
        self.assertFalse(response.context["has_add_permission"])
        add = self.forbidden(reverse("admin:sensors_deadletter_add"))
        self.assertEqual(add.status_code, 403)

    def test_filter_by_group(self):
        response = self.get(DEAD_LETTERS_URL, {"group": "store"})
        self.assertEqual(list(response.context["cl"].result_list), [self.letter])

    def test_detail_is_read_only_with_fields_and_full_error(self):
        url = reverse("admin:sensors_deadletter_change", args=[self.letter.pk])
        response = self.get(url)
        html = response.content.decode()
        self.assertIn("x" * 200, html)
        self.assertIn("&quot;v&quot;: ", html)  # the fields as JSON
        self.assertNotContains(response, 'name="error"')
