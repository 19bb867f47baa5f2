// odradek console: plain JavaScript, no build step. Pages are drawn from the JSON API
// (/api/...); every value from the cluster goes in as text (textContent), never as HTML.
"use strict";

const main = document.getElementById("main");
let timers = [];
let session = null;

// -- helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// replaceChildren without the null/false of conditional parts
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-Odradek-Console": "1" }, credentials: "same-origin" };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  let res;
  try { res = await fetch(path, opts); } catch (e) { throw new Error("the console does not answer; is it still running?"); }
  const data = await res.json().catch(() => ({ error: `the console answered ${res.status}` }));
  if (res.status === 401 && session && session.login_required && path !== "/api/login") {
    session.logged_in = false; showLogin(data.error); throw new Error(data.error);  // the session expired
  }
  if (!res.ok) throw new Error(data.error || `the console answered ${res.status}`);
  return data;
}

const enc = encodeURIComponent;
const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const fmtRate = (r) => (r === null || r === undefined ? "measuring…" : `${r.toFixed(1)} msg/s`);
const fmtTime = (ms) => (ms === null || ms === undefined ? "–" : new Date(ms).toISOString().replace("T", " ").replace("Z", ""));
const fmtBytes = (b) => (b === null || b === undefined ? "–" : b < 1024 ? `${b} B` : b < 1048576 ? `${(b / 1024).toFixed(1)} KiB` : `${(b / 1048576).toFixed(1)} MiB`);

function every(ms, fn) { fn(); timers.push(setInterval(fn, ms)); }
function table(headers, rows, attrs) {
  return h("table", attrs || {}, h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: /^(Partition|Offset|Lag|Committed|Log|Size|Partitions|Under|New|Current|Iterations|Producer)/.test(x) ? "num" : null }, x)))),
    h("tbody", {}, rows));
}
function errorBox() { return h("div", { class: "error", role: "alert" }); }
function noteBox() { return h("div", { class: "note", role: "status" }); }

// A form's submit: runs `work`, shows its error as one sentence in `box`.
function submitting(form, box, work) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    box.textContent = "";
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try { await work(new FormData(form)); } catch (e) { box.textContent = e.message; }
    finally { if (button) button.disabled = false; }
  });
}

async function load(box, work) {
  try { await work(); box.textContent = ""; } catch (e) { box.textContent = e.message; }
}

// -- session and login -----------------------------------------------------------------

function showWho() {
  const who = document.getElementById("who");
  fill(who);
  if (!session) return;
  who.append(session.principal ? `as ${session.principal} · ` : "", session.bootstrap);
  if (session.login_required && session.logged_in) {
    who.append(h("button", { class: "plain", id: "logout", onclick: async () => { await api("POST", "/api/logout"); location.reload(); } }, "Log out"));
  }
}

