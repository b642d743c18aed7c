// Callyard agent console: voicemail of the agent's mailboxes (list, player, mark handled),
// new messages pushed live over /api/agent/voicemail-events. Started by console.js.
"use strict";
window.callyardVoicemail = (() => {
  const $ = (id) => document.getElementById(id);
  let events = null;

  function cell(tr, content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    tr.appendChild(td);
  }

  function row(m) {
    const tr = document.createElement("tr");
    tr.dataset.id = m.id;
    tr.dataset.handled = m.handled_at ? "yes" : "no";
    cell(tr, new Date(m.received_at).toLocaleString());
    cell(tr, m.caller || "unknown");
    cell(tr, m.mailbox);
    cell(tr, `${m.seconds.toFixed(1)} s`);
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "none";
    audio.src = `/api/agent/voicemail/${m.id}/audio`;
    cell(tr, audio);
    if (m.handled_at) {
      cell(tr, `handled by ${m.handled_by}`);
    } else {
      const button = document.createElement("button");
      button.textContent = "Mark handled";
      button.onclick = async () => {
        const r = await fetch(`/api/agent/voicemail/${m.id}/handled`,
                              { method: "POST", credentials: "same-origin" });
        if (r.ok) tr.replaceWith(row(await r.json()));
        count();
      };
      cell(tr, button);
    }
    return tr;
  }

  function count() {
    const open = $("voicemail").querySelectorAll('tr[data-handled="no"]').length;
    $("voicemail-new").textContent = open ? `${open} new` : "";
  }

  async function load() {
    const r = await fetch("/api/agent/voicemail", { credentials: "same-origin" });
    if (!r.ok) return;
    $("voicemail").querySelector("tbody").replaceChildren(...(await r.json()).map(row));
    count();
  }

  function listen() {
    if (events) events.close();
    events = new EventSource("/api/agent/voicemail-events");
    events.onmessage = (e) => {
      const m = JSON.parse(e.data);
      const body = $("voicemail").querySelector("tbody");
      if (!body.querySelector(`tr[data-id="${m.id}"]`)) body.prepend(row(m));
      count();
    };
    events.onopen = load;  // (re)connected: catch up on what came meanwhile
  }

  return { start() { load(); listen(); }, stop() { if (events) events.close(); events = null; } };
})();
