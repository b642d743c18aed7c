// Callyard agent console: login, state, offers over /ws/agent, LiveKit audio on accept.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let ws = null, retry = 0, offer = null, room = null, muted = false, held = false, timers = [];
  const ACCEPT_ERRORS = {
    taken: "another agent took the call",
    caller_left: "the caller hung up",
    not_offered: "the call is no longer offered to you",
  };

  const { api } = window.Callyard;

  function show(loggedIn) {
    $("login-view").hidden = loggedIn;
    $("agent-view").hidden = !loggedIn;
    $("logout").hidden = !loggedIn;
  }

  function setState(state, reason, wrapupUntil) {
    $("state").textContent = state;
    $("state").dataset.state = state;
    $("reason").textContent = reason || "";
    timers.forEach(clearInterval); timers = [];
    $("wrapup").hidden = state !== "wrap_up";
    if (state === "wrap_up" && wrapupUntil) {
      const tick = () => { $("wrapup-left").textContent = Math.max(0, Math.ceil((wrapupUntil - Date.now()) / 1000)); };
      tick(); timers.push(setInterval(tick, 500));
    }
    if (state !== "offered") hideOffer();
    if (state !== "on_call" && room) leaveRoom();
  }

  function showOffer(o) {
    offer = o;
    $("offer").hidden = false;
    $("offer-caller").textContent = o.caller || "unknown";
    $("offer-callback").hidden = !o.callback;
    $("offer-callback-number").textContent = o.callback || "";
    $("offer").querySelector("h2").textContent = o.callback ? "Callback" : "Incoming call";
    $("offer-queue").textContent = o.queue || "";
    $("offer-path").textContent = (o.menu_path || []).join(" › ") || "—";
    const joined = o.joined_ms || Date.now();
    const tick = () => { $("offer-wait").textContent = Math.round((Date.now() - joined) / 1000); };
    tick(); timers.push(setInterval(tick, 1000));
  }

  function hideOffer() { offer = null; $("offer").hidden = true; }

  async function joinRoom(grant) {
    $("call").hidden = false;
    $("call-room").textContent = grant.room;
    const joined = Callyard.joinRoom(grant, () => !muted && !held, (s) => { $("media").textContent = s; });
    room = joined.room;
    await joined.ready;
  }

  function leaveRoom() {
    if (room) { room.disconnect(); room = null; }
    $("call").hidden = true;
    muted = false; $("mute").textContent = "Mute";
    showHeld(false);
    showSupervisor(null);
  }

  // A supervisor on the call, while it lasts: listening, whispering (to the agent only) or
  // barged in (everyone hears them). null or mode "off": nobody.
  const SUPERVISING = { listen: "is listening", whisper: "is whispering to you", barge: "barged in" };
  function showSupervisor(s) {
    const on = !!(s && SUPERVISING[s.mode]);
    $("supervisor").hidden = !on;
    $("supervisor").textContent = on ? "Supervisor " + s.supervisor + " " + SUPERVISING[s.mode] : "";
  }

  // On hold the engine plays music to the caller and cuts the audio both ways;
  // the microphone is muted too, so nothing reaches the room meanwhile.
  function showHeld(on) {
    held = on;
    $("held").hidden = !on;
    $("hold").textContent = on ? "Resume" : "Hold";
    if (room) room.localParticipant.setMicrophoneEnabled(!on && !muted).catch(() => {});
  }

  async function loadQueues() {
    try {
      const names = await api("GET", "/api/agent/queues");
      $("transfer-queues").replaceChildren(...names.map((n) => Object.assign(document.createElement("option"), { value: n })));
    } catch (e) { /* the list is a convenience */ }
  }

  function applyStatus(s) {
    $("who").textContent = s.agent || s.username || "";
    setState(s.state, s.reason, s.wrapup_until_ms);
    if (s.state === "offered" && s.offer_details) showOffer(s.offer_details);
    if (s.state === "on_call" && s.room && !room) {
      api("GET", "/api/agent/token").then(joinRoom).then(() => showHeld(!!s.held)).catch(() => {});
      loadQueues();
    } else if (s.state === "on_call" && room) showHeld(!!s.held);
    showSupervisor(s.state === "on_call" ? s.supervision : null);
  }

  function onEvent(ev) {
    if (ev.type === "hello") applyStatus(ev.status);
    else if (ev.type === "state") {
      setState(ev.state, ev.reason, ev.state === "wrap_up" ? null : 0);
      if (ev.state === "wrap_up" || ev.state === "available") loadHistory();
      if (ev.state === "wrap_up") api("GET", "/api/agent/status").then(applyStatus).catch(() => {});
    }
    else if (ev.type === "offer") showOffer(ev);
    else if (ev.type === "hold") showHeld(!!ev.held);
    else if (ev.type === "supervise") showSupervisor(ev);
    else if (ev.type === "transfer") $("media").textContent = "transferring to " + ev.target + "…";
    else if (ev.type === "offer_withdrawn") { if (offer && offer.call === ev.call) hideOffer(); }
    else if (ev.type === "callback_failed") {
      $("action-error").textContent = "callback: the customer did not answer (" +
        (ev.outcome || "failed").replace("_", " ") + "); it is retried later";
    }
    else if (ev.type === "resync") api("GET", "/api/agent/status").then(applyStatus).catch(() => {});
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws/agent`);
    ws.onopen = () => { retry = 0; $("conn").textContent = "online"; $("conn").dataset.state = "online"; };
    ws.onmessage = (m) => onEvent(JSON.parse(m.data));
    ws.onclose = (e) => {
      $("conn").textContent = "offline"; $("conn").dataset.state = "offline";
      ws = null;
      if (e.code === 4401) { show(false); return; }  // session gone: log in again
      retry = Math.min(retry + 1, 6);
      setTimeout(connect, 500 * 2 ** retry);  // reconnect with backoff
    };
  }

  async function loadHistory() {
    try {
      const rows = await api("GET", "/api/agent/history?limit=10");
      const body = $("history").querySelector("tbody");
      body.replaceChildren(...rows.map((c) => {
        const tr = document.createElement("tr");
        for (const v of [new Date(c.started_at).toLocaleString(), c.caller, c.queue || "", c.disposition || ""]) {
          const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
        }
        return tr;
      }));
    } catch (e) { /* history is best effort */ }
  }

  function act(fn) {
    return async () => {
      $("action-error").textContent = "";
      try { await fn(); } catch (e) { $("action-error").textContent = e.message; }
    };
  }

  async function start() {
    show(true);
    await api("POST", "/api/agent/login").catch(() => {});  // join the queues (logged in)
    connect();
    loadHistory();
    window.callyardVoicemail.start();
  }

  Callyard.onLogin(start);
  $("logout").onclick = act(async () => {
    await api("POST", "/api/agent/logout").catch(() => {});
    await api("POST", "/api/auth/logout");
    if (ws) { ws.onclose = null; ws.close(); }
    window.callyardVoicemail.stop();
    show(false);
  });
  $("available").onclick = act(() => api("POST", "/api/agent/available"));
  $("break").onclick = act(() => api("POST", "/api/agent/break", { reason: $("break-reason").value }));
  $("accept").onclick = act(async () => {
    if (!offer) return;
    const r = await api("POST", "/api/agent/accept", { call: offer.call });  // 503: offer stands
    hideOffer();
    if (!r.ok) throw new Error(ACCEPT_ERRORS[r.error] || "call " + r.error);
    await joinRoom(r.livekit);
    loadQueues();
  });
  $("decline").onclick = act(async () => { if (offer) { await api("POST", "/api/agent/decline", { call: offer.call }); hideOffer(); } });
  $("mute").onclick = act(async () => {
    if (!room) return;
    muted = !muted;
    await room.localParticipant.setMicrophoneEnabled(!muted && !held);
    $("mute").textContent = muted ? "Unmute" : "Mute";
  });
  $("hold").onclick = act(async () => {
    const r = await api("POST", held ? "/api/agent/unhold" : "/api/agent/hold");
    showHeld(r.held);
  });
  $("hangup").onclick = act(async () => { leaveRoom(); await api("POST", "/api/agent/hangup"); });
  $("transfer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(() => api("POST", "/api/agent/transfer", { kind: $("transfer-kind").value, target: $("transfer-target").value.trim() }))();
  });

  api("GET", "/api/auth/me").then(start).catch(() => show(false));
})();
