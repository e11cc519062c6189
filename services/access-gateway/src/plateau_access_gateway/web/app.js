// Plateau's client window: login with a second factor, a live wallboard, interval reports
// with charts and signed exports. No framework, no inline script (the CSP forbids it), no
// HTML built from data: every text goes through textContent.

const TEXT = {
  en: {
    "nav.wallboard": "Wallboard", "nav.reports": "Reports", "wall.toggle": "Wall screen",
    logout: "Log out", "login.title": "Sign in", "login.username": "User name",
    "login.password": "Password", "login.submit": "Sign in",
    "totp.title": "Second factor", "totp.code": "Code from your authenticator app",
    "totp.recovery": "or a recovery code", "totp.submit": "Verify",
    "enrol.title": "Set up your second factor",
    "enrol.help": "Scan this code with an authenticator app, then type the code it shows.",
    "enrol.secret": "Key, if you cannot scan:", "enrol.submit": "Confirm",
    "recovery.title": "Recovery codes",
    "recovery.help": "Keep these codes somewhere safe: each one signs you in once without your phone.",
    "recovery.done": "I have kept them",
    "password.title": "Choose a new password", "password.current": "Current password",
    "password.new": "New password", "password.submit": "Change",
    "unlock.title": "Session locked", "unlock.help": "You were away for a while. Sign in again to go on.",
    "unlock.submit": "Unlock",
    "queue.waiting": "Waiting", "queue.longest": "Longest wait", "queue.sl": "Service level",
    "queue.offered": "Offered", "queue.answered": "Answered", "queue.abandoned": "Abandoned",
    "queue.asa": "ASA", "queue.aht": "AHT", "queue.agents": "Agents",
    "state.available": "available", "state.on_call": "on call", "state.wrap_up": "wrap-up",
    "state.paused": "paused", "state.reserved": "reserved", "state.ringing": "ringing",
    "state.not_responding": "not responding", "state.logged_out": "logged out",
    "agents.title": "Agents", "agents.agent": "Agent", "agents.state": "State",
    "agents.since": "For", "agents.handled": "Calls today",
    "reports.kind": "Report", "reports.queues": "Queues", "reports.agents": "Agents",
    "reports.campaigns": "Campaigns", "reports.from": "From", "reports.to": "To",
    "reports.granularity": "Interval", "reports.show": "Show",
    "reports.period": "Period", "reports.id": "Id", "reports.none": "No figures for this period.",
    "reports.computed": "Computed up to", "reports.export": "Export",
    "reports.calls": "Call records",
    "g.15min": "15 minutes", "g.hour": "hour", "g.day": "day", "g.month": "month",
    "live.on": "live", "live.off": "reconnecting…", "empty.queues": "No queue to show.",
  },
  fr: {
    "nav.wallboard": "Tableau mural", "nav.reports": "Rapports", "wall.toggle": "Écran mural",
    logout: "Se déconnecter", "login.title": "Connexion", "login.username": "Identifiant",
    "login.password": "Mot de passe", "login.submit": "Se connecter",
    "totp.title": "Second facteur", "totp.code": "Code de votre application d'authentification",
    "totp.recovery": "ou un code de secours", "totp.submit": "Vérifier",
    "enrol.title": "Activer le second facteur",
    "enrol.help": "Scannez ce code avec une application d'authentification, puis saisissez le code affiché.",
    "enrol.secret": "Clé, si vous ne pouvez pas scanner :", "enrol.submit": "Confirmer",
    "recovery.title": "Codes de secours",
    "recovery.help": "Conservez ces codes en lieu sûr : chacun permet une connexion sans votre téléphone.",
    "recovery.done": "Je les ai conservés",
    "password.title": "Choisissez un nouveau mot de passe", "password.current": "Mot de passe actuel",
    "password.new": "Nouveau mot de passe", "password.submit": "Changer",
    "unlock.title": "Session verrouillée", "unlock.help": "Vous étiez absent un moment. Identifiez-vous pour continuer.",
    "unlock.submit": "Déverrouiller",
    "queue.waiting": "En attente", "queue.longest": "Attente max.", "queue.sl": "Niveau de service",
    "queue.offered": "Présentés", "queue.answered": "Répondus", "queue.abandoned": "Abandonnés",
    "queue.asa": "Délai moyen", "queue.aht": "Durée moy.", "queue.agents": "Agents",
    "state.available": "disponibles", "state.on_call": "en appel", "state.wrap_up": "post-appel",
    "state.paused": "en pause", "state.reserved": "réservés", "state.ringing": "sonnent",
    "state.not_responding": "ne répondent pas", "state.logged_out": "déconnectés",
    "agents.title": "Agents", "agents.agent": "Agent", "agents.state": "État",
    "agents.since": "Depuis", "agents.handled": "Appels du jour",
    "reports.kind": "Rapport", "reports.queues": "Files", "reports.agents": "Agents",
    "reports.campaigns": "Campagnes", "reports.from": "Du", "reports.to": "Au",
    "reports.granularity": "Intervalle", "reports.show": "Afficher",
    "reports.period": "Période", "reports.id": "Id", "reports.none": "Aucun chiffre pour cette période.",
    "reports.computed": "Calculé jusqu'à", "reports.export": "Exporter",
    "reports.calls": "Détail des appels",
    "g.15min": "15 minutes", "g.hour": "heure", "g.day": "jour", "g.month": "mois",
    "live.on": "en direct", "live.off": "reconnexion…", "empty.queues": "Aucune file à afficher.",
  },
};

