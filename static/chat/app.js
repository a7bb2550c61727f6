/* The chat page: a session started over HTTP, then one WebSocket per page (docs: chat/consumers.py).
 *
 * Every server event is applied idempotently by message id, so history replayed after a
 * reconnect, or an event seen twice, never shows anything twice. Message text only ever
 * reaches the page as text (the person's) or as Markdown rendered by marked with raw HTML
 * escaped and then sanitised by DOMPurify (the assistant's).
 */
(function () {
  "use strict";

  const shared = window.chatsite;
  const { codePoints, renderMarkdown } = shared;
  const config = JSON.parse(document.getElementById("chat-config").textContent);

  const STORAGE_TOKEN = "chatsite.chat.token";
  const STORAGE_NAME = "chatsite.chat.name";
  const LOCAL_SORT_BASE = 1e15; // unsent messages sort after every stored one
  const CLOSE_SESSION_GONE = 4401;
  // Sessions expire after CHAT_SESSION_TTL of inactivity; a person using the page keeps
  // theirs alive (at most one refresh per quarter of that time).
  const REFRESH_EVERY_MS = Math.max(30000, (config.sessionTtlSeconds * 1000) / 4);
  const UNSETTLED = new Set(["pending", "streaming", "failed"]);
  // Error codes a `stop` frame can get back (docs/protocol.md).
  const STOP_ERRORS = new Set(["not_found", "not_stoppable", "forbidden"]);
  const ASSISTANT_URL = config.assistantUrl || "/api/chat/assistant";

  const byId = (id) => document.getElementById(id);
  const ui = {
    app: byId("app"),
    sessionName: byId("session-name"),
    conn: byId("conn-status"),
    connLabel: byId("conn-label"),
    newChat: byId("new-chat"),
    main: byId("main"),
    startView: byId("start-view"),
    startForm: byId("start-form"),
    startName: byId("start-name"),
    startError: byId("start-error"),
    startButton: byId("start-button"),
    chatView: byId("chat-view"),
    empty: byId("chat-empty"),
    list: byId("messages"),
    expired: byId("expired"),
    expiredNew: byId("expired-new"),
    composer: byId("composer"),
    input: byId("composer-input"),
    send: byId("send-button"),
    stop: byId("stop-button"),
    modelLine: byId("model-line"), // absent when the offline notice says who answers
    counter: byId("composer-counter"),
    toasts: byId("toasts"),
    template: byId("message-template"),
  };

  const state = {
    token: null,
    name: "",
    socket: null,
    ready: false, // the socket is open and its history has arrived
    gone: false, // the session is unknown or expired
    attempts: 0,
    reconnectTimer: null,
    heartbeatTimer: null,
    lastFrameAt: 0,
    lastRefreshAt: 0,
    holdUntil: 0, // test hook: no reconnect before this time
    entries: new Map(), // key ("m:<id>", "c:<client_id>", "r:<user id>") -> entry
    running: new Set(), // entries of replies still being written (pending or streaming)
    outbox: new Map(), // client_id -> {text, entry, sent, heldUntil}
    localSeq: 0,
    socketUrls: [],
  };

  // --- views and status --------------------------------------------------------------------

  function showView(view) {
    ui.app.dataset.view = view;
    ui.startView.hidden = view !== "start";
    ui.chatView.hidden = view !== "chat";
    ui.composer.hidden = view !== "chat" || state.gone;
    ui.expired.hidden = !(view === "chat" && state.gone);
    ui.newChat.hidden = view !== "chat";
    ui.sessionName.textContent = view === "chat" ? state.name : "Welcome";
    ui.sessionName.title = view === "chat" ? state.name : "";
  }

  const CONNECTION_LABELS = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    ended: "Session ended",
  };

  function setConnection(kind) {
    if (ui.conn.dataset.state === kind) return;
    ui.conn.dataset.state = kind;
    ui.connLabel.textContent = CONNECTION_LABELS[kind];
  }

  function toast(text, options) {
    shared.toast(ui.toasts, text, options);
  }

  function showExpired() {
    state.gone = true;
    state.ready = false;
    stopSocket();
    setConnection("ended");
    showView("chat");
    updateEmpty();
    updateComposer();
    renderStopButton();
    ui.expiredNew.focus();
  }

  // --- message entries ---------------------------------------------------------------------

  function createEntry(key, role, sort, data) {
    const el = shared.cloneTemplate(ui.template);
    el.classList.add(`msg--${role}`);
    el.dataset.role = role;
    el.querySelector(".msg__who").textContent = role === "user" ? "You said:" : "The assistant said:";
    el.querySelector(".msg__retry").addEventListener("click", () => retryReply(entry));
    const text = data.text || "";
    const entry = { key, role, sort, el, data, text, chars: codePoints(text), retrying: false, stopping: false };
    if (data.id !== undefined) el.dataset.id = String(data.id);
    state.entries.set(key, entry);
    placeEntry(entry);
    return entry;
  }

  function rekeyEntry(entry, key, sort) {
    state.entries.delete(entry.key);
    entry.key = key;
    entry.sort = sort;
    state.entries.set(key, entry);
    placeEntry(entry);
  }

  function placeEntry(entry) {
    shared.placeSorted(ui.list, entry.el, entry.sort);
    updateEmpty();
  }

  function updateEmpty() {
    ui.empty.hidden = state.entries.size > 0 || state.gone;
  }

  function storedEntry(id) {
    return state.entries.get(`m:${id}`);
  }

  /** The entry of a stored message: existing, adopted from a local stand-in, or new. */
  function entryFor(message) {
    const existing = storedEntry(message.id);
    if (existing) return existing;
    const standIn =
      message.role === "user"
        ? message.client_id && state.outbox.get(message.client_id)?.entry
        : message.reply_to && state.entries.get(`r:${message.reply_to}`);
    if (message.role === "user" && message.client_id) state.outbox.delete(message.client_id);
    if (!standIn) return createEntry(`m:${message.id}`, message.role, message.id, { ...message });
    rekeyEntry(standIn, `m:${message.id}`, message.id);
    standIn.data.id = message.id;
    standIn.el.dataset.id = String(message.id);
    return standIn;
  }

  /** Apply a whole stored message (history, ack, message, reply, retrying): it replaces ours. */
  function applyMessage(message) {
    const entry = entryFor(message);
    entry.data = { ...entry.data, ...message };
    entry.el.dataset.id = String(message.id);
    entry.text = message.text;
    entry.chars = codePoints(message.text);
    if (message.status !== "failed") entry.error = null;
    entry.retrying = false;
    entry.stopping = false; // the server's word on the reply: a stop still due comes again
    renderEntry(entry);
    return entry;
  }

  /** A typing stand-in for the reply to a user message, until the reply itself shows up. */
  function expectReply(userId) {
    for (const entry of state.entries.values()) {
      if (entry.role === "assistant" && entry.data.reply_to === userId) return;
    }
    const entry = createEntry(`r:${userId}`, "assistant", userId + 0.5, {
      status: "pending",
      text: "",
      reply_to: userId,
      created_at: new Date().toISOString(),
    });
    renderEntry(entry);
  }

  function assistantEntry(messageId, replyTo) {
    return entryFor({ id: messageId, role: "assistant", reply_to: replyTo, text: "", status: "pending" });
  }

  function renderEntry(entry) {
    const { el, data } = entry;
    const busy = entry.role === "assistant" && shared.replyRunning(data.status);
    el.dataset.status = data.status;
    el.setAttribute("aria-busy", busy ? "true" : "false");
    const body = el.querySelector(".msg__body");
    if (entry.role === "user") body.textContent = entry.text;
    else if (entry.text) renderMarkdown(body, entry.text);
    else body.replaceChildren();
    el.querySelector(".msg__typing").hidden = !busy;
    shared.renderMessageTime(el, data.created_at);
    el.querySelector(".msg__state").textContent = stateLabel(entry);
    shared.renderReplyError(entry, entry.role === "assistant" && entry.data.status === "failed");
    shared.renderStoppedMark(entry, entry.role === "assistant" && data.status === "stopped");
    if (busy && state.entries.get(entry.key) === entry) state.running.add(entry);
    else state.running.delete(entry);
    renderStopButton();
  }

  /** The composer's Stop button: there while the assistant is writing a reply. */
  function renderStopButton() {
    if (!ui.stop) return;
    const hide = state.running.size === 0 || state.gone;
    if (hide && !ui.stop.hidden && document.activeElement === ui.stop) ui.input.focus();
    ui.stop.hidden = hide;
  }

  function stateLabel(entry) {
    const item = entry.data.client_id && state.outbox.get(entry.data.client_id);
    if (entry.role === "user" && item && item.entry === entry) {
      if (item.heldUntil > Date.now()) return "Waiting to send…";
      return item.sent ? "Sending…" : "Waiting for the connection…";
    }
    if (entry.role === "assistant" && entry.retrying) return "Retrying…";
    if (entry.role === "assistant" && entry.stopping) return "Stopping…";
    return "";
  }

  function clearMessages() {
    state.entries.clear();
    state.outbox.clear();
    state.running.clear();
    renderStopButton();
    ui.list.replaceChildren();
    updateEmpty();
  }

  // --- scrolling ----------------------------------------------------------------------------

  function nearBottom() {
    const main = ui.main;
    return main.scrollHeight - main.scrollTop - main.clientHeight < 120;
  }

  function withScroll(update) {
    const stick = nearBottom();
    update();
    if (stick) ui.main.scrollTop = ui.main.scrollHeight;
  }

  // --- server events -----------------------------------------------------------------------

  const handlers = {
    history(frame) {
      frame.messages.forEach(applyMessage);
      state.ready = true;
      state.attempts = 0;
      setConnection("connected");
      flushOutbox();
    },
    ack(frame) {
      const wasMine = state.outbox.has(frame.client_id);
      const entry = applyMessage(frame.message);
      if (wasMine) expectReply(entry.data.id);
    },
    message(frame) {
      applyMessage(frame.message);
      if (frame.message.role === "user") expectReply(frame.message.id);
    },
    delta: applyDelta,
    reply(frame) {
      applyMessage(frame.message);
    },
    retrying(frame) {
      applyMessage(frame.message);
    },
    stopped(frame) {
      applyMessage(frame.message); // status "stopped", with the text written so far
    },
    error: applyError,
    pong() {},
  };

  function applyDelta(frame) {
    const entry = assistantEntry(frame.message_id, frame.reply_to);
    if (shared.applyDeltaTo(entry, frame)) renderEntry(entry);
  }

  function applyError(frame) {
    if (frame.code === "inference_failed") {
      const entry = assistantEntry(frame.message_id, frame.reply_to);
      entry.data.status = "failed";
      entry.text = "";
      entry.chars = 0;
      entry.error = frame.message;
      entry.retrying = false;
      entry.stopping = false;
      renderEntry(entry);
      return;
    }
    if (frame.code === "session_expired" || frame.code === "session_not_found") {
      state.gone = true;
      return;
    }
    if (frame.code === "rate_limited") {
      rateLimited(frame);
      return;
    }
    if (STOP_ERRORS.has(frame.code) && settleStopping()) {
      // not_stoppable: the reply ended meanwhile, and its own frame shows how.
      if (frame.code !== "not_stoppable") toast(frame.message || "The reply could not be stopped.", { kind: "error" });
      return;
    }
    const item = frame.client_id && state.outbox.get(frame.client_id);
    if (item) dropUnsent(frame.client_id, item);
    settleRetrying();
    settleStopping();
    toast(frame.message || "Something went wrong.", { kind: "error" });
  }

  /** A retry the server refused: show the reply as it was. */
  function settleRetrying() {
    for (const entry of state.entries.values()) {
      if (entry.retrying) {
        entry.retrying = false;
        renderEntry(entry);
      }
    }
  }

  /** A stop the server refused: show the reply as it is. Returns whether one was asked. */
  function settleStopping() {
    let asked = false;
    for (const entry of state.entries.values()) {
      if (entry.stopping) {
        entry.stopping = false;
        asked = true;
        renderEntry(entry);
      }
    }
    return asked;
  }

  function rateLimited(frame) {
    const seconds = Math.max(1, Math.round(frame.retry_after || 1));
    toast(`You're sending messages quickly. Please wait ${seconds} s.`, { kind: "warn" });
    const item = frame.client_id && state.outbox.get(frame.client_id);
    if (item) {
      item.sent = false;
      item.heldUntil = Date.now() + seconds * 1000;
      renderEntry(item.entry);
      setTimeout(flushOutbox, seconds * 1000 + 50);
    }
    settleRetrying();
    settleStopping();
  }

  /** A message the server refused for good: take it off the page, give the text back. */
  function dropUnsent(clientId, item) {
    state.outbox.delete(clientId);
    state.entries.delete(item.entry.key);
    item.entry.el.remove();
    if (!ui.input.value) {
      ui.input.value = item.text;
      updateComposer();
    }
    updateEmpty();
  }

  function handleFrame(frame) {
    const handler = frame && handlers[frame.type];
    if (handler) withScroll(() => handler(frame));
  }

  // --- the socket ------------------------------------------------------------------------

  /** Where to resume: after the last message, or before the oldest one still unsettled. */
  function resumeAfter() {
    let last = null;
    let firstUnsettled = null;
    for (const entry of state.entries.values()) {
      const id = entry.data.id;
      if (!entry.key.startsWith("m:")) continue;
      last = last === null ? id : Math.max(last, id);
      const unsettled = entry.role === "assistant" && UNSETTLED.has(entry.data.status);
      if (unsettled) firstUnsettled = firstUnsettled === null ? id : Math.min(firstUnsettled, id);
    }
    if (firstUnsettled !== null) return Math.max(0, firstUnsettled - 1);
    return last;
  }

  function socketUrl() {
    const after = resumeAfter();
    return shared.socketUrl(`${config.socketPath}${encodeURIComponent(state.token)}`, after === null ? "" : { after });
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token || state.gone) return;
    const url = socketUrl();
    state.socketUrls.push(url);
    state.ready = false;
    setConnection(state.attempts ? shared.waitingState(state.attempts) : "connecting");
    shared.openSocket(state, url, { onFrame: handleFrame, onLost: socketLost });
  }

  /** Forget the current socket (its late events are ignored) and close it. */
  function stopSocket() {
    shared.closeSocket(state);
    state.ready = false;
  }

  function socketLost(code) {
    stopSocket();
    for (const item of state.outbox.values()) {
      item.sent = false;
      renderEntry(item.entry);
    }
    settleStopping(); // the history after the reconnect tells whether it stopped
    if (code === CLOSE_SESSION_GONE || state.gone) {
      showExpired();
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    state.attempts += 1;
    const delay = shared.backoffDelay(state.attempts, state.holdUntil);
    setConnection(shared.waitingState(state.attempts));
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function sendFrame(frame) {
    if (!state.ready || !state.socket) return false;
    state.socket.send(JSON.stringify(frame));
    return true;
  }

  function flushOutbox() {
    const now = Date.now();
    for (const [clientId, item] of state.outbox) {
      if (item.heldUntil > now) break; // keep the order: nothing overtakes a held message
      if (item.sent) continue;
      if (!sendFrame({ type: "message", text: item.text, client_id: clientId })) break;
      item.sent = true;
      renderEntry(item.entry);
    }
  }

  // --- sending -----------------------------------------------------------------------------

  function submitMessage(text) {
    state.lastRefreshAt = Date.now(); // a stored message extends the session too
    const clientId = shared.randomId();
    state.localSeq += 1;
    withScroll(() => {
      const entry = createEntry(`c:${clientId}`, "user", LOCAL_SORT_BASE + state.localSeq, {
        status: "done",
        text,
        client_id: clientId,
        created_at: new Date().toISOString(),
      });
      state.outbox.set(clientId, { text, entry, sent: false, heldUntil: 0 });
      renderEntry(entry);
    });
    ui.main.scrollTop = ui.main.scrollHeight;
    flushOutbox();
  }

  function retryReply(entry) {
    if (entry.retrying || entry.data.id === undefined) return;
    if (!sendFrame({ type: "retry", message_id: entry.data.id })) {
      toast("Not connected right now. Retry once the connection is back.", { kind: "warn" });
      return;
    }
    entry.retrying = true;
    renderEntry(entry);
  }

  /** Stop every reply still being written (the person means "stop the assistant"). */
  function stopReplies() {
    const running = [...state.running].filter((entry) => !entry.stopping);
    if (!running.length) return;
    if (!state.ready) {
      toast("Not connected right now. Stop once the connection is back.", { kind: "warn" });
      return;
    }
    for (const entry of running) {
      // A reply the page has not seen yet is named by its question (the server resolves it).
      const messageId = entry.data.id !== undefined ? entry.data.id : entry.data.reply_to;
      if (!sendFrame({ type: "stop", message_id: messageId })) break;
      entry.stopping = true;
      renderEntry(entry);
    }
  }

  function composerText() {
    return ui.input.value;
  }

  function updateComposer() {
    const text = composerText();
    const length = codePoints(text);
    const max = config.maxMessageChars;
    const over = shared.renderCounter(ui.counter, length, max);
    ui.send.disabled = !text.trim() || over || state.gone;
    growComposer();
  }

  function growComposer() {
    withScroll(() => shared.growTextarea(ui.input));
  }

  function trySend() {
    updateComposer();
    if (ui.send.disabled) return;
    submitMessage(composerText());
    ui.input.value = "";
    updateComposer();
    ui.input.focus();
  }

  // --- sessions ------------------------------------------------------------------------------

  async function api(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    return { status: response.status, data };
  }

  function sessionUrl(token, suffix) {
    return `${config.sessionsUrl}/${encodeURIComponent(token)}${suffix}`;
  }

  function enterSession(token, name, messages) {
    state.lastRefreshAt = Date.now();
    state.token = token;
    state.name = name;
    state.gone = false;
    state.attempts = 0;
    clearMessages();
    showView("chat");
    withScroll(() => messages.forEach(applyMessage));
    ui.main.scrollTop = ui.main.scrollHeight;
    updateComposer();
    connect();
  }

  async function resumeSession(token) {
    state.token = token;
    state.name = localStorage.getItem(STORAGE_NAME) || "";
    state.lastRefreshAt = Date.now();
    let result;
    try {
      result = await api(sessionUrl(token, "/refresh"));
    } catch {
      result = null; // the server is unreachable: the socket keeps trying
    }
    if (result && result.status === 404) {
      state.gone = true;
      clearMessages();
      showExpired();
      return;
    }
    const ok = result && result.status === 200;
    if (ok) localStorage.setItem(STORAGE_NAME, result.data.name);
    enterSession(token, ok ? result.data.name : state.name, ok ? result.data.messages : []);
  }

  async function startSession(event) {
    event.preventDefault();
    const name = ui.startName.value.trim();
    if (!name) {
      showStartError("Type a display name to start.");
      return;
    }
    ui.startButton.disabled = true;
    try {
      const { status, data } = await api(config.sessionsUrl, { name });
      if (status !== 201) {
        showStartError(startErrorText(status, data));
        return;
      }
      localStorage.setItem(STORAGE_TOKEN, data.token);
      localStorage.setItem(STORAGE_NAME, data.name);
      enterSession(data.token, data.name, data.messages);
      ui.input.focus();
    } catch {
      showStartError("Could not reach the server. Check the connection and try again.");
    } finally {
      ui.startButton.disabled = false;
    }
  }

  /** The person is here: extend the session now and then, and notice if it has expired. */
  async function keepSessionAlive({ force = false } = {}) {
    const token = state.token;
    const recent = Date.now() - state.lastRefreshAt < REFRESH_EVERY_MS;
    if (!token || state.gone || (recent && !force)) return;
    state.lastRefreshAt = Date.now();
    try {
      const { status } = await api(sessionUrl(token, "/refresh"));
      if (status === 404 && token === state.token) showExpired();
    } catch {
      // Offline: the socket's reconnects will tell.
    }
  }

  function startErrorText(status, data) {
    if (status === 429) return "Too many new conversations from here. Please wait a minute.";
    return (data.error && data.error.message) || "Could not start the conversation.";
  }

  function showStartError(text) {
    ui.startError.textContent = text;
    ui.startError.hidden = !text;
    if (text) ui.startName.focus();
  }

  function showStart() {
    stopSocket();
    state.token = null;
    state.gone = false;
    clearMessages();
    setConnection("idle");
    showStartError("");
    ui.startName.value = state.name || localStorage.getItem(STORAGE_NAME) || "";
    showView("start");
    ui.startName.focus();
  }

  function newChat() {
    localStorage.removeItem(STORAGE_TOKEN);
    showStart();
  }

  function followOtherTab(event) {
    if (event.key !== STORAGE_TOKEN || event.newValue === state.token) return;
    if (event.newValue) {
      stopSocket();
      resumeSession(event.newValue);
    } else {
      showStart();
    }
  }

  // --- which model answers -------------------------------------------------------------------

  /** Fill the line under the header from GET /api/chat/assistant (text only). */
  async function showAssistant() {
    if (!ui.modelLine) return; // the offline notice says it instead
    let info;
    try {
      const response = await fetch(ASSISTANT_URL, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) return;
      info = await response.json();
    } catch {
      return; // not worth a toast: the line just stays hidden
    }
    renderAssistant(info || {});
  }

  function renderAssistant(info) {
    const provider = typeof info.provider === "string" ? info.provider : "";
    if (!provider) return;
    const model = typeof info.model === "string" ? info.model : "";
    const url = withoutCredentials(typeof info.url === "string" ? info.url : "");
    const part = (tag, className, text) => {
      const el = document.createElement(tag);
      el.className = className;
      el.textContent = text;
      return el;
    };
    const line = ui.modelLine;
    line.dataset.provider = provider;
    if (provider === "offline") {
      line.replaceChildren("Answered by the offline stand-in (not a real model): replies are canned.");
    } else {
      line.replaceChildren(
        "Answered by ",
        part("strong", "model-line__model", model || "the provider's default model"),
        " via ",
        part("span", "model-line__provider", provider),
        ...(url ? [" at ", part("span", "model-line__url", url)] : []),
      );
    }
    line.title = line.textContent;
    line.hidden = false;
  }

  /** The URL with any user name and password taken out (they never belong on the page). */
  function withoutCredentials(url) {
    try {
      const parsed = new URL(url);
      if (!parsed.username && !parsed.password) return url;
      parsed.username = "";
      parsed.password = "";
      return parsed.toString();
    } catch {
      return /@/.test(url) ? "" : url; // unreadable and maybe secret: leave it out
    }
  }

  // --- wiring --------------------------------------------------------------------------------

  function wire() {
    ui.startForm.addEventListener("submit", startSession);
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      trySend();
    });
    ui.input.addEventListener("input", updateComposer);
    if (ui.stop) ui.stop.addEventListener("click", stopReplies);
    ui.input.addEventListener("keydown", (event) => {
      if (shared.isSendKey(event)) {
        event.preventDefault();
        trySend();
      }
    });
    ui.newChat.addEventListener("click", newChat);
    ui.expiredNew.addEventListener("click", newChat);
    window.addEventListener("storage", followOtherTab);
    for (const name of ["keydown", "pointerdown", "focus"]) {
      window.addEventListener(name, () => keepSessionAlive(), { passive: true });
    }
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") keepSessionAlive();
    });
    window.addEventListener("online", () => {
      if (state.token && !state.socket && !state.gone) connect();
    });
    window.addEventListener("offline", () => {
      if (!state.ready && state.token && !state.gone) setConnection("offline");
    });
  }

  function boot() {
    wire();
    showAssistant();
    const token = localStorage.getItem(STORAGE_TOKEN);
    if (token) resumeSession(token);
    else showStart();
  }

  /** Hooks for the browser tests (and for curious people in the console). */
  window.chatApp = {
    /** Drop the socket as a network failure would; reconnect no sooner than holdMs later. */
    debugDropSocket(holdMs = 0) {
      state.holdUntil = Date.now() + holdMs;
      if (state.socket) socketLost(1006);
    },
    /** Refresh the session now, as activity after a long pause would. */
    debugKeepAlive() {
      return keepSessionAlive({ force: true });
    },
    get connection() {
      return ui.conn.dataset.state;
    },
    get socketUrls() {
      return state.socketUrls.slice();
    },
  };

  boot();
})();
