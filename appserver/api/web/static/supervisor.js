// Callyard wallboard: queue and agent figures pushed over /ws/wallboard, charts with uPlot
// (served from node_modules), the supervisor's actions on agents and callers, and listen /
// whisper / barge on a connected call, heard in the page over LiveKit (livekit-room.js).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const HOUR = 3600 * 1000;
  const STATES = ["available", "offered", "on_call", "wrap_up", "break", "away", "logged_out"];
  const COLORS = ["#5a6fb0", "#b35c00", "#1b7f3b", "#8a4f9e", "#b00020", "#2a8a8a"];
  let ws = null, retry = 0, board = null, skew = 0, series = {}, charts = {};

  const { api } = window.Callyard;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v);
    });
    children.flat().forEach((c) => node.append(c instanceof Node ? c : String(c ?? "")));
    return node;
  }

  const now = () => Date.now() + skew;  // the server's clock
  function duration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0");
  }
  const seconds = (s) => duration(s * 1000);

  function act(fn) {
    return async () => {
      $("action-error").textContent = "";
      try { await fn(); } catch (e) { $("action-error").textContent = e.message; }
    };
  }

  // ------------------------------------------------------------------ tables

  // Rows are rebuilt on every push: the focused button gets its focus back (keyboard users),
  // or the first button of its row when it is gone.
  function keepFocus(tbody, rebuild) {
    const f = document.activeElement, tr = tbody.contains(f) ? f.closest("tr") : null;
    const key = tr && (tr.dataset.call || tr.dataset.agent), action = f && f.dataset.action;
    rebuild();
    const again = key && [...tbody.rows].find((r) => (r.dataset.call || r.dataset.agent) === key);
    if (again) (again.querySelector(`[data-action="${action}"]:not([disabled])`) || again.querySelector("button:not([disabled])"))?.focus();
  }

  function renderQueues() {
    $("queues").tBodies[0].replaceChildren(...board.queues.map((q) => {
      const t = q.today, sl = t.service_level;
      const agents = Object.entries(q.agents).filter(([, n]) => n).map(([s, n]) => s.replace("_", " ") + " " + n).join(", ");
      return el("tr", { dataset: { queue: q.name } },
        el("td", {}, q.name),
        el("td", { class: "num waiting" + (q.waiting ? " bad" : "") }, q.waiting),
        el("td", { class: "num longest", dataset: { since: longestSince(q) } }, seconds(q.longest_wait)),
        el("td", { class: "num callbacks",
                   title: "callbacks waiting (being dialled); the next is called back in about" },
           q.callbacks_waiting + q.callbacks_dialing
             ? q.callbacks_waiting + (q.callbacks_dialing ? " (" + q.callbacks_dialing + ")" : "")
               + (q.callbacks_waiting ? ", next in " + seconds(q.callback_estimate) : "")
             : "—"),
        el("td", { class: "num answered" }, t.answered),
        el("td", { class: "num abandoned" }, t.abandoned),
        el("td", { class: "num sl " + (sl === null ? "" : sl >= 80 ? "good" : "bad"),
                   title: "answered within " + q.service_level_seconds + " s" },
           sl === null ? "—" : sl + " %"),
        el("td", { class: "num" }, seconds(t.avg_wait)),
        el("td", { class: "num" }, seconds(t.avg_handle)),
        el("td", {}, agents || "none"));
    }));
  }

  function longestSince(q) {
    const joined = board.calls.filter((c) => c.queue === q.name && c.state !== "assigned").map((c) => c.joined_ms);
    return joined.length ? Math.min(...joined) : "";
  }

  function stateButtons(a) {
    const set = (state) => act(() => api("POST", `/api/supervisor/agents/${encodeURIComponent(a.username)}/state`,
      { state, reason: "supervisor" }));
    return [
      el("button", { class: "small", "data-action": "available", onclick: set("available") }, "Available"),
      el("button", { class: "small", "data-action": "break", onclick: set("break") }, "Break"),
      el("button", { class: "small", "data-action": "logged_out", onclick: set("logged_out") }, "Log out"),
    ];
  }

  function renderAgents() {
    const body = $("agents").tBodies[0];
    keepFocus(body, () => body.replaceChildren(...board.agents.map((a) => el("tr", { dataset: { agent: a.username } },
      el("td", {}, a.username),
      el("td", {}, el("span", { class: "state", dataset: { state: a.state } }, a.state.replace("_", " ")),
         a.reason ? " (" + a.reason + ")" : ""),
      el("td", { class: "num since", dataset: { since: a.since_ms } }, duration(now() - a.since_ms)),
      el("td", { class: "caller" }, a.caller || ""),
      el("td", {}, a.queue || ""),
      el("td", { class: "num calls-today" }, a.calls_today),
      el("td", {}, stateButtons(a))))));
  }

  function callActions(c) {
    const path = `/api/supervisor/calls/${encodeURIComponent(c.call_id)}`;
    const hangup = el("button", { class: "small", "data-action": "hangup",
      onclick: act(async () => { if (confirm("Hang up " + (c.caller || c.call_id) + "?")) await api("POST", path + "/hangup"); }) }, "Hang up");
    if (c.state === "assigned") return [superviseControls(c), hangup];
    const queues = board.queues.map((q) => q.name).filter((n) => n !== c.queue);
    const target = el("select", { "aria-label": "move to queue" }, queues.map((n) => el("option", { value: n }, n)));
    const move = el("button", { class: "small", "data-action": "move",
      onclick: act(() => api("POST", path + "/move", { queue: target.value })) }, "Move");
    const raise = el("button", { class: "small", "data-action": "priority", title: "raise the priority",
      onclick: act(() => api("POST", path + "/move", { priority: Math.min(99, c.priority + 1) })) }, "Priority +1");
    return [...(queues.length ? [target, move] : []), raise, hangup];
  }

  function renderCalls() {
    $("no-calls").hidden = board.calls.length > 0;
    const body = $("calls").tBodies[0];
    keepFocus(body, () => body.replaceChildren(...board.calls.map((c) => el("tr", { dataset: { call: c.call_id } },
      el("td", {}, c.callback ? "callback to " + c.callback : c.caller || "unknown"),
      el("td", { class: "queue" }, c.queue),
      el("td", {}, c.state === "assigned" ? (c.held ? "on hold" : "with agent") : c.state),
      el("td", {}, c.agent || ""),
      el("td", { class: "num priority" }, c.priority),
      el("td", { class: "num since", dataset: { since: c.joined_ms } }, duration(now() - c.joined_ms)),
      el("td", {}, callActions(c))))));
  }

  function tick() {  // running clocks between pushes
    document.querySelectorAll("td[data-since]").forEach((td) => {
      if (td.dataset.since) td.textContent = duration(now() - Number(td.dataset.since));
    });
    if (board) $("clock").textContent = new Date(now()).toLocaleTimeString("en-GB", { timeZone: board.timezone }) + " " + board.timezone;
  }

  // ------------------------------------------------------------------ listen, whisper, barge

  // The call this page supervises, one at a time: { call, mode, media, room }; and the last
  // refusal per call, shown beside it until the next press.
  let watch = null, busy = false;
  const refusals = {};
  const MODES = { listen: "Listen", whisper: "Whisper", barge: "Barge" };
  const DOING = { listen: "listening", whisper: "whispering to the agent", barge: "barged in" };
  const supervisePath = (call) => `/api/calls/${encodeURIComponent(call)}/supervise`;

  function superviseControls(c) {
    const mine = watch && watch.call === c.call_id, other = watch && !mine;
    const buttons = Object.entries(MODES).map(([mode, label]) => el("button", {
      class: "small", "data-action": mode, "aria-pressed": String(!!mine && watch.mode === mode),
      ...(other ? { disabled: "", title: "stop supervising the other call first" } : {}),
      onclick: () => supervise(c.call_id, mode) }, label));
    if (mine) buttons.push(el("button", { class: "small", "data-action": "stop", onclick: stopSupervising }, "Stop"));
    return el("span", { class: "supervise", role: "group", "aria-label": "supervise " + (c.caller || c.call_id) },
      el("span", { class: "supervise-mode" }, mine ? [DOING[watch.mode], el("span", { class: "media" }, " · " + watch.media)] : ""),
      el("span", { class: "supervise-error error" }, refusals[c.call_id] || ""),
      buttons);
  }

  // First press: POST and join the room the API answers with; later presses: PATCH the mode
  // (same leg, no new dial; the microphone is on only to whisper or barge).
  async function supervise(call, mode) {
    if (busy) return;
    busy = true; delete refusals[call];
    try {
      if (watch && watch.call === call) {
        await api("PATCH", supervisePath(call), { mode });
        watch.mode = mode;
        if (watch.room) watch.room.localParticipant.setMicrophoneEnabled(mode !== "listen").catch(() => {});
      } else {
        const r = await api("POST", supervisePath(call), { mode });
        const w = watch = { call, mode, media: "", room: null };
        w.room = Callyard.joinRoom(r.livekit, () => w.mode !== "listen",
          (state) => { w.media = state; if (watch === w) renderCalls(); }).room;
      }
    } catch (e) {
      refusals[call] = e.message;
      if (e.code === "not_supervising") leave();  // our leg is gone already
    } finally {
      busy = false;
      announce(call);
    }
  }

  async function stopSupervising() {
    const w = watch;
    if (!w || busy) return;
    busy = true;
    try {
      await api("DELETE", supervisePath(w.call));
      leave();
    } catch (e) {
      refusals[w.call] = e.message;
      if (e.code === "not_supervising") leave();
    } finally {
      busy = false;
      announce(w.call);
    }
  }

  function leave() {
    if (watch && watch.room) watch.room.disconnect();
    watch = null;
  }

  function announce(call) {
    renderCalls();
    $("supervise-status").textContent = refusals[call] || (watch ? DOING[watch.mode] : "stopped supervising");
  }

  // The call ended or left its agent: the engine has dropped our leg.
  function forgetEnded(snapshot) {
    const connected = new Set(snapshot.calls.filter((c) => c.state === "assigned").map((c) => c.call_id));
    if (watch && !connected.has(watch.call)) leave();
    Object.keys(refusals).forEach((call) => { if (!connected.has(call)) delete refusals[call]; });
  }

  // ------------------------------------------------------------------ charts

  function addPoints(snapshot) {
    snapshot.queues.forEach((q) => {
      const points = series[q.name] = series[q.name] || [];
      const last = points[points.length - 1];
      if (!last || snapshot.now_ms - last[0] >= 1000) points.push([snapshot.now_ms, q.waiting, q.today.service_level]);
      while (points.length && points[0][0] < snapshot.now_ms - HOUR) points.shift();
    });
  }

  function chart(id, column, range) {
    if (!window.uPlot) return;
    const names = board.queues.map((q) => q.name);
    const data = uPlot.join(names.map((n) => {
      const p = series[n] || [];
      return [p.map((x) => x[0] / 1000), p.map((x) => x[column])];
    }));
    if (!data.length || !data[0].length) data.splice(0, data.length, [[]], ...names.map(() => []));
    const key = names.join(",");
    let c = charts[id];
    if (c && c.key !== key) { c.plot.destroy(); c = null; }
    if (!c) {
      const box = $(id);
      const opts = {
        width: Math.max(280, box.clientWidth || 320), height: 180,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), board.timezone),
        scales: { x: { time: true }, y: { range } },
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true }))],
      };
      c = charts[id] = { key, plot: new uPlot(opts, data, box) };
    } else {
      c.plot.setData(data);
    }
  }

  function renderAgentBars() {
    const counts = {};
    board.agents.forEach((a) => { counts[a.state] = (counts[a.state] || 0) + 1; });
    const max = Math.max(1, ...Object.values(counts));
    $("agent-bars").replaceChildren(...STATES.filter((s) => counts[s]).map((s) => el("div", { class: "bar", dataset: { state: s } },
      el("span", {}, s.replace("_", " ")),
      el("span", { class: "fill state", dataset: { state: s }, style: `width: ${(12 * counts[s]) / max}rem` }),
      el("span", { class: "count" }, counts[s]))));
  }

  function render(snapshot) {
    board = snapshot;
    forgetEnded(snapshot);
    skew = snapshot.now_ms - Date.now();
    $("tz").textContent = snapshot.timezone;
    addPoints(snapshot);
    renderQueues(); renderAgents(); renderCalls(); renderAgentBars();
    chart("chart-waiting", 1, (u, lo, hi) => [0, Math.max(3, hi)]);
    chart("chart-sl", 2, () => [0, 100]);
    tick();
  }

  // ------------------------------------------------------------------ socket and login

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws/wallboard`);
    ws.onopen = () => { retry = 0; $("conn").textContent = "online"; $("conn").dataset.state = "online"; };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "hello") series = msg.series || {};
      if (msg.type === "hello" || msg.type === "snapshot") render(msg);
    };
    ws.onclose = (e) => {
      $("conn").textContent = "offline"; $("conn").dataset.state = "offline";
      if (e.code === 4401 || e.code === 4403) { show(false); $("login-error").textContent = e.reason; return; }
      setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
    };
  }

  function show(loggedIn) {
    $("login-view").hidden = loggedIn;
    $("board").hidden = !loggedIn;
    $("logout").hidden = !loggedIn;
  }

  async function start(me) {
    $("who").textContent = me.name + " (" + me.role + ")";
    show(true);
    connect();
  }

  Callyard.onLogin(async () => start(await api("GET", "/api/auth/me")));
  $("logout").onclick = act(async () => {
    await stopSupervising();
    await api("POST", "/api/auth/logout");
    if (ws) { ws.onclose = null; ws.close(); }
    show(false);
  });
  // Leaving the page ends the supervisor's leg (keepalive: the request outlives the page).
  window.addEventListener("pagehide", () => {
    if (!watch) return;
    fetch(supervisePath(watch.call), { method: "DELETE", credentials: "same-origin", keepalive: true });
    leave();  // a page restored from the back-forward cache starts afresh
  });
  setInterval(tick, 1000);
  api("GET", "/api/auth/me").then(start).catch(() => show(false));
})();
