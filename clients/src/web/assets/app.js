// The console page. Every string from the broker goes into the page as text (textContent,
// never innerHTML), so that topic names, keys, values and holders cannot become markup.
//
// The refresh twice a second changes only the cells whose text changed, in rows it keeps:
// a focused link, a selection or a press held on a button survive it. The address holds the
// messages view (`#topic=T&offset=N`, `&follow=1`, a search), so that Back, Forward and a
// bookmark bring it back.
"use strict";

const POLL_MS = 500;          // how often the overview is refreshed
const STALE_MS = 1000;        // an overview unanswered this long: say the page is reconnecting
const PAGE = 50;              // messages per page
const TOPIC_PAGE = 50;        // topics per page of the Topics table
const WINDOW = 200;           // rows kept while following: a bounded window of recent ones
const PREVIEW = 500;          // characters of a value shown before "show all"
const JSON_PARSE_MAX = 256 * 1024; // longer values are not parsed as JSON (shown as text)
const CHART_MS = 5 * 60 * 1000; // the span of a group's lag chart
const FRAME_MS = 16;          // followed messages are drawn at most this often
const BUSY_ROWS = 20;         // more than this many waiting to be drawn: the topic is busy
const BUSY_MS = 100;          // and then they are drawn at most this often
const FLOOD_MS = 250;         // or this often when a whole window arrives between two draws
const RETRY_MS = 1000;        // a follow stream the console refused is opened again after this
const PARTITION_OFFSETS = 4;  // a topic's offsets shown per partition before "…"