function showLogin(message) {
  clearTimers();
  const box = errorBox();
  box.textContent = message && !/log in first/.test(message) ? message : "";
  const form = h("form", { class: "login", id: "login-form" },
    h("h1", {}, "Log in to the cluster"),
    h("p", { class: "muted" }, `${session.bootstrap} asks for SASL credentials; the console acts as the user you log in as.`),
    h("label", {}, "User", h("input", { name: "username", id: "login-user", autocomplete: "username", required: true })),
    h("label", {}, "Password", h("input", { name: "password", id: "login-password", type: "password", autocomplete: "current-password" })),
    h("label", {}, "Mechanism", h("select", { name: "mechanism", id: "login-mechanism" },
      ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"].map((m) => h("option", { value: m, selected: m === session.mechanism }, m)))),
    h("button", { type: "submit" }, "Log in"), box);
  submitting(form, box, async (data) => {
    const r = await api("POST", "/api/login", Object.fromEntries(data));
    session.logged_in = true; session.principal = r.principal;
    showWho(); route();
  });
  fill(main, form);
}

function clearTimers() { timers.forEach(clearInterval); timers = []; }

// -- pages -----------------------------------------------------------------------------

function overviewPage() {
  const box = errorBox();
  const body = h("div", {});
  fill(main, h("h1", {}, "Overview"), box, body);
  every(2000, () => load(box, async () => {
    const o = await api("GET", "/api/overview");
    const card = (k, v, bad) => h("div", { class: `card${bad ? " bad" : ""}`, "data-card": k }, h("div", { class: "v" }, v), h("div", { class: "k" }, k));
    fill(body,
      h("div", { class: "cards" },
        card("Brokers", o.brokers.length), card("Controller", o.controller ?? "–"), card("Racks", o.racks.length ? o.racks.join(", ") : "none set"),
        card("Topics", fmtNum(o.topics)), card("Partitions", fmtNum(o.partitions)), card("Replicas", fmtNum(o.replicas)),
        card("Under-replicated", o.under_replicated.length, o.under_replicated.length > 0),
        card("Offline", o.offline.length, o.offline.length > 0), card("Consumer groups", o.groups),
        card("Produce rate", fmtRate(o.produce_rate)), card("Consume rate", fmtRate(o.consume_rate))),
      h("p", { class: "muted" }, `Cluster ${o.cluster_id || "(no id)"}. Rates: log end offsets and committed offsets summed, sampled every 2 s.`),
      h("h2", {}, "Brokers"),
      table(["Id", "Host", "Port", "Rack", "Role"], o.brokers.map((b) => h("tr", {}, h("td", {}, b.id), h("td", {}, b.host), h("td", {}, b.port), h("td", {}, b.rack || "–"), h("td", {}, b.id === o.controller ? "controller" : "")))),
      o.under_replicated.length ? h("p", {}, "Under-replicated: ", o.under_replicated.join(", ")) : null,
      o.offline.length ? h("p", {}, "Offline: ", o.offline.join(", ")) : null);
  }));
}

function topicsPage() {
  const box = errorBox(), note = noteBox();
  const search = h("input", { id: "topic-search", placeholder: "search topics", type: "search" });
  const internal = h("input", { type: "checkbox", id: "show-internal" });
  const list = h("div", { id: "topic-list" });
  const form = h("form", { id: "create-topic" },
    h("label", {}, "Name", h("input", { name: "name", id: "new-topic-name", required: true })),
    h("label", {}, "Partitions", h("input", { name: "partitions", id: "new-topic-partitions", type: "number", min: 1, value: 1, style: "width:7em" })),
    h("label", {}, "Replication factor", h("input", { name: "replication_factor", type: "number", value: -1, style: "width:7em", title: "-1: the broker's default" })),
    h("label", {}, "Configs (key=value, one a line)", h("textarea", { name: "configs", rows: 1 })),
    h("button", { type: "submit", id: "create-topic-button" }, "Create topic"), errorBox(), note);
  let rows = [];
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = rows.filter((t) => (internal.checked || !t.internal) && t.name.toLowerCase().includes(q));
    fill(list, h("p", { class: "muted" }, `${shown.length} of ${rows.length} topics`),
      table(["Topic", "Partitions", "Replicas", "Under-replicated", ""], shown.map((t) => h("tr", { "data-topic": t.name },
        h("td", {}, h("a", { href: `#/topic/${enc(t.name)}` }, t.name), t.internal ? h("span", { class: "tag" }, "internal") : null),
        h("td", { class: "num" }, t.partitions), h("td", { class: "num" }, t.replication), h("td", { class: "num" }, t.under_replicated),
        h("td", {}, h("a", { href: `#/messages/${enc(t.name)}` }, "messages"))))));
  };
  const refresh = () => load(box, async () => { rows = await api("GET", "/api/topics"); draw(); });
  search.addEventListener("input", draw); internal.addEventListener("change", draw);
  submitting(form, form.querySelector(".error"), async (data) => {
    const configs = {};
    for (const line of String(data.get("configs") || "").split("\n")) {
      if (!line.trim()) continue;
      const i = line.indexOf("=");
      if (i < 1) throw new Error(`the config line "${line.trim()}" is not key=value`);
      configs[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    const name = String(data.get("name")).trim();
    await api("POST", "/api/topics", { name, partitions: data.get("partitions"), replication_factor: data.get("replication_factor"), configs });
    note.textContent = `Created topic ${name}.`;
    form.reset(); await refresh();
  });
  fill(main, h("h1", {}, "Topics"), form, h("div", { class: "row" }, search, h("label", { style: "flex-direction:row;gap:4px" }, internal, "internal topics")), box, list);
  refresh();
}

function topicPage(name) {
  const box = errorBox(), note = noteBox();
  const body = h("div", {});
  const del = h("button", { class: "danger", id: "delete-topic" }, "Delete topic…");
  del.addEventListener("click", async () => {
    if (del.dataset.armed !== "1") { del.dataset.armed = "1"; del.textContent = `Really delete ${name}?`; return; }
    try { await api("DELETE", `/api/topics/${enc(name)}`); location.hash = "#/topics"; } catch (e) { box.textContent = e.message; }
  });
  fill(main, h("h1", {}, "Topic ", h("span", { id: "topic-name" }, name)),
    h("div", { class: "row" }, h("a", { href: `#/messages/${enc(name)}` }, "Browse messages"), " · ", h("a", { href: `#/messages/${enc(name)}?produce=1` }, "Produce"), del), box, note, body);
  const refresh = () => load(box, async () => {
    const t = await api("GET", `/api/topics/${enc(name)}`);
    const editing = (c) => {
      const input = h("input", { value: c.value ?? "", "data-config-input": c.name, style: "width:16em" });
      const err = errorBox();
      const save = h("button", { "data-config-save": c.name }, "Save");
      const reset = h("button", { class: "plain", "data-config-reset": c.name, title: "delete the topic's own value" }, "Reset to default");
      const act = async (value) => {
        err.textContent = "";
        try { await api("POST", `/api/topics/${enc(name)}/configs`, { name: c.name, value }); note.textContent = `Set ${c.name}${value === null ? " back to its default" : ` to ${value}`}.`; await refresh(); }
        catch (e) { err.textContent = e.message; }
      };
      save.addEventListener("click", () => act(input.value));
      reset.addEventListener("click", () => act(null));
      const form = h("div", { class: "row", hidden: true }, input, save, reset);
      const edit = h("button", { class: "plain", "data-config-edit": c.name }, "Edit");
      edit.addEventListener("click", () => { form.hidden = false; edit.hidden = true; input.focus(); });
      return h("td", {}, edit, form, err);
    };
    fill(body,
      h("h2", {}, "Partitions"),
      t.sizes_available ? null : h("p", { class: "muted", id: "sizes-note" }, "Sizes: the cluster does not serve DescribeLogDirs, so partition sizes are not shown."),
      table(["Partition", "Leader", "Replicas", "ISR", "Log start offset", "Log end offset", "Size"], t.partitions.map((p) => h("tr", { "data-partition-row": p.partition },
        h("td", { class: "num" }, p.partition), h("td", {}, p.leader ?? "none"), h("td", {}, p.replicas.join(", ")),
        h("td", {}, p.isr.join(", ")), h("td", { class: "num" }, fmtNum(p.log_start_offset)), h("td", { class: "num" }, fmtNum(p.log_end_offset)),
        h("td", { class: "num", "data-size": p.partition }, t.sizes_available ? fmtBytes(p.size) : "–")))),
      h("h2", {}, "Configs"),
      t.configs_error ? h("p", { class: "error", id: "configs-error" }, t.configs_error) : null,
      t.configs_error ? null : table(["Config", "Value", "Source", "Edit"], t.configs.map((c) => h("tr", { "data-config": c.name },
        h("td", {}, c.name), h("td", { "data-config-value": c.name }, c.sensitive ? "(sensitive)" : c.value ?? "null"),
        h("td", {}, c.source), c.read_only ? h("td", { class: "muted" }, "read-only") : editing(c)))));
  });
  refresh();
}

function recordCell(v) {
  if (v === null) return h("td", { class: "muted" }, "null");
  return h("td", {}, h("pre", { "data-format": v.format }, v.text), v.truncated ? h("span", { class: "tag" }, `first 64 KiB of ${fmtBytes(v.size)}`) : null, v.note ? h("span", { class: "tag" }, v.note) : null);
}

async function messagesPage(name, params) {
  const box = errorBox();
  let topics = [];
  try { topics = (await api("GET", "/api/topics")).map((t) => t.name); } catch (e) { box.textContent = e.message; }
  const topicSel = h("select", { id: "msg-topic" }, h("option", { value: "" }, "pick a topic"), topics.map((t) => h("option", { value: t, selected: t === name }, t)));
  topicSel.addEventListener("change", () => { location.hash = `#/messages/${enc(topicSel.value)}`; });
  if (!name) { fill(main, h("h1", {}, "Messages"), h("div", { class: "row" }, topicSel), box); return; }
  const partSel = h("select", { id: "msg-partition", name: "partition" }, h("option", { value: "all" }, "all partitions"));
  const startSel = h("select", { id: "msg-start", name: "start" }, ["newest", "oldest", "offset", "timestamp"].map((s) => h("option", { value: s }, s)));
  const value = h("input", { id: "msg-value", name: "value", placeholder: "offset, or ms / 2024-05-01T12:00:00", style: "width:16em" });
  const format = h("select", { id: "msg-format", name: "format" }, ["auto", "text", "json", "hex"].map((s) => h("option", { value: s }, s)));
  const filter = h("input", { id: "msg-filter", name: "filter", placeholder: "substring", style: "width:10em" });
  const where = h("select", { id: "msg-where", name: "where" }, ["any", "key", "value"].map((s) => h("option", { value: s }, s)));
  const limit = h("select", { id: "msg-limit", name: "limit" }, [20, 50, 100, 200, 500].map((n) => h("option", { value: n, selected: n === 50 }, n)));
  const follow = h("input", { type: "checkbox", id: "msg-follow" });
  const info = h("p", { class: "muted", id: "msg-info" });
  const list = h("div", { id: "msg-list" });
  const older = h("button", { class: "plain", id: "msg-older", type: "button" }, "◀ Older");
  const newer = h("button", { class: "plain", id: "msg-newer", type: "button" }, "Newer ▶");
  const form = h("form", { id: "browse-form" },
    h("label", {}, "Partition", partSel), h("label", {}, "Start at", startSel), h("label", {}, "Offset / time", value),
    h("label", {}, "Show as", format), h("label", {}, "Filter", filter), h("label", {}, "in", where), h("label", {}, "Page", limit),
    h("button", { type: "submit", id: "msg-go" }, "Show"), h("label", { style: "flex-direction:row;gap:4px" }, follow, "follow live"), box);
  let current = null, followRows = [], skipped = 0;
  const query = (cursor, followMode) => {
    const q = new URLSearchParams({ partition: partSel.value, start: startSel.value, value: value.value, format: format.value,
      filter: filter.value, where: where.value, limit: limit.value });
    if (cursor) q.set("cursor", cursor);
    if (followMode) q.set("follow", "1");
    return api("GET", `/api/topics/${enc(name)}/messages?${q}`);
  };
  const draw = (records) => {
    fill(list, table(["Partition", "Offset", "Timestamp", "Key", "Value", "Headers"], records.map((r) => h("tr", { "data-offset": r.offset, "data-partition": r.partition },
      h("td", { class: "num" }, r.partition), h("td", { class: "num" }, r.offset), h("td", {}, fmtTime(r.timestamp)),
      recordCell(r.key), recordCell(r.value),
      h("td", {}, r.headers.map((x) => h("div", {}, h("b", {}, x.key), ": ", x.value ? x.value.text : "null")))))));
  };
  const show = async (cursor) => {
    box.textContent = "";
    try {
      current = await query(cursor, false);
      draw(current.records);
      info.textContent = `${current.records.length} record(s) shown, ${current.scanned} scanned` + (filter.value ? ` for "${filter.value}"` : "") +
        `; log end offsets ${Object.entries(current.watermarks).map(([p, m]) => `${p}: ${m.low}–${m.high}`).join(", ")}`;
      older.disabled = current.at_start; newer.disabled = current.at_end;
    } catch (e) { box.textContent = e.message; }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); show(""); });
  older.addEventListener("click", () => current && show(current.previous));
  newer.addEventListener("click", () => current && show(current.next));
  format.addEventListener("change", () => current && show(current.cursor));
  follow.addEventListener("change", () => {
    clearTimers();
    if (!follow.checked) return;
    followRows = current ? current.records.slice() : []; skipped = 0;
    let cursor = current ? current.next : "", busy = false;
    timers.push(setInterval(async () => {
      if (busy) return; busy = true;
      try {
        if (!cursor) { const first = await query("", false); cursor = first.next; followRows = first.records; }
        else {
          const r = await query(cursor, true);
          cursor = r.next; skipped += r.skipped; followRows = followRows.concat(r.records).slice(-500);
        }
        draw(followRows);
        info.textContent = `following: ${followRows.length} newest record(s) kept on the page` + (skipped ? `, ${fmtNum(skipped)} skipped to keep up` : "");
      } catch (e) { box.textContent = e.message; }
      finally { busy = false; }
    }, 1000));
  });
  // the produce form
  const pBox = errorBox(), pNote = noteBox();
  const pPart = h("select", { name: "partition", id: "produce-partition" }, h("option", { value: "any" }, "by key (partitioner)"));
  const headersBox = h("div", { id: "produce-headers" });
  const addHeader = () => headersBox.append(h("div", { class: "row" }, h("input", { placeholder: "header key", class: "hk" }), h("input", { placeholder: "header value", class: "hv" })));
  const nullKey = h("input", { type: "checkbox", id: "produce-null-key" });
  const produceForm = h("form", { id: "produce-form" },
    h("label", {}, "Key", h("input", { name: "key", id: "produce-key" })), h("label", { style: "flex-direction:row;gap:4px" }, nullKey, "null key"),
    h("label", {}, "Value", h("textarea", { name: "value", id: "produce-value" })), h("label", {}, "Partition", pPart),
    h("label", {}, "Headers", headersBox), h("button", { type: "button", class: "plain", onclick: addHeader }, "+ header"),
    h("button", { type: "submit", id: "produce-button" }, "Produce"), pBox, pNote);
  addHeader();
  submitting(produceForm, pBox, async (data) => {
    const headers = [...headersBox.querySelectorAll(".row")].map((r) => [r.querySelector(".hk").value, r.querySelector(".hv").value]).filter(([k]) => k);
    const r = await api("POST", `/api/topics/${enc(name)}/produce`, { key: nullKey.checked ? null : data.get("key"), value: data.get("value"), partition: data.get("partition"), headers });
    pNote.textContent = `Produced to ${r.topic} partition ${r.partition} at offset ${r.offset}.`;
  });
  const produceSection = h("details", { id: "produce-section", open: params.get("produce") === "1" }, h("summary", {}, "Produce a record"), produceForm);
  fill(main, h("h1", {}, "Messages"), h("div", { class: "row" }, topicSel, h("a", { href: `#/topic/${enc(name)}` }, "topic details")),
    produceSection, form, info, h("div", { class: "row" }, older, newer), list);
  try {
    const t = await api("GET", `/api/topics/${enc(name)}`);
    for (const p of t.partitions) { partSel.append(h("option", { value: p.partition }, String(p.partition))); pPart.append(h("option", { value: p.partition }, String(p.partition))); }
  } catch (e) { box.textContent = e.message; return; }
  show("");
}

function groupsPage() {
  const box = errorBox();
  const body = h("div", {});
  fill(main, h("h1", {}, "Consumer groups"), box, body);
  load(box, async () => {
    const groups = await api("GET", "/api/groups");
    fill(body, groups.length ? table(["Group", "State", "Type"], groups.map((g) => h("tr", { "data-group": g.group },
      h("td", {}, h("a", { href: `#/group/${enc(g.group)}` }, g.group)), h("td", {}, g.state), h("td", {}, g.simple ? "simple" : g.type)))) : h("p", { class: "muted" }, "No consumer groups."));
  });
}

function groupPage(group) {
  const box = errorBox();
  const body = h("div", {});
  const total = h("span", { id: "total-lag" });
  const topicSel = h("select", { name: "topic", id: "reset-topic" });
  const toSel = h("select", { name: "to", id: "reset-to" }, ["earliest", "latest", "offset", "timestamp"].map((s) => h("option", { value: s }, s)));
  const rBox = errorBox(), rNote = noteBox();
  const preview = h("div", { id: "reset-preview" });
  const resetForm = h("form", { id: "reset-form" }, h("label", {}, "Topic", topicSel), h("label", {}, "Reset to", toSel),
    h("label", {}, "Offset / time", h("input", { name: "value", id: "reset-value", placeholder: "offset, or ms / ISO time" })),
    h("button", { type: "submit", id: "reset-preview-button" }, "Preview"), rBox, rNote);
  let pending = null;
  submitting(resetForm, rBox, async (data) => {
    rNote.textContent = "";
    pending = { topic: data.get("topic"), to: data.get("to"), value: data.get("value") };
    const r = await api("POST", `/api/groups/${enc(group)}/reset`, { ...pending, execute: false });
    const go = h("button", { class: "danger", id: "reset-execute", type: "button" }, `Reset ${r.preview.length} partition(s)`);
    go.addEventListener("click", async () => {
      rBox.textContent = "";
      try {
        await api("POST", `/api/groups/${enc(group)}/reset`, { ...pending, execute: true });
        rNote.textContent = `Reset the offsets of ${group} on ${pending.topic}.`; fill(preview);
      } catch (e) { rBox.textContent = e.message; }
    });
    fill(preview, h("p", {}, `Preview: nothing is committed until you confirm.` + (r.members ? ` The group has ${r.members} member(s): stop them first.` : "")),
      table(["Partition", "Current", "New", "Log start offset", "Log end offset"], r.preview.map((p) => h("tr", { "data-partition": p.partition },
        h("td", { class: "num" }, p.partition), h("td", { class: "num" }, p.current ?? "–"), h("td", { class: "num", "data-new": p.partition }, p.new),
        h("td", { class: "num" }, p.log_start_offset), h("td", { class: "num" }, p.log_end_offset)))), go);
  });
  fill(main, h("h1", {}, "Group ", h("span", { id: "group-name" }, group)), box, body, h("h2", {}, "Reset offsets"), resetForm, preview);
  every(2000, () => load(box, async () => {
    const g = await api("GET", `/api/groups/${enc(group)}`);
    const topics = [...new Set(g.offsets.map((o) => o.topic))];
    if (topicSel.options.length !== topics.length) fill(topicSel, ...topics.map((t) => h("option", { value: t }, t)));
    total.textContent = fmtNum(g.total_lag);
    fill(body,
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "v", id: "group-state" }, g.state), h("div", { class: "k" }, "State")),
        h("div", { class: "card" }, h("div", { class: "v" }, g.protocol || "–"), h("div", { class: "k" }, "Protocol (assignor)")),
        h("div", { class: "card" }, h("div", { class: "v" }, g.members.length), h("div", { class: "k" }, "Members")),
        h("div", { class: "card" }, h("div", { class: "v" }, total), h("div", { class: "k" }, "Total lag")),
        h("div", { class: "card" }, h("div", { class: "v" }, g.coordinator ?? "–"), h("div", { class: "k" }, "Coordinator"))),
      h("h2", {}, "Members"),
      g.members.length ? table(["Member", "Client", "Host", "Assignment"], g.members.map((m) => h("tr", {},
        h("td", {}, m.member_id, m.instance_id ? h("span", { class: "tag" }, m.instance_id) : null), h("td", {}, m.client_id), h("td", {}, m.host), h("td", {}, m.assignment.join(", ") || "–")))) : h("p", { class: "muted" }, "No members."),
      h("h2", {}, "Offsets and lag"),
      table(["Topic", "Partition", "Committed", "Log end offset", "Lag", "Member"], g.offsets.map((o) => h("tr", { "data-lag": `${o.topic}-${o.partition}` },
        h("td", {}, o.topic), h("td", { class: "num" }, o.partition), h("td", { class: "num" }, o.committed ?? "–"),
        h("td", { class: "num" }, fmtNum(o.log_end_offset)), h("td", { class: "num" }, o.lag ?? "–"), h("td", {}, o.member || "–")))));
  }));
}

