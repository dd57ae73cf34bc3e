// The console page. Every string from the broker goes into the page as text (textContent,
// never innerHTML), so that topic names, keys, values and holders cannot become markup.
"use strict";

const POLL_MS = 500;          // how often the overview is refreshed
const PAGE = 50;              // messages per page
const WINDOW = 200;           // rows kept while following: a bounded window of recent ones
const CHART_MS = 5 * 60 * 1000; // the span of a group's lag chart
const FRAME_MS = 16;          // followed messages are drawn at most this often
const BUSY_ROWS = 20;         // more than this many waiting to be drawn: the topic is busy
const BUSY_MS = 100;          // and then they are drawn at most this often
const FLOOD_MS = 250;         // or this often when a whole window arrives between two draws

const $ = (id) => document.getElementById(id);
// Local, readable times; one formatter for all, as making one per message is what costs.
const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
const state = {
  topics: [],          // the last topic list
  confirming: null,    // the topic whose deletion is being confirmed
  loginError: null,    // the last refused login, shown until the next attempt
  held: null,          // the logical broker held from the Consume panel: {broker, lease_ms}
  renewTimer: null,    // renews the held claim while the page is open
  topic: null,         // the topic shown in the messages view
  offset: 0,           // the first offset of the page shown
  source: null,        // the follow stream, when following
  received: 0,         // messages received since the follow began
  end: 0,              // the followed topic's end, as last heard
  pending: [],         // followed messages not drawn yet, at most WINDOW
  drawScheduled: false, // whether a frame will draw them
  lastDraw: 0,         // when followed messages were last drawn
  lastDrawn: 0,        // how many were drawn then
  lag: new Map(),      // "group\u0000topic" -> [[time, lag], ...]
};

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c);
  return tr;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function showBanner(text) {
  const banner = $("banner");
  if (text) {
    banner.textContent = text;
    banner.hidden = false;
  } else {
    banner.hidden = true;
    banner.textContent = "";
  }
}

// This page's name, so that a claim is held by the page that took it, not by every page of
// the browser.
const PAGE_ID = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);