const $ = (id) => document.getElementById(id);
// Local, readable times; one formatter for all, as making one per message is what costs.
const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "short", timeStyle: "medium" });
const state = {
  topics: [],          // the last topic list
  topicFilter: "",     // what the Topics table is filtered by
  topicSort: { key: "name", dir: 1 }, // and sorted by
  topicPage: 0,        // which page of it is shown
  confirming: null,    // the topic whose deletion is being confirmed
  loginError: null,    // the last refused login, shown until the next attempt
  held: null,          // the logical broker held from the Consume panel: {broker, lease_ms}
  renewTimer: null,    // renews the held claim while the page is open
  topic: null,         // the topic shown in the messages view
  partition: 0,        // and its partition shown
  view: null,          // the messages view's parameters, as in the address
  page: null,          // the page of messages shown: the reply of /api/messages
  source: null,        // the follow stream, when following
  retryTimer: null,    // opens a refused follow stream again
  followNext: null,    // the offset the follow stream reads next, as last heard
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

// Sets an element's text only when it changed: unchanged cells are not touched at all.
function setText(element, text) {
  text = text == null ? "" : String(text);
  if (element.textContent !== text) element.textContent = text;
}

function button(text, onClick, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function showBanner(text) {
  const banner = $("banner");
  if (text) {
    setText(banner, text);
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
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    return { error: "the console is not answering" };
  }
  let data;
  try {
    data = await response.json();
  } catch (e) {
    data = { error: "the console answered " + response.status };
  }
  if (!response.ok && !data.error) data.error = "the console answered " + response.status;
  return data;
}

// ---- copying and downloading ----

async function copyText(text, control) {
  let done;
  try {
    await navigator.clipboard.writeText(text);
    done = "copied";
  } catch (e) {
    done = "cannot copy here";
  }
  const was = control.textContent;
  control.textContent = done;
  setTimeout(() => { control.textContent = was; }, 1200);
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- values: bounded previews, JSON, hex ----

// A value as the page shows it, into `target` (a cell): text; an object or array of JSON
// pretty-printed in a collapsible block; anything longer than PREVIEW cut there, with "show
// all", copy and download. Always as text.
function fillValue(target, text, hex, name) {
  target.classList.toggle("hex", !!hex);
  if (hex) target.title = "not UTF-8: shown as hex";
  const trimmed = hex ? "" : text.trimStart();
  if ((trimmed.startsWith("{") || trimmed.startsWith("[")) && text.length <= JSON_PARSE_MAX) {
    let parsed;
    try { parsed = JSON.parse(text); } catch (e) { parsed = undefined; }
    if (parsed !== undefined && typeof parsed === "object" && parsed !== null) {
      const details = document.createElement("details");
      details.className = "json";
      const summary = document.createElement("summary");
      summary.textContent = text.length > 120 ? text.slice(0, 120) + "…" : text;
      const pre = document.createElement("pre");
      pre.textContent = JSON.stringify(parsed, null, 2);
      details.append(summary, pre);
      target.appendChild(details);
      if (text.length > PREVIEW) target.appendChild(valueTools(text, name, null));
      return;
    }
  }
  if (text.length <= PREVIEW) {
    target.appendChild(document.createTextNode(text));
    return;
  }
  const shown = document.createElement("span");
  shown.className = "preview";
  shown.textContent = text.slice(0, PREVIEW);
  target.append(shown, valueTools(text, name, shown));
}

// The controls under a long value: how much is hidden, show all (or less), copy, download.
function valueTools(text, name, shown) {
  const tools = document.createElement("div");
  tools.className = "value-tools";
  const rest = document.createElement("span");
  rest.className = "muted";
  if (shown) {
    rest.textContent = "… " + (text.length - PREVIEW).toLocaleString() + " more characters ";
    const all = button("show all", () => {
      const open = all.textContent === "show all";
      shown.textContent = open ? text : text.slice(0, PREVIEW);
      shown.classList.toggle("whole", open);
      all.textContent = open ? "show less" : "show all";
      rest.hidden = open;
    });
    all.className = "link show-all";
    tools.append(rest, all, " ");
  } else {
    rest.textContent = text.length.toLocaleString() + " characters ";
    tools.append(rest);
  }
  const copy = button("copy", () => copyText(text, copy), "copy the value");
  copy.className = "link copy-value";
  const save = button("download", () => download(name, text), "download the value");
  save.className = "link download-value";
  tools.append(copy, " ", save);
  return tools;
}

function valueCell(text, hex, name) {
  const td = document.createElement("td");
  td.className = "value";
  fillValue(td, text, hex, name);
  return td;
}

// ---- overview: brokers, topics, groups ----

let refreshAnswered = true;

async function refresh() {
  refreshAnswered = false;
  // Say so within a second when the broker (or the console) keeps the page waiting, rather
  // than after the console's whole timeout; what is shown is marked out of date meanwhile.
  const watchdog = setTimeout(() => {
    if (!refreshAnswered) stale("The broker is not answering; reconnecting…");
  }, STALE_MS);
  const data = await call("GET", "/api/overview");
  refreshAnswered = true;
  clearTimeout(watchdog);
  if (data.refused) {
    fresh();
    // What the user's last login attempt was told stays until the next attempt: the page's
    // own refusal, twice a second, would otherwise replace it before it could be read.
    if (!state.loginError) loginMessage(data.error);
  } else if (data.up === false) {
    stale("The broker is not answering (" + data.error + "); reconnecting…");
  } else if (data.up === undefined) {
    stale("The console itself is not answering (" + data.error + "); reconnecting…");
  } else {
    fresh();
    if (!state.loginError) loginMessage(null);
    drawBrokers(data.brokers);
    drawTopics(data.topics, data.topics_error);
    drawGroups(data.groups);
    setText($("updated"), "updated " + new Date().toLocaleTimeString());
  }
  setTimeout(refresh, POLL_MS);
}

function stale(text) {
  showBanner(text);
  document.body.classList.add("stale");
}

function fresh() {
  showBanner(null);
  document.body.classList.remove("stale");
}

// Keeps `body`'s rows those of `items`, in order, keyed by `key`: a row kept is updated by
// `update`, a new one made by `make`. Rows are moved or removed only when `still` is false
// (the reader's pointer or focus is elsewhere), so that nothing jumps under the hand.
function syncRows(body, items, key, make, update, still) {
  const have = new Map();
  for (const tr of body.rows) have.set(tr.dataset.key, tr);
  const wanted = new Set();
  let at = 0;
  for (const item of items) {
    const k = key(item);
    wanted.add(k);
    let tr = have.get(k);
    if (!tr) {
      tr = make(item);
      tr.dataset.key = k;
    }
    update(tr, item);
    if (!tr.parentNode) {
      body.insertBefore(tr, still ? null : body.rows[at] || null);
    } else if (!still && body.rows[at] !== tr) {
      body.insertBefore(tr, body.rows[at] || null);
    }
    at++;
  }
  if (!still) for (const [k, tr] of have) if (!wanted.has(k)) tr.remove();
}

// Whether the reader is at work in `element`: pointer over it, or focus in it.
function inUse(element) {
  return element.matches(":hover") || element.contains(document.activeElement);
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
  syncRows(body, brokers, (b) => String(b.id),
    () => row([cell("", "num"), cell(""), cell(""), cell("", "num")]),
    (tr, b) => {
      const lease = b.lease_remaining_ms == null ? "" : (b.lease_remaining_ms / 1000).toFixed(1) + " s";
      const [id, st, holder, left] = tr.cells;
      setText(id, b.id);
      setText(st, b.available ? "free" : "claimed");
      st.className = b.available ? "free" : "busy";
      setText(holder, b.holder);
      setText(left, lease);
      tr.dataset.broker = b.id;
      tr.dataset.state = b.available ? "free" : "claimed";
    }, false);
}

function drawTopics(topics, error) {
  $("topics-error").hidden = !error;
  setText($("topics-error"), error || "");
  if (!topics) return;
  const before = state.topics.map((t) => t.name).join("\u0000");
  state.topics = topics;
  renderTopics();
  if (state.topic != null) drawPartitionPicker();
  if (topics.map((t) => t.name).join("\u0000") !== before) {
    $("topic-names").replaceChildren(...topics.map((t) => {
      const option = document.createElement("option");
      option.value = t.name;
      return option;
    }));
  }
}

function sortedTopics() {
  const filter = state.topicFilter.toLowerCase();
  const list = filter ? state.topics.filter((t) => t.name.toLowerCase().includes(filter)) : state.topics.slice();
  const { key, dir } = state.topicSort;
  list.sort((a, b) => {
    const order = key === "name" ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a[key] - b[key];
    return order * dir || (a.name < b.name ? -1 : 1);
  });
  return list;
}

function renderTopics() {
  const list = sortedTopics();
  const pages = Math.max(1, Math.ceil(list.length / TOPIC_PAGE));
  state.topicPage = Math.min(state.topicPage, pages - 1);
  const from = state.topicPage * TOPIC_PAGE;
  const shown = list.slice(from, from + TOPIC_PAGE);
  setText($("topics-count"), list.length
    ? (from + 1) + "–" + (from + shown.length) + " of " + list.length
      + (state.topicFilter ? " matching" : "")
    : state.topicFilter ? "none matching" : "no topics");
  $("topics-prev").disabled = state.topicPage === 0;
  $("topics-next").disabled = state.topicPage >= pages - 1;
  for (const b of document.querySelectorAll("#topics button.sort")) {
    const on = b.dataset.sort === state.topicSort.key;
    b.closest("th").setAttribute("aria-sort", on ? (state.topicSort.dir > 0 ? "ascending" : "descending") : "none");
  }
  const body = $("topics").tBodies[0];
  syncRows(body, shown, (t) => t.name, makeTopicRow, updateTopicRow, inUse(body));
}

function makeTopicRow(t) {
  const open = document.createElement("a");
  open.href = "#" + new URLSearchParams({ topic: t.name });
  open.textContent = t.name;
  open.title = "show its messages";
  const name = document.createElement("td");
  name.appendChild(open);
  const tr = row([name, cell("", "num"), cell("", "num"), cell("", "num"), cell("", "num"), cell("", "num"),
    document.createElement("td")]);
  tr.dataset.topic = t.name;
  return tr;
}

// One offset per partition: "3" for one partition, "3,0,7" for a few, the first ones and
// "…" for many (the whole list in the cell's title).
function perPartition(list, single) {
  if (!list || list.length <= 1) return { text: String(single), title: "" };
  const shown = list.slice(0, PARTITION_OFFSETS).join(",") + (list.length > PARTITION_OFFSETS ? ",…" : "");
  return { text: shown, title: "by partition: " + list.join(", ") };
}

function updateTopicRow(tr, t) {
  const cells = tr.cells;
  setText(cells[1], partitionsOf(t));
  setText(cells[2], t.messages);
  const first = perPartition(t.first_offsets, t.first_offset);
  const next = perPartition(t.next_offsets, t.next_offset);
  setText(cells[3], first.text);
  cells[3].title = first.title;
  setText(cells[4], next.text);
  cells[4].title = next.title;
  setText(cells[5], bytes(t.bytes));
  // What retention keeps, in the topic's title: the table stays narrow enough for its column.
  const kept = "keeps " + keeps(t);
  if (tr.cells[0].title !== kept) tr.cells[0].title = kept;
  const confirming = state.confirming === t.name ? "1" : "";
  if (tr.dataset.confirming !== confirming || !cells[6].firstChild) {
    tr.dataset.confirming = confirming;
    cells[6].replaceChildren(...topicActions(t.name, !!confirming));
  }
}

// What retention keeps of each partition of a topic, in words: "everything", or its limits
// ("1,000 messages · 1.0 MiB · 7 days"), whichever removes first.
function keeps(t) {
  const limits = [];
  if (t.retention_messages != null) limits.push(t.retention_messages.toLocaleString("en") + " messages");
  if (t.retention_bytes != null) limits.push(bytes(t.retention_bytes));
  if (t.retention_ms != null) limits.push(age(t.retention_ms));
  return limits.length ? limits.join(" · ") : "everything";
}

// A duration in milliseconds, in the largest whole unit that fits: "7 days", "90 s".
function age(ms) {
  const units = [["day", 86400000], ["hour", 3600000], ["minute", 60000], ["second", 1000]];
  for (const [unit, size] of units) {
    if (ms >= size && ms % size === 0) {
      const n = ms / size;
      return n + " " + unit + (n === 1 ? "" : "s");
    }
  }
  return ms + " ms";
}

// How many partitions a topic record says it has (1 from a broker before partitions).
function partitionsOf(t) {
  return t && t.partitions ? t.partitions : 1;
}

// A partition's first kept offset and next offset, from its topic's record.
function partitionOffsets(t, partition) {
  if (t.first_offsets && t.next_offsets && partition < t.first_offsets.length) {
    return [t.first_offsets[partition], t.next_offsets[partition]];
  }
  return partition === 0 ? [t.first_offset, t.next_offset] : [0, 0];
}

function topicActions(name, confirming) {
  if (confirming) {
    // Asked in the page rather than with confirm(), which would stop every live update.
    const question = document.createElement("span");
    question.className = "confirm";
    question.textContent = "delete it and all its messages? ";
    const yes = button("Yes, delete", () => { state.confirming = null; renderTopics(); deleteTopic(name); },
      "Yes, delete topic " + name);
    yes.className = "confirm-yes";
    const no = button("No", () => { state.confirming = null; renderTopics(); }, "No, keep topic " + name);
    return [question, yes, no];
  }
  const remove = button("Delete", () => { state.confirming = name; renderTopics(); }, "Delete topic " + name);
  remove.className = "delete";
  return [remove];
}

$("topics-filter").addEventListener("input", () => {
  state.topicFilter = $("topics-filter").value;
  state.topicPage = 0;
  renderTopics();
});
$("topics-prev").addEventListener("click", () => { state.topicPage--; renderTopics(); });
$("topics-next").addEventListener("click", () => { state.topicPage++; renderTopics(); });
for (const b of document.querySelectorAll("#topics button.sort")) {
  b.addEventListener("click", () => {
    const key = b.dataset.sort;
    state.topicSort = { key, dir: state.topicSort.key === key ? -state.topicSort.dir : key === "name" ? 1 : -1 };
    renderTopics();
  });
}

// A group record's key: one record per group, topic and partition.
function groupKey(g) {
  return g.group + "\u0000" + g.topic + "\u0000" + (g.partition || 0);
}

function drawGroups(groups) {
  const now = Date.now();
  const seen = new Set();
  for (const g of groups) {
    const key = groupKey(g);
    seen.add(key);
    const history = state.lag.get(key) || [];
    history.push([now, g.lag]);
    while (history.length && history[0][0] < now - CHART_MS) history.shift();
    state.lag.set(key, history);
  }
  for (const key of [...state.lag.keys()]) if (!seen.has(key)) state.lag.delete(key);
  const body = $("groups").tBodies[0];
  syncRows(body, groups, groupKey,
    (g) => {
      const partition = g.partition || 0;
      const tr = row([cell(g.group), cell(g.topic), cell(String(partition), "num"), cell("", "num"), cell("", "num"),
        cell("", "num"), cell("", "num"), cell(""), document.createElement("td"), document.createElement("td")]);
      tr.cells[9].appendChild(button("Reset…", () => openReset(tr, g.group, g.topic, partition),
        "reset the offset of group " + g.group + " on " + g.topic + " partition " + partition));
      tr.dataset.group = g.group;
      tr.dataset.partition = partition;
      return tr;
    },
    (tr, g) => {
      const c = tr.cells;
      setText(c[3], g.committed_offset);
      setText(c[4], g.end_offset);
      setText(c[5], g.lag);
      setText(c[6], g.pending);
      setText(c[7], g.members.join(", "));
      c[8].replaceChildren(lagChart(state.lag.get(groupKey(g)), now));
    }, inUse(body));
}

// A small line of lag over the last CHART_MS, drawn as SVG, with its scale: the largest lag
// at the top, 0 at the bottom, and the span along the bottom.
function lagChart(history, now) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 200, height = 40, left = 0, top = 12;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height + top);
  const max = Math.max(1, ...history.map((p) => p[1]));
  // The chart spans what has been seen, up to CHART_MS: a page open for a minute shows a
  // minute across its whole width.
  const span = Math.min(CHART_MS, Math.max(10000, now - history[0][0]));
  const points = history.map(([t, lag]) => {
    const x = left + (width - left) - ((now - t) / span) * (width - left);
    const y = top + height - 2 - (lag / max) * (height - 4);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  const label = (x, y, text, anchor) => {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", x);
    t.setAttribute("y", y);
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.appendChild(t);
  };
  label(2, 10, "max " + max);
  label(width - 2, 10, "0 at the foot; " + Math.round(span / 1000) + " s wide", "end");
  const title = document.createElementNS(NS, "title");
  title.textContent = "lag now " + history[history.length - 1][1] + ", at most " + max
    + " over the last " + Math.round(span / 1000) + " s";
  svg.appendChild(title);
  return svg;
}

// The reset form of one group on one topic, in its row: the same refusal as `consumer
// group-reset` while the group has members, unless "even while it is being read".
function openReset(tr, group, topic, partition) {
  const td = tr.cells[9];
  const form = document.createElement("form");
  form.className = "reset-form";
  const to = document.createElement("select");
  to.setAttribute("aria-label", "reset to");
  for (const [value, text] of [["earliest", "earliest"], ["latest", "latest"], ["offset", "offset…"]]) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    to.appendChild(o);
  }
  const offset = document.createElement("input");
  offset.type = "number";
  offset.min = "0";
  offset.size = 6;
  offset.setAttribute("aria-label", "offset");
  offset.hidden = true;
  to.addEventListener("change", () => { offset.hidden = to.value !== "offset"; });
  const forceLabel = document.createElement("label");
  const force = document.createElement("input");
  force.type = "checkbox";
  forceLabel.append(force, " even while it is being read");
  const apply = document.createElement("button");
  apply.type = "submit";
  apply.textContent = "Reset";
  const cancel = button("Cancel", () => restore());
  const restore = () => td.replaceChildren(button("Reset…", () => openReset(tr, group, topic, partition),
    "reset the offset of group " + group + " on " + topic + " partition " + partition));
  form.append(to, offset, forceLabel, apply, cancel);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { group, topic, partition, to: to.value, force: force.checked };
    if (to.value === "offset") body.offset = Number(offset.value);
    const data = await call("POST", "/api/groups/reset", body);
    const out = $("reset-result");
    out.className = data.error ? "error" : "ok";
    out.textContent = data.error
      ? "not reset: " + data.error
      : "group " + group + " on " + topic + " partition " + partition + " now reads on from offset "
        + data.committed_offset;
    if (!data.error) restore();
  });
  td.replaceChildren(form);
  to.focus();
}