const saved = localStorage.getItem("plateau.lang");
let lang = saved || ((navigator.language || "fr").toLowerCase().startsWith("fr") ? "fr" : "en");
const t = (key) => TEXT[lang][key] ?? TEXT.en[key] ?? key;

let csrf = null;
let session = null;
let stream = null;
let ticker = null;

// -- DOM ------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function field(key, input) {
  return el("label", {}, el("span", { text: t(key) }), input);
}

function translatePage() {
  document.documentElement.lang = lang;
  document.getElementById("lang").textContent = lang === "fr" ? "EN" : "FR";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
}

function status(text) {
  document.getElementById("status").textContent = text || "";
}

// -- the API --------------------------------------------------------------------------------

class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(`/api/v1${path}`, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) {
    const problem = new Problem(response.status, data);
    if (String(data.type || "").endsWith(":session-locked")) {
      showUnlock();
    }
    throw problem;
  }
  return data;
}

function remember(answer) {
  if (answer.csrf_token) csrf = answer.csrf_token;
  session = answer;
}

// -- signing in -------------------------------------------------------------------------------

function afterStage(answer) {
  remember(answer);
  switch (answer.stage) {
    case "enrol_totp": return showEnrolment();
    case "totp": return showTotp();
    case "change_password": return showPasswordChange();
    default: return enter();
  }
}

function form(titleKey, fields, submitKey, onSubmit, ...extra) {
  const error = el("p", { class: "error", role: "alert" });
  const node = el("form", { class: "card", novalidate: true },
    el("h1", { text: t(titleKey) }), ...extra, ...fields,
    el("button", { type: "submit", text: t(submitKey) }), error);
  node.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await onSubmit();
    } catch (problem) {
      const rules = problem.body && Array.isArray(problem.body.rules)
        ? problem.body.rules.map((r) => r.message || r.rule).join(" ") : "";
      error.textContent = `${problem.message} ${rules}`.trim();
    }
  });
  return node;
}

function showLogin() {
  leaveLive();
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  const username = el("input", { name: "username", autocomplete: "username", required: true });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  show(form("login.title", [field("login.username", username), field("login.password", password)],
    "login.submit", async () => {
      afterStage(await api("POST", "/auth/login", { username: username.value, password: password.value }));
    }));
  username.focus();
}

async function showEnrolment() {
  const enrolment = await api("POST", "/auth/totp/enrolment");
  // The QR code is an SVG the gateway drew (segno), shown as an image: never parsed as markup.
  const qr = el("div", { class: "qr" }, el("img", {
    alt: "QR", width: "192", height: "192",
    src: `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(enrolment.qr_svg)))}`,
  }));
  const code = el("input", { name: "code", inputmode: "numeric", autocomplete: "one-time-code", required: true });
  show(form("enrol.title", [field("totp.code", code)], "enrol.submit", async () => {
    const answer = await api("POST", "/auth/totp/confirm", { code: code.value.trim() });
    remember(answer);
    showRecoveryCodes(answer.recovery_codes || []);
  }, el("p", { text: t("enrol.help") }), qr,
  el("p", {}, el("span", { text: `${t("enrol.secret")} ` }), el("code", { class: "secret", text: enrolment.secret }))));
  code.focus();
}

function showRecoveryCodes(codes) {
  show(el("section", { class: "card" },
    el("h1", { text: t("recovery.title") }), el("p", { text: t("recovery.help") }),
    el("ul", { class: "codes" }, codes.map((c) => el("li", { text: c }))),
    el("button", { type: "button", text: t("recovery.done"), onclick: () => enter() })));
}

