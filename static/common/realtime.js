/* Shared by every page (chat, rooms, sensors): a classic script exposing window.chatsite.
 *
 * It holds what the pages really have in common: Markdown for the assistant (marked with raw
 * HTML shown as text, then DOMPurify), the live socket plumbing (open, heartbeat, reconnect
 * with exponential backoff and jitter), time formatting and a few DOM helpers. People's text
 * only ever reaches the page through textContent; only the assistant's Markdown goes through
 * DOMPurify. Load it (deferred) before the page's own script.
 */
(function () {
  "use strict";

  const RECONNECT_BASE_MS = 500;
  const RECONNECT_MAX_MS = 15000;
  const OFFLINE_AFTER_ATTEMPTS = 4;
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  const TOAST_MS = 6000;
  const COUNTER_FROM = 0.8; // show the counter from 80% of the limit
  const COUNTER_WARN = 0.95;
  const COMPOSER_MAX_PX = 200;
  const COMPOSER_MAX_SHARE = 0.3; // of the window's height, for small screens

  // --- text helpers (offsets from the server count code points, like Python) ------------

  function codePoints(text) {
    return Array.from(text).length;
  }

  // Apply a reply `delta` frame to a message entry ({data, text, chars, error}) by its
  // `offset` (docs/protocol.md): 0 starts the text over, the entry's length appends, any
  // other offset was seen already or follows a lost part (the reply frame brings the whole
  // text). A reply that ended (done, stopped, failed) takes no more deltas: they are late
  // chunks of an attempt that is over; a failed reply only once a retry we asked for is
  // under way (its first chunk may overtake the `retrying` frame). Returns whether the
  // entry changed.
  function applyDeltaTo(entry, frame) {
    const status = entry.data.status;
    if (status === "done" || status === "stopped" || (status === "failed" && !entry.retrying)) return false;
    const { offset, text } = frame;
    if (offset === 0) {
      entry.text = text; // a (re)start
      entry.chars = codePoints(text);
    } else if (offset === entry.chars) {
      entry.text += text;
      entry.chars += codePoints(text);
    } else {
      return false;
    }
    entry.data.status = "streaming";
    entry.error = null;
    return true;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  /** 32 random hex digits (client ids for messages and browsers). */
  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // --- time ------------------------------------------------------------------------------

  /** A Date as a clock time, with the day in front when it is not today. */
  function formatClock(date, { seconds = false } = {}) {
    const parts = seconds ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    const time = date.toLocaleTimeString([], parts);
    const today = new Date().toDateString() === date.toDateString();
    return today ? time : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
  }

  /** An ISO 8601 moment as "14:05" (or "Mar 3 14:05"); "" when unreadable. */
  function formatTime(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    return formatClock(date);
  }

  /** Fill a message's <time class="msg__time"> from an ISO moment (once per moment). */
  function renderMessageTime(el, iso) {
    const time = el.querySelector(".msg__time");
    if (!iso || time.dateTime === iso) return;
    time.dateTime = iso;
    time.textContent = formatTime(iso);
    time.title = new Date(iso).toLocaleString();
  }

  // --- DOM helpers -----------------------------------------------------------------------

  function cloneTemplate(template) {
    return template.content.firstElementChild.cloneNode(true);
  }

  /** A short notice in a toasts container; text only. */
  /** Put a message element into its list in `sort` order (usually at the end, so walk back). */
  function placeSorted(list, el, sort) {
    el.dataset.sort = String(sort);
    let before = null;
    for (let node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (node === el) continue;
      if (Number(node.dataset.sort) > sort) before = node;
      else break;
    }
    if (el.parentNode !== list || el.nextElementSibling !== before) list.insertBefore(el, before);
  }

  /** Show or hide a reply's failure box (its text, and Retry unless a retry is under way). */
  function renderReplyError(entry, failed) {
    const box = entry.el.querySelector(".msg__error");
    box.hidden = !failed;
    if (!failed) return;
    box.querySelector(".msg__error-text").textContent =
      entry.error || "The assistant could not answer this message.";
    const button = box.querySelector(".msg__retry");
    button.disabled = entry.retrying;
    button.setAttribute("aria-label", "Retry this reply");
  }

  /** Whether a reply is still being written (pending or streaming): it can be stopped. */
  function replyRunning(status) {
    return status === "pending" || status === "streaming";
  }

  /** Show or hide a reply's "Stopped" marker (a stopped reply keeps its partial text). */
  function renderStoppedMark(entry, stopped) {
    entry.el.querySelector(".msg__stopped").hidden = !stopped;
  }

  function toast(container, text, { kind = "info", ms = TOAST_MS } = {}) {
    const item = document.createElement("p");
    item.className = `toast toast--${kind}`;
    item.textContent = text;
    container.append(item);
    setTimeout(() => item.remove(), ms);
  }

  /** The composer's character counter, shown from 80% of the limit. */
  function renderCounter(counter, length, max) {
    const over = length > max;
    counter.hidden = length < max * COUNTER_FROM;
    counter.dataset.level = over ? "over" : length >= max * COUNTER_WARN ? "warn" : "near";
    counter.textContent = over
      ? `${plural(length - max, "character")} over the ${max}-character limit`
      : `${max - length} of ${max} characters left`;
    return over;
  }

  /** Let a textarea grow with its text, up to a cap (smaller on short screens). */
  function growTextarea(input) {
    const most = Math.min(COMPOSER_MAX_PX, window.innerHeight * COMPOSER_MAX_SHARE);
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, most)}px`;
  }

  /** Enter without modifiers (and not while composing) sends; Shift+Enter adds a line. */
  function isSendKey(event) {
    const plainEnter = event.key === "Enter" && !event.shiftKey && !event.altKey;
    return plainEnter && !event.ctrlKey && !event.metaKey && !event.isComposing;
  }

  // --- Markdown for the assistant: marked with raw HTML shown as text, then DOMPurify -------

  const PURIFY_OPTIONS = {
    RETURN_DOM_FRAGMENT: true,
    FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select", "iframe"],
    FORBID_ATTR: ["style"],
  };

  let markdown = null; // set up on first use: only the chat pages load marked and DOMPurify

  function markdownParser() {
    if (markdown) return markdown;
    markdown = new window.marked.Marked({
      gfm: true,
      breaks: true,
      renderer: {
        // Raw HTML in a reply is shown as the text it is (escaped by marked's own renderer).
        html(token) {
          const text = { type: "text", raw: token.raw, text: token.text, escaped: false };
          return token.block ? this.paragraph({ tokens: [text] }) : this.text(text);
        },
        // Images would load from anywhere: show them as links instead.
        image(token) {
          const label = token.text || token.href;
          const tokens = [{ type: "text", raw: label, text: label, escaped: false }];
          return this.link({ href: token.href, title: token.title, tokens });
        },
      },
    });
    window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
      if (node.tagName === "A" && node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
    return markdown;
  }

  function renderMarkdown(target, text) {
    const fragment = window.DOMPurify.sanitize(markdownParser().parse(text), PURIFY_OPTIONS);
    target.replaceChildren(fragment);
  }

  // --- live sockets ------------------------------------------------------------------------
  //
  // An "owner" is a plain object (the chat's state, a room, a LiveSocket) with the fields
  // socket, lastFrameAt, reconnectTimer and heartbeatTimer; late events of a socket that is
  // no longer the owner's are ignored.

  /** A WebSocket URL for a path on this origin; query is a string, URLSearchParams or object. */
  function socketUrl(path, query) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const search = query ? `?${new URLSearchParams(query)}` : "";
    return `${scheme}//${location.host}${path}${search}`;
  }

  /** The delay before reconnect attempt number `attempts` (1, 2, …): exponential, with jitter. */
  function backoffDelay(attempts, holdUntil = 0) {
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** (attempts - 1));
    const jittered = ceiling / 2 + Math.random() * (ceiling / 2);
    return Math.max(jittered, holdUntil - Date.now());
  }

  /** While waiting to reconnect: "offline" after a few failures (or when the browser says so). */
  function waitingState(attempts) {
    const offline = navigator.onLine === false || attempts > OFFLINE_AFTER_ATTEMPTS;
    return offline ? "offline" : "reconnecting";
  }

  /**
   * Open the owner's socket: each JSON frame goes to onFrame (null when unreadable), a
   * heartbeat starts once open, and onLost(code) runs when it closes or stops answering.
   */
  function openSocket(owner, url, { onFrame, onLost, pingEveryMs = PING_EVERY_MS }) {
    const socket = new WebSocket(url);
    owner.socket = socket;
    socket.addEventListener("message", (event) => {
      if (socket !== owner.socket) return;
      owner.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      onFrame(frame);
    });
    socket.addEventListener("open", () => {
      if (socket === owner.socket) startHeartbeat(owner, pingEveryMs, onLost);
    });
    socket.addEventListener("close", (event) => {
      if (socket === owner.socket) onLost(event.code);
    });
    return socket;
  }

  function startHeartbeat(owner, pingEveryMs, onLost) {
    clearInterval(owner.heartbeatTimer);
    owner.lastFrameAt = Date.now();
    owner.heartbeatTimer = setInterval(() => {
      const socket = owner.socket;
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      if (Date.now() - owner.lastFrameAt > pingEveryMs + PONG_TIMEOUT_MS) {
        onLost(1006); // no answer to the last ping: the connection is dead
        return;
      }
      socket.send(JSON.stringify({ type: "ping" }));
    }, pingEveryMs);
  }

  /** Forget the owner's socket (its late events are ignored) and close it. */
  function closeSocket(owner) {
    clearTimeout(owner.reconnectTimer);
    clearInterval(owner.heartbeatTimer);
    const socket = owner.socket;
    owner.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000);
  }

  window.chatsite = {
    codePoints,
    applyDeltaTo,
    plural,
    randomId,
    formatClock,
    formatTime,
    renderMessageTime,
    cloneTemplate,
    placeSorted,
    renderReplyError,
    replyRunning,
    renderStoppedMark,
    toast,
    renderCounter,
    growTextarea,
    isSendKey,
    renderMarkdown,
    socketUrl,
    backoffDelay,
    waitingState,
    openSocket,
    closeSocket,
  };
})();
