// bottle dashboard: a thin view over the server's JSON and event stream.
// Every piece of data goes into the page through textContent (see el()): the
// agents' texts can hold anything, and none of it is ever parsed as HTML.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const state = { bottles: [], requests: [], history: [], traffic: [], problem: null };
const TRAFFIC_SHOWN = 500;

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function age(created) {
  if (!created) return "?";
  const s = Math.max(0, Math.floor(Date.now() / 1000) - created);
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function clock(time) {
  const d = new Date(time);
  return isNaN(d) ? String(time || "") : d.toLocaleTimeString();
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "notice error" : "notice";
  box.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { box.hidden = true; }, isError ? 12000 : 4000);
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (_) { /* empty body */ }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// A confirmation in the page (no window.confirm: it cannot show a diff).
function confirmWith(title, text, okLabel, diff) {
  return new Promise((resolve) => {
    const modal = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    const pre = document.getElementById("confirm-diff");
    pre.hidden = !diff;
    clear(pre);
    for (const line of (diff || "").split("\n")) {
      const cls = line.startsWith("+") && !line.startsWith("+++") ? "add" : "";
      pre.append(el("span", { class: cls, text: line + "\n" }));
    }
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    ok.textContent = okLabel;
    modal.hidden = false;
    const done = (answer) => {
      modal.hidden = true;
      ok.onclick = cancel.onclick = null;
      resolve(answer);
    };
    ok.onclick = () => done(true);
    cancel.onclick = () => done(false);
  });
}

// ---- Bottles ----

function serviceChip(service) {
  const health = service.health || service.state;
  const good = service.state === "running" && (!service.health || service.health === "healthy");
  return el("span", { class: "chip " + (good ? "ok" : "bad"), title: service.state },
    service.role, good ? null : el("small", { text: " " + health }));
}

function renderBottles() {
  const body = clear(document.querySelector("#bottles tbody"));
  for (const b of state.bottles) {
    const host = el("input", { type: "text", placeholder: "host[:port]", class: "host", "aria-label": "host" });
    const egress = (action) => async () => {
      if (!host.value.trim()) return;
      try {
        const r = await post("/api/bottles/" + encodeURIComponent(b.slug) + "/egress",
          { action, host: host.value.trim() });
        notice(b.slug + ": egress policy " + String(r.version).slice(0, 12) + " is live");
        host.value = "";
      } catch (e) { notice(b.slug + ": " + e.message, true); }
    };
    const down = async () => {
      const yes = await confirmWith("Tear down " + b.slug + "?",
        "Its containers and networks are removed; its log is kept.", "Tear down");
      if (!yes) return;
      try {
        const r = await post("/api/bottles/" + encodeURIComponent(b.slug) + "/down");
        notice(b.slug + (r.ok ? ": removed" : ": removed with problems: " + r.problems.join("; ")), !r.ok);
      } catch (e) { notice(b.slug + ": " + e.message, true); }
    };
    body.append(el("tr", { "data-slug": b.slug },
      el("td", { class: "mono", text: b.slug }),
      el("td", { text: b.agent || "?" }),
      el("td", { class: "age", "data-created": b.created || "", text: age(b.created) }),
      el("td", {}, el("span", { class: "state " + b.state, text: b.state })),
      el("td", {}, b.services.map(serviceChip)),
      el("td", { class: "mono small", title: b.manifest || "" },
        b.manifest_changed ? el("span", { class: "chip bad", text: "changed since start" }) : "unchanged"),
      el("td", { class: "egress" }, host,
        el("button", { type: "button", onclick: egress("allow"), text: "Allow" }),
        el("button", { type: "button", onclick: egress("deny"), text: "Deny" })),
      el("td", {}, el("button", { type: "button", class: "danger down", onclick: down, text: "Down" }))));
  }
  document.getElementById("bottles-empty").hidden = state.bottles.length > 0;
  document.getElementById("count-bottles").textContent = state.bottles.length || "";
  const select = document.getElementById("filter-bottle");
  const chosen = select.value;
  clear(select).append(el("option", { value: "", text: "all" }),
    ...state.bottles.map((b) => el("option", { value: b.slug, text: b.slug })));
  select.value = chosen;
}

// ---- Traffic ----

// What a denied request's hint offers: allowing its host, as `bottle egress allow`.
function allowButton(line) {
  const e = line.entry;
  if (line.verdict !== "denied" || e.event !== "http" || !e.host) return null;
  const target = e.host + (e.port && e.port !== 443 && e.port !== 80 ? ":" + e.port : "");
  const allow = async () => {
    const yes = await confirmWith("Allow " + target + " for " + line.slug + "?",
      "Same as `bottle egress allow " + line.slug + " " + target + "`: live until the bottle stops; " +
      "the manifest is not changed.", "Allow");
    if (!yes) return;
    try {
      const r = await post("/api/bottles/" + encodeURIComponent(line.slug) + "/egress", { action: "allow", host: target });
      notice(line.slug + ": " + target + " allowed (policy " + String(r.version).slice(0, 12) + ")");
    } catch (err) { notice(line.slug + ": " + err.message, true); }
  };
  return el("button", { type: "button", class: "small-button", title: "bottle egress allow " + line.slug + " " + target, onclick: allow, text: "allow…" });
}

function trafficRow(line) {
  const e = line.entry;
  const reason = [e.rule, e.reason].filter(Boolean).join(": ") + (e.dlp ? " [DLP " + e.dlp + "]" : "")
    + (e.repeated ? " (×" + e.repeated + ")" : "");
  return el("tr", { class: "verdict-" + line.verdict, "data-verdict": line.verdict, "data-host": e.host || "" },
    el("td", { class: "small", text: clock(e.time) }),
    el("td", { class: "mono small", text: line.slug }),
    el("td", {}, el("span", { class: "verdict " + line.verdict, text: line.verdict })),
    el("td", { text: e.method || "" }),
    el("td", { class: "mono", text: e.host ? e.host + (e.port && e.port !== 443 && e.port !== 80 ? ":" + e.port : "") : (e.raw || "") }),
    el("td", { class: "mono small", text: e.path || "" }),
    el("td", { class: "small", text: reason }),
    el("td", {}, allowButton(line)));
}

function renderTraffic() {
  const bottle = document.getElementById("filter-bottle").value;
  const verdict = document.getElementById("filter-verdict").value;
  const egress = state.traffic.filter((l) => l.log === "egress");
  const shown = egress.filter((l) => (!bottle || l.slug === bottle) && (!verdict || l.verdict === verdict));
  const body = clear(document.querySelector("#traffic tbody"));
  body.append(...shown.slice(-TRAFFIC_SHOWN).reverse().map(trafficRow));
  const hosts = new Map();
  for (const l of egress) {
    if (bottle && l.slug !== bottle) continue;
    if (!l.entry.host || l.entry.event === "reload") continue;
    const c = hosts.get(l.entry.host) || { allowed: 0, denied: 0 };
    const n = l.entry.repeated || 1;
    if (l.entry.action === "deny") c.denied += n; else c.allowed += n;
    hosts.set(l.entry.host, c);
  }
  const counters = clear(document.querySelector("#hosts tbody"));
  for (const [host, c] of [...hosts].sort((a, b) => (b[1].allowed + b[1].denied) - (a[1].allowed + a[1].denied))) {
    counters.append(el("tr", {}, el("td", { class: "mono", text: host }),
      el("td", { class: "num", text: c.allowed }), el("td", { class: "num denied-count", text: c.denied })));
  }
  document.getElementById("count-traffic").textContent = egress.length || "";
  renderGit();
}

function renderGit() {
  const lines = state.traffic.filter((l) => l.log === "git-gate");
  const body = clear(document.querySelector("#git tbody"));
  for (const line of lines.slice().reverse()) {
    const e = line.entry;
    const refs = (e.refs || []).map((r) => r.ref + " " + (r.result || "")).join(", ");
    body.append(el("tr", { class: "verdict-" + line.verdict },
      el("td", { class: "small", text: clock(e.time) }),
      el("td", { class: "mono small", text: line.slug }),
      el("td", { text: e.operation || "" }),
      el("td", { text: e.upstream || e.raw || "" }),
      el("td", { class: "mono small", text: refs }),
      el("td", {}, el("span", { class: "verdict " + line.verdict, text: e.result || "" })),
      el("td", { class: "small", text: e.detail || "" })));
  }
  document.getElementById("git-empty").hidden = lines.length > 0;
  document.getElementById("count-git").textContent = lines.length || "";
}

// ---- Inbox ----

function asked(r) {
  if (r.kind !== "egress") return "question";
  return (r.methods ? r.methods.join(", ") + " " : "") + (r.host || "") + (r.port ? ":" + r.port : "");
}

function requestCard(r) {
  const note = el("input", { type: "text", class: "note", "aria-label": "note",
    placeholder: r.kind === "egress" ? "note to the agent (optional)" : "your answer" });
  const act = (label, fn) => async (event) => {
    const buttons = event.target.parentNode.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try { await fn(); notice(label + ": " + r.bottle_slug + " " + asked(r)); }
    catch (e) { notice(e.message, true); buttons.forEach((b) => { b.disabled = false; }); }
  };
  const base = "/api/requests/" + encodeURIComponent(r.id);
  const decide = (approve) => () => post(base + "/decide", { approve, note: note.value });
  const always = async () => {
    const proposal = await post(base + "/always");
    const yes = await confirmWith("Allow " + asked(r) + " for good?",
      "This change is written to " + proposal.manifest + " (bottle " + proposal.bottle +
      "), and this request is approved.", "Write and approve", proposal.diff);
    if (!yes) throw new Error("not written: nothing changed");
    await post(base + "/always/confirm", { sha256: proposal.sha256, note: note.value });
  };
  const buttons = r.kind === "egress"
    ? [el("button", { type: "button", class: "primary approve-once", "data-id": r.id, onclick: act("approved once", decide(true)), text: "Approve once" }),
       el("button", { type: "button", class: "approve-always", "data-id": r.id, onclick: act("approved always", always), text: "Approve always…" }),
       el("button", { type: "button", class: "danger deny", "data-id": r.id, onclick: act("denied", decide(false)), text: "Deny" })]
    : [el("button", { type: "button", class: "primary answer", "data-id": r.id, onclick: act("answered", decide(true)), text: "Answer" }),
       el("button", { type: "button", class: "danger deny", "data-id": r.id, onclick: act("dismissed", decide(false)), text: "Dismiss" })];
  return el("article", { class: "request", "data-id": r.id },
    el("div", { class: "meta" },
      el("span", { class: "mono", text: r.bottle_slug }),
      el("span", { class: "small", text: " asked " + age(r.created) + " ago · " + r.id.slice(0, 8) })),
    el("div", { class: "ask mono", text: asked(r) }),
    el("blockquote", { class: "reason", text: r.kind === "egress" ? (r.reason || "(no reason given)") : (r.question || "") }),
    el("div", { class: "actions" }, note, buttons));
}

function renderInbox() {
  const inbox = document.getElementById("inbox");
  // What the human typed survives a re-render.
  const typed = new Map([...inbox.querySelectorAll("article")].map((a) => [a.dataset.id, a.querySelector("input.note").value]));
  clear(inbox).append(...state.requests.map(requestCard));
  for (const article of inbox.querySelectorAll("article")) {
    if (typed.has(article.dataset.id)) article.querySelector("input.note").value = typed.get(article.dataset.id);
  }
  document.getElementById("inbox-empty").hidden = state.requests.length > 0;
  document.getElementById("count-inbox").textContent = state.requests.length || "";
  const body = clear(document.querySelector("#history tbody"));
  for (const h of state.history.slice().reverse()) {
    const r = h.request;
    body.append(el("tr", {},
      el("td", { class: "mono small", text: r.bottle_slug }),
      el("td", { class: "mono", text: asked(r) }),
      el("td", { class: "small", text: r.kind === "egress" ? (r.reason || "") : (r.question || "") }),
      el("td", {}, el("span", { class: "outcome " + h.outcome, text: h.outcome.replace("_", " ") })),
      el("td", { class: "small", text: h.note || "" })));
  }
}

function renderProblem() {
  const box = document.getElementById("problem");
  box.textContent = state.problem || "";
  box.hidden = !state.problem;
}

function renderAll() {
  renderBottles();
  renderTraffic();
  renderInbox();
  renderProblem();
}

// ---- Live updates ----

function addTraffic(lines) {
  const last = state.traffic.length ? state.traffic[state.traffic.length - 1].seq : -1;
  state.traffic.push(...lines.filter((l) => l.seq > last));
  if (state.traffic.length > 1000) state.traffic.splice(0, state.traffic.length - 1000);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  const on = (name, fn) => source.addEventListener(name, (event) => fn(JSON.parse(event.data)));
  on("snapshot", (s) => {
    state.bottles = s.bottles; state.requests = s.requests; state.history = s.history;
    state.traffic = []; addTraffic(s.traffic); state.problem = s.problem;
    renderAll();
  });
  on("bottles", (b) => { state.bottles = b; renderBottles(); });
  on("requests", (r) => { state.requests = r; renderInbox(); });
  on("history", (h) => { state.history = h; renderInbox(); });
  on("traffic", (t) => { addTraffic(t); renderTraffic(); });
  on("problem", (p) => { state.problem = p; renderProblem(); });
  on("resync", () => { source.close(); connect(); });
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
}

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + view;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
}

function route() {
  const view = location.hash.slice(1);
  show(["bottles", "traffic", "inbox", "git"].includes(view) ? view : "bottles");
}

document.addEventListener("DOMContentLoaded", () => {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => { location.hash = tab.dataset.view; });
  }
  window.addEventListener("hashchange", route);
  document.getElementById("filter-bottle").addEventListener("change", renderTraffic);
  document.getElementById("filter-verdict").addEventListener("change", renderTraffic);
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.age")) cell.textContent = age(Number(cell.dataset.created));
  }, 10000);
  route();
  connect();
});