async function call(method, url, body) {
  const options = { method, headers: { "X-Console-Page": PAGE_ID } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  let data;
  try {
    data = await response.json();
  } catch (e) {
    data = { error: "the console answered " + response.status };
  }
  if (!response.ok && !data.error) data.error = "the console answered " + response.status;
  return data;
}

// ---- overview: brokers, topics, groups ----

async function refresh() {
  try {
    const data = await call("GET", "/api/overview");
    if (data.refused) {
      showBanner(null);
      loginMessage(data.error);
    } else if (!data.up) {
      showBanner("The broker is not answering (" + data.error + "). Retrying…");
    } else {
      showBanner(null);
      if (!state.loginError) loginMessage(null);
      drawBrokers(data.brokers);
      drawTopics(data.topics, data.topics_error);
      drawGroups(data.groups);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }
  } catch (e) {
    showBanner("The console itself is not answering. Retrying…");
  }
  setTimeout(refresh, POLL_MS);
}

function drawBrokers(brokers) {
  const select = $("consume-broker");
  const ids = brokers.map((b) => String(b.id));
  const have = [...select.options].slice(1).map((o) => o.value);
  if (ids.join() !== have.join()) {
    const chosen = select.value;
    select.replaceChildren(select.options[0], ...ids.map((id) => {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = id;
      return option;
    }));
    select.value = ids.includes(chosen) ? chosen : "";
  }
  const body = $("brokers").tBodies[0];
  body.replaceChildren(...brokers.map((b) => {
    const lease = b.lease_remaining_ms == null ? "" : (b.lease_remaining_ms / 1000).toFixed(1) + " s";
    const tr = row([
      cell(b.id, "num"),
      cell(b.available ? "free" : "claimed", b.available ? "free" : "busy"),
      cell(b.holder),
      cell(lease, "num"),
    ]);
    tr.dataset.broker = b.id;
    tr.dataset.state = b.available ? "free" : "claimed";
    return tr;
  }));
}

function drawTopics(topics, error) {
  $("topics-error").hidden = !error;
  $("topics-error").textContent = error || "";
  if (!topics) return;
  state.topics = topics;
  const body = $("topics").tBodies[0];
  body.replaceChildren(...topics.map((t) => {
    const open = document.createElement("button");
    open.className = "link";
    open.textContent = t.name;
    open.title = "show its messages";
    open.addEventListener("click", () => openTopic(t.name, Math.max(t.first_offset, t.next_offset - PAGE)));
    const name = document.createElement("td");
    name.appendChild(open);
    const actions = document.createElement("td");
    if (state.confirming === t.name) {
      // Asked in the page rather than with confirm(), which would stop every live update.
      const question = document.createElement("span");
      question.className = "confirm";
      question.textContent = "delete it and all its messages? ";
      const yes = document.createElement("button");
      yes.textContent = "Yes, delete";
      yes.className = "confirm-yes";
      yes.addEventListener("click", () => { state.confirming = null; deleteTopic(t.name); });
      const no = document.createElement("button");
      no.textContent = "No";
      no.addEventListener("click", () => { state.confirming = null; drawTopics(state.topics); });
      actions.append(question, yes, no);
    } else {
      const remove = document.createElement("button");
      remove.textContent = "Delete";
      remove.className = "delete";
      remove.addEventListener("click", () => { state.confirming = t.name; drawTopics(state.topics); });
      actions.appendChild(remove);
    }
    const tr = row([name, cell(t.messages, "num"), cell(t.first_offset, "num"),
      cell(t.next_offset, "num"), cell(bytes(t.bytes), "num"), actions]);
    tr.dataset.topic = t.name;
    return tr;
  }));
  const names = $("topic-names");
  names.replaceChildren(...topics.map((t) => {
    const option = document.createElement("option");
    option.value = t.name;
    return option;
  }));
}

function drawGroups(groups) {
  const now = Date.now();
  const seen = new Set();
  for (const g of groups) {
    const key = g.group + "\u0000" + g.topic;
    seen.add(key);
    const history = state.lag.get(key) || [];
    history.push([now, g.lag]);
    while (history.length && history[0][0] < now - CHART_MS) history.shift();
    state.lag.set(key, history);
  }
  for (const key of [...state.lag.keys()]) if (!seen.has(key)) state.lag.delete(key);
  const body = $("groups").tBodies[0];
  body.replaceChildren(...groups.map((g) => {
    const chart = document.createElement("td");
    chart.appendChild(lagChart(state.lag.get(g.group + "\u0000" + g.topic), now));
    const tr = row([cell(g.group), cell(g.topic), cell(g.committed_offset, "num"),
      cell(g.end_offset, "num"), cell(g.lag, "num"), cell(g.pending, "num"),
      cell(g.members.join(", ")), chart]);
    tr.dataset.group = g.group;
    return tr;
  }));
}

// A small line of lag over the last CHART_MS, drawn as SVG.
function lagChart(history, now) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 200, height = 36;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const max = Math.max(1, ...history.map((p) => p[1]));
  // The chart spans what has been seen, up to CHART_MS: a page open for a minute shows a
  // minute across its whole width.
  const span = Math.min(CHART_MS, Math.max(10000, now - history[0][0]));
  const points = history.map(([t, lag]) => {
    const x = width - ((now - t) / span) * width;
    const y = height - 2 - (lag / max) * (height - 4);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(NS, "title");
  title.textContent = "lag now " + history[history.length - 1][1] + ", at most " + max
    + " over the last " + Math.round(span / 1000) + " s";
  svg.appendChild(title);
  return svg;
}

// ---- topics: create, delete ----

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("create-name").value;
  const out = $("create-result");
  const data = await call("POST", "/api/topics", { name });
  out.className = data.error ? "error" : "ok";
  out.textContent = data.error ? "not created: " + data.error : "created " + name;
});

async function deleteTopic(name) {
  const data = await call("DELETE", "/api/topics?name=" + encodeURIComponent(name));
  const out = $("create-result");
  out.className = data.error ? "error" : "ok";
  out.textContent = data.error ? "not deleted: " + data.error : "deleted " + name;
}

