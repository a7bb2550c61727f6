/* Shared by the sensor pages (on top of static/common/realtime.js, window.chatsite): the live
 * socket (reconnect with backoff and jitter, heartbeat, status indicator) and sensor formatting. Sensor-provided text (names, descriptions, metric
 * names, units) only ever reaches the page through textContent.
 */
(function () {
  "use strict";

  const shared = window.chatsite;

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
      this.reconnectTimer = null;
      this.heartbeatTimer = null;
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
      clearTimeout(this.reconnectTimer);
      if (this.ended) return;
      const url = this.url();
      this.urls.push(url);
      this.healthy = false;
      this.lastError = null;
      this.onState(this.attempts ? shared.waitingState(this.attempts) : "connecting");
      shared.openSocket(this, url, { onFrame: (frame) => this.frame(frame), onLost: (code) => this.lost(code) });
    }

    frame(frame) {
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
    }

    /** Forget the current socket (its late events are ignored) and close it. */
    drop() {
      shared.closeSocket(this);
      this.healthy = false;
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
      const delay = shared.backoffDelay(this.attempts, this.holdUntil);
      this.onState(shared.waitingState(this.attempts));
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    }

    /** Test hook: drop the socket as a network failure would; no reconnect before holdMs. */
    debugDrop(holdMs = 0) {
      this.holdUntil = Date.now() + holdMs;
      if (this.socket) this.lost(1006);
    }
  }

  /** A banner above the page's content, from nodes and strings (never HTML); empty hides it. */
  function bannerShower(banner) {
    return function showBanner(content) {
      banner.replaceChildren(...content);
      banner.hidden = content.length === 0;
    };
  }

  /**
   * The LiveSocket's onEnd: asks to log in (4401), lets `otherCode` explain other codes
   * (true when it did), or shows the server's reason.
   */
  function endedHandler({ showBanner, setConnection, loginUrl, watching, otherCode }) {
    return function ended(code, error) {
      if (code === 4401) {
        const link = document.createElement("a");
        link.href = `${loginUrl}?next=${encodeURIComponent(location.pathname)}`;
        link.textContent = "Log in";
        showBanner([link, ` to watch ${watching}.`]);
        setConnection("ended", "Login required");
        return;
      }
      if (otherCode && otherCode(code, error)) return;
      showBanner([(error && error.message) || "The server closed the connection."]);
    };
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
    return date ? shared.formatClock(date, { seconds: true }) : "";
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

  window.sensorsCommon = {
    readConfig,
    connectionIndicator,
    LiveSocket,
    bannerShower,
    endedHandler,
    socketUrl: shared.socketUrl,
    compareIds,
    formatValue,
    metricLabel,
    toDate,
    formatAgo,
    formatDateTime,
    renderTime,
    alertCondition,
    alertTitle,
    plural: shared.plural,
  };
})();
