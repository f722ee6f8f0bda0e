// The editor's chat: sends a message as a turn, reads the turn's event stream (fetch, not
// EventSource: a turn starts with a POST), shows the reply as it is written, stops it, and
// points the preview at the new revision when the turn completes. Text from the model is only
// ever set as text, never as markup.

const editor = document.getElementById("editor");
const aide = editor.dataset.aide;
const messages = document.getElementById("messages");
const composer = document.getElementById("composer");
const content = document.getElementById("content");
const send = document.getElementById("send");
const stop = document.getElementById("stop");
const usage = document.getElementById("usage");
const chatError = document.getElementById("chat-error");

let running = null; // { turn, controller }

/** Reads an event stream from a fetch response, calling `onEvent(name, data, id)` per event. */
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let rest = colon < 0 ? "" : line.slice(colon + 1);
        if (rest.startsWith(" ")) rest = rest.slice(1);
        if (field === "event") name = rest;
        else if (field === "data") data.push(rest);
        else if (field === "id") id = rest;
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")), id);
    }
  }
}

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "AIde";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  messages.append(item);
  messages.scrollTop = messages.scrollHeight;
  return item;
}

function setBusy(busy) {
  send.hidden = busy;
  stop.hidden = !busy;
  content.disabled = busy;
  if (!busy) content.focus();
}

function showError(text, retry) {
  chatError.replaceChildren(document.createTextNode(text + " "));
  if (retry) {
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = "Retry";
    again.addEventListener("click", () => { chatError.hidden = true; retry(); });
    chatError.append(again);
  }
  chatError.hidden = false;
}