// ---- produce ----

$("produce-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("produce-result");
  const body = { topic: $("produce-topic").value, key: $("produce-key").value, value: $("produce-value").value };
  try {
    const data = await call("POST", "/api/produce", body);
    out.className = data.error ? "error" : "ok";
    out.textContent = data.error ? "not sent: " + data.error : "sent at offset " + data.offset;
    out.dataset.offset = data.error ? "" : data.offset;
  } catch (e) {
    out.className = "error";
    out.textContent = "not sent: the console is not answering";
  }
});

// ---- a topic's messages: pages and follow ----

function messageRow(m) {
  const key = m.key == null ? "" : m.key;
  const tr = row([
    cell(m.offset, "num"),
    cell(TIME.format(m.timestamp)),
    cell(key, m.key_hex ? "value hex" : "value"),
    cell(m.value, m.value_hex ? "value hex" : "value"),
  ]);
  tr.dataset.offset = m.offset;
  if (m.value_hex) tr.title = "not UTF-8: shown as hex";
  return tr;
}

function messagesError(text) {
  $("messages-error").hidden = !text;
  $("messages-error").textContent = text || "";
}

async function openTopic(name, offset) {
  stopFollow();
  $("follow").checked = false;
  state.topic = name;
  $("messages-topic").textContent = "of " + name;
  $("messages-topic-input").value = name;
  location.hash = "topic=" + encodeURIComponent(name);
  await showPage(offset);
}

function topicInfo() {
  return state.topics.find((t) => t.name === state.topic);
}

async function showPage(offset) {
  if (state.topic == null) return;
  offset = Math.max(0, offset);
  const url = "/api/messages?topic=" + encodeURIComponent(state.topic) + "&offset=" + offset + "&limit=" + PAGE;
  const data = await call("GET", url);
  if (data.error) {
    messagesError(data.error);
    return;
  }
  messagesError(null);
  state.offset = offset;
  $("jump-offset").value = offset;
  $("follow-count").textContent = data.messages.length
    ? "offsets " + data.messages[0].offset + "–" + data.messages[data.messages.length - 1].offset + " of " + data.end_offset
    : "no messages from offset " + offset + " (the topic ends at " + data.end_offset + ")";
  $("messages").tBodies[0].replaceChildren(...data.messages.map(messageRow));
}

function startFollow() {
  stopFollow();
  if (state.topic == null) return;
  const body = $("messages").tBodies[0];
  const info = topicInfo();
  const from = info ? Math.max(info.first_offset, info.next_offset - PAGE) : "end";
  body.replaceChildren();
  state.received = 0;
  state.pending = [];
  state.lastDrawn = 0;
  $("follow-count").textContent = "following: 0 messages received";
  const source = new EventSource("/api/follow?topic=" + encodeURIComponent(state.topic) + "&from=" + from);
  state.source = source;
  source.addEventListener("messages", (event) => {
    const data = JSON.parse(event.data);
    state.received += data.messages.length;
    state.end = data.end_offset;
    // Only the last WINDOW can stay on the page anyway: keep no more than that waiting.
    const pending = state.pending.concat(data.messages.length > WINDOW ? data.messages.slice(-WINDOW) : data.messages);
    state.pending = pending.length > WINDOW ? pending.slice(-WINDOW) : pending;
    queueFollowed();
  });
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    $("follow-status").textContent = data.state === "live" ? "live" : data.state + ": " + data.error;
  });
  source.addEventListener("note", (event) => {
    $("follow-status").textContent = JSON.parse(event.data).note;
  });
  source.addEventListener("gone", (event) => {
    $("follow-status").textContent = JSON.parse(event.data).error;
    stopFollow();
  });
  source.onerror = () => {
    $("follow-status").textContent = "reconnecting…";
  };
}