// ---- topics: create, delete ----

$("create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("create-name").value;
  const out = $("create-result");
  const body = { name };
  const number = (id) => $(id).value === "" ? undefined : Number($(id).value);
  body.partitions = number("create-partitions");
  body.retention_messages = number("create-retention-messages");
  body.retention_bytes = number("create-retention-bytes");
  if ($("create-retention-time").value.trim()) body.retention_time = $("create-retention-time").value;
  const data = await call("POST", "/api/topics", body);
  out.className = data.error ? "error" : "ok";
  out.textContent = data.error ? "not created: " + data.error
    : "created " + name + (data.partitions > 1 ? " with " + data.partitions + " partitions" : "");
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
  if ($("produce-partition").value !== "") body.partition = Number($("produce-partition").value);
  const data = await call("POST", "/api/produce", body);
  out.className = data.error ? "error" : "ok";
  const info = state.topics.find((t) => t.name === body.topic);
  const where = data.partition > 0 || partitionsOf(info) > 1 ? "partition " + data.partition + " " : "";
  out.textContent = data.error ? "not sent: " + data.error : "sent at " + where + "offset " + data.offset;
  out.dataset.offset = data.error ? "" : data.offset;
  out.dataset.partition = data.error ? "" : data.partition;
});

// ---- a topic's messages: pages, search and follow, all held in the address ----

