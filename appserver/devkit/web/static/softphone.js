// Softphone for the engine simulator: dial, press keys, watch the transcript.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  // Text of the sound files Callyard generates (appserver.sounds), shown as captions.
  const captions = JSON.parse(document.getElementById("captions").textContent || "{}");
  let callId = null;
  let timer = null;

  function setInCall(inCall) {
    $("call").disabled = inCall;
    $("hangup").disabled = !inCall;
    for (const b of document.querySelectorAll("#keypad button")) b.disabled = !inCall;
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data));
    return data;
  }

  function caption(detail) {
    const i = detail.indexOf(":");
    const kind = detail.slice(0, i), value = detail.slice(i + 1);
    if (kind === "tts") return "\u{1F5E3} " + value;
    if (kind === "digits" || kind === "number") return "\u{1F522} " + value;
    return "\u{1F50A} " + (captions[value] || value);
  }

  function render(call) {
    const list = $("transcript");
    list.replaceChildren(...call.transcript.map((e) => {
      const li = document.createElement("li");
      li.textContent = `${e.at.toFixed(2)}s ${e.kind} ${e.detail}`;
      return li;
    }));
    const started = call.transcript.filter((e) => e.kind === "prompt_started");
    if (started.length) $("caption").textContent = caption(started[started.length - 1].detail);
    $("status").textContent = call.state === "ended" ? "Call ended" : `In call ${call.id} (${call.engine})`;
    if (call.state === "ended") { setInCall(false); clearInterval(timer); timer = null; }
  }

  async function poll() {
    if (!callId) return;
    try { render(await api("GET", `/sim/calls/${callId}`)); }
    catch (err) { $("status").textContent = "Error: " + err.message; }
  }

  $("dial").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const call = await api("POST", "/sim/calls", { to: $("to").value, from: $("from").value, engine: $("engine").value });
      callId = call.id;
      $("caption").textContent = "";
      setInCall(true);
      render(call);
      timer = setInterval(poll, 300);
    } catch (err) { $("status").textContent = "Error: " + err.message; }
  });

  $("hangup").addEventListener("click", async () => {
    if (callId) render(await api("POST", `/sim/calls/${callId}/hangup`));
  });

  $("keypad").addEventListener("click", async (ev) => {
    const key = ev.target.dataset && ev.target.dataset.key;
    if (!key || !callId) return;
    try { render(await api("POST", `/sim/calls/${callId}/dtmf`, { digits: key })); }
    catch (err) { $("status").textContent = "Error: " + err.message; }
  });
  // A callback: Callyard calls this phone back; take the call when nothing else is on.
  async function ring() {
    if (callId && timer) return;
    try {
      const calls = await api("GET", "/sim/incoming");
      if (!calls.length) return;
      callId = calls[0].id;
      setInCall(true);
      render(calls[0]);
      $("status").textContent = `Callback from Callyard: ${callId} (${calls[0].engine})`;
      timer = setInterval(poll, 300);
    } catch (err) { /* the dev server restarts: try again */ }
  }
  setInterval(ring, 1000);
  setInCall(false);
})();
