/* The sensors dashboard: a card per sensor, kept live by the overview socket /ws/sensors.
 *
 * The socket starts with a snapshot of every sensor (latest reading, last seen, online),
 * then sends each reading, status change and alert. A reconnect brings a fresh snapshot,
 * so nothing needs resuming here. Sensor text is set with textContent only.
 */
(function () {
  "use strict";

  const common = window.sensorsCommon;
  const config = common.readConfig();
  const STALE_GRACE_MS = 5000;

  const byId = (id) => document.getElementById(id);
  const ui = {
    conn: byId("conn-status"),
    connLabel: byId("conn-label"),
    banner: byId("banner"),
    summary: byId("summary"),
    empty: byId("empty"),
    cards: byId("cards"),
    cardTemplate: byId("card-template"),
    metricTemplate: byId("metric-template"),
  };
  const setConnection = common.connectionIndicator(ui.conn, ui.connLabel);

  const state = {
    sensors: new Map(), // slug -> {data, el, metrics: Map(metric -> element), lastSeen}
    alerts: new Map(), // slug -> Map(alert id -> alert), active alerts only
    snapshotSeen: false,
    refreshTimer: null,
  };

  for (const alert of config.activeAlerts || []) noteAlert(alert);

  // --- cards ---------------------------------------------------------------------------------

  function pageUrl(slug) {
    return `${config.pagePrefix}${encodeURIComponent(slug)}/`;
  }

  function createCard(slug) {
    const el = ui.cardTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.sensor = slug;
    const link = el.querySelector(".card__link");
    link.href = pageUrl(slug);
    const entry = { data: { sensor: slug, units: {} }, el, metrics: new Map(), lastSeen: null, online: false };
    state.sensors.set(slug, entry);
    return entry;
  }

  function metricOrder(entry) {
    const names = Object.keys(entry.data.units || {});
    const latest = entry.data.latest;
    for (const name of Object.keys((latest && latest.values) || {})) {
      if (!names.includes(name)) names.push(name);
    }
    return names;
  }

  function renderCard(entry) {
    const { el, data } = entry;
    el.querySelector(".card__link").textContent = data.name || data.sensor;
    const description = el.querySelector(".card__description");
    description.textContent = data.description || "";
    description.hidden = !data.description;
    renderMetrics(entry);
    renderState(entry, Date.now());
    renderAlerts(entry);
  }

  function renderMetrics(entry) {
    const list = entry.el.querySelector(".metrics");
    const latest = entry.data.latest;
    const values = (latest && latest.values) || {};
    const units = entry.data.units || {};
    const order = metricOrder(entry);
    let previous = null;
    for (const name of order) {
      let item = entry.metrics.get(name);
      if (!item) {
        item = ui.metricTemplate.content.firstElementChild.cloneNode(true);
        item.dataset.metric = name;
        item.querySelector(".metric__name").textContent = common.metricLabel(name);
        entry.metrics.set(name, item);
      }
      const wanted = previous ? previous.nextElementSibling : list.firstElementChild;
      if (wanted !== item) list.insertBefore(item, wanted);
      previous = item;
      item.querySelector(".metric__unit").textContent = units[name] || "";
      const text = common.formatValue(values[name]);
      const valueEl = item.querySelector(".metric__value");
      if (valueEl.textContent !== text) valueEl.textContent = text;
      item.dataset.value = name in values ? String(values[name]) : "";
    }
    entry.el.querySelector(".card__nodata").hidden = order.length > 0 && !!latest;
  }

  /** Online as the server says, unless silent for longer than the server's offline limit. */
  function isOnline(entry, now) {
    if (!entry.data.online) return false;
    if (!entry.lastSeen) return true;
    return now - entry.lastSeen.getTime() <= config.offlineAfterSeconds * 1000 + STALE_GRACE_MS;
  }

  function renderState(entry, now) {
    const online = isOnline(entry, now);
    entry.online = online;
    entry.el.dataset.online = String(online);
    entry.el.querySelector(".card__state-label").textContent = online ? "Online" : "Offline";
    common.renderTime(entry.el.querySelector(".card__seen-time"), entry.lastSeen, now);
  }

  function renderAlerts(entry) {
    const active = state.alerts.get(entry.data.sensor);
    const line = entry.el.querySelector(".card__alert");
    const count = active ? active.size : 0;
    entry.el.dataset.alerts = String(count);
    line.hidden = count === 0;
    if (!count) {
      line.textContent = "";
      return;
    }
    const newest = [...active.values()].sort((a, b) => (toMs(b.fired_at) || 0) - (toMs(a.fired_at) || 0))[0];
    const title = common.alertTitle(newest, entry.data.units);
    line.textContent = count === 1 ? `Alert: ${title}` : `${common.plural(count, "active alert")}, newest: ${title}`;
  }

  function toMs(value) {
    const date = common.toDate(value);
    return date ? date.getTime() : null;
  }

  function upsert(data) {
    const entry = state.sensors.get(data.sensor) || createCard(data.sensor);
    const keepLatest =
      entry.data.latest && data.latest && common.compareIds(entry.data.latest.id, data.latest.id) > 0;
    entry.data = { ...entry.data, ...data, latest: keepLatest ? entry.data.latest : data.latest };
    const seen = common.toDate(data.last_seen);
    if (seen && (!entry.lastSeen || seen > entry.lastSeen)) entry.lastSeen = seen;
    renderCard(entry);
    return entry;
  }

  function placeCards(order) {
    let previous = null;
    for (const slug of order) {
      const { el } = state.sensors.get(slug);
      const wanted = previous ? previous.nextElementSibling : ui.cards.firstElementChild;
      if (wanted !== el) ui.cards.insertBefore(el, wanted);
      previous = el;
    }
  }

  function renderSummary() {
    const now = Date.now();
    const total = state.sensors.size;
    ui.empty.hidden = total > 0 || !state.snapshotSeen;
    if (!state.snapshotSeen) return;
    let online = 0;
    for (const entry of state.sensors.values()) if (isOnline(entry, now)) online += 1;
    let alerts = 0;
    for (const [slug, active] of state.alerts) if (state.sensors.has(slug)) alerts += active.size;
    const parts = [common.plural(total, "sensor"), `${online} online`];
    if (alerts) parts.push(common.plural(alerts, "active alert"));
    const text = total ? parts.join(" · ") : "";
    if (ui.summary.textContent !== text) ui.summary.textContent = text;
  }

  function noteAlert(alert) {
    if (!alert || !alert.sensor) return;
    let active = state.alerts.get(alert.sensor);
    if (!active) {
      active = new Map();
      state.alerts.set(alert.sensor, active);
    }
    if (alert.cleared_at) active.delete(String(alert.id));
    else active.set(String(alert.id), alert);
  }

  /** A reading from a sensor created after the snapshot: fetch the list to learn about it. */
  function refreshSoon() {
    if (state.refreshTimer) return;
    state.refreshTimer = setTimeout(async () => {
      try {
        const response = await fetch(config.sensorsUrl, { headers: { Accept: "application/json" } });
        if (response.ok) {
          const { sensors } = await response.json();
          for (const data of sensors) if (!state.sensors.has(data.sensor)) upsert(data);
          placeCards([...state.sensors.keys()].sort());
          renderSummary();
        }
      } catch {
        // The next unknown reading tries again.
      } finally {
        state.refreshTimer = null;
      }
    }, 300);
  }

  // --- frames ----------------------------------------------------------------------------------

  const handlers = {
    snapshot(frame) {
      const slugs = new Set();
      for (const data of frame.sensors) {
        upsert(data);
        slugs.add(data.sensor);
      }
      for (const [slug, entry] of state.sensors) {
        if (!slugs.has(slug)) {
          entry.el.remove();
          state.sensors.delete(slug);
        }
      }
      placeCards(frame.sensors.map((s) => s.sensor));
      state.snapshotSeen = true;
      renderSummary();
    },
    reading(frame) {
      const entry = state.sensors.get(frame.sensor);
      if (!entry) {
        refreshSoon();
        return;
      }
      const latest = entry.data.latest;
      if (!latest || common.compareIds(frame.id, latest.id) > 0) {
        entry.data.latest = { id: frame.id, ts: frame.ts, values: frame.values };
        renderMetrics(entry);
      }
      entry.lastSeen = new Date();
      entry.data.online = true; // a reading proves it; a status frame says so too
      renderState(entry, Date.now());
      renderSummary();
    },
    status(frame) {
      const entry = state.sensors.get(frame.sensor);
      if (!entry) return;
      entry.data.online = !!frame.online;
      renderState(entry, Date.now());
      renderSummary();
    },
    alert(frame) {
      noteAlert(frame.alert);
      const entry = frame.alert && state.sensors.get(frame.alert.sensor);
      if (entry) renderAlerts(entry);
      renderSummary();
    },
  };

  const showBanner = common.bannerShower(ui.banner);
  const ended = common.endedHandler({ showBanner, setConnection, loginUrl: config.loginUrl, watching: "the sensors" });

  const socket = new common.LiveSocket({
    url: () => common.socketUrl(config.socketPath),
    onFrame(frame) {
      const handler = handlers[frame.type];
      if (handler) handler(frame);
    },
    onState: setConnection,
    onEnd: ended,
  });

  setInterval(() => {
    const now = Date.now();
    for (const entry of state.sensors.values()) renderState(entry, now);
    renderSummary();
  }, 1000);

  /** Hooks for the browser tests (and for curious people in the console). */
  window.sensorDashboard = {
    debugDropSocket: (holdMs = 0) => socket.debugDrop(holdMs),
    get connection() {
      return ui.conn.dataset.state;
    },
    get socketUrls() {
      return socket.urls.slice();
    },
  };

  socket.start();
})();
