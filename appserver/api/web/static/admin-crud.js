// Callyard admin: queues (with members), agents, schedules, numbers and API keys, on the
// REST API (PUT by name replaces the whole resource). Loaded after admin.js.
"use strict";
(() => {
  const A = window.callyardAdmin;
  const el = (...args) => A.el(...args);
  let uid = 0;
  const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
  const ROUTES = ["hangup", "queue", "menu", "extension"];

  // Field kinds: text, number, select, bool, skills ({name: level} as "a:5, b:3"), password,
  // time, date, rows (a list of objects with their own fields). `nullable`: empty is null.
  const SECTIONS = {
    queues: {
      item: "queue", title: "Queues", path: "/api/queues", key: "name", keyLabel: "Name",
      columns: ["name", "strategy", "description"],
      fields: [
        { name: "description", label: "Description" },
        { name: "strategy", kind: "select", options: ["longest_idle", "ring_all", "round_robin", "fewest_calls", "random", "skills"] },
        { name: "max_wait_seconds", kind: "number", nullable: true, label: "Max wait (s)" },
        { name: "max_length", kind: "number", nullable: true, label: "Max callers waiting" },
        { name: "announce_interval", kind: "number", label: "Announce every (s, 0 never)" },
        { name: "announce_position", kind: "bool", label: "Announce position" },
        { name: "announce_wait", kind: "bool", label: "Announce expected wait" },
        { name: "moh_class", label: "Music on hold class" },
        { name: "wrapup_seconds", kind: "number", label: "Wrap-up (s)" },
        { name: "ring_timeout", kind: "number", label: "Ring an agent for (s)" },
        { name: "max_no_answer", kind: "number", label: "No-answers before break" },
        { name: "overflow_action", kind: "select", options: ROUTES },
        { name: "overflow_target", nullable: true },
        { name: "join_when_empty", kind: "bool", label: "Join when no agent is logged in" },
        { name: "leave_when_empty", kind: "bool", label: "Leave when the last agent logs out" },
        { name: "exit_key", nullable: true, label: "Exit key" },
        { name: "exit_action", kind: "select", options: ROUTES, nullable: true },
        { name: "exit_target", nullable: true },
        { name: "service_level_seconds", kind: "number", label: "Service level (s)" },
        { name: "tier_widen_seconds", kind: "number", label: "Widen to next tier after (s)" },
        { name: "required_skills", kind: "skills", label: "Required skills (name:level, ...)" },
      ],
      detail: members,
    },
    agents: {
      item: "agent", title: "Agents", path: "/api/agents", key: "username", keyLabel: "Username",
      columns: ["username", "display_name", "role", "kind", "enabled"],
      fields: [
        { name: "display_name", label: "Display name", required: true },
        { name: "kind", kind: "select", options: ["browser", "sip"] },
        { name: "extension", nullable: true, label: "Extension (sip agents)" },
        { name: "role", kind: "select", options: ["agent", "supervisor", "admin"] },
        { name: "skills", kind: "skills", label: "Skills (name:level, ...)" },
        { name: "enabled", kind: "bool" },
        { name: "password", kind: "password", label: "New password (empty: keep)" },
      ],
      detail: agentQueues,
    },
    schedules: {
      item: "schedule", title: "Schedules", path: "/api/schedules", key: "name", keyLabel: "Name",
      columns: ["name", "timezone", "description"],
      fields: [
        { name: "timezone", label: "Time zone (IANA, e.g. Europe/Paris)" },
        { name: "description", label: "Description" },
        { name: "hours", kind: "rows", label: "Opening hours", item: "interval", fields: [
          { name: "weekday", kind: "select", options: WEEKDAYS.map((d, i) => [i, d]), number: true },
          { name: "opens", kind: "time" }, { name: "closes", kind: "time" }] },
        { name: "closures", kind: "rows", label: "Holidays and closures", item: "closure", fields: [
          { name: "name" }, { name: "starts_on", kind: "date" }, { name: "ends_on", kind: "date" }] },
      ],
    },
    numbers: {
      item: "number", title: "Numbers", path: "/api/extensions", key: "number", keyLabel: "Number",
      columns: ["number", "kind", "target", "description"],
      fields: [
        { name: "kind", kind: "select", options: ["menu", "queue", "agent", "user"] },
        { name: "target", label: "Target (menu, queue, agent or endpoint)", required: true },
        { name: "description", label: "Description" },
      ],
    },
  };

  // A label beside (not around) its control: a select inside a label would add its value
  // to the label's accessible name.
  const labelled = (text, input) => el("div", { class: "ctl" }, el("label", { for: input.id, text }), input);
  const labelOf = (f) => f.label || f.name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

  function control(f, value, prefix) {
    const id = `${prefix}-${f.name}-${++uid}`;
    let input;
    if (f.kind === "select") {
      input = el("select", { id });
      if (f.nullable) input.append(el("option", { value: "", text: "(none)" }));
      for (const o of f.options) {
        const [v, t] = Array.isArray(o) ? o : [o, o];
        input.append(el("option", { value: String(v), text: t }));
      }
      input.value = value === null || value === undefined ? (f.nullable ? "" : input.options[0].value) : String(value);
    } else if (f.kind === "bool") {
      input = el("input", { id, type: "checkbox", checked: !!value });
    } else if (f.kind === "skills") {
      input = el("input", { id, value: Object.entries(value || {}).map(([k, v]) => `${k}:${v}`).join(", ") });
    } else {
      const type = { number: "number", password: "password", time: "time", date: "date" }[f.kind] || "text";
      input = el("input", { id, type, value: value === null || value === undefined ? "" : String(value),
        autocomplete: f.kind === "password" ? "new-password" : null });
    }
    input.dataset.name = f.name;
    if (f.kind === "bool") return el("div", { class: "ctl" }, input, " ", el("label", { for: id, text: labelOf(f) }));
    return labelled(labelOf(f), input);
  }

  function readControl(f, input) {
    if (f.kind === "bool") return input.checked;
    const v = input.value.trim();
    if (f.kind === "skills") {
      return Object.fromEntries(v.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
        const [k, lvl] = s.split(":").map((x) => x.trim());
        return [k, Number(lvl)];
      }));
    }
    if (v === "") return f.kind === "text" || !f.kind ? (f.nullable ? null : "") : null;
    if (f.kind === "number" || f.number) return Number(v);
    return v;
  }

  function rowsEditor(f, rows, readonly) {
    const list = el("ol", { class: "rows", "aria-label": labelOf(f) });
    const addRow = (r) => {
      const li = el("li", { class: "row wrap" }, f.fields.map((sf) => control(sf, r[sf.name], f.name)),
        el("button", { type: "button", class: "admin-only", text: `Remove ${f.item}`, onclick: () => li.remove() }));
      list.append(li);
    };
    (rows || []).forEach(addRow);
    const box = el("fieldset", { class: "rows-field", "data-name": f.name }, el("legend", { text: labelOf(f) }), list,
      el("button", { type: "button", class: "admin-only", text: `Add ${f.item}`, onclick: () => addRow({}) }));
    box.read = () => [...list.children].map((li) => Object.fromEntries(f.fields.map((sf) => [
      sf.name, readControl(sf, li.querySelector(`[data-name="${sf.name}"]`))])));
    if (readonly) box.querySelectorAll("input, select").forEach((x) => { x.disabled = true; });
    return box;
  }

  function formFor(spec, item, onSaved) {
    const readonly = A.readonly();
    const isNew = !item;
    const key = el("input", { id: `key-${++uid}`, value: item ? item[spec.key] : "", required: true, disabled: !isNew || readonly });
    const parts = spec.fields.map((f) => (f.kind === "rows" ? rowsEditor(f, item && item[f.name], readonly)
      : control(f, item ? item[f.name] : undefined, spec.key)));
    const error = el("p", { class: "error", role: "alert" });
    const form = el("form", { class: "crud-form", "aria-label": isNew ? `New ${spec.item}` : `${spec.title}: ${item[spec.key]}` },
      labelled(spec.keyLabel, key), parts,
      el("div", { class: "row wrap admin-only" },
        el("button", { type: "submit", text: isNew ? "Create" : "Save" }),
        isNew ? null : el("button", { type: "button", text: "Delete", onclick: async () => {
          if (!confirm(`Delete ${item[spec.key]}?`)) return;
          try {
            await A.api("DELETE", `${spec.path}/${encodeURIComponent(item[spec.key])}`);
            await onSaved(null);
            A.banner(`Deleted ${spec.item} ${item[spec.key]}.`, { ok: true });
          }
          catch (e) { error.textContent = e.message; }
        } })),
      error);
    if (readonly) form.querySelectorAll("input, select").forEach((x) => { x.disabled = true; });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      const body = {};
      spec.fields.forEach((f, i) => {
        const part = parts[i];
        const value = f.kind === "rows" ? part.read() : readControl(f, part.querySelector("[data-name]"));
        if (value !== null || f.nullable) body[f.name] = value;  // empty: the server's default
      });
      const name = key.value.trim();
      try {
        const saved = await A.api("PUT", `${spec.path}/${encodeURIComponent(name)}`, body);
        await onSaved(saved[spec.key]);  // the page shows it saved once it is redrawn
        A.banner(`Saved ${spec.item} ${saved[spec.key]}.`, { ok: true });
      } catch (e) { error.textContent = e.message; }
    });
    return form;
  }

  async function members(queue, box) {
    const [list, agents] = await Promise.all([A.api("GET", `/api/queues/${queue.name}/members`), A.api("GET", "/api/agents")]);
    const error = el("p", { class: "error", role: "alert" });
    const agentSel = el("select", { id: `m-agent-${++uid}` }, agents.map((a) => el("option", { value: a.username, text: a.username })));
    const tier = el("input", { id: `m-tier-${++uid}`, type: "number", min: 1, max: 9, value: 1 });
    const penalty = el("input", { id: `m-pen-${++uid}`, type: "number", min: 0, max: 100, value: 0 });
    const reload = () => members(queue, box);
    box.replaceChildren(el("h3", { text: `Members of ${queue.name}` }),
      el("div", { class: "table-wrap" }, el("table", { class: "crud" },
        el("thead", {}, el("tr", {}, ["Agent", "Tier", "Penalty", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, list.map((m) => el("tr", {}, el("td", { text: m.agent }), el("td", { text: String(m.tier) }),
          el("td", { text: String(m.penalty) }), el("td", {}, el("button", { type: "button", class: "admin-only",
            text: `Remove ${m.agent}`, onclick: async () => {
              try { await A.api("DELETE", `/api/queues/${queue.name}/members/${m.agent}`); reload(); }
              catch (e) { error.textContent = e.message; }
            } }))))))),
      el("form", { class: "crud-form admin-only", "aria-label": "Add a member", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await A.api("PUT", `/api/queues/${queue.name}/members/${agentSel.value}`, { tier: Number(tier.value), penalty: Number(penalty.value) });
          reload();
        } catch (e) { error.textContent = e.message; }
      } }, labelled("Agent", agentSel), labelled("Tier", tier), labelled("Penalty", penalty), el("button", { type: "submit", text: "Add or update member" })),
      error);
  }

  async function agentQueues(agent, box) {
    const list = await A.api("GET", `/api/agents/${agent.username}/queues`);
    box.replaceChildren(el("h3", { text: `Queues of ${agent.username}` }),
      el("p", { text: list.length ? list.map((m) => `${m.queue} (tier ${m.tier}, penalty ${m.penalty})`).join(", ") : "none" }));
  }

  async function showSection(spec, view, selected) {
    const items = await A.api("GET", spec.path);
    const detail = el("section", { "aria-label": "Details" });
    const editor = el("section", { "aria-label": "Editor" });
    const open = async (item) => {
      editor.replaceChildren(el("h2", { text: item ? `${spec.title}: ${item[spec.key]}` : `New ${spec.item}` }),
        formFor(spec, item, (name) => showSection(spec, view, name)));
      detail.hidden = !(item && spec.detail);
      if (item && spec.detail) await spec.detail(item, detail);
    };
    detail.hidden = true;
    const found = items.find((it) => it[spec.key] === selected);
    await open(found || null);  // drawn before it replaces the page: no half-drawn state
    if (A.readonly() && !found) editor.hidden = true;
    view.replaceChildren(
      el("section", {}, el("h2", { text: spec.title }),
        el("div", { class: "table-wrap" }, el("table", { class: "crud" },
          el("thead", {}, el("tr", {}, [...spec.columns.map((c) => el("th", { text: c.replace(/_/g, " ") })), el("th", {})])),
          el("tbody", {}, items.map((it) => el("tr", {}, spec.columns.map((c) => el("td", { text: String(it[c] ?? "") })),
            el("td", {}, el("button", { type: "button", text: A.readonly() ? `View ${it[spec.key]}` : `Edit ${it[spec.key]}`,
              onclick: () => open(it) }))))))),
        el("button", { type: "button", class: "admin-only", text: `New ${spec.item}`, onclick: () => open(null) })),
      editor, detail);
  }

  async function showKeys(view) {
    if (A.readonly()) {
      view.replaceChildren(el("section", {}, el("h2", { text: "API keys" }), el("p", { text: "API keys are managed by admins." })));
      return;
    }
    const keys = await A.api("GET", "/api/keys");
    const name = el("input", { id: `k-name-${++uid}`, required: true, maxlength: 63 });
    const role = el("select", { id: `k-role-${++uid}` }, ["admin", "supervisor"].map((r) => el("option", { value: r, text: r })));
    const out = el("p", { role: "status" });
    const error = el("p", { class: "error", role: "alert" });
    view.replaceChildren(el("section", {}, el("h2", { text: "API keys" }),
      el("div", { class: "table-wrap" }, el("table", { class: "crud" },
        el("thead", {}, el("tr", {}, ["name", "role", "created", "last used", "revoked", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, keys.map((k) => el("tr", {}, [k.name, k.role, k.created_at, k.last_used_at, k.revoked_at]
          .map((v) => el("td", { text: v || "" })), el("td", {}, k.revoked_at ? null : el("button", { type: "button",
          text: `Revoke ${k.name}`, onclick: async () => {
            if (!confirm(`Revoke API key ${k.name}? Programs using it stop working at once.`)) return;
            try { await A.api("DELETE", `/api/keys/${k.name}`); showKeys(view); } catch (e) { error.textContent = e.message; }
          } }))))))),
      el("form", { class: "crud-form", "aria-label": "New API key", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const created = await A.api("POST", "/api/keys", { name: name.value.trim(), role: role.value });
          await showKeys(view);
          view.querySelector("[role=status]").textContent = `Key ${created.name}: ${created.key} (shown once: store it now)`;
        } catch (e) { error.textContent = e.message; }
      } }, labelled("Name", name), labelled("Role", role),
      el("button", { type: "submit", text: "Create key" })), out, error));
  }

  A.showCrud = async (section, view) => {
    try {
      if (section === "keys") await showKeys(view);
      else if (SECTIONS[section]) await showSection(SECTIONS[section], view, null);
      else view.replaceChildren(el("p", { text: `No section ${section}` }));
    } catch (e) { A.banner(e.message); }
  };
})();