function showTotp() {
  const code = el("input", { name: "code", inputmode: "numeric", autocomplete: "one-time-code" });
  const recovery = el("input", { name: "recovery_code", autocomplete: "off" });
  show(form("totp.title", [field("totp.code", code), field("totp.recovery", recovery)], "totp.submit", async () => {
    const body = recovery.value.trim() ? { recovery_code: recovery.value.trim() } : { code: code.value.trim() };
    afterStage(await api("POST", "/auth/totp", body));
  }));
  code.focus();
}

function showPasswordChange() {
  const current = el("input", { type: "password", autocomplete: "current-password" });
  const next = el("input", { type: "password", autocomplete: "new-password" });
  show(form("password.title", [field("password.current", current), field("password.new", next)],
    "password.submit", async () => {
      afterStage(await api("POST", "/auth/password", { current_password: current.value, new_password: next.value }));
    }));
}

function showUnlock() {
  leaveLive();
  const password = el("input", { type: "password", autocomplete: "current-password" });
  const code = el("input", { inputmode: "numeric", autocomplete: "one-time-code" });
  show(form("unlock.title", [field("login.password", password), field("totp.code", code)], "unlock.submit",
    async () => {
      const body = { password: password.value };
      if (code.value.trim()) body.code = code.value.trim();
      remember(await api("POST", "/auth/unlock", body));
      route();
    }, el("p", { text: t("unlock.help") })));
}

async function enter() {
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  if (session && session.user) document.getElementById("who").textContent = session.user.username || "";
  if (!location.hash || location.hash === "#/login") location.hash = "#/wallboard";
  else route();
}

// -- the wallboard ----------------------------------------------------------------------------