// Draws what arrived at once when nothing was drawn for a frame; when more keeps coming than
// a person can read (over BUSY_ROWS waiting), at most every BUSY_MS, and every FLOOD_MS when a
// whole window comes between two draws: following 10,000 messages/s, drawing the whole window
// on every frame kept the page busy a third of the time.
function queueFollowed() {
  if (state.drawScheduled) return;
  // How busy the topic is: what waits now, or what the last draw drew.
  const waiting = Math.max(state.pending.length, state.lastDrawn);
  const wait = waiting >= WINDOW ? FLOOD_MS : waiting > BUSY_ROWS ? BUSY_MS : FRAME_MS;
  const since = performance.now() - state.lastDraw;
  if (since >= wait) {
    drawFollowed();
  } else {
    state.drawScheduled = true;
    setTimeout(drawFollowed, wait - since);
  }
}

function drawFollowed() {
  state.drawScheduled = false;
  state.lastDraw = performance.now();
  if (!state.source) return;
  const body = $("messages").tBodies[0];
  const scroll = $("messages-scroll");
  // Keep showing the newest unless the reader has scrolled up to look at something.
  const atEnd = scroll.scrollTop + scroll.clientHeight >= scroll.scrollHeight - 40;
  const fragment = document.createDocumentFragment();
  for (const m of state.pending) fragment.appendChild(messageRow(m));
  const whole = state.pending.length >= WINDOW;
  state.lastDrawn = state.pending.length;
  state.pending = [];
  if (whole) {
    body.replaceChildren(fragment);
  } else {
    body.appendChild(fragment);
    let extra = body.rows.length - WINDOW;
    while (extra-- > 0) body.deleteRow(0);
  }
  if (atEnd) scroll.scrollTop = scroll.scrollHeight;
  $("follow-count").textContent = "following: " + state.received
    + (state.received === 1 ? " message" : " messages") + " received, the last "
    + body.rows.length + " shown; the topic ends at " + state.end;
}

function stopFollow() {
  if (state.source) {
    state.source.close();
    state.source = null;
  }
}

$("follow").addEventListener("change", () => {
  if ($("follow").checked) {
    startFollow();
    location.hash = "topic=" + encodeURIComponent(state.topic || "") + "&follow=1";
  } else {
    stopFollow();
    $("follow-status").textContent = "";
    showPage(state.offset);
  }
});

$("messages-topic-input").addEventListener("change", () => {
  const name = $("messages-topic-input").value;
  if (name) openTopic(name, 0);
});
$("jump").addEventListener("click", () => showPage(Number($("jump-offset").value) || 0));
$("first").addEventListener("click", () => {
  const info = topicInfo();
  showPage(info ? info.first_offset : 0);
});
$("prev").addEventListener("click", () => showPage(state.offset - PAGE));
$("next").addEventListener("click", () => showPage(state.offset + PAGE));
$("end").addEventListener("click", () => {
  const info = topicInfo();
  showPage(info ? info.next_offset - PAGE : 0);
});

// `#topic=NAME` opens a topic; `&follow=1` follows it.
async function fromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const name = params.get("topic");
  if (!name) return;
  state.topic = name;
  $("messages-topic").textContent = "of " + name;
  $("messages-topic-input").value = name;
  if (params.get("follow") === "1") {
    $("follow").checked = true;
    startFollow();
  } else {
    await showPage(0);
  }
}

// ---- the session: who the page speaks to the broker as ----

function loginMessage(text) {
  $("login-result").hidden = !text;
  $("login-result").textContent = text || "";
}

function showSession(data) {
  if (data.error) return;
  $("who").textContent = "as " + (data.user ? "user " + data.user : data.who);
  $("logout").hidden = !data.user;
  $("login-form").hidden = !!data.user;
  showHeld(data.held);
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = await call("POST", "/api/login", { user: $("login-user").value, password: $("login-password").value });
  $("login-password").value = "";
  state.loginError = data.error || null;
  loginMessage(data.error ? "not logged in: " + data.error : null);
  showSession(data);
  if (!data.error && state.topic != null && state.source) startFollow();
});

$("logout").addEventListener("click", async () => {
  showSession(await call("POST", "/api/logout"));
  if (state.source) startFollow();
});

