/* Shared by the sensor pages: the live socket (reconnect with backoff and jitter, heartbeat,
 * status indicator) and text formatting. Sensor-provided text (names, descriptions, metric
 * names, units) only ever reaches the page through textContent.
 */
(function () {
  "use strict";

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_MAX_MS = 15000;
  const OFFLINE_AFTER_ATTEMPTS = 4;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;

  const CONNECTION_LABELS = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: "Live",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    ended: "Disconnected",
  };

  /** The page's settings, handed over by the view as JSON. */
  function readConfig() {
    return JSON.parse(document.getElementById("sensors-config").textContent);
  }

  /** The status indicator in the header. */
  function connectionIndicator(container, label) {
    return function setConnection(kind, text) {
      container.dataset.state = kind;
      label.textContent = text || CONNECTION_LABELS[kind];
    };
  }

  /**
   * One WebSocket kept alive: reconnects with exponential backoff and jitter, pings, and
   * hands every JSON frame to onFrame. `url()` is asked again before each attempt (so a
   * page can resume with ?after=). onOpen is called when a frame proves the socket works.
   * Close codes in `finalCodes` end it for good (onEnd gets the code and the error frame).
   */
  class LiveSocket {
    constructor({ url, onFrame, onState, onEnd, onBadRequest, finalCodes = [4401, 4404] }) {
      this.url = url;
      this.onFrame = onFrame;
      this.onState = onState;
      this.onEnd = onEnd || (() => {});
      this.onBadRequest = onBadRequest || (() => {});
      this.finalCodes = new Set(finalCodes);
      this.socket = null;
      this.attempts = 0;
      this.timer = null;
      this.heartbeat = null;
      this.lastFrameAt = 0;
      this.lastError = null;
      this.healthy = false;
      this.ended = false;
      this.holdUntil = 0; // test hook: no reconnect before this time
      this.urls = [];
      window.addEventListener("online", () => this.connectSoon());
      window.addEventListener("offline", () => {
        if (!this.healthy && !this.ended) this.onState("offline");
      });
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") this.connectSoon();
      });
    }

    start() {
      this.connect();
    }

    /** After a wait caused by the network, try again now rather than at the next backoff. */
    connectSoon() {
      if (this.ended || this.socket || Date.now() < this.holdUntil) return;
      this.connect();
    }

    connect() {
      clearTimeout(this.timer);
      if (this.ended) return;
      const url = this.url();
      const socket = new WebSocket(url);
      this.urls.push(url);
      this.socket = socket;
      this.healthy = false;
      this.lastError = null;
      this.onState(this.attempts ? this.waitingState() : "connecting");
      socket.addEventListener("message", (event) => {
        if (socket !== this.socket) return;
        this.lastFrameAt = Date.now();
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!frame || typeof frame !== "object") return;
        if (frame.type === "error") {
          this.lastError = frame;
          return;
        }
        if (frame.type === "pong") return;
        if (!this.healthy) {
          this.healthy = true;
          this.attempts = 0;
          this.onState("connected");
        }
        this.onFrame(frame);
      });
      socket.addEventListener("open", () => {
        if (socket === this.socket) this.startHeartbeat();
      });
      socket.addEventListener("close", (event) => {
        if (socket === this.socket) this.lost(event.code);
      });
    }

    waitingState() {
      const offline = navigator.onLine === false || this.attempts > OFFLINE_AFTER_ATTEMPTS;
      return offline ? "offline" : "reconnecting";
    }

    /** Forget the current socket (its late events are ignored) and close it. */
    drop() {
      clearTimeout(this.timer);
      clearInterval(this.heartbeat);
      const socket = this.socket;
      this.socket = null;
      this.healthy = false;
      if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
    }

    lost(code) {
      const error = this.lastError;
      this.drop();
      if (this.finalCodes.has(code)) {
        this.ended = true;
        this.onState("ended");
        this.onEnd(code, error);
        return;
      }
      if (code === 4400) this.onBadRequest(error);
      this.attempts += 1;
      const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** (this.attempts - 1));
      const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
      const delay = Math.max(jittered, this.holdUntil - Date.now());
      this.onState(this.waitingState());
      this.timer = setTimeout(() => this.connect(), delay);
    }

    startHeartbeat() {
      clearInterval(this.heartbeat);
      this.lastFrameAt = Date.now();
      this.heartbeat = setInterval(() => {
        const socket = this.socket;
        if (!socket || socket.readyState !== WebSocket.OPEN) return;
        if (Date.now() - this.lastFrameAt > PING_EVERY_MS + PONG_TIMEOUT_MS) {
          this.lost(1006); // no answer to the last ping: the connection is dead
          return;
        }
        socket.send(JSON.stringify({ type: "ping" }));
      }, PING_EVERY_MS);
    }

    /** Test hook: drop the socket as a network failure would; no reconnect before holdMs. */
    debugDrop(holdMs = 0) {
      this.holdUntil = Date.now() + holdMs;
      if (this.socket) this.lost(1006);
    }
  }

  /** The page's WebSocket URL for a path on this origin. */
  function socketUrl(path, query) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const search = query ? `?${new URLSearchParams(query)}` : "";
    return `${scheme}//${location.host}${path}${search}`;
  }

  /** Stream ids ("<ms>-<seq>") compared as numbers. */
  function compareIds(a, b) {
    const [am, as = "0"] = String(a).split("-");
    const [bm, bs = "0"] = String(b).split("-");
    return Number(am) - Number(bm) || Number(as) - Number(bs);
  }

  // --- formatting -------------------------------------------------------------------------

  const numberFormats = new Map();

  function numberFormat(digits) {
    if (!numberFormats.has(digits)) {
      numberFormats.set(
        digits,
        new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits }),
      );
    }
    return numberFormats.get(digits);
  }

  /** A value with sensible precision: 21.5, 45.2, 1,234, 0.0123. */
  function formatValue(value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return "–";
    const size = Math.abs(value);
    if (size >= 100) return numberFormat(0).format(value);
    if (size >= 1 || size === 0) return numberFormat(1).format(value);
    return new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 }).format(value);
  }

  /** "temperature_max" → "Temperature max". */
  function metricLabel(metric) {
    const text = String(metric).replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  /** A moment as a Date: Unix ms or ISO 8601; null when missing or unreadable. */
  function toDate(value) {
    if (value === null || value === undefined || value === "") return null;
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function formatAgo(date, now = Date.now()) {
    if (!date) return "never";
    const seconds = Math.max(0, Math.round((now - date.getTime()) / 1000));
    if (seconds < 5) return "just now";
    if (seconds < 60) return `${seconds} s ago`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes} min ago`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return `${hours} h ago`;
    return formatDateTime(date);
  }

  function formatDateTime(date) {
    if (!date) return "";
    const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    const today = new Date().toDateString() === date.toDateString();
    return today ? time : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  /** Fill a <time> element: relative text, the exact moment as datetime and tooltip. */
  function renderTime(element, date, now) {
    element.textContent = formatAgo(date, now);
    if (date) {
      const iso = date.toISOString();
      if (element.dateTime !== iso) {
        element.dateTime = iso;
        element.title = date.toLocaleString();
      }
    } else {
      element.removeAttribute("datetime");
      element.removeAttribute("title");
    }
  }

  /** What an alert is about, as text: "temperature > 30 °C". */
  function alertCondition(alert, units) {
    const unit = (units && units[alert.metric]) || "";
    const threshold = `${formatValue(Number(alert.threshold))}${unit ? ` ${unit}` : ""}`;
    return `${metricLabel(alert.metric || "")} ${alert.operator || ""} ${threshold}`.replace(/\s+/g, " ").trim();
  }

  /** An alert's name: its rule's name when it has one. */
  function alertTitle(alert, units) {
    const name = alert.rule_name || (typeof alert.rule === "string" ? alert.rule : "");
    const condition = alertCondition(alert, units);
    return name ? `${name}: ${condition}` : condition;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  window.sensorsCommon = {
    readConfig,
    connectionIndicator,
    LiveSocket,
    socketUrl,
    compareIds,
    formatValue,
    metricLabel,
    toDate,
    formatAgo,
    formatDateTime,
    renderTime,
    alertCondition,
    alertTitle,
    plural,
  };
})();