const queues = new Map();
const agents = new Map();

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}` : `${m}:${String(s % 60).padStart(2, "0")}`;
}

function percent(ratio) {
  return ratio === null || ratio === undefined ? "–" : `${Math.round(ratio * 1000) / 10} %`;
}

function figure(key, value, tone) {
  return el("div", { class: "figure" },
    el("span", { class: `value ${tone || ""}`, "data-figure": key, text: value }),
    el("span", { class: "label", text: t(key) }));
}

function queueTile(queue) {
  const today = queue.today || {};
  const longest = queue.longest_waiting_since ? Date.now() - Date.parse(queue.longest_waiting_since) : null;
  const target = queue.service_level_target ?? 0.8;
  const sl = today.service_level;
  const tone = sl === null || sl === undefined ? "" : sl >= target ? "good" : sl >= target - 0.1 ? "warn" : "bad";
  const byState = (queue.agents_by_state || [])
    .map((s) => `${s.agents} ${t(`state.${s.state}`)}${s.pause_code ? ` (${s.pause_code})` : ""}`).join(" · ");
  return el("article", { class: "card tile", "data-queue": queue.queue_id },
    el("h2", { text: queue.name || queue.queue_id }),
    el("div", { class: "figures" },
      figure("queue.waiting", String(queue.calls_waiting ?? 0), queue.calls_waiting > 0 ? "warn" : ""),
      el("div", { class: "figure" },
        el("span", { class: "value", "data-figure": "queue.longest", "data-since": queue.longest_waiting_since || "", text: duration(longest) }),
        el("span", { class: "label", text: t("queue.longest") })),
      figure("queue.sl", percent(sl), tone),
      figure("queue.offered", String(today.offered ?? 0)),
      figure("queue.answered", String(today.answered ?? 0)),
      figure("queue.abandoned", String(today.abandoned ?? 0)),
      figure("queue.asa", duration(today.asa_ms)),
      figure("queue.aht", duration(today.aht_ms))),
    el("p", { class: "states", text: `${t("queue.agents")}: ${byState || "–"}` }));
}

function agentRow(agent) {
  const since = agent.since ? Date.now() - Date.parse(agent.since) : null;
  return el("tr", { "data-agent": agent.agent_id },
    el("td", { text: agent.agent_id }),
    el("td", { text: `${t(`state.${agent.state}`)}${agent.pause_code ? ` (${agent.pause_code})` : ""}` }),
    el("td", { "data-since": agent.since || "", text: duration(since) }),
    el("td", { text: String((agent.today && agent.today.handled) ?? 0) }));
}

function drawWallboard() {
  const tiles = [...queues.values()].sort((a, b) => a.queue_id.localeCompare(b.queue_id)).map(queueTile);
  const rows = [...agents.values()].sort((a, b) => a.agent_id.localeCompare(b.agent_id)).map(agentRow);
  show(
    tiles.length ? el("section", { class: "tiles" }, tiles) : el("p", { text: t("empty.queues") }),
    el("section", { class: "card agents" }, el("h2", { text: t("agents.title") }),
      el("table", {}, el("thead", {}, el("tr", {},
        el("th", { text: t("agents.agent") }), el("th", { text: t("agents.state") }),
        el("th", { text: t("agents.since") }), el("th", { text: t("agents.handled") }))),
      el("tbody", {}, rows))));
}

function tick() {
  // Waits and times in state grow by themselves between pushes.
  for (const node of document.querySelectorAll("[data-since]")) {
    const since = node.dataset.since;
    node.textContent = since ? duration(Date.now() - Date.parse(since)) : "–";
  }
}

function leaveLive() {
  status("");
  if (stream) stream.close();
  stream = null;
  if (ticker) clearInterval(ticker);
  ticker = null;
}

async function showWallboard() {
  leaveLive();
  const [queueRows, agentRows] = await Promise.all([api("GET", "/queues"), api("GET", "/agents")]);
  queues.clear();
  agents.clear();
  for (const q of queueRows) queues.set(q.queue_id, q);
  for (const a of agentRows) agents.set(a.agent_id, a);
  drawWallboard();
  ticker = setInterval(tick, 1000);
  stream = new EventSource("/api/v1/stream");
  stream.addEventListener("open", () => status(t("live.on")));
  stream.addEventListener("error", () => status(t("live.off")));
  stream.addEventListener("queue", (event) => {
    const row = JSON.parse(event.data);
    queues.set(row.queue_id, row);
    drawWallboard();
  });
  stream.addEventListener("agent", (event) => {
    const row = JSON.parse(event.data);
    agents.set(row.agent_id, row);
    drawWallboard();
  });
}

// -- reports ----------------------------------------------------------------------------------

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function chart(rows) {
  // Offered and answered per period, summed over the ids: bars, drawn as SVG elements.
  const periods = new Map();
  for (const row of rows) {
    const p = periods.get(row.period_start) || { offered: 0, answered: 0 };
    p.offered += row.measures.offered || 0;
    p.answered += row.measures.answered || 0;
    periods.set(row.period_start, p);
  }
  const entries = [...periods.entries()].sort(([a], [b]) => a.localeCompare(b));
  const width = 800, height = 200, top = Math.max(1, ...entries.map(([, p]) => p.offered));
  const step = Math.min(60, width / Math.max(1, entries.length));
  const node = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height + 20}`, role: "img",
    "aria-label": `${t("queue.offered")} / ${t("queue.answered")}` });
  entries.forEach(([start, p], i) => {
    const x = i * step;
    const h1 = (p.offered / top) * height, h2 = (p.answered / top) * height;
    node.append(svg("rect", { class: "offered", x: x + 1, y: height - h1, width: Math.max(1, step - 2), height: h1 }));
    node.append(svg("rect", { class: "answered", x: x + step / 4, y: height - h2, width: Math.max(1, step / 2 - 1), height: h2 }));
    if (entries.length <= 31 || i % Math.ceil(entries.length / 24) === 0) {
      node.append(svg("text", { x: x + 2, y: height + 14 }, start.slice(5, 16).replace("T", " ")));
    }
  });
  return node;
}

async function showReports() {
  leaveLive();
  const now = new Date();
  const kind = el("select", { name: "kind" },
    ["queues", "agents", "campaigns"].map((k) => el("option", { value: k, text: t(`reports.${k}`) })));
  const from = el("input", { type: "date", name: "from", value: isoDay(new Date(now - 6 * 864e5)) });
  const to = el("input", { type: "date", name: "to", value: isoDay(now) });
  const granularity = el("select", { name: "granularity" },
    ["15min", "hour", "day", "month"].map((g) => el("option", { value: g, text: t(`g.${g}`), selected: g === "day" })));
  const result = el("section", { class: "report" });
  const filters = el("form", { class: "filters" },
    field("reports.kind", kind), field("reports.from", from), field("reports.to", to),
    field("reports.granularity", granularity), el("button", { type: "submit", text: t("reports.show") }));
  filters.addEventListener("submit", async (event) => {
    event.preventDefault();
    const end = new Date(`${to.value}T00:00:00`);
    end.setDate(end.getDate() + 1);
    const query = new URLSearchParams({
      from: new Date(`${from.value}T00:00:00`).toISOString(), to: end.toISOString(), granularity: granularity.value,
    });
    try {
      const report = await api("GET", `/reports/${kind.value}?${query}`);
      result.replaceChildren(...reportView(report, kind.value, query));
      status("");
    } catch (problem) {
      result.replaceChildren(el("p", { class: "error", text: problem.message }));
    }
  });
  show(el("section", { class: "card" }, filters, result));
  filters.requestSubmit();
}