function transactionsPage() {
  const box = errorBox();
  const body = h("div", {}), detail = h("div", { id: "txn-detail" });
  fill(main, h("h1", {}, "Transactions"), box, body, detail);
  load(box, async () => {
    const rows = await api("GET", "/api/transactions");
    fill(body, rows.length ? table(["Transactional id", "Coordinator", "Producer id", "State"], rows.map((t) => h("tr", {},
      h("td", {}, h("a", { href: "#", onclick: async (ev) => {
        ev.preventDefault();
        try {
          const d = await api("GET", `/api/transactions/${enc(t.transactional_id)}`);
          fill(detail, h("h2", {}, d.transactional_id), table(["Field", "Value"], Object.entries(d).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, Array.isArray(v) ? v.join(", ") || "–" : v ?? "–")))));
        } catch (e) { box.textContent = e.message; }
      } }, t.transactional_id)),
      h("td", {}, t.coordinator), h("td", { class: "num" }, t.producer_id), h("td", {}, t.state)))) : h("p", { class: "muted" }, "No transactional ids."));
  });
}

function securityPage() {
  const uBox = errorBox(), aBox = errorBox(), uNote = noteBox(), aNote = noteBox();
  const users = h("div", { id: "user-list" }), acls = h("div", { id: "acl-list" });
  const userForm = h("form", { id: "user-form" },
    h("label", {}, "User", h("input", { name: "name", required: true })), h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "new-password" })),
    h("label", {}, "Mechanism", h("select", { name: "mechanism" }, ["SCRAM-SHA-512", "SCRAM-SHA-256"].map((m) => h("option", {}, m)))),
    h("label", {}, "Iterations", h("input", { name: "iterations", type: "number", value: 8192, style: "width:7em" })),
    h("button", { type: "submit" }, "Create or update user"), uBox, uNote);
  const aclForm = h("form", { id: "acl-form" },
    h("label", {}, "Principal", h("input", { name: "principal", placeholder: "User:alice", required: true })),
    h("label", {}, "Resource", h("select", { name: "resource_type" }, ["TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"].map((m) => h("option", {}, m)))),
    h("label", {}, "Name", h("input", { name: "resource_name", placeholder: "name or *" })),
    h("label", {}, "Pattern", h("select", { name: "pattern_type" }, ["LITERAL", "PREFIXED"].map((m) => h("option", {}, m)))),
    h("label", {}, "Operation", h("select", { name: "operation" }, ["READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "CLUSTER_ACTION", "IDEMPOTENT_WRITE", "ALL"].map((m) => h("option", {}, m)))),
    h("label", {}, "Permission", h("select", { name: "permission" }, ["ALLOW", "DENY"].map((m) => h("option", {}, m)))),
    h("label", {}, "Host", h("input", { name: "host", value: "*", style: "width:8em" })),
    h("button", { type: "submit" }, "Create ACL"), aBox, aNote);
  const refreshUsers = () => load(uBox, async () => {
    const rows = await api("GET", "/api/users");
    fill(users, rows.length ? table(["User", "Mechanism", "Iterations", ""], rows.map((u) => h("tr", {}, h("td", {}, u.user), h("td", {}, u.mechanism), h("td", { class: "num" }, u.iterations),
      h("td", {}, h("button", { class: "plain", onclick: async () => { try { await api("DELETE", `/api/users/${enc(u.user)}?mechanism=${enc(u.mechanism)}`); uNote.textContent = `Deleted the ${u.mechanism} credential of ${u.user}.`; refreshUsers(); } catch (e) { uBox.textContent = e.message; } } }, "Delete")))))
      : h("p", { class: "muted" }, "No SCRAM users."));
  });
  const refreshAcls = () => load(aBox, async () => {
    const rows = await api("GET", "/api/acls");
    fill(acls, rows.length ? table(["Principal", "Host", "Resource", "Name", "Pattern", "Operation", "Permission", ""], rows.map((a) => h("tr", {},
      ...["principal", "host", "resource_type", "resource_name", "pattern_type", "operation", "permission"].map((k) => h("td", {}, a[k])),
      h("td", {}, h("button", { class: "plain", onclick: async () => { try { await api("POST", "/api/acls/delete", a); aNote.textContent = "Deleted the ACL."; refreshAcls(); } catch (e) { aBox.textContent = e.message; } } }, "Delete")))))
      : h("p", { class: "muted" }, "No ACLs."));
  });
  submitting(userForm, uBox, async (data) => {
    const body = Object.fromEntries(data);
    await api("POST", "/api/users", body); uNote.textContent = `Saved the ${body.mechanism} credential of ${body.name}.`; userForm.reset(); refreshUsers();
  });
  submitting(aclForm, aBox, async (data) => { await api("POST", "/api/acls", Object.fromEntries(data)); aNote.textContent = "Created the ACL."; refreshAcls(); });
  fill(main, h("h1", {}, "Users and ACLs"), h("h2", {}, "SCRAM users"), userForm, users, h("h2", {}, "ACLs"), aclForm, acls);
  refreshUsers(); refreshAcls();
}

// -- routing ---------------------------------------------------------------------------

function route() {
  clearTimers();
  if (session.login_required && !session.logged_in) { showLogin(""); return; }
  const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(search || "");
  const [page, ...rest] = path.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : "";
  const active = { topic: "topics", group: "groups" }[page] || page || "overview";
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === active));
  switch (page) {
    case "topics": return topicsPage();
    case "topic": return topicPage(arg);
    case "messages": return messagesPage(arg, params);
    case "groups": return groupsPage();
    case "group": return groupPage(arg);
    case "transactions": return transactionsPage();
    case "security": return securityPage();
    default: return overviewPage();
  }
}

(async () => {
  try { session = await api("GET", "/api/session"); } catch (e) { fill(main, h("p", { class: "error" }, e.message)); return; }
  showWho();
  window.addEventListener("hashchange", route);
  route();
})();