/** "Sun Dec 6 at 13:53 UTC", as the server writes it. */
function when(iso) {
  const d = new Date(iso);
  const day = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][d.getUTCDay()];
  const month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][d.getUTCMonth()];
  const time = `${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
  return `${day} ${month} ${d.getUTCDate()} at ${time} UTC`;
}

function showUsage(turns) {
  if (!turns) return;
  const resets = turns.resets_at ? `, resets ${when(turns.resets_at)}` : "";
  usage.textContent = turns.limit == null
    ? `${turns.used} turns this week (no weekly limit on Pro)`
    : `${turns.used} of ${turns.limit} turns this week${resets}`;
}

function newFrame() {
  const frame = document.createElement("iframe");
  frame.title = "Preview";
  frame.setAttribute("sandbox", "allow-scripts allow-forms allow-popups");
  frame.setAttribute("referrerpolicy", "no-referrer");
  return frame;
}

/**
 * Shows `url` in the preview without a flash: the new page loads in a frame out of sight and
 * takes the old one's place once loaded (a newer address replaces one still loading).
 */
let incoming = null;
function showInPreview(url) {
  const current = document.getElementById("preview");
  if (!current) {
    document.getElementById("preview-empty")?.remove();
    const frame = newFrame();
    frame.id = "preview";
    frame.src = url;
    document.getElementById("preview-pane").prepend(frame);
    return;
  }
  incoming?.remove();
  const frame = newFrame();
  frame.className = "incoming";
  frame.setAttribute("aria-hidden", "true");
  frame.tabIndex = -1;
  frame.addEventListener("load", () => {
    if (incoming !== frame) return;
    incoming = null;
    frame.className = "";
    frame.removeAttribute("aria-hidden");
    frame.removeAttribute("tabindex");
    frame.title = current.title;
    document.getElementById("preview")?.replaceWith(frame);
    frame.id = "preview";
  });
  incoming = frame;
  frame.src = url;
  current.after(frame);
}

function removePreview() {
  incoming?.remove();
  incoming = null;
  document.getElementById("preview")?.remove();
}

// The saved page's preview address, to go back to when a turn ends without saving.
let saved = document.getElementById("preview")?.getAttribute("src") ?? null;

/** Back to the saved page after a turn that saved nothing had shown its working copy. */
function showSaved() {
  const shown = live;
  live = null;
  if (!shown?.n) return;
  if (saved) showInPreview(saved);
  else removePreview();
}

async function showRevision(revision) {
  live = null;
  const answer = await fetch(`/a/${aide}/preview-url?revision=${revision}`, { headers: { accept: "application/json" } });
  if (!answer.ok) return;
  const { url } = await answer.json();
  saved = url;
  showInPreview(url);
  // There is a page now: it can be published.
  const publish = document.getElementById("publish");
  if (publish) publish.disabled = false;
  const link = document.getElementById("preview-link");
  if (link) link.href = url;
}

// While a turn edits, the preview shows its working copy, reloaded at most once a second.
let live = null;
async function showWorkingCopy(turn) {
  if (!turn) return;
  if (!live) {
    live = { url: null, due: false, last: 0, n: 0 };
    const answer = await fetch(`/a/${aide}/preview-url?turn=${turn}`, { headers: { accept: "application/json" } });
    if (!answer.ok) return;
    const { url } = await answer.json();
    if (!live) return; // the turn ended meanwhile
    live.url = url;
  }
  if (!live.url || live.due) return;
  live.due = true;
  const wait = Math.max(0, 1000 - (Date.now() - live.last));
  setTimeout(() => {
    if (!live) return;
    live.due = false;
    live.last = Date.now();
    showInPreview(`${live.url}?v=${++live.n}`);
  }, wait);
}

/** Follows one turn's events, on a response that streams them. */
async function follow(response, reply, retry) {
  let turn = null;
  let turns = null;
  let finished = false;
  // A turn given back no longer counts: the usage shown goes back down.
  const givenBack = () => {
    if (turns) showUsage({ ...turns, used: Math.max(0, turns.used - 1) });
  };
  await readEvents(response, (name, data) => {
    switch (name) {
      case "turn.started":
        turn = data.turn_id;
        running = { ...running, turn };
        turns = data.turns;
        showUsage(turns);
        break;
      case "text.delta":
        reply.querySelector(".text").textContent += data.text;
        messages.scrollTop = messages.scrollHeight;
        break;
      case "file.updated":
        document.getElementById("preview-pane").setAttribute("aria-busy", "true");
        showWorkingCopy(turn);
        break;
      case "turn.completed":
        finished = true;
        reply.removeAttribute("aria-busy");
        if (data.revision && data.files_changed?.length) showRevision(data.revision);
        break;
      case "turn.interrupted":
        finished = true;
        showSaved();
        reply.removeAttribute("aria-busy");
        reply.classList.add("stopped");
        if (!data.counted) givenBack();
        break;
      case "turn.failed":
        finished = true;
        showSaved();
        reply.remove();
        if (data.refunded) givenBack();
        showError(data.message + (data.refunded ? " This turn was not counted." : ""), retry);
        break;
    }
  });
  document.getElementById("preview-pane").removeAttribute("aria-busy");
  if (!finished) showError("The connection was lost. Reload the page to see how the turn ended.");
}

async function startTurn(text) {
  chatError.hidden = true;
  const controller = new AbortController();
  running = { turn: null, controller };
  setBusy(true);
  const reply = addMessage("assistant", "");
  reply.setAttribute("aria-busy", "true");
  const retry = () => startTurn(text);
  try {
    const response = await fetch(`/api/aides/${aide}/turns`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ content: text, client_turn_id: crypto.randomUUID() }),
      signal: controller.signal,
    });
    if (!response.ok) {
      reply.remove();
      const problem = await response.json().catch(() => ({ detail: "Something went wrong." }));
      if (problem.code === "TURN_LIMIT_REACHED") {
        chatError.replaceChildren(document.createTextNode(problem.detail + " "));
        const upgrade = document.createElement("a");
        upgrade.href = "/account";
        upgrade.textContent = "Upgrade to Pro";
        chatError.append(upgrade);
        chatError.hidden = false;
      } else {
        showError(problem.detail, response.status >= 500 || response.status === 429 ? retry : null);
      }
      return;
    }
    await follow(response, reply, retry);
  } catch (error) {
    if (error.name !== "AbortError") showError("The connection was lost. Reload the page to see how the turn ended.");
  } finally {
    running = null;
    setBusy(false);
  }
}

async function stopTurn() {
  if (!running?.turn) return;
  await fetch(`/api/aides/${aide}/turns/${running.turn}/cancel`, { method: "POST" });
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = content.value.trim();
  if (!text || running) return;
  content.value = "";
  addMessage("user", text);
  startTurn(text);
});
content.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    composer.requestSubmit();
  }
});
stop.addEventListener("click", stopTurn);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running) stopTurn();
});

// Share: with a script, the share section becomes a dialog behind a Share button (Escape or
// Close shuts it, and focus goes back to the button); without one it stays on the page.
const share = document.getElementById("share");
const openShare = document.getElementById("open-share");
if (share && openShare && window.HTMLDialogElement) {
  const dialog = document.createElement("dialog");
  dialog.className = "share-dialog";
  dialog.setAttribute("aria-labelledby", "share-heading");
  share.replaceWith(dialog);
  dialog.append(share);
  document.getElementById("share-heading").classList.remove("visually-hidden");
  share.querySelector(".close-share").hidden = false;
  openShare.hidden = false;
  openShare.addEventListener("click", () => dialog.showModal());
  dialog.addEventListener("close", () => openShare.focus());
}

// Copy the public address.
const copy = document.getElementById("copy");
if (copy && navigator.clipboard) {
  copy.hidden = false;
  copy.addEventListener("click", async () => {
    await navigator.clipboard.writeText(copy.dataset.url);
    document.getElementById("copied").textContent = "Copied.";
  });
}

// Chat | Preview tabs (narrow screens only; wide ones show both panes).
const tabs = [...document.querySelectorAll("[role=tab]")];
function select(tab) {
  for (const other of tabs) {
    const on = other === tab;
    other.setAttribute("aria-selected", String(on));
    document.getElementById(other.getAttribute("aria-controls")).classList.toggle("off", !on);
  }
}
tabs.forEach((tab) => tab.addEventListener("click", () => select(tab)));
select(tabs[0]);

content.disabled = false;
send.disabled = false;
document.getElementById("needs-script")?.remove();

// A turn still running when the page loaded (a reload mid-turn): follow it to its end.
const pending = editor.dataset.runningTurn;
if (pending) {
  const controller = new AbortController();
  running = { turn: pending, controller };
  setBusy(true);
  const reply = addMessage("assistant", "");
  reply.setAttribute("aria-busy", "true");
  fetch(`/api/aides/${aide}/turns/${pending}/events`, { signal: controller.signal })
    .then((response) => (response.ok ? follow(response, reply, null) : reply.remove()))
    .catch(() => {})
    .finally(() => { running = null; setBusy(false); });
}