function messageRow(m) {
  const key = m.key == null ? "" : m.key;
  const topic = state.topic;
  const keyCell = cell(key, "value");
  if (m.key_hex) {
    keyCell.classList.add("hex");
    keyCell.title = "not UTF-8: shown as hex";
  }
  // One listener on the table (below) serves every row's copy button: a followed topic draws
  // hundreds of rows a second.
  const copy = document.createElement("button");
  copy.type = "button";
  copy.textContent = "copy";
  copy.setAttribute("aria-label", "copy message " + m.offset);
  copy.className = "link copy-message";
  const actions = document.createElement("td");
  actions.appendChild(copy);
  const value = valueCell(m.value, m.value_hex, (topic || "message") + "-" + m.offset + (m.value_hex ? ".hex" : ".txt"));
  if (m.headers && m.headers.length) {
    // A message's headers (Kafka's record headers), in order, as one line above its value.
    const line = document.createElement("div");
    line.className = "headers muted";
    line.title = "headers";
    line.textContent = m.headers
      .map((h) => h.key + ": " + (h.value == null ? "null" : (h.value_hex ? "hex " : "") + h.value))
      .join(", ");
    value.prepend(line);
  }
  const tr = row([
    cell(m.offset, "num"),
    cell(TIME.format(m.timestamp), "time"),
    keyCell,
    value,
    actions,
  ]);
  tr.dataset.offset = m.offset;
  shownMessages.set(tr, { topic, m });
  return tr;
}

