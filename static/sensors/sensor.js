/* One sensor's page: a live uPlot chart per metric, a range selector, and its alerts.
 *
 * The socket /ws/sensors/<slug> starts with history, then sends each new reading. The first
 * connection asks for everything of the last 5 minutes (?after=<ms five minutes ago>, a
 * stream id of that moment); a reconnect resumes with ?after=<the last id seen>, so nothing
 * is missed or shown twice (readings are kept by id). The longer ranges load per-bucket
 * min/avg/max from the history API and fold new readings into their buckets as they come.
 * Sensor text is set with textContent only.
 */
(function () {
  "use strict";

  const common = window.sensorsCommon;
  const config = common.readConfig();

  const LIVE_SPAN_MS = 5 * 60 * 1000;
  const KEEP_MS = LIVE_SPAN_MS + 60 * 1000; // live readings kept in memory
  const MAX_ALERTS = 50;
  const STALE_GRACE_MS = 5000;
  const DRAW_EVERY_MS = 150;
  const CHART_HEIGHT = 220;
  const CHART_HEIGHT_SMALL = 180;
  const RANGES = {
    live: { spanMs: LIVE_SPAN_MS, bucket: null, label: "the last 5 minutes" },
    "1h": { spanMs: 3600 * 1000, bucket: 15, label: "the last hour" },
    "24h": { spanMs: 24 * 3600 * 1000, bucket: 300, label: "the last 24 hours" },
    "7d": { spanMs: 7 * 24 * 3600 * 1000, bucket: 1800, label: "the last 7 days" },
  };

  const byId = (id) => document.getElementById(id);
  const ui = {
    conn: byId("conn-status"),
    connLabel: byId("conn-label"),
    banner: byId("banner"),
    stateBadge: byId("sensor-state"),
    stateLabel: byId("sensor-state-label"),
    seen: byId("sensor-seen"),
    ranges: byId("ranges"),
    rangeNote: byId("range-note"),
    charts: byId("charts"),
    chartsEmpty: byId("charts-empty"),
    alerts: byId("alerts"),
    alertsEmpty: byId("alerts-empty"),
    chartTemplate: byId("chart-template"),
    alertTemplate: byId("alert-template"),
  };
  const setConnection = common.connectionIndicator(ui.conn, ui.connLabel);

  const state = {
    units: { ...(config.units || {}) },
    metrics: [], // in display order
    readings: [], // live readings {id, ts, values}, sorted by ts then id
    ids: new Set(),
    lastId: null, // the newest stream id seen: where a reconnect resumes
    latest: new Map(), // metric -> {id, value}: the newest value of each metric
    lastSeen: common.toDate(config.last_seen),
    online: !!config.online,
    range: "live",
    buckets: null, // {range, sinceMs, bucketMs, mergeFrom, map: Map(start -> {metric: agg})}
    fetchSeq: 0,
    historySeen: false,
    charts: new Map(), // metric -> {el, plotEl, plot, mode}
    alerts: new Map(), // id -> alert
    drawTimer: null,
    newestTs: 0, // a reading's clock may run ahead of this browser's: the window follows it
  };
  window.sensorCharts = {};

  // --- readings ----------------------------------------------------------------------------

  function addMetric(name) {
    if (state.metrics.includes(name)) return;
    state.metrics.push(name);
    createChart(name);
  }

  function position(reading) {
    // Readings nearly always arrive in time order: search from the end.
    let index = state.readings.length;
    while (index > 0) {
      const before = state.readings[index - 1];
      if (before.ts < reading.ts || (before.ts === reading.ts && common.compareIds(before.id, reading.id) < 0)) break;
      index -= 1;
    }
    return index;
  }

  function addReading(reading) {
    if (!reading) return;
    if (state.lastId === null || common.compareIds(reading.id, state.lastId) > 0) state.lastId = reading.id;
    if (state.ids.has(reading.id)) return;
    state.ids.add(reading.id);
    for (const [name, value] of Object.entries(reading.values || {})) {
      addMetric(name);
      const known = state.latest.get(name);
      if (!known || common.compareIds(reading.id, known.id) > 0) state.latest.set(name, { id: reading.id, value });
    }
    if (reading.ts > state.newestTs) state.newestTs = reading.ts;
    if (reading.ts >= Date.now() - KEEP_MS) state.readings.splice(position(reading), 0, reading);
    const buckets = state.buckets;
    if (buckets && buckets.map && reading.ts >= buckets.mergeFrom) mergeIntoBuckets(buckets, reading);
  }

  function prune(now) {
    const oldest = now - KEEP_MS;
    let drop = 0;
    while (drop < state.readings.length && state.readings[drop].ts < oldest) drop += 1;
    // Resuming asks only for newer ids, so the dropped ones can be forgotten.
    for (const reading of state.readings.splice(0, drop)) state.ids.delete(reading.id);
  }

  // --- buckets (the longer ranges) -----------------------------------------------------------

  function mergeIntoBuckets(buckets, reading) {
    const start = Math.floor(reading.ts / buckets.bucketMs) * buckets.bucketMs;
    let bucket = buckets.map.get(start);
    if (!bucket) {
      bucket = {};
      buckets.map.set(start, bucket);
    }
    for (const [name, value] of Object.entries(reading.values || {})) {
      const agg = bucket[name];
      if (!agg) bucket[name] = { min: value, max: value, sum: value, count: 1 };
      else {
        agg.min = Math.min(agg.min, value);
        agg.max = Math.max(agg.max, value);
        agg.sum += value;
        agg.count += 1;
      }
    }
  }

  async function loadBuckets(rangeName) {
    const range = RANGES[rangeName];
    const seq = ++state.fetchSeq;
    const sinceMs = Date.now() - range.spanMs;
    const bucketMs = range.bucket * 1000;
    state.buckets = { range: rangeName, sinceMs, bucketMs, mergeFrom: Infinity, map: null, failed: false };
    setRangeNote("Loading the stored history…");
    const url = `${config.readingsUrl}?${new URLSearchParams({ since: String(sinceMs), bucket: String(range.bucket) })}`;
    let body = null;
    let problem = null;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      body = await response.json().catch(() => null);
      if (!response.ok) problem = (body && body.error && body.error.message) || `HTTP ${response.status}`;
    } catch {
      problem = "the server could not be reached";
    }
    if (seq !== state.fetchSeq) return; // another range was picked meanwhile
    const map = new Map();
    let lastStart = null;
    for (const bucket of (!problem && body && body.buckets) || []) {
      const entry = {};
      for (const [name, agg] of Object.entries(bucket.metrics || {})) {
        addMetric(name);
        entry[name] = { min: agg.min, max: agg.max, sum: agg.avg * agg.count, count: agg.count };
      }
      map.set(bucket.ts, entry);
      lastStart = lastStart === null ? bucket.ts : Math.max(lastStart, bucket.ts);
    }
    const buckets = state.buckets;
    buckets.map = map;
    buckets.failed = !!problem;
    // Readings after the stored buckets come from the socket: fold those in, once each.
    buckets.mergeFrom = lastStart === null ? sinceMs : lastStart + bucketMs;
    for (const reading of state.readings) {
      if (reading.ts >= buckets.mergeFrom) mergeIntoBuckets(buckets, reading);
    }
    describeRange(problem);
    drawNow();
  }

  // --- charts ------------------------------------------------------------------------------

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function unitOf(metric) {
    return state.units[metric] || "";
  }

  function withUnit(value, metric) {
    if (value === null || value === undefined) return "–";
    const unit = unitOf(metric);
    return `${common.formatValue(value)}${unit ? ` ${unit}` : ""}`;
  }

  function axisSize(self, values, axisIdx, cycleNum) {
    const axis = self.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((acc, v) => (String(v).length > acc.length ? String(v) : acc), "");
    if (longest) {
      self.ctx.font = axis.font[0];
      size += self.ctx.measureText(longest).width / devicePixelRatio;
    }
    return Math.ceil(size);
  }

  function chartOptions(metric, width) {
    const accent = css("--accent");
    const muted = css("--muted");
    const grid = css("--border");
    const axis = { stroke: muted, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const value = (u, v) => withUnit(v, metric);
    const bucketed = state.range !== "live";
    const series = [{ label: "Time" }];
    if (bucketed) {
      series.push(
        { label: "Average", stroke: accent, width: 2, value, points: { show: sparse, size: 5, fill: accent } },
        { label: "Min", stroke: css("--band-line"), width: 1, value },
        { label: "Max", stroke: css("--band-line"), width: 1, value },
      );
    } else {
      series.push({ label: common.metricLabel(metric), stroke: accent, width: 2, value, spanGaps: true, points: { size: 4 } });
    }
    const range = RANGES[state.range];
    return {
      width,
      height: chartHeight(),
      pxAlign: false,
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      hooks: { setCursor: [(u) => hovered(metric, u)] },
      scales: {
        x: {
          time: true,
          range: () => {
            const end = windowEnd();
            return [(end - range.spanMs) / 1000, end / 1000];
          },
        },
        y: {
          range: (u, min, max) => {
            if (min === null || max === null) return [0, 1];
            const pad = Math.max((max - min) * 0.1, Math.abs(max) * 0.01, 0.1);
            // Light, humidity and counts are never negative: don't pad below zero for them.
            return [min >= 0 ? Math.max(0, min - pad) : min - pad, max + pad];
          },
        },
      },
      series,
      bands: bucketed ? [{ series: [3, 2], fill: css("--band") }] : [],
      axes: [
        { ...axis, space: smallScreen() ? 45 : 60, values: timeLabels },
        { ...axis, size: axisSize },
      ],
    };
  }

  const timeFormats = {
    seconds: new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit", second: "2-digit" }),
    minutes: new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" }),
    hours: new Intl.DateTimeFormat(undefined, { hour: "numeric" }),
    days: new Intl.DateTimeFormat(undefined, { weekday: "short" }),
    dayTime: new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "numeric", minute: "2-digit" }),
  };

  /** Tick labels as short as the tick spacing allows (uPlot passes the increment in s). */
  function timeLabels(u, ticks, axisIdx, space, incr) {
    if (incr >= 86400) return ticks.map((t) => timeFormats.days.format(new Date(t * 1000)));
    if (incr >= 3600) return ticks.map((t) => timeFormats.hours.format(new Date(t * 1000)));
    // Minutes and seconds: without AM/PM, which the hover readout shows in full.
    const format = incr < 60 ? timeFormats.seconds : timeFormats.minutes;
    return ticks.map((t) =>
      format
        .formatToParts(new Date(t * 1000))
        .filter((part) => part.type !== "dayPeriod")
        .map((part) => part.value)
        .join("")
        .trim(),
    );
  }

  /** The cursor moved over a chart: show the value under it in the chart's head. */
  function hovered(metric, u) {
    const chart = state.charts.get(metric);
    if (!chart || chart.plot !== u) return;
    const idx = u.cursor.idx;
    chart.hover = idx === null || idx === undefined || u.data[1][idx] === null ? null : idx;
    renderChartHead(chart);
  }

  /** Show a series' points only when it has too few values to draw a visible line. */
  function sparse(u, seriesIdx) {
    let count = 0;
    for (const v of u.data[seriesIdx]) if (v !== null && v !== undefined) count += 1;
    return count > 0 && count < 40;
  }

  function smallScreen() {
    return window.matchMedia("(max-width: 30rem)").matches;
  }

  function chartHeight() {
    return smallScreen() ? CHART_HEIGHT_SMALL : CHART_HEIGHT;
  }

  function createChart(metric) {
    const el = ui.chartTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.metric = metric;
    const id = `chart-${state.charts.size + 1}`;
    el.querySelector(".chart__name").textContent = common.metricLabel(metric);
    const summary = el.querySelector(".chart__summary");
    summary.id = `${id}-summary`;
    const plotEl = el.querySelector(".chart__plot");
    plotEl.setAttribute("aria-describedby", summary.id);
    ui.charts.append(el);
    const chart = { el, plotEl, plot: null, mode: null, metric, hover: null };
    state.charts.set(metric, chart);
    ui.chartsEmpty.hidden = true;
    renderChartHead(chart);
    buildPlot(chart);
  }

  function buildPlot(chart) {
    if (chart.plot) chart.plot.destroy();
    chart.hover = null;
    const width = Math.max(200, chart.plotEl.clientWidth || ui.charts.clientWidth || 300);
    chart.mode = state.range;
    chart.plot = new window.uPlot(chartOptions(chart.metric, width), chartData(chart.metric), chart.plotEl);
    window.sensorCharts[chart.metric] = chart.plot;
    const label = `${common.metricLabel(chart.metric)} chart, ${RANGES[state.range].label}`;
    chart.plotEl.setAttribute("aria-label", label);
    afterDraw(chart);
  }

  function renderChartHead(chart) {
    const unit = unitOf(chart.metric);
    chart.el.querySelector(".chart__unit").textContent = unit ? `(${unit})` : "";
    const latest = state.latest.get(chart.metric);
    chart.el.dataset.latest = latest ? String(latest.value) : "";
    const hover = chart.hover !== null && chart.hover !== undefined && chart.plot ? chart.hover : null;
    let value = latest ? latest.value : null;
    let when = latest ? "Latest" : "";
    if (hover !== null) {
      const data = chart.plot.data;
      value = data[1][hover];
      if (state.range === "live") when = `At ${timeFormats.seconds.format(new Date(data[0][hover] * 1000))}`;
      else {
        const step = state.buckets ? state.buckets.bucketMs : 0;
        const start = new Date(data[0][hover] * 1000 - step / 2);
        const format = step >= 1800 * 1000 ? timeFormats.dayTime : timeFormats.minutes;
        const range = `${withUnit(data[2][hover], chart.metric)} to ${withUnit(data[3][hover], chart.metric)}`;
        when = `${format.format(start)} · average (${range})`;
      }
    }
    chart.el.dataset.hover = String(hover !== null);
    const valueText = value === null || value === undefined ? "–" : common.formatValue(value);
    setText(chart.el.querySelector(".chart__value"), valueText);
    setText(chart.el.querySelector(".chart__value-unit"), value === null ? "" : unit);
    setText(chart.el.querySelector(".chart__when"), when);
  }

  function setText(element, text) {
    if (element.textContent !== text) element.textContent = text;
  }

  /** The right edge of the charts: now, or the newest reading if this clock is behind. */
  function windowEnd() {
    return Math.max(Date.now(), Math.min(state.newestTs, Date.now() + 60 * 1000));
  }

  function chartData(metric) {
    if (state.range === "live") {
      const since = windowEnd() - LIVE_SPAN_MS;
      const xs = [];
      const ys = [];
      for (const reading of state.readings) {
        if (reading.ts < since) continue;
        const value = reading.values[metric];
        if (value === undefined) continue;
        xs.push(reading.ts / 1000);
        ys.push(value);
      }
      return [xs, ys];
    }
    const buckets = state.buckets;
    const xs = [];
    const avg = [];
    const min = [];
    const max = [];
    if (buckets && buckets.map) {
      const step = buckets.bucketMs;
      const from = Math.floor((Date.now() - RANGES[state.range].spanMs) / step) * step;
      const until = Date.now();
      for (let start = from; start <= until; start += step) {
        const agg = buckets.map.get(start) && buckets.map.get(start)[metric];
        xs.push(Math.min(start + step / 2, until) / 1000); // the current bucket ends now
        avg.push(agg ? agg.sum / agg.count : null);
        min.push(agg ? agg.min : null);
        max.push(agg ? agg.max : null);
      }
    }
    return [xs, avg, min, max];
  }

  function afterDraw(chart) {
    const data = chart.plot.data;
    const values = data[1].filter((v) => v !== null && v !== undefined);
    chart.el.dataset.points = String(values.length);
    const name = common.metricLabel(chart.metric);
    const span = RANGES[state.range].label;
    let text;
    if (!values.length) text = `${name}: no readings in ${span}.`;
    else {
      const low = Math.min(...(data[2] || data[1]).filter((v) => v !== null));
      const high = Math.max(...(data[3] || data[1]).filter((v) => v !== null));
      const what = state.range === "live" ? common.plural(values.length, "reading") : common.plural(values.length, "interval");
      text = `${name} over ${span}: ${what}, from ${withUnit(low, chart.metric)} to ${withUnit(high, chart.metric)}.`;
    }
    const summary = chart.el.querySelector(".chart__summary");
    if (summary.textContent !== text) summary.textContent = text;
  }

  function drawNow() {
    clearTimeout(state.drawTimer);
    state.drawTimer = null;
    for (const chart of state.charts.values()) {
      if (chart.mode !== state.range) buildPlot(chart);
      else {
        chart.plot.setData(chartData(chart.metric));
        afterDraw(chart);
      }
      renderChartHead(chart);
    }
    ui.chartsEmpty.hidden = state.charts.size > 0;
  }

  function scheduleDraw() {
    if (state.drawTimer === null) state.drawTimer = setTimeout(drawNow, DRAW_EVERY_MS);
  }

  function resizeCharts() {
    for (const chart of state.charts.values()) {
      const width = Math.max(200, chart.plotEl.clientWidth);
      if (chart.plot && (chart.plot.width !== width || chart.plot.height !== chartHeight())) {
        chart.plot.setSize({ width, height: chartHeight() });
      }
    }
  }

  // --- the range selector --------------------------------------------------------------------

  function setRangeNote(text) {
    ui.rangeNote.textContent = text;
  }

  function describeRange(problem) {
    const range = RANGES[state.range];
    if (!range.bucket) {
      setRangeNote("Live: every reading of the last 5 minutes, as it arrives.");
      return;
    }
    if (problem) {
      setRangeNote(`Could not load the stored history (${problem}); showing new readings only.`);
      return;
    }
    const size = range.bucket >= 60 ? `${range.bucket / 60} min` : `${range.bucket} s`;
    setRangeNote(`Averages per ${size} (band: min to max), updated as readings arrive.`);
  }

  function chooseRange(name, { push = true } = {}) {
    if (!RANGES[name]) name = "live";
    state.range = name;
    const input = ui.ranges.querySelector(`input[value="${name}"]`);
    if (input) input.checked = true;
    if (push) {
      const url = new URL(location.href);
      if (name === "live") url.searchParams.delete("range");
      else url.searchParams.set("range", name);
      history.replaceState(null, "", url);
    }
    if (RANGES[name].bucket) {
      loadBuckets(name);
    } else {
      state.fetchSeq += 1;
      state.buckets = null;
      describeRange();
    }
    drawNow();
  }

  // --- status and alerts ---------------------------------------------------------------------

  function renderStatus(now) {
    let online = state.online;
    if (online && state.lastSeen) {
      online = now - state.lastSeen.getTime() <= config.offlineAfterSeconds * 1000 + STALE_GRACE_MS;
    }
    ui.stateBadge.dataset.online = String(online);
    ui.stateLabel.textContent = online ? "Online" : "Offline";
    common.renderTime(ui.seen, state.lastSeen, now);
  }

  function firedMs(alert) {
    const date = common.toDate(alert.fired_at);
    return date ? date.getTime() : 0;
  }

  function noteAlert(alert) {
    if (!alert || alert.sensor !== config.sensor) return;
    state.alerts.set(String(alert.id), { ...(state.alerts.get(String(alert.id)) || {}), ...alert });
  }

  function renderAlerts() {
    const alerts = [...state.alerts.values()].sort((a, b) => {
      const activeFirst = Number(!!a.cleared_at) - Number(!!b.cleared_at);
      return activeFirst || firedMs(b) - firedMs(a);
    });
    for (const old of alerts.slice(MAX_ALERTS)) if (old.cleared_at) state.alerts.delete(String(old.id));
    const shown = alerts.slice(0, MAX_ALERTS);
    const existing = new Map([...ui.alerts.children].map((li) => [li.dataset.alertId, li]));
    let previous = null;
    for (const alert of shown) {
      const key = String(alert.id);
      let li = existing.get(key);
      existing.delete(key);
      if (!li) {
        li = ui.alertTemplate.content.firstElementChild.cloneNode(true);
        li.dataset.alertId = key;
      }
      renderAlert(li, alert);
      const wanted = previous ? previous.nextElementSibling : ui.alerts.firstElementChild;
      if (wanted !== li) ui.alerts.insertBefore(li, wanted);
      previous = li;
    }
    for (const li of existing.values()) li.remove();
    ui.alertsEmpty.hidden = shown.length > 0;
  }

  function renderAlert(li, alert) {
    const active = !alert.cleared_at;
    li.dataset.state = active ? "active" : "cleared";
    li.querySelector(".alert__state").textContent = active ? "Active" : "Cleared";
    li.querySelector(".alert__title").textContent = common.alertTitle(alert, state.units);
    const parts = [];
    if (typeof alert.value === "number") parts.push(`value ${withUnit(alert.value, alert.metric)}`);
    const fired = common.toDate(alert.fired_at);
    if (fired) parts.push(`fired ${common.formatDateTime(fired)}`);
    const cleared = common.toDate(alert.cleared_at);
    if (cleared) parts.push(`cleared ${common.formatDateTime(cleared)}`);
    const text = parts.join(" · ");
    li.querySelector(".alert__detail").textContent = text.charAt(0).toUpperCase() + text.slice(1);
  }

  // --- the socket ------------------------------------------------------------------------------

  const handlers = {
    history(frame) {
      if (frame.units) Object.assign(state.units, frame.units);
      for (const name of Object.keys(state.units)) addMetric(name);
      for (const reading of frame.readings || []) addReading(reading);
      state.historySeen = true;
      ui.chartsEmpty.textContent = "No readings yet: waiting for the first one…";
      scheduleDraw();
    },
    reading(frame) {
      addReading({ id: frame.id, ts: frame.ts, values: frame.values });
      state.lastSeen = new Date();
      state.online = true;
      renderStatus(Date.now());
      scheduleDraw();
    },
    status(frame) {
      state.online = !!frame.online;
      renderStatus(Date.now());
    },
    alert(frame) {
      noteAlert(frame.alert);
      renderAlerts();
    },
  };

  function resumeQuery() {
    // A stream id is "<ms>-<seq>": the bare milliseconds of 5 minutes ago start the back-fill.
    return { after: state.lastId !== null ? state.lastId : String(Date.now() - LIVE_SPAN_MS) };
  }

  const showBanner = common.bannerShower(ui.banner);
  const ended = common.endedHandler({
    showBanner,
    setConnection,
    loginUrl: config.loginUrl,
    watching: "this sensor",
    otherCode(code) {
      if (code !== 4404) return false;
      showBanner(["This sensor no longer exists."]);
      setConnection("ended", "Sensor removed");
      return true;
    },
  });

  const socket = new common.LiveSocket({
    url: () => common.socketUrl(config.socketPath, resumeQuery()),
    onFrame(frame) {
      if (frame.sensor !== undefined && frame.sensor !== config.sensor && frame.type !== "alert") return;
      const handler = handlers[frame.type];
      if (handler) handler(frame);
    },
    onState: setConnection,
    onEnd: ended,
    onBadRequest() {
      state.lastId = null; // the id was refused: back-fill by time instead
    },
  });

  // --- start -----------------------------------------------------------------------------------

  function boot() {
    for (const name of Object.keys(state.units)) addMetric(name);
    if (config.latest) {
      addReading(config.latest);
      state.lastId = null; // the socket's first connection back-fills by time, not from here
    }
    for (const alert of config.alerts || []) noteAlert(alert);
    renderAlerts();
    renderStatus(Date.now());
    ui.ranges.addEventListener("change", (event) => {
      if (event.target.name === "range") chooseRange(event.target.value);
    });
    ui.ranges.addEventListener("submit", (event) => event.preventDefault());
    if ("ResizeObserver" in window) new ResizeObserver(resizeCharts).observe(ui.charts);
    else window.addEventListener("resize", resizeCharts);
    chooseRange(new URLSearchParams(location.search).get("range") || "live", { push: false });
    setInterval(() => {
      const now = Date.now();
      prune(now);
      renderStatus(now);
      drawNow(); // the time window slides even without new readings
    }, 1000);
    socket.start();
  }

  /** Hooks for the browser tests (and for curious people in the console). */
  window.sensorPage = {
    debugDropSocket: (holdMs = 0) => socket.debugDrop(holdMs),
    get connection() {
      return ui.conn.dataset.state;
    },
    get socketUrls() {
      return socket.urls.slice();
    },
    get range() {
      return state.range;
    },
    get lastId() {
      return state.lastId;
    },
  };

  boot();
})();