// ---- consume as in the original: claim, pick a topic, pick a message, release ----

function showHeld(held) {
  state.held = held || null;
  const holding = !!state.held;
  $("consume-claim").disabled = holding;
  $("consume-release").disabled = !holding;
  for (const id of ["consume-topic", "consume-offset", "consume-read"]) $(id).disabled = !holding;
  clearInterval(state.renewTimer);
  state.renewTimer = null;
  if (holding) {
    $("consume-state").className = "ok";
    $("consume-state").textContent = "holding logical broker " + state.held.broker;
    // Renew well within the lease: a page that closes stops renewing, and the lease runs out.
    state.renewTimer = setInterval(renewHeld, Math.max(500, state.held.lease_ms / 3));
  } else {
    $("consume-messages").tBodies[0].replaceChildren();
    $("consume-picked").hidden = true;
  }
}

function consumeMessage(text, ok) {
  $("consume-state").className = ok ? "ok" : "error";
  $("consume-state").textContent = text;
}

async function renewHeld() {
  const data = await call("POST", "/api/consume/renew");
  if (data.error) {
    showHeld(null);
    consumeMessage("released: " + data.error, false);
  }
}

$("consume-claim").addEventListener("click", async () => {
  const broker = $("consume-broker").value;
  const data = await call("POST", "/api/consume/claim", broker ? { broker: Number(broker) } : {});
  if (data.error) {
    consumeMessage("not claimed: " + data.error, false);
    return;
  }
  showHeld(data.held);
  const topics = await call("GET", "/api/consume/topics");
  if (topics.error) {
    consumeMessage("cannot list the topics: " + topics.error, false);
    return;
  }
  $("consume-topic").replaceChildren(...topics.topics.map((t) => {
    const option = document.createElement("option");
    option.value = t.name;
    option.textContent = t.name + " (" + t.messages + ")";
    return option;
  }));
  const first = topics.topics[0];
  $("consume-offset").value = first ? first.first_offset : 0;
});

$("consume-topic").addEventListener("change", () => { $("consume-offset").value = 0; });

$("consume-release").addEventListener("click", async () => {
  const data = await call("POST", "/api/consume/release");
  showHeld(null);
  if (data.error) consumeMessage("not released: " + data.error, false);
  else consumeMessage("released logical broker " + data.released, true);
});

$("consume-read").addEventListener("click", async () => {
  const topic = $("consume-topic").value;
  const offset = Number($("consume-offset").value) || 0;
  const data = await call("GET", "/api/messages?topic=" + encodeURIComponent(topic) + "&offset=" + offset + "&limit=20");
  if (data.error) {
    consumeMessage("cannot read: " + data.error, false);
    return;
  }
  $("consume-messages").tBodies[0].replaceChildren(...data.messages.map((m) => {
    const pick = document.createElement("button");
    pick.textContent = "Pick";
    pick.addEventListener("click", () => {
      $("consume-picked").hidden = false;
      $("consume-picked-offset").textContent = "at offset " + m.offset + " of " + topic;
      $("consume-picked-time").textContent = new Date(m.timestamp).toLocaleString();
      $("consume-picked-key").textContent = m.key == null ? "(none)" : m.key;
      $("consume-picked-value").textContent = m.value;
    });
    const action = document.createElement("td");
    action.appendChild(pick);
    const tr = row([cell(m.offset, "num"), cell(m.key, "value"), cell(m.value, m.value_hex ? "value hex" : "value"), action]);
    tr.dataset.offset = m.offset;
    return tr;
  }));
});

// Closing the page gives the logical broker back at once (the lease would run out anyway).
window.addEventListener("pagehide", () => {
  if (state.held) navigator.sendBeacon("/api/consume/release?page=" + encodeURIComponent(PAGE_ID));
});

// The first overview comes before the topic in the address is opened, so that a follow view
// opened from a link starts with the topic's recent messages rather than an empty table.
call("GET", "/api/session").then(showSession).finally(async () => {
  await refresh();
  fromHash();
});
