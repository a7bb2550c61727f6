/* The rooms page: a list of rooms, and one WebSocket per room the person has open
 * (protocol: chat/rooms/consumers.py).
 *
 * Every open room keeps its socket while it is in the background, so its members, typing
 * and unread count stay live. Server events are applied idempotently by message id, so
 * history replayed after a reconnect (`?after=`), or an event seen twice, never shows
 * anything twice. People's text only ever reaches the page through textContent; the
 * assistant's is Markdown rendered by marked with raw HTML escaped, then sanitised by
 * DOMPurify (the same rules as the assistant chat page, static/chat/app.js).
 */
(function () {
  "use strict";

  const shared = window.chatsite;
  const { codePoints, plural, randomId, renderMarkdown } = shared;
  const clone = shared.cloneTemplate;
  const config = JSON.parse(document.getElementById("rooms-config").textContent);

  const STORAGE_NAME = "chatsite.rooms.name";
  const STORAGE_CLIENT = "chatsite.rooms.client";
  const STORAGE_OPEN = "chatsite.rooms.open"; // slugs of the open rooms, in tab order
  const STORAGE_ACTIVE = "chatsite.rooms.active";
  const STORAGE_READ = "chatsite.rooms.read"; // slug -> the last message id seen there
  const PING_EVERY_MS = config.pingEveryMs;
  const TYPING_SHOW_MS = 3000;
  const TYPING_SEND_EVERY_MS = 2000;
  const DIRECTORY_EVERY_MS = 15000;
  const LOCAL_SORT_BASE = 1e15; // unsent messages sort after every stored one
  const UNSETTLED = new Set(["pending", "streaming", "failed"]);
  const SLUG = /^[a-z0-9][a-z0-9_-]{0,49}$/;
  const ASSISTANT = config.assistantName;
  const CLOSE_BAD_REQUEST = 4400;
  const CLOSE_NAME_TAKEN = 4403;
  const CLOSE_NOT_FOUND = 4404;
  const CLOSE_FULL = 4409;
  // Error frames that announce the close that follows them.
  const CLOSING_CODES = new Set(["name_taken", "room_full", "invalid_name", "invalid_after"]);
  // Error codes a `stop` frame can get back (docs/protocol.md).
  const STOP_ERRORS = new Set(["not_found", "not_stoppable", "forbidden"]);

  const byId = (id) => document.getElementById(id);
  const ui = {
    app: byId("app"),
    title: byId("room-title"),
    conn: byId("conn-status"),
    connLabel: byId("conn-label"),
    membersToggle: byId("members-toggle"),
    membersToggleCount: byId("members-toggle-count"),
    changeName: byId("change-name"),
    meName: byId("me-name"),
    sidebar: byId("sidebar"),
    tabs: byId("tabs"),
    tabsEmpty: byId("tabs-empty"),
    showDirectory: byId("show-directory"),
    directory: byId("directory"),
    directoryStatus: byId("directory-status"),
    main: byId("main"),
    startView: byId("start-view"),
    startForm: byId("start-form"),
    startName: byId("start-name"),
    startError: byId("start-error"),
    startCancel: byId("start-cancel"),
    homeView: byId("home-view"),
    panels: byId("panels"),
    membersPanel: byId("members-panel"),
    membersTitle: byId("members-title"),
    membersClose: byId("members-close"),
    members: byId("members"),
    footer: byId("footer"),
    typing: byId("typing"),
    composer: byId("composer"),
    input: byId("composer-input"),
    send: byId("send-button"),
    counter: byId("composer-counter"),
    toasts: byId("toasts"),
    templates: {
      tab: byId("tab-template"),
      directory: byId("directory-template"),
      panel: byId("panel-template"),
      message: byId("message-template"),
      member: byId("member-template"),
    },
  };

  const state = {
    name: "",
    clientId: "",
    view: "loading",
    rooms: new Map(), // slug -> room, in tab order
    active: null, // slug of the room shown, or null for the list
    directory: [], // rooms from the API
    directoryTimer: null,
    read: {}, // slug -> last message id seen
  };

  // --- small helpers -----------------------------------------------------------------------

  function readJson(key, fallback) {
    try {
      const value = JSON.parse(localStorage.getItem(key));
      return value === null ? fallback : value;
    } catch {
      return fallback;
    }
  }

  function toast(text, options) {
    shared.toast(ui.toasts, text, options);
  }

  // --- rooms: state and DOM ------------------------------------------------------------------

  function createRoom(slug, title) {
    const panel = clone(ui.templates.panel);
    panel.id = `panel-${slug}`;
    panel.dataset.slug = slug;
    const tab = clone(ui.templates.tab);
    tab.dataset.slug = slug;
    const tabButton = tab.querySelector(".tab__open");
    tabButton.id = `tab-${slug}`;
    tabButton.setAttribute("aria-controls", panel.id);
    panel.setAttribute("aria-labelledby", tabButton.id);
    const room = {
      slug,
      title: title || slug,
      capacity: null,
      me: null, // the name the server gave us in this room
      socket: null,
      ready: false, // the socket is open and "joined" has arrived
      loaded: false, // a "joined" has arrived at least once
      attempts: 0,
      reconnectTimer: null,
      heartbeatTimer: null,
      lastFrameAt: 0,
      holdUntil: 0, // test hook: no reconnect before this time
      closeFrame: null, // the error frame that announced a close
      problem: null, // "name_taken" | "room_full" | "not_found": not joined, no retries
      skipAfter: false,
      connState: "idle",
      entries: new Map(), // "m:<id>" or "c:<client_id>" -> entry
      outbox: new Map(), // client_id -> {text, entry, sent, heldUntil}
      localSeq: 0,
      online: new Set(),
      known: new Set(), // everyone seen here: members and authors
      typing: new Map(), // name -> timer
      lastTypingSent: 0,
      unread: 0,
      draft: "",
      scroll: null, // scrollTop to restore, or null for the bottom
      socketUrls: [],
      panel,
      list: panel.querySelector(".messages"),
      empty: panel.querySelector(".panel__empty"),
      tab,
    };
    panel.querySelector(".messages").setAttribute("aria-label", `Messages in ${room.title}`);
    tabButton.addEventListener("click", () => activate(slug));
    tabButton.addEventListener("keydown", (event) => moveTabFocus(event, slug));
    tab.querySelector(".tab__close").addEventListener("click", () => closeRoom(slug));
    panel.querySelector(".panel__problem-action").addEventListener("click", () => solveProblem(room));
    state.rooms.set(slug, room);
    ui.panels.append(panel);
    ui.tabs.append(tab);
    renderTab(room);
    return room;
  }

  function activeRoom() {
    return state.active ? state.rooms.get(state.active) || null : null;
  }

  function saveOpenRooms() {
    localStorage.setItem(STORAGE_OPEN, JSON.stringify([...state.rooms.keys()]));
  }

  function openRoom(slug, title) {
    if (!SLUG.test(slug)) return;
    let room = state.rooms.get(slug);
    if (!room) {
      room = createRoom(slug, title);
      saveOpenRooms();
      connect(room);
    }
    activate(slug);
  }

  function closeRoom(slug) {
    const room = state.rooms.get(slug);
    if (!room) return;
    const order = [...state.rooms.keys()];
    const index = order.indexOf(slug);
    stopSocket(room);
    room.closed = true;
    for (const timer of room.typing.values()) clearTimeout(timer);
    room.panel.remove();
    room.tab.remove();
    state.rooms.delete(slug);
    saveOpenRooms();
    if (state.active === slug) {
      const next = order[index + 1] || order[index - 1];
      activate(next && next !== slug ? next : null);
    }
    renderDirectory();
    renderTitle();
  }

  /** Show one room (or, with null, the room list). */
  function activate(slug) {
    const previous = activeRoom();
    if (previous && previous.slug !== slug) {
      previous.draft = ui.input.value;
      previous.scroll = nearBottom() ? null : ui.main.scrollTop;
      previous.panel.hidden = true;
    }
    state.active = slug && state.rooms.has(slug) ? slug : null;
    localStorage.setItem(STORAGE_ACTIVE, state.active || "");
    const hash = state.active ? `#${state.active}` : "";
    if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
    const room = activeRoom();
    ui.app.dataset.nav = room ? "room" : "rooms";
    ui.app.dataset.members = "closed";
    ui.membersToggle.setAttribute("aria-expanded", "false");
    if (room) room.panel.hidden = false;
    if (room && previous !== room) ui.input.value = room.draft;
    for (const each of state.rooms.values()) renderTab(each);
    renderView();
    if (room) {
      markAllRead(room);
      ui.main.scrollTop = room.scroll === null ? ui.main.scrollHeight : room.scroll;
    }
  }

  function moveTabFocus(event, slug) {
    const order = [...state.rooms.keys()];
    const index = order.indexOf(slug);
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
    if (!step || order.length < 2) return;
    event.preventDefault();
    const next = order[(index + step + order.length) % order.length];
    activate(next);
    state.rooms.get(next).tab.querySelector(".tab__open").focus();
  }

  // --- views --------------------------------------------------------------------------------

  function renderView() {
    const view = state.view;
    const room = activeRoom();
    ui.app.dataset.view = view;
    const rooms = view === "rooms";
    ui.startView.hidden = view !== "start";
    ui.sidebar.hidden = !rooms;
    ui.homeView.hidden = !rooms || room !== null;
    ui.panels.hidden = !rooms;
    ui.membersPanel.hidden = !rooms || room === null;
    ui.membersToggle.hidden = !rooms || room === null;
    ui.footer.hidden = !rooms || room === null;
    ui.changeName.hidden = !state.name || view === "start";
    ui.meName.textContent = state.name;
    ui.changeName.title = state.name ? `You are “${state.name}”. Change your name` : "";
    ui.tabsEmpty.hidden = state.rooms.size > 0;
    renderHeader();
    renderMembers();
    renderTyping();
    updateComposer();
  }

  const CONNECTION_LABELS = {
    idle: "Not connected",
    connecting: "Connecting…",
    connected: "Connected",
    reconnecting: "Reconnecting…",
    offline: "Offline",
    ended: "Not in the room",
  };

  function renderHeader() {
    const shown = state.view === "rooms" && ui.app.dataset.nav === "room";
    const room = shown ? activeRoom() : null;
    ui.title.textContent = room ? room.title : state.view === "start" ? "Welcome" : "Rooms";
    ui.title.title = ui.title.textContent;
    const kind = room ? room.connState : "idle";
    ui.conn.hidden = !room;
    ui.conn.dataset.state = kind;
    ui.connLabel.textContent = CONNECTION_LABELS[kind];
  }

  function setConnection(room, kind) {
    room.connState = kind;
    renderTab(room);
    if (room === activeRoom()) {
      renderHeader();
      updateComposer();
    }
  }

  function renderTitle() {
    let total = 0;
    for (const room of state.rooms.values()) total += room.unread;
    document.title = total ? `(${total}) Rooms` : "Rooms";
  }

  function renderTab(room) {
    const button = room.tab.querySelector(".tab__open");
    const selected = room.slug === state.active;
    room.tab.dataset.state = room.problem ? "ended" : room.connState;
    room.tab.classList.toggle("tab--active", selected);
    button.setAttribute("aria-selected", selected ? "true" : "false");
    button.tabIndex = selected || (!state.active && room === state.rooms.values().next().value) ? 0 : -1;
    room.tab.querySelector(".tab__title").textContent = room.title;
    button.title = room.title;
    const badge = room.tab.querySelector(".tab__unread");
    badge.hidden = room.unread === 0;
    badge.textContent = room.unread > 99 ? "99+" : String(room.unread);
    const label = room.tab.querySelector(".tab__unread-label");
    label.textContent = room.unread ? `, ${plural(room.unread, "unread message")}` : "";
    room.tab.querySelector(".tab__close").setAttribute("aria-label", `Close ${room.title}`);
    room.panel.querySelector(".messages").setAttribute("aria-label", `Messages in ${room.title}`);
  }

  function renderProblem(room) {
    const box = room.panel.querySelector(".panel__problem");
    box.hidden = !room.problem;
    if (!room.problem) return;
    const listed = state.directory.find((r) => r.slug === room.slug);
    const capacity = room.capacity || (listed && listed.capacity);
    const [text, action] = {
      name_taken: [
        `Someone in this room is already using the name “${state.name}”. Pick another name to join.`,
        "Change name",
      ],
      room_full: [
        `This room is full${capacity ? ` (${plural(capacity, "member")} at most)` : ""}. Try again when someone leaves.`,
        "Try again",
      ],
      not_found: ["This room does not exist any more.", "Close it"],
    }[room.problem];
    box.querySelector(".panel__problem-text").textContent = text;
    box.querySelector(".panel__problem-action").textContent = action;
  }

  function solveProblem(room) {
    if (room.problem === "name_taken") {
      showStart({ editing: true });
      return;
    }
    if (room.problem === "not_found") {
      closeRoom(room.slug);
      return;
    }
    setProblem(room, null);
    room.attempts = 0;
    connect(room);
  }

  function setProblem(room, problem) {
    room.problem = problem;
    renderProblem(room);
    renderTab(room);
    updateEmpty(room);
    if (room === activeRoom()) updateComposer();
  }

  // --- members and typing ------------------------------------------------------------------

  function renderMembers() {
    const room = activeRoom();
    if (!room) return;
    const me = room.me || state.name;
    const names = [...new Set([...room.online, ...room.known])].filter((n) => n !== ASSISTANT);
    names.sort((a, b) => {
      const online = Number(room.online.has(b)) - Number(room.online.has(a));
      return online || a.localeCompare(b);
    });
    const items = names.map((name) => {
      const item = clone(ui.templates.member);
      const online = room.ready && room.online.has(name);
      item.dataset.online = online ? "true" : "false";
      item.dataset.name = name;
      item.querySelector(".member__name").textContent = name === me ? `${name} (you)` : name;
      item.querySelector(".member__state").textContent = online ? "online" : "offline";
      return item;
    });
    ui.members.replaceChildren(...items);
    const count = room.ready ? room.online.size : 0;
    ui.membersTitle.textContent = `Members · ${count} online`;
    ui.membersToggleCount.textContent = String(count);
  }

  function memberTyping(room, name) {
    if (name === (room.me || state.name)) return;
    clearTimeout(room.typing.get(name));
    room.typing.set(
      name,
      setTimeout(() => stopTyping(room, name), TYPING_SHOW_MS),
    );
    if (room === activeRoom()) renderTyping();
  }

  function stopTyping(room, name) {
    if (!room.typing.has(name)) return;
    clearTimeout(room.typing.get(name));
    room.typing.delete(name);
    if (room === activeRoom()) renderTyping();
  }

  function clearTyping(room) {
    for (const name of [...room.typing.keys()]) stopTyping(room, name);
  }

  function renderTyping() {
    const room = activeRoom();
    const names = room ? [...room.typing.keys()] : [];
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    ui.typing.textContent = text;
  }

  // --- message entries ---------------------------------------------------------------------

  function roleOf(room, author) {
    if (author === ASSISTANT) return "assistant";
    return author === (room.me || state.name) ? "mine" : "other";
  }

  function createEntry(room, key, sort, data) {
    const el = clone(ui.templates.message);
    const entry = {
      key, sort, el, data, text: data.text || "", retrying: false, stopping: false, error: null, unread: false,
    };
    entry.chars = codePoints(entry.text);
    el.querySelector(".msg__retry").addEventListener("click", () => retryReply(room, entry));
    el.querySelector(".msg__stop").addEventListener("click", () => stopReply(room, entry));
    if (data.id !== undefined) el.dataset.id = String(data.id);
    room.entries.set(key, entry);
    placeEntry(room, entry);
    return entry;
  }

  function placeEntry(room, entry) {
    shared.placeSorted(room.list, entry.el, entry.sort);
    updateEmpty(room);
  }

  function updateEmpty(room) {
    room.empty.hidden = room.entries.size > 0 || !room.loaded || room.problem !== null;
  }

  /** The entry of a stored message: existing, adopted from our unsent stand-in, or new. */
  function entryFor(room, message) {
    const existing = room.entries.get(`m:${message.id}`);
    if (existing) return { entry: existing, created: false };
    const item = message.client_id && room.outbox.get(message.client_id);
    if (item && message.author === (room.me || state.name)) {
      room.outbox.delete(message.client_id);
      const entry = item.entry;
      room.entries.delete(entry.key);
      entry.key = `m:${message.id}`;
      entry.sort = message.id;
      room.entries.set(entry.key, entry);
      placeEntry(room, entry);
      return { entry, created: false };
    }
    return { entry: createEntry(room, `m:${message.id}`, message.id, { ...message }), created: true };
  }

  /** Apply a whole stored message (history, ack, message, reply, retrying). */
  function applyMessage(room, message, { countUnread = true } = {}) {
    const { entry, created } = entryFor(room, message);
    entry.data = { ...entry.data, ...message };
    entry.el.dataset.id = String(message.id);
    entry.text = message.text || "";
    entry.chars = codePoints(entry.text);
    if (message.status !== "failed") entry.error = null;
    entry.retrying = false;
    entry.stopping = false; // the server's word on the reply: a stop still due comes again
    if (message.author !== ASSISTANT) {
      room.known.add(message.author);
      stopTyping(room, message.author);
    }
    renderEntry(room, entry);
    if (roleOf(room, message.author) === "mine") renderRepliesTo(room, message.id); // I may stop them
    if (created) noteArrival(room, entry, countUnread);
    return entry;
  }

  function renderEntry(room, entry) {
    const { el, data } = entry;
    const role = roleOf(room, data.author);
    el.className = `msg msg--${role === "mine" ? "user" : role}`;
    el.dataset.author = data.author;
    el.dataset.status = data.status || "done";
    const busy = role === "assistant" && shared.replyRunning(data.status);
    el.setAttribute("aria-busy", busy ? "true" : "false");
    const author = el.querySelector(".msg__author");
    author.textContent = role === "mine" ? "You:" : role === "assistant" ? "Assistant" : data.author;
    author.classList.toggle("visually-hidden", role === "mine");
    const body = el.querySelector(".msg__body");
    if (role !== "assistant") body.textContent = entry.text;
    else if (entry.text) renderMarkdown(body, entry.text);
    else body.replaceChildren();
    el.querySelector(".msg__typing").hidden = !busy;
    renderStop(room, entry, busy);
    shared.renderMessageTime(el, data.created_at);
    el.querySelector(".msg__state").textContent = stateLabel(room, entry);
    shared.renderReplyError(entry, role === "assistant" && entry.data.status === "failed");
    shared.renderStoppedMark(entry, role === "assistant" && data.status === "stopped");
  }

  /** A running reply's Stop button, for the member who asked (the server also lets staff). */
  function renderStop(room, entry, busy) {
    const button = entry.el.querySelector(".msg__stop");
    const question = busy && room.entries.get(`m:${entry.data.reply_to}`);
    const hide = !(question && roleOf(room, question.data.author) === "mine");
    if (hide && !button.hidden && document.activeElement === button) ui.input.focus();
    button.hidden = hide;
    button.title = hide ? "" : "Stop the assistant's reply to your question";
  }

  /** Re-render the assistant's replies to my message (now that it is known, I may stop them). */
  function renderRepliesTo(room, questionId) {
    for (const entry of room.entries.values()) {
      if (entry.data.author === ASSISTANT && entry.data.reply_to === questionId) renderEntry(room, entry);
    }
  }

  function stateLabel(room, entry) {
    const item = entry.data.client_id && room.outbox.get(entry.data.client_id);
    if (item && item.entry === entry) {
      if (item.heldUntil > Date.now()) return "Waiting to send…";
      return item.sent ? "Sending…" : "Waiting for the connection…";
    }
    if (entry.retrying) return "Retrying…";
    if (entry.stopping) return "Stopping…";
    return "";
  }

  function removeEntry(room, entry) {
    room.entries.delete(entry.key);
    entry.el.remove();
    if (entry.unread) {
      room.unread = Math.max(0, room.unread - 1);
      renderTab(room);
      renderTitle();
    }
    updateEmpty(room);
  }

  // --- unread ----------------------------------------------------------------------------------

  function roomIsSeen(room) {
    return (
      state.view === "rooms" &&
      room === activeRoom() &&
      ui.app.dataset.nav === "room" &&
      document.visibilityState === "visible"
    );
  }

  function markRead(room, id) {
    if (typeof id !== "number" || (state.read[room.slug] || 0) >= id) return;
    state.read[room.slug] = id;
    localStorage.setItem(STORAGE_READ, JSON.stringify(state.read));
  }

  function lastStoredId(room) {
    let last = 0;
    for (const entry of room.entries.values()) {
      if (entry.key.startsWith("m:")) last = Math.max(last, entry.data.id);
    }
    return last;
  }

  function markAllRead(room) {
    if (!roomIsSeen(room)) return;
    markRead(room, lastStoredId(room));
    if (room.unread === 0) return;
    room.unread = 0;
    for (const entry of room.entries.values()) entry.unread = false;
    renderTab(room);
    renderTitle();
  }

  /** A message new to this page: someone else's counts as unread unless the room is in view. */
  function noteArrival(room, entry, countUnread) {
    const id = entry.data.id;
    if (roomIsSeen(room) || roleOf(room, entry.data.author) === "mine") {
      if (roomIsSeen(room)) markRead(room, id);
      return;
    }
    if (!countUnread || id <= (state.read[room.slug] || 0)) return;
    entry.unread = true;
    room.unread += 1;
    renderTab(room);
    renderTitle();
  }

  // --- server events -----------------------------------------------------------------------

  const handlers = {
    joined(room, frame) {
      room.title = frame.room.title || room.slug;
      room.capacity = frame.room.capacity;
      const renamed = room.me !== frame.me;
      room.me = frame.me;
      room.online = new Set(frame.members.map((m) => m.name));
      for (const name of room.online) room.known.add(name);
      clearTyping(room);
      // On a first visit the history counts as read; later, what arrived since counts.
      const firstVisit = !room.loaded && !(room.slug in state.read);
      frame.messages.forEach((m) => applyMessage(room, m, { countUnread: !firstVisit }));
      if (firstVisit) markRead(room, lastStoredId(room));
      if (renamed) for (const entry of room.entries.values()) renderEntry(room, entry);
      room.loaded = true;
      room.ready = true;
      room.attempts = 0;
      room.skipAfter = false;
      setProblem(room, null);
      setConnection(room, "connected");
      renderTab(room);
      renderRoomEverywhere(room);
      flushOutbox(room);
      markAllRead(room);
    },
    presence(room, frame) {
      const name = frame.member && frame.member.name;
      if (typeof name !== "string") return;
      if (frame.event === "join") {
        room.online.add(name);
        room.known.add(name);
      } else if (frame.event === "leave") {
        room.online.delete(name);
        stopTyping(room, name);
      }
      renderRoomEverywhere(room);
    },
    message(room, frame) {
      applyMessage(room, frame.message);
    },
    ack(room, frame) {
      applyMessage(room, frame.message);
      markRead(room, frame.message.id);
    },
    typing(room, frame) {
      if (frame.member && typeof frame.member.name === "string") memberTyping(room, frame.member.name);
    },
    delta: applyDelta,
    reply(room, frame) {
      applyMessage(room, frame.message);
    },
    retrying(room, frame) {
      applyMessage(room, frame.message);
    },
    stopped(room, frame) {
      applyMessage(room, frame.message); // status "stopped", with the text written so far
    },
    deleted(room, frame) {
      const entry = room.entries.get(`m:${frame.message_id}`);
      if (entry) removeEntry(room, entry);
    },
    error: applyError,
    pong() {},
  };

  function renderRoomEverywhere(room) {
    if (room === activeRoom()) {
      renderHeader();
      renderMembers();
    }
    renderDirectory();
  }

  function assistantEntry(room, messageId, replyTo) {
    const existing = room.entries.get(`m:${messageId}`);
    if (existing) return existing;
    return applyMessage(room, {
      id: messageId,
      author: ASSISTANT,
      text: "",
      status: "pending",
      reply_to: replyTo === undefined ? null : replyTo,
      created_at: new Date().toISOString(),
      client_id: null,
    });
  }

  function applyDelta(room, frame) {
    const entry = assistantEntry(room, frame.message_id, frame.reply_to);
    if (shared.applyDeltaTo(entry, frame)) renderEntry(room, entry);
  }

  function applyError(room, frame) {
    if (frame.code === "inference_failed" && frame.message_id !== undefined) {
      const entry = assistantEntry(room, frame.message_id, frame.reply_to);
      entry.data.status = "failed";
      entry.text = "";
      entry.chars = 0;
      entry.error = frame.message;
      entry.retrying = false;
      entry.stopping = false;
      renderEntry(room, entry);
      return;
    }
    if (CLOSING_CODES.has(frame.code) || (frame.code === "not_found" && !room.ready)) {
      room.closeFrame = frame; // the close that follows says what to do
      return;
    }
    if (frame.code === "rate_limited" && frame.reply_to !== undefined && !frame.client_id) {
      // The room asked the assistant too often: told to everyone, about one question.
      const seconds = Math.max(1, Math.round(frame.retry_after || 1));
      toast(`The assistant is busy with this room's questions. Ask again in ${seconds} s.`, {
        kind: "warn",
      });
      return;
    }
    if (frame.code === "rate_limited") {
      rateLimited(room, frame);
      return;
    }
    if (STOP_ERRORS.has(frame.code) && settleStopping(room)) {
      // not_stoppable: the reply ended meanwhile, and its own frame shows how.
      if (frame.code === "forbidden") {
        toast(frame.message || "Only the member who asked can stop this reply.", { kind: "warn" });
      } else if (frame.code !== "not_stoppable") {
        toast(frame.message || "The reply could not be stopped.", { kind: "error" });
      }
      return;
    }
    const item = frame.client_id && room.outbox.get(frame.client_id);
    if (item) dropUnsent(room, frame.client_id, item);
    stopRetrying(room);
    settleStopping(room);
    toast(frame.message || "Something went wrong.", { kind: "error" });
  }

  /** A stop the server refused: show the reply as it is. Returns whether one was asked. */
  function settleStopping(room) {
    let asked = false;
    for (const entry of room.entries.values()) {
      if (entry.stopping) {
        entry.stopping = false;
        asked = true;
        renderEntry(room, entry);
      }
    }
    return asked;
  }

  function stopRetrying(room) {
    for (const entry of room.entries.values()) {
      if (entry.retrying) {
        entry.retrying = false;
        renderEntry(room, entry);
      }
    }
  }

  function rateLimited(room, frame) {
    const seconds = Math.max(1, Math.round(frame.retry_after || 1));
    toast(`You're sending messages quickly. Please wait ${seconds} s.`, { kind: "warn" });
    const item = frame.client_id && room.outbox.get(frame.client_id);
    if (item) {
      item.sent = false;
      item.heldUntil = Date.now() + seconds * 1000;
      renderEntry(room, item.entry);
      setTimeout(() => flushOutbox(room), seconds * 1000 + 50);
    }
    stopRetrying(room);
    settleStopping(room);
  }

  /** A message the server refused for good: take it off the page, give the text back. */
  function dropUnsent(room, clientId, item) {
    room.outbox.delete(clientId);
    removeEntry(room, item.entry);
    if (room === activeRoom() && !ui.input.value) {
      ui.input.value = item.text;
      updateComposer();
    } else if (!room.draft) {
      room.draft = item.text;
    }
  }

  function handleFrame(room, frame) {
    const handler = frame && handlers[frame.type];
    if (handler) withScroll(room, () => handler(room, frame));
  }

  // --- scrolling ----------------------------------------------------------------------------

  function nearBottom() {
    const main = ui.main;
    return main.scrollHeight - main.scrollTop - main.clientHeight < 120;
  }

  function withScroll(room, update) {
    if (room !== activeRoom()) {
      update();
      return;
    }
    const stick = nearBottom();
    update();
    if (stick) ui.main.scrollTop = ui.main.scrollHeight;
  }

  // --- sockets -------------------------------------------------------------------------------

  /** Where to resume: after the last message, or before the oldest one still unsettled. */
  function resumeAfter(room) {
    if (room.skipAfter || !room.loaded) return null;
    let last = null;
    let firstUnsettled = null;
    for (const entry of room.entries.values()) {
      if (!entry.key.startsWith("m:")) continue;
      const id = entry.data.id;
      last = last === null ? id : Math.max(last, id);
      const unsettled = entry.data.author === ASSISTANT && UNSETTLED.has(entry.data.status);
      if (unsettled) firstUnsettled = firstUnsettled === null ? id : Math.min(firstUnsettled, id);
    }
    if (firstUnsettled !== null) return Math.max(0, firstUnsettled - 1);
    return last;
  }

  function socketUrl(room) {
    const params = new URLSearchParams({ name: state.name, client: state.clientId });
    const after = resumeAfter(room);
    if (after !== null) params.set("after", String(after));
    return shared.socketUrl(`${config.socketPath}${encodeURIComponent(room.slug)}`, params);
  }

  function connect(room) {
    clearTimeout(room.reconnectTimer);
    if (room.closed || room.problem || !state.name) return;
    const url = socketUrl(room);
    room.socketUrls.push(url);
    room.ready = false;
    room.closeFrame = null;
    setConnection(room, room.attempts ? shared.waitingState(room.attempts) : "connecting");
    shared.openSocket(room, url, {
      onFrame: (frame) => handleFrame(room, frame),
      onLost: (code) => socketLost(room, code),
      pingEveryMs: PING_EVERY_MS,
    });
  }

  /** Forget the room's socket (its late events are ignored) and close it. */
  function stopSocket(room) {
    shared.closeSocket(room);
    room.ready = false;
  }

  function socketLost(room, code) {
    const frame = room.closeFrame;
    stopSocket(room);
    clearTyping(room);
    for (const item of room.outbox.values()) {
      item.sent = false;
      renderEntry(room, item.entry);
    }
    settleStopping(room); // the history after the reconnect tells whether it stopped
    renderRoomEverywhere(room);
    if (room.closed) return;
    if (code === CLOSE_NAME_TAKEN || code === CLOSE_FULL || code === CLOSE_NOT_FOUND) {
      const problem = { [CLOSE_NAME_TAKEN]: "name_taken", [CLOSE_FULL]: "room_full" }[code];
      setProblem(room, problem || "not_found");
      setConnection(room, "ended");
      return;
    }
    if (code === CLOSE_BAD_REQUEST) {
      if (frame && frame.code === "invalid_name") {
        setConnection(room, "ended");
        showStart({ editing: true, error: frame.message || "Pick another name." });
        return;
      }
      room.skipAfter = true; // invalid_after: start over from the latest history
    }
    scheduleReconnect(room);
  }

  function scheduleReconnect(room) {
    room.attempts += 1;
    const delay = shared.backoffDelay(room.attempts, room.holdUntil);
    setConnection(room, shared.waitingState(room.attempts));
    room.reconnectTimer = setTimeout(() => connect(room), delay);
  }

  function sendFrame(room, frame) {
    if (!room.ready || !room.socket) return false;
    room.socket.send(JSON.stringify(frame));
    return true;
  }

  function flushOutbox(room) {
    const now = Date.now();
    for (const [clientId, item] of room.outbox) {
      if (item.heldUntil > now) break; // keep the order: nothing overtakes a held message
      if (item.sent) continue;
      if (!sendFrame(room, { type: "message", text: item.text, client_id: clientId })) break;
      item.sent = true;
      renderEntry(room, item.entry);
    }
  }

  /** Reconnect every open room (after a name change), keeping what is on the page. */
  function reconnectAll() {
    for (const room of state.rooms.values()) {
      stopSocket(room);
      room.attempts = 0;
      if (room.problem === "name_taken") setProblem(room, null);
      connect(room);
    }
  }

  // --- sending -----------------------------------------------------------------------------

  function submitMessage(room, text) {
    const clientId = randomId();
    room.localSeq += 1;
    withScroll(room, () => {
      const entry = createEntry(room, `c:${clientId}`, LOCAL_SORT_BASE + room.localSeq, {
        author: room.me || state.name,
        status: "done",
        text,
        client_id: clientId,
        created_at: new Date().toISOString(),
      });
      room.outbox.set(clientId, { text, entry, sent: false, heldUntil: 0 });
      renderEntry(room, entry);
    });
    ui.main.scrollTop = ui.main.scrollHeight;
    flushOutbox(room);
  }

  function retryReply(room, entry) {
    if (entry.retrying || entry.data.id === undefined) return;
    if (!sendFrame(room, { type: "retry", message_id: entry.data.id })) {
      toast("Not connected right now. Retry once the connection is back.", { kind: "warn" });
      return;
    }
    entry.retrying = true;
    renderEntry(room, entry);
  }

  function stopReply(room, entry) {
    if (entry.stopping || entry.data.id === undefined) return;
    if (!sendFrame(room, { type: "stop", message_id: entry.data.id })) {
      toast("Not connected right now. Stop once the connection is back.", { kind: "warn" });
      return;
    }
    entry.stopping = true;
    renderEntry(room, entry);
  }

  function updateComposer() {
    const room = activeRoom();
    const text = ui.input.value;
    const length = codePoints(text);
    const max = config.maxMessageChars;
    const over = shared.renderCounter(ui.counter, length, max);
    ui.send.disabled = !room || !!room.problem || !text.trim() || over;
    ui.input.disabled = !!(room && room.problem);
    growComposer();
  }

  function growComposer() {
    const room = activeRoom();
    const resize = () => shared.growTextarea(ui.input);
    if (room) withScroll(room, resize);
    else resize();
  }

  function trySend() {
    updateComposer();
    const room = activeRoom();
    if (ui.send.disabled || !room) return;
    submitMessage(room, ui.input.value);
    ui.input.value = "";
    room.draft = "";
    room.lastTypingSent = 0; // the message ended the others' "typing": the next key restarts it
    updateComposer();
    ui.input.focus();
  }

  function noteTyping() {
    const room = activeRoom();
    if (!room || !ui.input.value.trim()) return;
    const now = Date.now();
    if (now - room.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    if (sendFrame(room, { type: "typing" })) room.lastTypingSent = now;
  }

  // --- the room list -------------------------------------------------------------------------

  const directoryItems = new Map(); // slug -> list item

  async function loadDirectory() {
    clearTimeout(state.directoryTimer);
    state.directoryTimer = setTimeout(loadDirectory, DIRECTORY_EVERY_MS);
    if (document.visibilityState === "hidden" && state.directory.length) return;
    try {
      const response = await fetch(config.roomsUrl, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      state.directory = Array.isArray(data.rooms) ? data.rooms : [];
      ui.directoryStatus.textContent = state.directory.length
        ? ""
        : "No rooms yet. An operator can create one in the admin.";
      for (const listed of state.directory) {
        const room = state.rooms.get(listed.slug);
        if (room && !room.loaded && listed.title) {
          room.title = listed.title;
          renderTab(room);
          if (room === activeRoom()) renderHeader();
        }
      }
    } catch {
      ui.directoryStatus.textContent = state.directory.length
        ? "Could not refresh the rooms; trying again soon."
        : "Could not load the rooms; trying again soon.";
    }
    renderDirectory();
  }

  /** Update the list in place (items keyed by slug), so focus and hover survive updates. */
  function renderDirectory() {
    const items = state.directory.map((listed) => {
      let item = directoryItems.get(listed.slug);
      if (!item) {
        item = clone(ui.templates.directory);
        item.dataset.slug = listed.slug;
        item.querySelector(".directory__open").addEventListener("click", () => {
          openRoom(listed.slug, item.dataset.title);
        });
        directoryItems.set(listed.slug, item);
      }
      const room = state.rooms.get(listed.slug);
      const online = room && room.ready ? room.online.size : listed.online;
      item.dataset.title = listed.title || listed.slug;
      item.dataset.open = room ? "true" : "false";
      item.querySelector(".directory__title").textContent = listed.title || listed.slug;
      item.querySelector(".directory__online").textContent = `${online} online`;
      const tag = item.querySelector(".directory__tag");
      const full = (!room || !room.ready) && online >= listed.capacity;
      tag.hidden = !(listed.private || full);
      tag.textContent = full ? "full" : "private";
      const current = room && room.slug === state.active;
      item.querySelector(".directory__open").setAttribute("aria-current", current ? "true" : "false");
      return item;
    });
    const listed = new Set(state.directory.map((r) => r.slug));
    for (const slug of [...directoryItems.keys()]) if (!listed.has(slug)) directoryItems.delete(slug);
    items.forEach((item, index) => {
      if (ui.directory.children[index] !== item) ui.directory.insertBefore(item, ui.directory.children[index] || null);
    });
    while (ui.directory.children.length > items.length) ui.directory.lastElementChild.remove();
  }

  // --- the name ------------------------------------------------------------------------------

  function showStart({ editing = false, error = "" } = {}) {
    state.view = "start";
    ui.startCancel.hidden = !editing || !state.name;
    ui.startName.value = state.name;
    renderView();
    showStartError(error);
    ui.startName.focus();
  }

  function showStartError(text) {
    ui.startError.textContent = text;
    ui.startError.hidden = !text;
  }

  function submitName(event) {
    event.preventDefault();
    const name = ui.startName.value.trim();
    if (!name) {
      showStartError("Type a display name to continue.");
      ui.startName.focus();
      return;
    }
    if (codePoints(name) > config.maxNameChars) {
      showStartError(`A name is limited to ${config.maxNameChars} characters.`);
      ui.startName.focus();
      return;
    }
    if (name.toLowerCase() === ASSISTANT.toLowerCase()) {
      showStartError("That name belongs to the assistant. Pick another one.");
      ui.startName.focus();
      return;
    }
    const renamed = state.name !== "" && name !== state.name;
    state.name = name;
    localStorage.setItem(STORAGE_NAME, name);
    showStartError("");
    if (renamed) reconnectAll(); // rooms already open rejoin under the new name
    enterRooms();
  }

  function enterRooms() {
    state.view = "rooms";
    for (const room of state.rooms.values()) {
      if (!room.socket && !room.problem && !room.reconnectTimer) connect(room);
    }
    activate(state.active);
  }

  function followOtherTab(event) {
    if (event.key !== STORAGE_NAME || !event.newValue || event.newValue === state.name) return;
    state.name = event.newValue;
    if (state.view === "rooms") {
      renderView();
      reconnectAll();
    }
  }

  // --- wiring --------------------------------------------------------------------------------

  /** The members list as a drawer, on screens too narrow to show it beside the room. */
  function setMembersDrawer(open, { focus = false } = {}) {
    ui.app.dataset.members = open ? "open" : "closed";
    ui.membersToggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) ui.membersClose.focus();
    else if (focus) ui.membersToggle.focus();
  }

  function wire() {
    ui.startForm.addEventListener("submit", submitName);
    ui.startCancel.addEventListener("click", () => enterRooms());
    ui.changeName.addEventListener("click", () => showStart({ editing: true }));
    ui.showDirectory.addEventListener("click", () => {
      ui.app.dataset.nav = "rooms"; // phones: the list replaces the conversation
      renderHeader();
      ui.directory.querySelector("button")?.focus();
    });
    ui.membersToggle.addEventListener("click", () => setMembersDrawer(ui.app.dataset.members !== "open"));
    ui.membersClose.addEventListener("click", () => setMembersDrawer(false, { focus: true }));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && ui.app.dataset.members === "open") setMembersDrawer(false, { focus: true });
    });
    document.addEventListener("pointerdown", (event) => {
      const inside = ui.membersPanel.contains(event.target) || ui.membersToggle.contains(event.target);
      if (ui.app.dataset.members === "open" && !inside) setMembersDrawer(false);
    });
    ui.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      trySend();
    });
    ui.input.addEventListener("input", () => {
      updateComposer();
      noteTyping();
    });
    ui.input.addEventListener("keydown", (event) => {
      if (shared.isSendKey(event)) {
        event.preventDefault();
        trySend();
      }
    });
    window.addEventListener("hashchange", () => {
      const slug = decodeURIComponent(location.hash.slice(1));
      if (state.view === "rooms" && SLUG.test(slug) && slug !== state.active) openRoom(slug);
    });
    window.addEventListener("storage", followOtherTab);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      const room = activeRoom();
      if (room) markAllRead(room);
      loadDirectory();
    });
    window.addEventListener("online", () => {
      for (const room of state.rooms.values()) {
        if (!room.socket && !room.problem) {
          room.attempts = 0;
          connect(room);
        }
      }
    });
    window.addEventListener("offline", () => {
      for (const room of state.rooms.values()) if (!room.ready) setConnection(room, "offline");
    });
  }

  function boot() {
    wire();
    state.clientId = localStorage.getItem(STORAGE_CLIENT) || randomId();
    localStorage.setItem(STORAGE_CLIENT, state.clientId);
    state.name = localStorage.getItem(STORAGE_NAME) || "";
    const read = readJson(STORAGE_READ, {});
    state.read = read && typeof read === "object" && !Array.isArray(read) ? read : {};
    const open = readJson(STORAGE_OPEN, []);
    for (const slug of Array.isArray(open) ? open : []) {
      if (typeof slug === "string" && SLUG.test(slug) && !state.rooms.has(slug)) createRoom(slug);
    }
    const linked = decodeURIComponent(location.hash.slice(1));
    if (SLUG.test(linked) && !state.rooms.has(linked)) {
      createRoom(linked);
      saveOpenRooms();
    }
    const stored = localStorage.getItem(STORAGE_ACTIVE);
    state.active = SLUG.test(linked) ? linked : state.rooms.has(stored) ? stored : null;
    loadDirectory();
    if (state.name) enterRooms();
    else showStart();
  }

  /** Hooks for the browser tests (and for curious people in the console). */
  window.roomsApp = {
    /** Drop a room's socket (the shown one by default) as a network failure would. */
    debugDropSocket(holdMs = 0, slug = null) {
      const room = slug ? state.rooms.get(slug) : activeRoom();
      if (!room) return;
      room.holdUntil = Date.now() + holdMs;
      if (room.socket) socketLost(room, 1006);
    },
    connection(slug = null) {
      const room = slug ? state.rooms.get(slug) : activeRoom();
      return room ? room.connState : null;
    },
    socketUrls(slug = null) {
      const room = slug ? state.rooms.get(slug) : activeRoom();
      return room ? room.socketUrls.slice() : [];
    },
    get active() {
      return state.active;
    },
  };

  boot();
})();