// The message each row of the Messages table shows, for its copy button.
const shownMessages = new WeakMap();

$("messages").addEventListener("click", (event) => {
  const copy = event.target.closest("button.copy-message");
  const shown = copy && shownMessages.get(copy.closest("tr"));
  if (!shown) return;
  const { topic, m } = shown;
  copyText(JSON.stringify({
    topic, offset: m.offset, timestamp: m.timestamp, key: m.key, value: m.value,
    ...(m.key_hex ? { key_hex: true } : {}), ...(m.value_hex ? { value_hex: true } : {}),
    ...(m.headers ? { headers: m.headers } : {}),
  }), copy);
});

function messagesError(text) {
  $("messages-error").hidden = !text;
  $("messages-error").textContent = text || "";
}

// The view the address holds: {topic, partition, offset, before, follow, newest, key, value,
// regex}.
function viewOf(hash) {
  const p = new URLSearchParams(hash.replace(/^#/, ""));
  const view = { topic: p.get("topic") };
  for (const name of ["partition", "offset", "before", "time", "key", "value"]) if (p.get(name)) view[name] = p.get(name);
  for (const name of ["follow", "newest", "regex"]) if (p.get(name) === "1") view[name] = true;
  return view;
}

function hashOf(view) {
  const p = new URLSearchParams();
  for (const name of ["topic", "partition", "offset", "before", "time", "key", "value"]) if (view[name] != null && view[name] !== "") p.set(name, view[name]);
  for (const name of ["follow", "newest", "regex"]) if (view[name]) p.set(name, "1");
  return "#" + p.toString();
}

// Goes to `view`: a new entry in the history (so Back comes here again), then shown.
function go(view) {
  const hash = hashOf(view);
  if (location.hash === hash || (hash === "#" && !location.hash)) showView();
  else location.hash = hash;
}

// Changes of the view that start from the one shown.
function goWith(changes) {
  const view = { ...(state.view || { topic: state.topic }), ...changes };
  for (const [k, v] of Object.entries(changes)) if (v == null || v === false) delete view[k];
  // A page asked for by offset is no longer the one a time found.
  if (("offset" in changes || "before" in changes) && !("time" in changes)) delete view.time;
  go(view);
}

window.addEventListener("hashchange", () => showView());

// Shows the view the address holds.
async function showView() {
  const view = viewOf(location.hash);
  state.view = view;
  $("newest").checked = !!view.newest;
  $("search-key").value = view.key || "";
  $("search-value").value = view.value || "";
  $("search-regex").checked = !!view.regex;
  if (!view.topic) {
    stopFollow();
    pagingDisabled(true);
    return;
  }
  state.topic = view.topic;
  state.partition = Number(view.partition) || 0;
  drawPartitionPicker();
  $("messages-topic").textContent = "of " + view.topic + (view.partition != null ? " partition " + view.partition : "");
  $("messages-topic-input").value = view.topic;
  $("follow").checked = !!view.follow;
  pagingDisabled(!!view.follow);
  if (view.follow) {
    startFollow();
  } else {
    stopFollow();
    setText($("follow-status"), "");
    await showPage(view);
  }
}

// The partition picker of the messages view: shown for a topic of several partitions, each
// with its count of messages.
function drawPartitionPicker() {
  const info = state.topics.find((t) => t.name === state.topic);
  // What retention keeps of the topic shown, said above its messages.
  const keepsLine = $("messages-keeps");
  keepsLine.hidden = !info;
  if (info) setText(keepsLine, "Each partition keeps " + keeps(info) + ".");
  const count = partitionsOf(info);
  const label = $("messages-partition-label");
  const select = $("messages-partition");
  label.hidden = count <= 1 && state.partition === 0;
  if (label.hidden) return;
  const shown = Math.max(count, state.partition + 1);
  const options = [];
  for (let p = 0; p < shown; p++) {
    const o = document.createElement("option");
    o.value = String(p);
    if (info && p < count) {
      const [first, next] = partitionOffsets(info, p);
      o.textContent = p + " (" + (next - first) + (next - first === 1 ? " message)" : " messages)");
    } else {
      o.textContent = String(p);
    }
    options.push(o);
  }
  const same = select.options.length === options.length
    && options.every((o, i) => select.options[i].textContent === o.textContent);
  if (!same) select.replaceChildren(...options);
  select.value = String(state.partition);
}

$("messages-partition").addEventListener("change", () => {
  goWith({ partition: $("messages-partition").value, offset: null, before: null });
});

function pagingDisabled(disabled) {
  for (const id of ["first", "prev", "next", "end", "jump", "jump-offset", "jump-time", "jump-to-time"]) $(id).disabled = disabled;
}

function searching(view) {
  return !!(view.key || view.value);
}

async function showPage(view) {
  const search = searching(view);
  const params = new URLSearchParams({ topic: view.topic, limit: PAGE });
  if (view.partition != null) params.set("partition", view.partition);
  if (view.time != null) params.set("time", view.time);
  else if (view.before != null) params.set("before", view.before);
  else params.set("offset", view.offset != null ? view.offset : search ? "first" : "last");
  if (view.key) params.set("key", view.key);
  if (view.value) params.set("value", view.value);
  if (view.regex) params.set("regex", "1");
  const data = await call("GET", "/api/messages?" + params);
  if (state.view !== view) return; // another view was asked for meanwhile
  if (data.error) {
    messagesError(data.error);
    if (data.first_offset != null) {
      // Offer the nearest page there is rather than leave the reader at an error.
      const offsetAsked = Number(view.offset);
      const near = offsetAsked < data.first_offset ? "first" : "last";
      const link = document.createElement("a");
      link.href = hashOf({ ...view, offset: near, before: null });
      link.textContent = near === "first" ? " Go to the first kept message." : " Go to the last messages.";
      $("messages-error").appendChild(link);
    }
    $("messages").tBodies[0].replaceChildren();
    setText($("follow-count"), "");
    return;
  }
  messagesError(null);
  state.page = data;
  $("jump-offset").value = data.offset;
  const shown = data.messages;
  const range = shown.length ? shown[0].offset + "–" + shown[shown.length - 1].offset : "";
  let text;
  if (search) {
    text = shown.length
      ? shown.length + (shown.length === 1 ? " match" : " matches") + " (offsets " + range + ")"
      : "no matches";
    text += " searching offsets " + data.offset + " to " + (data.next_offset - 1)
      + " of " + data.end_offset + (data.next_offset < data.end_offset ? "; Next searches on" : "; searched to the end");
  } else {
    text = shown.length
      ? "offsets " + range + " of " + data.first_offset + "–" + (data.end_offset - 1)
      : "no messages from offset " + data.offset + " (the topic ends at " + data.end_offset + ")";
  }
  setText($("follow-count"), text);
  const rows = shown.map(messageRow);
  if (view.newest) rows.reverse();
  $("messages").tBodies[0].replaceChildren(...rows);
  $("first").disabled = !search && data.offset <= data.first_offset;
  $("prev").disabled = search || data.offset <= data.first_offset;
  $("next").disabled = data.next_offset >= data.end_offset;
  $("end").disabled = search;
}

$("jump-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("messages-topic-input").value;
  if (!name) return;
  const offset = $("jump-offset").value;
  if (name !== state.topic) go({ topic: name, newest: $("newest").checked });
  else goWith({ offset: offset === "" ? "last" : String(Math.max(0, Number(offset) || 0)), before: null, follow: null });
});
// The page that starts at the first message appended at or after the time picked (the
// browser's local time).
$("jump-to-time").addEventListener("click", () => {
  const picked = new Date($("jump-time").value).getTime();
  if (Number.isNaN(picked)) {
    messagesError("pick a date and time first");
    return;
  }
  goWith({ time: String(Math.max(0, picked)), offset: null, before: null, follow: null });
});
$("messages-topic-input").addEventListener("change", () => {
  const name = $("messages-topic-input").value;
  if (name && name !== state.topic) go({ topic: name, newest: $("newest").checked });
});
$("first").addEventListener("click", () => goWith({ offset: "first", before: null }));
$("prev").addEventListener("click", () => state.page && goWith({ before: String(state.page.offset), offset: null }));
$("next").addEventListener("click", () => state.page && goWith({ offset: String(state.page.next_offset), before: null }));
$("end").addEventListener("click", () => goWith({ offset: "last", before: null }));
$("newest").addEventListener("change", () => goWith({ newest: $("newest").checked }));
$("follow").addEventListener("change", () => {
  if (state.topic == null) {
    $("follow").checked = false;
    return;
  }
  goWith({ follow: $("follow").checked, offset: null, before: null });
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  goWith({ key: $("search-key").value, value: $("search-value").value, regex: $("search-regex").checked,
    offset: null, before: null });
});
$("search-clear").addEventListener("click", () => goWith({ key: null, value: null, regex: null, offset: null, before: null }));

// What a followed message must match to be shown, from the search fields (as the server's
// search: substrings, or regular expressions).
function followFilter(view) {
  if (!searching(view)) return null;
  const make = (text) => {
    if (!text) return null;
    if (!view.regex) return (s) => s != null && s.includes(text);
    try {
      const re = new RegExp(text, "u");
      return (s) => s != null && re.test(s);
    } catch (e) {
      return () => false;
    }
  };
  const key = make(view.key), value = make(view.value);
  return (m) => (!key || key(m.key)) && (!value || value(m.value));
}

function startFollow() {
  stopFollow();
  if (state.topic == null) return;
  const body = $("messages").tBodies[0];
  const info = state.topics.find((t) => t.name === state.topic);
  let from = "end";
  if (info) {
    const [first, next] = partitionOffsets(info, state.partition);
    from = Math.max(first, next - PAGE);
  }
  body.replaceChildren();
  state.received = 0;
  state.pending = [];
  state.lastDrawn = 0;
  state.followNext = from;
  state.followFilter = followFilter(state.view || {});
  setText($("follow-count"), "following: 0 messages received");
  openStream();
}

// Opens the follow stream from where the last one stopped. The browser reconnects by itself
// after a dropped connection, but not after a refusal (a 503 when the console has too many
// streams): then this opens it again after RETRY_MS.
function openStream() {
  const topic = state.topic;
  const source = new EventSource("/api/follow?topic=" + encodeURIComponent(topic) + "&partition=" + state.partition
    + "&from=" + state.followNext);
  state.source = source;
  source.addEventListener("messages", (event) => {
    const data = JSON.parse(event.data);
    state.received += data.messages.length;
    state.end = data.end_offset;
    if (event.lastEventId) state.followNext = event.lastEventId;
    const messages = state.followFilter ? data.messages.filter(state.followFilter) : data.messages;
    // Only the last WINDOW can stay on the page anyway: keep no more than that waiting.
    const pending = state.pending.concat(messages.length > WINDOW ? messages.slice(-WINDOW) : messages);
    state.pending = pending.length > WINDOW ? pending.slice(-WINDOW) : pending;
    queueFollowed();
  });
  source.addEventListener("status", (event) => {
    const data = JSON.parse(event.data);
    setText($("follow-status"), data.state === "live" ? "live" : data.state + ": " + data.error);
  });
  source.addEventListener("note", (event) => {
    const data = JSON.parse(event.data);
    if (data.offset != null) state.followNext = data.offset;
    setText($("follow-status"), data.note);
  });
  source.addEventListener("gone", (event) => {
    setText($("follow-status"), JSON.parse(event.data).error);
    stopFollow();
  });
  source.onerror = () => {
    if (state.source !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      setText($("follow-status"), "the console refused the stream (busy?); trying again in a second…");
      state.source = null;
      state.retryTimer = setTimeout(() => {
        state.retryTimer = null;
        if (state.view && state.view.follow && state.topic === topic) openStream();
      }, RETRY_MS);
    } else {
      setText($("follow-status"), "reconnecting…");
    }
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
  const newest = !!(state.view && state.view.newest);
  // Keep showing the newest unless the reader has scrolled away to look at something.
  const atEnd = newest ? scroll.scrollTop < 40
    : scroll.scrollTop + scroll.clientHeight >= scroll.scrollHeight - 40;
  const fragment = document.createDocumentFragment();
  const rows = state.pending.map(messageRow);
  if (newest) rows.reverse();
  fragment.append(...rows);
  const whole = state.pending.length >= WINDOW;
  state.lastDrawn = state.pending.length;
  state.pending = [];
  if (whole) {
    body.replaceChildren(fragment);
  } else if (newest) {
    body.insertBefore(fragment, body.firstChild);
    let extra = body.rows.length - WINDOW;
    while (extra-- > 0) body.deleteRow(-1);
  } else {
    body.appendChild(fragment);
    let extra = body.rows.length - WINDOW;
    while (extra-- > 0) body.deleteRow(0);
  }
  if (atEnd) scroll.scrollTop = newest ? 0 : scroll.scrollHeight;
  setText($("follow-count"), "following: " + state.received
    + (state.received === 1 ? " message" : " messages") + " received, the last "
    + body.rows.length + " shown; the topic ends at " + state.end);
}

function stopFollow() {
  clearTimeout(state.retryTimer);
  state.retryTimer = null;
  if (state.source) {
    state.source.close();
    state.source = null;
  }
}

// ---- the session: who the page speaks to the broker as ----

function loginMessage(text) {
  $("login-result").hidden = !text;
  setText($("login-result"), text || "");
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
  for (const id of ["consume-topic", "consume-partition", "consume-offset", "consume-read"]) $(id).disabled = !holding;
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
  state.consumeTopics = topics.topics;
  $("consume-topic").replaceChildren(...topics.topics.map((t) => {
    const option = document.createElement("option");
    option.value = t.name;
    option.textContent = t.name + " (" + t.messages + ")";
    return option;
  }));
  consumePartitions();
});

// The partitions of the topic picked in the Consume panel, shown when there are several, and
// the offset to read from: the partition's first kept one.
function consumePartitions() {
  const info = (state.consumeTopics || []).find((t) => t.name === $("consume-topic").value);
  const count = partitionsOf(info);
  $("consume-partition-label").hidden = count <= 1;
  const options = [];
  for (let p = 0; p < count; p++) {
    const o = document.createElement("option");
    o.value = String(p);
    const [first, next] = partitionOffsets(info, p);
    o.textContent = p + " (" + (next - first) + ")";
    options.push(o);
  }
  $("consume-partition").replaceChildren(...options);
  consumeOffset();
}

function consumeOffset() {
  const info = (state.consumeTopics || []).find((t) => t.name === $("consume-topic").value);
  $("consume-offset").value = info ? partitionOffsets(info, Number($("consume-partition").value) || 0)[0] : 0;
}

$("consume-topic").addEventListener("change", consumePartitions);
$("consume-partition").addEventListener("change", consumeOffset);

$("consume-release").addEventListener("click", async () => {
  const data = await call("POST", "/api/consume/release");
  showHeld(null);
  if (data.error) consumeMessage("not released: " + data.error, false);
  else consumeMessage("released logical broker " + data.released, true);
});

async function consumeRead() {
  if ($("consume-read").disabled) return;
  const topic = $("consume-topic").value;
  const offset = Number($("consume-offset").value) || 0;
  const partition = Number($("consume-partition").value) || 0;
  const data = await call("GET", "/api/messages?topic=" + encodeURIComponent(topic) + "&partition=" + partition
    + "&offset=" + offset + "&limit=20");
  if (data.error) {
    consumeMessage("cannot read: " + data.error, false);
    return;
  }
  $("consume-messages").tBodies[0].replaceChildren(...data.messages.map((m) => {
    const pick = button("Pick", () => {
      $("consume-picked").hidden = false;
      $("consume-picked-offset").textContent = "at offset " + m.offset + " of " + topic
        + ($("consume-partition-label").hidden ? "" : " partition " + partition);
      $("consume-picked-time").textContent = new Date(m.timestamp).toLocaleString();
      const key = $("consume-picked-key");
      key.textContent = m.key == null ? "(none)" : m.key;
      key.classList.toggle("hex", !!m.key_hex);
      const value = $("consume-picked-value");
      value.replaceChildren();
      fillValue(value, m.value, m.value_hex, topic + "-" + m.offset + (m.value_hex ? ".hex" : ".txt"));
    }, "pick message " + m.offset);
    const action = document.createElement("td");
    action.appendChild(pick);
    const keyCell = cell(m.key, "value");
    if (m.key_hex) keyCell.classList.add("hex");
    const tr = row([cell(m.offset, "num"), keyCell,
      valueCell(m.value, m.value_hex, topic + "-" + m.offset + (m.value_hex ? ".hex" : ".txt")), action]);
    tr.dataset.offset = m.offset;
    return tr;
  }));
}

$("consume-read").addEventListener("click", consumeRead);
$("consume-offset").addEventListener("keydown", (event) => {
  if (event.key === "Enter") consumeRead();
});

// Closing the page gives the logical broker back at once (the lease would run out anyway).
window.addEventListener("pagehide", () => {
  if (state.held) navigator.sendBeacon("/api/consume/release?page=" + encodeURIComponent(PAGE_ID));
});

// The first overview comes before the view in the address is shown, so that a follow view
// opened from a link starts with the topic's recent messages rather than an empty table.
call("GET", "/api/session").then(showSession).finally(() => {
  refresh();
  // Not after the whole first refresh: a broker that does not answer must not hold up the
  // view for the console's whole timeout.
  let shown = false;
  const show = () => { if (!shown) { shown = true; showView(); } };
  const wait = setInterval(() => {
    if (refreshAnswered || state.topics.length) { clearInterval(wait); show(); }
  }, 20);
  setTimeout(() => { clearInterval(wait); show(); }, STALE_MS);
});
