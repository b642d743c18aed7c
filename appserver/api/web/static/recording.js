// Callyard agent console: the call's recording (start on demand, pause around a card number,
// resume, stop on demand). The worker owning the call acts; queues decide what is allowed.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const LABEL = { start: "recording", resume: "recording", pause: "paused", stop: "not recording" };

  async function record(operation) {
    $("recording-error").textContent = "";
    const r = await fetch(`/api/agent/recording/${operation}`, { method: "POST", credentials: "same-origin" });
    if (r.ok) {
      $("recording-state").textContent = LABEL[operation];
    } else {
      const data = await r.json().catch(() => null);
      $("recording-error").textContent = (data && data.detail && (data.detail.message || data.detail)) || r.statusText;
    }
  }

  for (const operation of ["start", "pause", "resume", "stop"]) {
    $(`record-${operation}`).onclick = () => record(operation);
  }
})();
