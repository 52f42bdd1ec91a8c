// CreamFL admin dashboard: fills the server-rendered pages from the admin JSON API (/api/v1) and
// polls it every couple of seconds. Vanilla JS, no build step; charts with the vendored uPlot.
// Everything from the API goes into the page as text (textContent), never as HTML.
(() => {
  "use strict";

  const API = "/api/v1";
  const body = document.body;
  const PAGE = body.dataset.page;
  const POLL_MS = Number(body.dataset.pollMs) || 2000;
  const FID = body.dataset.federationId;
  const ROUND = Number(body.dataset.round);
  const STATES = ["pending", "open", "aggregating", "training", "evaluating", "completed", "failed"];
  const TERMINAL = new Set(["completed", "failed"]);
  const JOBS_SHOWN = 60;

  // What the page shows, for debugging and for the browser tests (they compare it with the API).
  const dashboard = { page: PAGE, polls: 0, data: {}, charts: {}, signatures: {} };
  window.creamfl = dashboard;

  class Unauthenticated extends Error {}

  // ---- the API ---------------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    const method = options.method || "GET";
    if (method !== "GET") headers["X-CreamFL-Dashboard"] = "1"; // the API refuses cookie writes without it
    const response = await fetch(API + path, { method, headers, credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      toLogin();
      throw new Unauthenticated("logged out");
    }
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      const message = payload && payload.error ? payload.error.message : response.statusText;
      throw new Error(`${response.status} ${message}`);
    }
    return payload;
  }

  function toLogin() {
    location.assign(`/dashboard/login?next=${encodeURIComponent(location.pathname)}`);
  }

  const enc = encodeURIComponent;

  // ---- small DOM and formatting helpers --------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") Object.assign(node.style, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const dash = "–";
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmtNum = (v, digits = 2) => (isNum(v) ? v.toFixed(digits) : dash);
  const parseTime = (s) => (s ? Date.parse(s) : NaN);

  function fmtBytes(n) {
    if (!isNum(n)) return dash;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (Math.abs(value) >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
  }

  function fmtDuration(ms) {
    if (!isNum(ms)) return dash;
    const s = ms / 1000;
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 90) return `${Math.round(s)} s`;
    const m = s / 60;
    if (m < 90) return `${Math.floor(m)} min ${Math.round(s % 60)} s`;
    const h = m / 60;
    if (h < 48) return `${Math.floor(h)} h ${Math.round(m % 60)} min`;
    return `${Math.floor(h / 24)} d ${Math.round(h % 24)} h`;
  }

  function fmtTime(s) {
    const t = parseTime(s);
    if (!isNum(t)) return dash;
    const date = new Date(t);
    const sameDay = date.toDateString() === new Date().toDateString();
    return sameDay ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function fmtRelative(s) {
    const t = parseTime(s);
    if (!isNum(t)) return dash;
    const delta = t - Date.now();
    return delta >= 0 ? `in ${fmtDuration(delta)}` : `${fmtDuration(-delta)} ago`;
  }

  const badge = (state) => el("span", { class: `badge ${state}` }, state);
  // A number cell: the exact value in data-value, a rounded one on screen.
  const numCell = (value, field, digits = 2) =>
    el("td", { class: "num", "data-field": field, "data-value": isNum(value) ? String(value) : "" }, fmtNum(value, digits));
  const timeCell = (s, field) => el("td", { "data-field": field, title: s || null }, fmtTime(s));

  function setField(root, field, text, value) {
    const node = root.querySelector(`[data-field="${field}"]`);
    if (!node) return;
    node.textContent = text;
    if (value !== undefined) node.dataset.value = value === null ? "" : String(value);
  }

  // Re-render a part only when its data changed, so that buttons and links stay put between polls.
  function changed(key, data) {
    const signature = JSON.stringify(data);
    if (dashboard.signatures[key] === signature) return false;
    dashboard.signatures[key] = signature;
    return true;
  }

  function fillBody(table, rows, emptyText) {
    const tbody = table.tBodies[0];
    const colspan = table.tHead ? table.tHead.rows[0].cells.length : 2;
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", { class: "empty" }, el("td", { colspan }, emptyText))]));
  }

  // ---- status line and errors ------------------------------------------------------------------

  function setLive(ok, text) {
    const live = document.getElementById("live");
    if (!live) return;
    live.classList.toggle("ok", ok);
    live.classList.toggle("stale", !ok);
    document.getElementById("live-text").textContent = text;
  }

  function showError(message) {
    const banner = document.getElementById("error");
    if (!banner) return;
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  // ---- the poll loop ---------------------------------------------------------------------------

  let timer = null;
  let running = false;
  let again = false;

  async function tick(poll) {
    if (running) {
      again = true;
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      await poll();
      dashboard.polls += 1;
      setLive(true, `live · ${new Date().toLocaleTimeString()}`);
      showError(null);
    } catch (error) {
      if (error instanceof Unauthenticated) return;
      setLive(false, "not updating");
      showError(`Could not read the coordinator: ${error.message}`);
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      tick(poll);
      return;
    }
    timer = setTimeout(() => tick(poll), document.hidden ? POLL_MS * 5 : POLL_MS);
  }

  // An admin action: confirm, send, then refresh at once.
  async function act(question, path, poll) {
    if (!window.confirm(question)) return;
    try {
      await api(path, { method: "POST" });
      showError(null);
    } catch (error) {
      if (error instanceof Unauthenticated) return;
      showError(`The coordinator refused: ${error.message}`);
    }
    tick(poll);
  }

  // ---- shared round arithmetic -----------------------------------------------------------------

  // Milliseconds spent in each state, from the transitions (a re-opened round adds up its "open"s);
  // the current state counts until now unless the round is finished.
  function stateDurations(round, now) {
    const spans = [];
    const transitions = round.transitions || [];
    transitions.forEach((transition, i) => {
      const start = parseTime(transition.at);
      const last = i === transitions.length - 1;
      if (last && TERMINAL.has(transition.state)) return;
      const end = last ? now : parseTime(transitions[i + 1].at);
      spans.push({ state: transition.state, ms: Math.max(0, end - start), current: last });
    });
    return spans;
  }

  function totals(spans) {
    const sum = new Map();
    for (const span of spans) sum.set(span.state, (sum.get(span.state) || 0) + span.ms);
    return STATES.filter((s) => sum.has(s)).map((s) => ({ state: s, ms: sum.get(s) }));
  }

  // Clients that uploaded every modality they have: the ones that count towards the quorum.
  function completeUploaders(round, clientsById) {
    return Object.entries(round.uploaded || {}).filter(([id, modalities]) => {
      const client = clientsById.get(id);
      return client ? client.modalities.every((m) => modalities.includes(m)) : false;
    }).length;
  }

  function quorumText(round, clientsById, minClients) {
    const complete = completeUploaders(round, clientsById);
    if (round.state === "failed") return { met: false, text: `missed (${complete} of ${minClients})` };
    if (["aggregating", "training", "evaluating", "completed"].includes(round.state)) {
      return { met: true, text: `met (${complete} of ${minClients})` };
    }
    const met = complete >= minClients;
    return { met, text: `${met ? "met" : "not yet"} (${complete} of ${minClients})` };
  }

  const reopenReasons = (round) =>
    (round.transitions || []).filter((t) => t.reason && t.reason.startsWith("re-opened")).map((t) => t.reason);

  // ---- the overview ----------------------------------------------------------------------------

  async function pollOverview() {
    const federations = await api("/federations");
    const lists = await Promise.all(federations.map((f) => api(`/federations/${enc(f.id)}/clients`)));
    const clients = Object.fromEntries(federations.map((f, i) => [f.id, lists[i]]));
    dashboard.data = { federations, clients };
    if (!changed("overview", dashboard.data)) return;
    const rows = federations.map((f) => {
      const active = clients[f.id].filter((c) => c.status === "active").length;
      return el(
        "tr",
        { "data-federation-id": f.id },
        el("td", {}, el("a", { href: `/dashboard/federations/${enc(f.id)}` }, f.name), el("span", { class: "id" }, f.id)),
        el("td", { "data-field": "state" }, badge(f.state)),
        el("td", { class: "num", "data-field": "current-round" }, f.current_round || dash),
        el(
          "td",
          { class: "num", "data-field": "rounds-done", "data-done": f.rounds_completed, "data-total": f.config.rounds },
          `${f.rounds_completed} / ${f.config.rounds}`,
        ),
        el(
          "td",
          { class: "num", "data-field": "clients", "data-enrolled": f.clients_enrolled, "data-active": active },
          `${f.clients_enrolled} / ${active}`,
        ),
        numCell(f.last_rsum, "last-rsum"),
        numCell(f.best_rsum, "best-rsum"),
        timeCell(f.created_at, "created"),
      );
    });
    fillBody(document.getElementById("federations"), rows, "No federations yet: create one with POST /api/v1/federations.");
  }

  // ---- a federation ----------------------------------------------------------------------------

  async function pollFederation() {
    const base = `/federations/${enc(FID)}`;
    const [federation, rounds, clients, jobs] = await Promise.all([
      api(base),
      api(`${base}/rounds`),
      api(`${base}/clients`),
      api(`/jobs?federation_id=${enc(FID)}`),
    ]);
    dashboard.data = { federation, rounds, clients, jobs };
    const clientsById = new Map(clients.map((c) => [c.id, c]));
    renderFederationSummary(federation, clients);
    renderRounds(federation, rounds, clientsById);
    renderCharts(rounds);
    renderClients(federation, clients);
    renderJobs(jobs);
  }

  function renderFederationSummary(f, clients) {
    document.title = `${f.name} · CreamFL coordinator`;
    document.getElementById("federation-name").textContent = f.name;
    const state = document.getElementById("federation-state");
    state.className = `badge ${f.state}`;
    state.textContent = f.state;
    const summary = document.getElementById("summary");
    const active = clients.filter((c) => c.status === "active").length;
    setField(summary, "current-round", f.current_round || dash, f.current_round);
    setField(summary, "rounds-done", `${f.rounds_completed} / ${f.config.rounds}`, f.rounds_completed);
    setField(summary, "clients", `${f.clients_enrolled} / ${active}`, f.clients_enrolled);
    setField(summary, "last-rsum", fmtNum(f.last_rsum), f.last_rsum);
    setField(summary, "best-rsum", fmtNum(f.best_rsum), f.best_rsum);
    setField(
      summary,
      "strategy",
      `${f.config.strategy} · ${f.config.min_clients} of ${f.config.clients_per_round} per round`,
    );
    const buttons = {
      start: ["created", "paused"].includes(f.state),
      pause: f.state === "running",
      stop: ["created", "running", "paused"].includes(f.state),
    };
    for (const [action, enabled] of Object.entries(buttons)) {
      document.getElementById(`action-${action}`).disabled = !enabled;
    }
    document.getElementById("action-resume").hidden = f.state !== "failed"; // from its last committed step
    document.getElementById("action-start").textContent = f.state === "paused" ? "Resume" : "Start";
  }

  function durationsCell(round, now) {
    const spans = stateDurations(round, now);
    const sums = totals(spans);
    const total = sums.reduce((acc, s) => acc + s.ms, 0) || 1;
    return el(
      "td",
      { "data-field": "durations" },
      el(
        "div",
        { class: "durations" },
        sums.map((s) => el("span", { class: "chip", "data-state": s.state }, `${s.state} ${fmtDuration(s.ms)}`)),
      ),
      el(
        "div",
        { class: "bar", "aria-hidden": "true" },
        sums.map((s) => el("span", { class: `s-${s.state}`, title: s.state, style: { width: `${(100 * s.ms) / total}%` } })),
      ),
    );
  }

  function renderRounds(f, rounds, clientsById) {
    const now = Date.now();
    const live = rounds.some((r) => !TERMINAL.has(r.state));
    const clientShape = [...clientsById.values()].map((c) => [c.id, c.modalities]);
    if (!changed("rounds", [rounds, clientShape, live ? Math.floor(now / 1000) : 0])) return;
    const rows = [...rounds]
      .sort((a, b) => b.number - a.number)
      .map((r) => {
        const uploaded = Object.keys(r.uploaded || {}).length;
        const quorum = quorumText(r, clientsById, f.config.min_clients);
        const reasons = reopenReasons(r);
        const deadline = r.state === "open" ? fmtRelative(r.deadline) : fmtTime(r.deadline);
        return el(
          "tr",
          { "data-round": r.number },
          el("td", { class: "num", "data-field": "number" }, el("a", { href: `/dashboard/federations/${enc(FID)}/rounds/${r.number}` }, `#${r.number}`)),
          el("td", { "data-field": "state" }, badge(r.state)),
          durationsCell(r, now),
          el("td", { class: "nowrap", "data-field": "deadline", title: r.deadline || null }, r.deadline ? deadline : dash),
          el(
            "td",
            { class: "num", "data-field": "participants", "data-selected": r.selected.length, "data-uploaded": uploaded },
            `${r.selected.length} / ${uploaded}`,
          ),
          el("td", { class: "nowrap", "data-field": "quorum", "data-met": String(quorum.met) }, quorum.text),
          el("td", { class: "num", "data-field": "retries", "data-value": r.attempt }, r.attempt),
          numCell(r.metrics ? r.metrics.rsum : null, "rsum"),
          el(
            "td",
            { "data-field": "failures", class: r.failure_reason || reasons.length ? "error-text" : null },
            r.failure_reason ? el("div", {}, r.failure_reason) : null,
            reasons.map((reason) => el("div", { class: "muted" }, reason)),
            !r.failure_reason && !reasons.length ? el("span", { class: "muted" }, dash) : null,
          ),
        );
      });
    fillBody(document.getElementById("rounds"), rows, "No round yet: start the federation.");
  }

  const CHART_COLORS = { rsum: "#2457c5", i2t_r1: "#16a34a", t2i_r1: "#d97706", up: "#7c3aed", down: "#0891b2" };

  function makeChart(container, series, yLabel, format) {
    container.replaceChildren();
    const options = {
      width: Math.max(container.clientWidth, 200),
      height: 240,
      scales: { x: { time: false } },
      axes: [
        {
          label: "round",
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
          values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : "")),
        },
        { label: yLabel, size: 64, values: (u, ticks) => ticks.map((t) => format(t)) },
      ],
      series: [
        { label: "round" },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          points: { show: true, size: 7 },
          value: (u, v) => (v === null || v === undefined ? dash : format(v)),
        })),
      ],
    };
    const data = [[], ...series.map(() => [])];
    return new window.uPlot(options, data, container);
  }

  function updateChart(name, container, series, yLabel, format, data) {
    if (!data[0].length) {
      if (!dashboard.charts[name]) {
        container.replaceChildren(el("p", { class: "empty-chart" }, "No round has finished yet."));
      }
      return;
    }
    if (!dashboard.charts[name]) dashboard.charts[name] = makeChart(container, series, yLabel, format);
    dashboard.charts[name].setData(data);
  }

  function renderCharts(rounds) {
    const ordered = [...rounds].sort((a, b) => a.number - b.number);
    const evaluated = ordered.filter((r) => r.metrics && isNum(r.metrics.rsum));
    if (changed("chart-quality", evaluated.map((r) => [r.number, r.metrics]))) {
      updateChart(
        "quality",
        document.getElementById("chart-quality"),
        [
          { label: "rsum", color: CHART_COLORS.rsum },
          { label: "i2t R@1", color: CHART_COLORS.i2t_r1 },
          { label: "t2i R@1", color: CHART_COLORS.t2i_r1 },
        ],
        "%",
        (v) => v.toFixed(1),
        [
          evaluated.map((r) => r.number),
          evaluated.map((r) => r.metrics.rsum),
          evaluated.map((r) => (isNum(r.metrics.i2t_r1) ? r.metrics.i2t_r1 : null)),
          evaluated.map((r) => (isNum(r.metrics.t2i_r1) ? r.metrics.t2i_r1 : null)),
        ],
      );
    }
    const withBytes = ordered.filter((r) => r.bytes_up > 0 || r.bytes_down > 0 || TERMINAL.has(r.state));
    if (changed("chart-bytes", withBytes.map((r) => [r.number, r.bytes_up, r.bytes_down]))) {
      updateChart(
        "bytes",
        document.getElementById("chart-bytes"),
        [
          { label: "uploaded", color: CHART_COLORS.up },
          { label: "downloaded", color: CHART_COLORS.down },
        ],
        "bytes",
        fmtBytes,
        [withBytes.map((r) => r.number), withBytes.map((r) => r.bytes_up), withBytes.map((r) => r.bytes_down)],
      );
    }
  }

  function renderClients(f, clients) {
    if (!changed("clients", clients)) return;
    const rows = clients.map((c) =>
      el(
        "tr",
        { "data-client-id": c.id },
        el("td", { "data-field": "name" }, c.name, el("span", { class: "id" }, c.id)),
        el("td", { "data-field": "modalities" }, c.modalities.join(" + ")),
        el("td", { "data-field": "model" }, c.model),
        el("td", { class: "num", "data-field": "samples", "data-value": c.samples }, c.samples.toLocaleString()),
        el("td", { "data-field": "last-seen", title: c.last_seen_at || null }, c.last_seen_at ? fmtTime(c.last_seen_at) : "never"),
        el("td", { class: "num", "data-field": "uploads", "data-value": c.uploads }, c.uploads),
        numCell(c.mean_weight, "mean-weight", 4),
        el("td", { "data-field": "status" }, badge(c.status)),
        el(
          "td",
          {},
          c.status === "active"
            ? el("button", { type: "button", class: "small danger", "data-revoke": c.id, "data-name": c.name }, "Revoke")
            : null,
        ),
      ),
    );
    fillBody(document.getElementById("clients"), rows, "No client has enrolled yet.");
  }

  function renderJobs(jobs) {
    const live = jobs.some((j) => j.state === "running");
    if (!changed("jobs", [jobs, live ? Math.floor(Date.now() / 1000) : 0])) return;
    const newest = [...jobs].sort((a, b) => b.id - a.id);
    const rows = newest.slice(0, JOBS_SHOWN).map((j) => {
      const lease = j.lease_owner
        ? `${j.lease_owner}${j.state === "running" && j.lease_expires_at ? ` · expires ${fmtRelative(j.lease_expires_at)}` : ""}`
        : dash;
      const error = j.error ? (j.error.length > 300 ? `${j.error.slice(0, 300)}…` : j.error) : null;
      return el(
        "tr",
        { "data-job-id": j.id },
        el("td", { class: "num" }, j.id),
        el("td", { class: "num", "data-field": "round" }, j.round),
        el("td", { "data-field": "kind" }, j.kind),
        el("td", { "data-field": "state" }, badge(j.state)),
        el("td", { class: "num", "data-field": "attempts", "data-value": j.attempts }, j.attempts),
        el("td", { "data-field": "lease", class: "small" }, lease),
        el("td", { "data-field": "error", class: error ? "error-text small" : "muted", title: j.error || null }, error || dash),
        timeCell(j.finished_at, "finished"),
      );
    });
    if (newest.length > JOBS_SHOWN) {
      rows.push(el("tr", { class: "empty" }, el("td", { colspan: 8 }, `${newest.length - JOBS_SHOWN} older jobs not shown`)));
    }
    fillBody(document.getElementById("jobs"), rows, "No job yet.");
  }

  function initFederation() {
    const poll = pollFederation;
    for (const button of document.querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => {
        const action = button.dataset.action;
        const verb = action === "start" && button.textContent === "Resume" ? "resume" : action;
        const name = (dashboard.data.federation && dashboard.data.federation.name) || FID;
        const warning = action === "stop" ? " A stopped federation cannot be started again." : "";
        act(`${verb[0].toUpperCase()}${verb.slice(1)} federation "${name}"?${warning}`, `/federations/${enc(FID)}/${action}`, poll);
      });
    }
    document.getElementById("clients").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-revoke]");
      if (!button) return;
      act(
        `Revoke client "${button.dataset.name}"? It can no longer fetch tasks or upload.`,
        `/federations/${enc(FID)}/clients/${enc(button.dataset.revoke)}/revoke`,
        poll,
      );
    });
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        for (const [name, chart] of Object.entries(dashboard.charts)) {
          const container = document.getElementById(`chart-${name}`);
          chart.setSize({ width: Math.max(container.clientWidth, 200), height: 240 });
        }
      }, 150);
    });
    return poll;
  }

  // ---- a round ---------------------------------------------------------------------------------

  async function pollRound() {
    const base = `/federations/${enc(FID)}`;
    const [federation, round, clients] = await Promise.all([
      api(base),
      api(`${base}/rounds/${ROUND}`),
      api(`${base}/clients`),
    ]);
    dashboard.data = { federation, round, clients };
    const now = Date.now();
    if (!changed("round", [federation.name, round, clients, TERMINAL.has(round.state) ? 0 : Math.floor(now / 1000)])) {
      return;
    }
    const clientsById = new Map(clients.map((c) => [c.id, c]));
    document.getElementById("federation-link").textContent = federation.name;
    const state = document.getElementById("round-state");
    state.className = `badge ${round.state}`;
    state.textContent = round.state;
    const failure = document.getElementById("round-failure");
    failure.hidden = !round.failure_reason;
    failure.textContent = round.failure_reason ? `Failed: ${round.failure_reason}` : "";
    const held = document.getElementById("round-held");
    held.hidden = !round.held_reason;
    held.textContent = round.held_reason ? `Held until the environment recovers: ${round.held_reason}` : "";

    const summary = document.getElementById("round-summary");
    const uploaded = Object.keys(round.uploaded || {}).length;
    setField(summary, "attempt", `${round.attempt + 1} (${round.attempt})`, round.attempt);
    setField(summary, "deadline", round.deadline ? `${fmtTime(round.deadline)}${round.state === "open" ? ` (${fmtRelative(round.deadline)})` : ""}` : dash);
    setField(summary, "participants", `${round.selected.length} / ${uploaded}`);
    setField(summary, "quorum", quorumText(round, clientsById, federation.config.min_clients).text);
    setField(summary, "rsum", fmtNum(round.metrics ? round.metrics.rsum : null), round.metrics ? round.metrics.rsum : null);
    setField(summary, "bytes", `${fmtBytes(round.bytes_up)} / ${fmtBytes(round.bytes_down)}`);

    const spans = stateDurations(round, now);
    const total = spans.reduce((acc, s) => acc + s.ms, 0) || 1;
    document
      .getElementById("round-timeline")
      .replaceChildren(
        ...spans.map((s) =>
          el("span", { class: `s-${s.state}`, title: `${s.state}: ${fmtDuration(s.ms)}`, style: { width: `${(100 * s.ms) / total}%` } }, s.state),
        ),
      );
    const transitions = round.transitions.map((t, i) => {
      const next = round.transitions[i + 1];
      const ms = next ? parseTime(next.at) - parseTime(t.at) : TERMINAL.has(t.state) ? null : now - parseTime(t.at);
      return el(
        "tr",
        { "data-state": t.state },
        el("td", {}, badge(t.state)),
        timeCell(t.at, "at"),
        el("td", { class: "num", "data-field": "duration" }, ms === null ? dash : fmtDuration(ms)),
        el("td", { class: "small" }, t.reason || dash),
      );
    });
    fillBody(document.getElementById("transitions"), transitions, "No transition yet.");

    const weightOf = (clientId, modality) => {
      const w = round.weights && round.weights[modality];
      if (!w) return null;
      const i = w.clients.indexOf(clientId);
      return i >= 0 ? w.mean_weight[i] : null;
    };
    const ids = [...new Set([...round.selected, ...Object.keys(round.uploaded || {})])];
    const participants = ids.map((id) => {
      const client = clientsById.get(id);
      const modalities = client ? client.modalities : [];
      const weights = modalities
        .map((m) => [m, weightOf(id, m)])
        .filter(([, w]) => isNum(w))
        .map(([m, w]) => `${m} ${w.toFixed(4)}`);
      return el(
        "tr",
        { "data-client-id": id },
        el("td", {}, client ? client.name : id, el("span", { class: "id" }, id)),
        el("td", {}, modalities.join(" + ") || dash),
        el("td", { "data-field": "selected" }, round.selected.includes(id) ? "yes" : "no"),
        el("td", { "data-field": "uploaded" }, (round.uploaded[id] || []).join(", ") || dash),
        el("td", { class: "num" }, weights.join(" · ") || dash),
      );
    });
    fillBody(document.getElementById("participants"), participants, "No client selected yet.");

    const kvRows = (object, format) =>
      Object.entries(object || {}).map(([key, value]) =>
        el("tr", { "data-key": key }, el("th", {}, key), el("td", { class: "num", "data-value": String(value) }, format(value))),
      );
    fillBody(document.getElementById("metrics"), kvRows(round.metrics, (v) => fmtNum(v)), "Not evaluated yet.");
    fillBody(document.getElementById("server"), kvRows(round.server, (v) => fmtNum(v, 4)), "Not trained yet.");
    const weightRows = Object.entries(round.weights || {}).flatMap(([modality, w]) => [
      el("tr", {}, el("th", {}, `${modality}: clients`), el("td", { class: "num" }, w.clients.length)),
      el("tr", {}, el("th", {}, `${modality}: max weight`), el("td", { class: "num" }, fmtNum(w.max_weight, 4))),
      el("tr", {}, el("th", {}, `${modality}: entropy`), el("td", { class: "num" }, fmtNum(w.entropy, 4))),
    ]);
    fillBody(document.getElementById("weights"), weightRows, "Not aggregated yet.");
  }

  // ---- start -----------------------------------------------------------------------------------

  const polls = { overview: () => pollOverview, federation: initFederation, round: () => pollRound };
  if (polls[PAGE]) {
    const poll = polls[PAGE]();
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) tick(poll);
    });
    tick(poll);
  }
})();