function periodLabel(start, granularity) {
  // Periods are the tenant's local periods; shown in the browser's zone, as precise as the
  // granularity (a day is a date, a month a month).
  const at = new Date(start);
  if (granularity === "month") return at.toLocaleDateString(lang, { year: "numeric", month: "long" });
  if (granularity === "day") return at.toLocaleDateString(lang, { year: "numeric", month: "short", day: "numeric", weekday: "short" });
  return at.toLocaleString(lang, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function reportView(report, kind, query) {
  const exportQuery = new URLSearchParams(query);
  exportQuery.set("kind", kind);
  const exports = el("p", { class: "exports" }, el("span", { text: `${t("reports.export")}: ` }),
    el("a", { href: `/api/v1/exports/report.csv?${exportQuery}`, download: true, text: "CSV" }),
    el("a", { href: `/api/v1/exports/report.xlsx?${exportQuery}`, download: true, text: "XLSX" }),
    el("a", { href: `/api/v1/exports/calls.csv?${new URLSearchParams({ from: query.get("from"), to: query.get("to") })}`,
      download: true, text: t("reports.calls") }));
  const provenance = el("p", { class: "provenance", text: `${t("reports.computed")}: ` +
    (report.computed_up_to || []).map((p) => `${p.source} #${p.position} ${p.chain_head.slice(0, 16)}…`).join(", ") });
  if (!report.rows.length) return [el("p", { text: t("reports.none") }), provenance];
  const table = el("table", {},
    el("thead", {}, el("tr", {}, el("th", { text: t("reports.period") }), el("th", { text: t("reports.id") }),
      el("th", { text: t("queue.offered") }), el("th", { text: t("queue.answered") }),
      el("th", { text: t("queue.abandoned") }), el("th", { text: t("queue.sl") }),
      el("th", { text: t("queue.asa") }), el("th", { text: t("queue.aht") }))),
    el("tbody", {}, report.rows.map((row) => el("tr", {},
      el("td", { text: periodLabel(row.period_start, report.granularity) }), el("td", { text: row.id }),
      el("td", { text: String(row.measures.offered ?? 0) }), el("td", { text: String(row.measures.answered ?? 0) }),
      el("td", { text: String(row.measures.abandoned ?? 0) }), el("td", { text: percent(row.metrics.service_level) }),
      el("td", { text: duration(row.metrics.asa_ms) }), el("td", { text: duration(row.metrics.aht_ms) })))));
  return [chart(report.rows), exports, table, provenance];
}

// -- navigation -------------------------------------------------------------------------------

async function route() {
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === location.hash);
  }
  if (!session || session.stage !== "active") return showLogin();
  // Signed in (also after a reload, which does not pass through enter()).
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  try {
    if (location.hash === "#/reports") await showReports();
    else await showWallboard();
  } catch (problem) {
    if (problem.status === 401 && !String(problem.body?.type || "").endsWith(":session-locked")) showLogin();
    else status(problem.message);
  }
}

async function start() {
  translatePage();
  if (new URLSearchParams(location.search).has("wall")) document.body.classList.add("wall");
  document.getElementById("lang").addEventListener("click", () => {
    lang = lang === "fr" ? "en" : "fr";
    localStorage.setItem("plateau.lang", lang);
    translatePage();
    route();
  });
  document.getElementById("wall").addEventListener("click", () => {
    document.body.classList.toggle("wall");
    if (document.body.classList.contains("wall") && document.documentElement.requestFullscreen) {
      document.documentElement.requestFullscreen().catch(() => {});
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("POST", "/auth/logout"); } catch { /* the session is gone either way */ }
    session = null;
    csrf = null;
    location.hash = "#/login";
    showLogin();
  });
  window.addEventListener("hashchange", route);
  try {
    remember(await api("GET", "/auth/session"));
  } catch {
    session = null;
  }
  if (session && session.stage && session.stage !== "active") afterStage(session);
  else route();
}

start();
