// Callyard admin: the menu editor (drafts, live validation, publish, history, try it).
// Supervisors see everything read-only; the API checks every role again.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const ACTIONS = ["submenu", "back", "repeat", "main", "enqueue", "dial", "transfer", "play", "set", "hangup"];
  const MENU_LEVEL = ["submenu", "back", "main", "enqueue", "dial", "transfer", "hangup"];
  const NO_TARGET = new Set(["back", "repeat", "main", "play", "hangup"]);
  const TARGET_HINT = {
    submenu: "menu name", enqueue: "queue or queue:priority", dial: "extension number",
    transfer: "number or address", set: "name=value",
  };
  const TARGET_LIST = { submenu: "menu-names", enqueue: "queue-names", dial: "extension-numbers" };
  const PROMPT_KINDS = ["file", "tts", "digits", "number", "silence"];
  const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];
  const ACTION_LABEL = { closed: "When closed", holiday: "On holidays", exhausted: "After the last retry" };

  let me = null;            // {name, role}
  let state = null;         // GET /api/menu-drafts
  let current = null;       // name of the menu in the form
  let dirty = false;        // the form differs from its saved draft
  let issues = [];          // issues of the set with the form's menu in it
  let lookups = { extensions: [], queues: [], schedules: [] };
  let validateTimer = 0;
  let uid = 0;

  window.callyardAdmin = window.callyardAdmin || {};

  // ---------------------------------------------------------------- plumbing
  async function api(method, path, body) {
    const r = await fetch(path, {
      method, credentials: "same-origin",
      headers: body !== undefined ? { "Content-Type": "application/json" } : {},
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) {
      const d = data && data.detail;
      const msg = typeof d === "string" ? d : d && d.message ? d.message
        : Array.isArray(d) ? d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ")
        : JSON.stringify(d);
      throw Object.assign(new Error(msg || r.statusText), { status: r.status, detail: d });
    }
    return data;
  }
  window.callyardAdmin.api = api;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  window.callyardAdmin.el = el;
  const nextId = (stem) => `${stem}-${++uid}`;
  const readonly = () => !me || me.role !== "admin";
  window.callyardAdmin.readonly = readonly;

  function banner(text, { reload = false, ok = false } = {}) {
    $("banner").hidden = !text;
    $("banner").dataset.kind = ok ? "ok" : "error";
    $("banner-text").textContent = text || "";
    $("banner-reload").hidden = !reload;
  }
  window.callyardAdmin.banner = banner;

  // ---------------------------------------------------------------- login and sections
  function showLoggedIn(who) {
    me = who;
    $("login-view").hidden = !!who;
    $("tabs").hidden = !who;
    $("logout").hidden = !who;
    $("who").textContent = who ? `${who.name} (${who.role}${readonly() ? ", read-only" : ""})` : "";
    document.body.classList.toggle("readonly", !!who && readonly());
    if (!who) document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
  }

  async function route() {
    if (!me) return;
    const section = (location.hash || "#menus").slice(1);
    document.querySelectorAll("#tabs a").forEach((a) => {
      a.toggleAttribute("aria-current", a.getAttribute("href") === `#${section}`);
    });
    $("menus-view").hidden = section !== "menus";
    $("crud-view").hidden = section === "menus";
    banner("");
    if (section === "menus") await loadMenus();
    else if (window.callyardAdmin.showCrud) await window.callyardAdmin.showCrud(section, $("crud-view"));
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    $("login-error").textContent = "";
    try {
      const s = await api("POST", "/api/auth/login", { username: f.username.value, password: f.password.value });
      if (s.role === "agent") throw new Error("the admin pages need the supervisor or admin role");
      showLoggedIn({ name: s.username, role: s.role });
      await route();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", async () => {
    await api("POST", "/api/auth/logout").catch(() => {});
    showLoggedIn(null);
  });
  $("banner-close").addEventListener("click", () => banner(""));
  $("banner-reload").addEventListener("click", async () => { dirty = false; banner(""); await loadMenus(); });
  window.addEventListener("hashchange", route);

  // ---------------------------------------------------------------- the menu set
  function body(name) {
    const e = state.menus.find((m) => m.name === name);
    if (!e) return null;
    return e.draft ? e.draft.menu : e.live;
  }

  function entry(name) { return state && state.menus.find((m) => m.name === name); }

  async function loadMenus() {
    const [s, extensions, queues, schedules] = await Promise.all([
      api("GET", "/api/menu-drafts"), api("GET", "/api/extensions"),
      api("GET", "/api/queues"), api("GET", "/api/schedules"),
    ]);
    state = s;
    issues = s.issues;
    lookups = { extensions, queues, schedules };
    fillList("menu-names", state.menus.filter((m) => body(m.name)).map((m) => m.name));
    fillList("queue-names", queues.map((q) => q.name));
    fillList("extension-numbers", extensions.map((x) => x.number));
    renderStatus();
    if (current && !entry(current)) current = null;
    if (current) openMenu(current); else { renderTree(); renderIssues(); }
    await loadHistory();
  }

  function fillList(id, values) {
    $(id).replaceChildren(...values.map((v) => el("option", { value: v })));
  }

  function renderStatus() {
    const st = state.status || {};
    $("live-status").textContent = st.version
      ? `Live version ${st.version}, published ${st.published_at || "?"}`
      : "No menu set published yet";
    $("live-error").textContent = st.last_error ? `Last publication error: ${st.last_error}` : "";
    const drafts = state.menus.filter((m) => m.draft);
    $("publish").disabled = readonly() || dirty || drafts.length === 0;
    $("publish-hint").textContent = dirty ? "Save your draft first."
      : drafts.length ? `${drafts.length} draft(s): ${drafts.map((m) => m.name).join(", ")}` : "No drafts.";
  }

  // The set as the tree shows it: saved drafts, with the form's unsaved menu laid over.
  function workingBodies() {
    const out = {};
    for (const m of state.menus) { const b = body(m.name); if (b) out[m.name] = b; }
    if (current && dirty) { const b = collect(); if (b) out[current] = b; else delete out[current]; }
    return out;
  }

  function errorCount(name) {
    return issues.filter((i) => i.menu === name && i.severity === "error").length;
  }

  function menuButton(name, label) {
    const e = entry(name);
    const n = errorCount(name);
    return el("button", {
      type: "button", class: "tree-menu", "aria-current": name === current ? "true" : null,
      "data-menu": name, onclick: () => selectMenu(name),
    }, label || name,
    e && e.status !== "live" ? " " : null,
    e && e.status !== "live" ? el("span", { class: `badge status-${e.status}`, text: e.status === "changed" ? "draft" : e.status }) : null,
    n ? " " : null,
    n ? el("span", { class: "badge errors", text: `${n} error${n > 1 ? "s" : ""}` }) : null);
  }

  function menuNode(name, bodies, path) {
    const b = bodies[name];
    if (!b) return el("li", {}, el("span", { class: "missing", text: `${name} (missing)` }));
    if (path.includes(name)) return el("li", {}, el("span", { class: "hint", text: `↺ ${name}` }));
    const children = [];
    for (const o of b.options || []) {
      const label = `${o.digits} · ${o.action}${o.target ? " " + o.target : ""}`;
      if (o.action === "submenu" && o.target) {
        children.push(el("li", {}, el("span", { class: "opt", text: `${o.digits} ›` }),
          el("ul", {}, menuNode(o.target, bodies, [...path, name]))));
      } else children.push(el("li", { class: "opt", text: label }));
    }
    if (b.exhausted_action === "submenu" && b.exhausted_target) {
      children.push(el("li", {}, el("span", { class: "opt", text: "no input ›" }),
        el("ul", {}, menuNode(b.exhausted_target, bodies, [...path, name]))));
    }
    return el("li", {}, menuButton(name), children.length ? el("ul", {}, children) : null);
  }

  function renderTree() {
    const bodies = workingBodies();
    const roots = lookups.extensions.filter((x) => x.kind === "menu");
    const reached = new Set();
    const walk = (n) => {
      if (reached.has(n) || !bodies[n]) return;
      reached.add(n);
      for (const o of bodies[n].options || []) if (o.action === "submenu") walk(o.target);
      if (bodies[n].exhausted_action === "submenu") walk(bodies[n].exhausted_target);
      if (bodies[n].closed_action === "submenu") walk(bodies[n].closed_target);
      if (bodies[n].holiday_action === "submenu") walk(bodies[n].holiday_target);
    };
    roots.forEach((x) => walk(x.target));
    const items = roots.map((x) => el("li", {}, el("span", { class: "number", text: `☎ ${x.number}` }),
      el("ul", {}, menuNode(x.target, bodies, []))));
    // Unreached menus: those no other menu leads to head a tree of their own.
    const targets = new Set(Object.values(bodies).flatMap((b) => (b.options || [])
      .filter((o) => o.action === "submenu").map((o) => o.target)));
    const others = Object.keys(bodies).filter((n) => !reached.has(n) && !targets.has(n));
    others.forEach(walk);
    others.push(...Object.keys(bodies).filter((n) => !reached.has(n)));  // loops among themselves
    const deleted = state.menus.filter((m) => m.status === "deleted").map((m) => m.name);
    if (others.length) items.push(el("li", {}, el("span", { class: "hint", text: "Not reached from a number" }),
      el("ul", {}, others.map((n) => menuNode(n, bodies, [])))));
    if (deleted.length) items.push(el("li", {}, el("span", { class: "hint", text: "Deleted when published" }),
      el("ul", {}, deleted.map((n) => el("li", {}, menuButton(n))))));
    $("tree").replaceChildren(el("ul", { class: "tree" }, items));
  }

  function renderIssues() {
    const errs = issues.filter((i) => i.severity === "error");
    $("issue-count").textContent = errs.length ? String(errs.length) : "none";
    $("issue-count").dataset.state = errs.length ? "error" : "ok";
    $("issues").replaceChildren(...issues.map((i) => el("li", { class: i.severity },
      i.menu ? el("button", { type: "button", class: "link", onclick: () => selectMenu(i.menu), text: i.menu }) : null,
      ` ${i.severity}: ${i.option ? `key ${i.option}: ` : ""}${i.message}`)));
  }

  // ---------------------------------------------------------------- the form
  function selectMenu(name) {
    if (name === current) return;
    if (dirty && !confirm(`Leave menu "${current}" without saving your changes?`)) return;
    dirty = false;
    openMenu(name);
  }

  function openMenu(name) {
    current = name;
    const e = entry(name);
    const b = body(name);
    $("editor-title").textContent = `Menu ${name}`;
    if (e) $("editor-title").append(" ", el("span", { class: `badge status-${e.status}`, text: e.status === "changed" ? "draft" : e.status }));
    const deleted = !!e && e.status === "deleted";
    $("menu-form").hidden = false;
    fillForm(b || (e && e.live) || {});
    $("save").hidden = deleted;
    $("discard").hidden = !(e && e.draft);
    $("delete-menu").hidden = !b;
    $("try").hidden = !b || !window.callyardAdmin.tryIt;
    $("save-state").textContent = deleted ? "Deleted when the drafts are published (discard the draft to keep it)"
      : e && e.draft ? `Draft saved by ${e.draft.updated_by}` : "Live, no draft";
    renderTree(); renderIssues(); showFieldErrors();
    renderStatus();
  }

  function actionSelect(id, allowed, value, optional) {
    const s = el("select", { id });
    if (optional) s.append(el("option", { value: "", text: "(not set)" }));
    for (const a of allowed) s.append(el("option", { value: a, text: a, selected: a === value }));
    if (!value && optional) s.value = "";
    return s;
  }

  function targetInput(id, action, value) {
    const input = el("input", { id, maxlength: 128, value: value || "", placeholder: TARGET_HINT[action] || "",
      list: TARGET_LIST[action] || null, disabled: NO_TARGET.has(action) || !action });
    return input;
  }

  function syncTarget(select, input) {
    const a = select.value;
    input.disabled = readonly() || NO_TARGET.has(a) || !a;
    if (input.disabled) input.value = "";
    input.placeholder = TARGET_HINT[a] || "";
    if (TARGET_LIST[a]) input.setAttribute("list", TARGET_LIST[a]); else input.removeAttribute("list");
  }

  function fieldBox(field, labelText, control) {
    const err = el("p", { class: "field-error", id: nextId("err") });
    control.setAttribute("aria-describedby", err.id);
    return el("div", { class: "field", "data-field": field }, el("label", { for: control.id, text: labelText }), control, err);
  }

  function renderActionPair(box, b) {
    const p = box.dataset.prefix;
    const sel = actionSelect(`f-${p}_action`, MENU_LEVEL, b[`${p}_action`], p !== "exhausted");
    const tgt = targetInput(`f-${p}_target`, sel.value, b[`${p}_target`]);
    sel.addEventListener("change", () => syncTarget(sel, tgt));
    box.replaceChildren(el("div", { class: "grid" },
      fieldBox(`${p}_action`, `${ACTION_LABEL[p]}: action`, sel), fieldBox(`${p}_target`, "Target", tgt)));
  }

  function promptRow(spec, labelText) {
    const idx = spec.indexOf(":");
    const kind = idx > 0 ? spec.slice(0, idx) : "tts";
    const value = idx > 0 ? spec.slice(idx + 1) : spec;
    const kindSel = el("select", { "aria-label": `${labelText}: kind`, class: "prompt-kind" },
      PROMPT_KINDS.map((k) => el("option", { value: k, text: k, selected: k === kind })));
    const text = el("input", { "aria-label": `${labelText}: ${kind} value`, class: "prompt-value", value, maxlength: 1000 });
    kindSel.addEventListener("change", () => text.setAttribute("aria-label", `${labelText}: ${kindSel.value} value`));
    const row = el("li", { class: "prompt-row" }, kindSel, text,
      el("button", { type: "button", class: "admin-only icon", "aria-label": `Move ${labelText} prompt up`, text: "↑",
        onclick: () => { if (row.previousElementSibling) row.parentNode.insertBefore(row, row.previousElementSibling); changed(); } }),
      el("button", { type: "button", class: "admin-only icon", "aria-label": `Remove ${labelText} prompt`, text: "✕",
        onclick: () => { row.remove(); changed(); } }));
    return row;
  }

  function renderPrompts(box, specs) {
    const label = box.dataset.label;
    const optional = box.hasAttribute("data-optional");
    const list = el("ol", { class: "prompt-list", "aria-label": label });
    const err = el("p", { class: "field-error", id: nextId("err") });
    list.setAttribute("aria-describedby", err.id);
    const useDefault = optional ? el("input", { type: "checkbox", id: nextId("dflt"), checked: specs === null || specs === undefined }) : null;
    for (const s of specs || []) list.append(promptRow(s, label));
    const add = el("button", { type: "button", class: "admin-only", text: `Add ${label[0].toLowerCase()}${label.slice(1)} prompt`,
      onclick: () => {
        if (useDefault) useDefault.checked = false;
        const row = promptRow("tts:", label); list.append(row); row.querySelector("input").focus(); changed();
      } });
    box.replaceChildren(el("h3", { text: label === "Greeting" ? label : `${label} prompt` }),
      useDefault ? el("label", { class: "inline check" }, useDefault, " none (use the default)") : null,
      list, add, err);
    if (useDefault) useDefault.addEventListener("change", () => { if (useDefault.checked) list.replaceChildren(); changed(); });
    box.useDefault = useDefault;
  }

  function readPrompts(box) {
    if (box.useDefault && box.useDefault.checked) return null;
    return [...box.querySelectorAll(".prompt-row")].map((r) =>
      `${r.querySelector(".prompt-kind").value}:${r.querySelector(".prompt-value").value}`);
  }

  function optionCard(o) {
    const id = nextId("opt");
    const digits = el("input", { id: `${id}-digits`, value: o.digits, maxlength: 20, class: "digits" });
    const action = actionSelect(`${id}-action`, ACTIONS, o.action, false);
    const target = targetInput(`${id}-target`, o.action, o.target);
    action.addEventListener("change", () => syncTarget(action, target));
    const prompts = el("div", { class: "prompts field", "data-field": "prompt", "data-label": `Key ${o.digits}`, "data-optional": true });
    renderPrompts(prompts, o.prompt);
    const err = el("p", { class: "field-error option-error", id: nextId("err") });
    const card = el("div", { class: "option", "data-digits": o.digits, role: "group", "aria-label": `Key ${o.digits}` },
      el("div", { class: "grid" },
        fieldBox("digits", "Key(s)", digits), fieldBox("action", "Action", action), fieldBox("target", "Target", target)),
      prompts, err,
      el("button", { type: "button", class: "admin-only", text: `Remove key ${o.digits}`, onclick: () => { card.remove(); changed(); renderKeypad(); } }));
    card.position = o.position || 0;
    digits.addEventListener("change", () => { card.dataset.digits = digits.value; renderKeypad(); });
    return card;
  }

  // Updated in place: replacing the buttons while one is being clicked would lose the click.
  function renderKeypad() {
    const pad = $("keypad");
    if (!pad.children.length) {
      pad.append(...KEYS.map((k) => el("button", { type: "button", class: "key", "data-key": k, onclick: () => keyPressed(k) },
        el("span", { class: "k", text: k }), el("span", { class: "a" }))));
    }
    const used = new Map([...document.querySelectorAll("#options .option")].map((c) => [c.dataset.digits, c]));
    for (const button of pad.children) {
      const k = button.dataset.key;
      const card = used.get(k);
      const act = card ? card.querySelector("select").value : "";
      button.setAttribute("aria-pressed", card ? "true" : "false");
      button.setAttribute("aria-label", card ? `Key ${k}: ${act}` : `Key ${k}: not used${readonly() ? "" : ", add it"}`);
      button.querySelector(".a").textContent = act;
    }
  }

  function keyPressed(digits) {
    const found = [...document.querySelectorAll("#options .option")].find((c) => c.dataset.digits === digits);
    if (found) { found.querySelector("select").focus(); found.scrollIntoView({ block: "nearest" }); return; }
    if (readonly()) return;
    const card = optionCard({ digits, action: "hangup" });
    $("options").append(card);
    renderKeypad(); changed();
    card.querySelector("select").focus();
  }

  $("add-option").addEventListener("click", () => {
    const d = $("new-digits").value.trim();
    if (!/^[0-9*#]{1,20}$/.test(d)) { $("new-digits").setCustomValidity("1-20 of 0-9, * and #"); $("new-digits").reportValidity(); return; }
    $("new-digits").setCustomValidity(""); $("new-digits").value = "";
    keyPressed(d);
  });

  function setValue(id, v) { $(id).value = v === null || v === undefined ? "" : v; }

  function fillForm(b) {
    setValue("f-description", b.description ?? "");
    setValue("f-language", b.language ?? "en");
    $("f-schedule").replaceChildren(el("option", { value: "", text: "(always open)" }),
      ...lookups.schedules.map((s) => el("option", { value: s.name, text: `${s.name} (${s.timezone})` })));
    setValue("f-schedule", b.schedule ?? "");
    for (const f of ["first_digit_timeout", "inter_digit_timeout", "max_digits", "max_retries"]) {
      const defaults = { first_digit_timeout: 5, inter_digit_timeout: 2, max_digits: 1, max_retries: 3 };
      setValue(`f-${f}`, b[f] ?? defaults[f]);
    }
    setValue("f-terminator", b.terminator ?? "#");
    document.querySelectorAll("#menu-form .action-pair").forEach((box) => renderActionPair(box, { exhausted_action: "hangup", ...b }));
    document.querySelectorAll("#menu-form > fieldset > .prompts").forEach((box) => renderPrompts(box, b[box.dataset.field] ?? (box.hasAttribute("data-optional") ? null : [])));
    $("options").replaceChildren(...(b.options || []).map(optionCard));
    renderKeypad();
    for (const [field, input] of [["description", "f-description"], ["language", "f-language"], ["schedule", "f-schedule"],
      ["first_digit_timeout", "f-first_digit_timeout"], ["inter_digit_timeout", "f-inter_digit_timeout"],
      ["max_digits", "f-max_digits"], ["terminator", "f-terminator"], ["max_retries", "f-max_retries"]]) {
      const box = document.querySelector(`#menu-form [data-field="${field}"]`);
      let err = box.querySelector(".field-error");
      if (!err) { err = el("p", { class: "field-error", id: nextId("err") }); box.append(err); }
      $(input).setAttribute("aria-describedby", err.id);
    }
    document.querySelectorAll("#menu-form input, #menu-form select").forEach((x) => {
      if (readonly()) x.disabled = true;
    });
  }

  const num = (id) => { const v = $(id).value; return v === "" ? NaN : Number(v); };
  const orNull = (v) => (v === "" ? null : v);

  // The form as the API takes a menu (PUT /api/menu-drafts/{name}).
  function collect() {
    if ($("menu-form").hidden) return null;
    const b = {
      description: $("f-description").value,
      language: $("f-language").value,
      schedule: orNull($("f-schedule").value),
      first_digit_timeout: num("f-first_digit_timeout"),
      inter_digit_timeout: num("f-inter_digit_timeout"),
      max_digits: num("f-max_digits"),
      terminator: $("f-terminator").value,
      max_retries: num("f-max_retries"),
    };
    for (const p of ["exhausted", "closed", "holiday"]) {
      b[`${p}_action`] = orNull($(`f-${p}_action`).value);
      b[`${p}_target`] = orNull($(`f-${p}_target`).value.trim());
    }
    document.querySelectorAll("#menu-form > fieldset > .prompts").forEach((box) => { b[box.dataset.field] = readPrompts(box); });
    b.options = [...document.querySelectorAll("#options .option")].map((card, i) => {
      const [digits, action, target] = card.querySelectorAll(".grid input, .grid select");
      return { digits: digits.value.trim(), action: action.value, target: orNull(target.value.trim()),
        prompt: readPrompts(card.querySelector(".prompts")), position: card.position || i };
    });
    for (const k of Object.keys(b)) if (typeof b[k] === "number" && Number.isNaN(b[k])) b[k] = null;
    return b;
  }

  function changed() {
    if (readonly()) return;
    dirty = true;
    $("save-state").textContent = "Unsaved changes";
    renderStatus();
    clearTimeout(validateTimer);
    validateTimer = setTimeout(validateNow, 250);
  }
  $("menu-form").addEventListener("input", changed);
  $("menu-form").addEventListener("change", () => { changed(); renderKeypad(); });

  async function validateNow() {
    if (!current) return;
    try {
      const r = await api("POST", "/api/menu-drafts/validate", { menus: { [current]: collect() } });
      issues = r.issues;
    } catch (e) { issues = [{ severity: "error", menu: current, option: null, field: null, message: e.message }]; }
    renderTree(); renderIssues(); showFieldErrors();
  }
  window.callyardAdmin.validateNow = validateNow;

  // Every issue of the current menu on its field (or on the option, or the menu).
  function showFieldErrors() {
    const form = $("menu-form");
    form.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((x) => x.removeAttribute("aria-invalid"));
    const general = [];
    for (const i of issues.filter((x) => x.menu === current && x.severity === "error")) {
      let scope = form;
      if (i.option !== null && i.option !== undefined) {
        scope = [...form.querySelectorAll("#options .option")].find((c) => c.dataset.digits === i.option);
        if (!scope) { general.push(`key ${i.option}: ${i.message}`); continue; }
      }
      const box = i.field && scope.querySelector(`:scope [data-field="${i.field}"]`);
      const target = box ? box.querySelector(":scope > .field-error") : scope.querySelector(":scope > .option-error");
      if (!target) { general.push(i.message); continue; }
      target.textContent = target.textContent ? `${target.textContent}; ${i.message}` : i.message;
      (box || scope).querySelectorAll("input, select, ol").forEach((x) => x.setAttribute("aria-invalid", "true"));
    }
    $("menu-errors").textContent = general.join("; ");
  }

  // ---------------------------------------------------------------- saving and publishing
  function conflict(e) {
    banner(`Conflict: ${e.message}. Reload to see the current version (your unsaved edits are dropped).`, { reload: true });
  }

  async function saveDraft(menu) {
    const e = entry(current);
    const revision = e && e.draft ? e.draft.revision : 0;
    const base = revision === 0 && e ? e.live_digest : null;
    try {
      const r = await api("PUT", `/api/menu-drafts/${current}`, { revision, base, menu });
      dirty = false;
      banner("");
      await loadMenus();
      if (menu) $("save-state").textContent = r.issues.some((i) => i.severity === "error") ? "Draft saved (with errors: it cannot be published yet)" : "Draft saved";
    } catch (err) {
      if (err.status === 409) conflict(err);
      else banner(`Not saved: ${err.message}`);
    }
  }

  $("save").addEventListener("click", () => saveDraft(collect()));
  $("delete-menu").addEventListener("click", () => {
    const e = entry(current);
    if (e && !e.live) discard(`Delete the new menu "${current}" (it was never published)?`);
    else if (confirm(`Delete menu "${current}" when the drafts are published?`)) saveDraft(null);
  });
  $("discard").addEventListener("click", () => discard(`Discard the draft of "${current}"?`));

  async function discard(question) {
    const e = entry(current);
    if (!e || !e.draft || !confirm(question)) return;
    try {
      await api("DELETE", `/api/menu-drafts/${current}?revision=${e.draft.revision}`);
      dirty = false;
      if (!e.live) current = null;
      await loadMenus();
    } catch (err) { if (err.status === 409) conflict(err); else banner(err.message); }
  }

  $("new-menu").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const name = $("new-menu-name").value.trim();
    $("new-menu-error").textContent = "";
    if (entry(name)) { $("new-menu-error").textContent = `menu ${name} exists already`; return; }
    if (dirty && !confirm(`Leave menu "${current}" without saving your changes?`)) return;
    try {
      await api("PUT", `/api/menu-drafts/${name}`, { revision: 0, base: null, menu: { greeting: [], options: [] } });
      $("new-menu-name").value = "";
      dirty = false; current = name;
      await loadMenus();
      $("f-description").focus();
    } catch (err) { $("new-menu-error").textContent = err.message; }
  });

  $("publish").addEventListener("click", async () => {
    const revisions = Object.fromEntries(state.menus.filter((m) => m.draft).map((m) => [m.name, m.draft.revision]));
    try {
      const r = await api("POST", "/api/menu-drafts/publish", { revisions, note: $("publish-note").value });
      $("publish-note").value = "";
      await loadMenus();
      banner(`Published as version #${r.version.id}; callers hear it as soon as it is compiled (live version below).`, { ok: true });
      followLiveVersion(state.status.version);
    } catch (err) {
      if (err.status === 409) conflict(err);
      else {
        banner(err.message);
        if (err.detail && err.detail.issues) { issues = err.detail.issues; renderTree(); renderIssues(); showFieldErrors(); }
      }
    }
  });

  // The reloader compiles and publishes within a second: show the new live version.
  async function followLiveVersion(before) {
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 250));
      const s = await api("GET", "/api/menus/status").catch(() => null);
      if (s && (s.version !== before || s.last_error)) { state.status = s; renderStatus(); return; }
    }
  }

  // ---------------------------------------------------------------- history
  const show = (v) => (v === null || v === undefined ? "—" : typeof v === "string" ? v : JSON.stringify(v));

  function changeList(changes) {
    return el("ul", { class: "changes" }, changes.map((c) => el("li", {},
      el("strong", { text: c.menu }), ` ${c.change}`,
      c.change === "changed" ? el("ul", {},
        Object.entries(c.fields).map(([f, [a, b]]) => el("li", {}, el("code", { text: f }), `: ${show(a)} → ${show(b)}`)),
        c.options.map((o) => el("li", {}, `key ${o.digits}: `,
          o.before ? `${o.before.action} ${o.before.target || ""}` : "(none)", " → ",
          o.after ? `${o.after.action} ${o.after.target || ""}` : "(removed)"))) : null)));
  }

  // Who made a version: editor publications and rollbacks name their admin; REST and SQL
  // edits (recorded by the reloader) name each person, "sql:<user> (<application>)" by hand,
  // "unknown" when no edit of the menu tables was logged (e.g. a schedule renamed).
  function madeBy(v) {
    if (v.action === "baseline") return "baseline";
    if (v.action !== "edit") return `${v.published_by} · ${v.action}`;
    const who = v.published_by.split(", ");
    const sql = who.filter((w) => w.startsWith("sql:")).length;
    const kind = sql === who.length ? "SQL edit"
      : sql === 0 && v.published_by !== "unknown" ? "REST edit" : "Edit";
    return `${kind} by ${v.published_by}`;
  }

  async function loadHistory() {
    const versions = await api("GET", "/api/menu-versions?limit=50");
    $("history").replaceChildren(...versions.map((v) => el("li", { "data-version": v.id, "data-action": v.action },
      el("details", {},
        el("summary", {}, `#${v.id} · ${new Date(v.published_at).toLocaleString()} · ${madeBy(v)}`
          + (v.rollback_of ? ` of #${v.rollback_of}` : "") + (v.note ? ` · ${v.note}` : "")),
        v.changes.length ? changeList(v.changes) : el("p", { class: "hint", text: "No change to the menus." }),
        el("button", { type: "button", class: "admin-only", text: `Roll back to #${v.id}`, onclick: () => rollback(v.id) })))));
  }

  async function rollback(id) {
    if (!confirm(`Make version #${id} live again? (Drafts are kept.)`)) return;
    try {
      const r = await api("POST", `/api/menu-versions/${id}/rollback`, { note: "" });
      await loadMenus();
      banner(`Rolled back: version #${r.version.id} restores #${id}.`, { ok: true });
      followLiveVersion(state.status.version);
    } catch (err) { banner(err.message); }
  }

  // ---------------------------------------------------------------- try it
  // In `callyard dev` a real simulated call: the draft gets a trial number, the engine
  // simulator dials it, a worker walks the draft; captions come from the call's transcript.
  // Elsewhere the draft is replayed in the IVR machine by the API (no engine).
  const tryConfig = JSON.parse($("try-config").textContent || "{}");
  let trial = null;   // replay: {menu, menus, steps}
  let simCall = null; // softphone: the simulated call's id
  let simTimer = 0;

  function captionOf(prompt) {
    const i = prompt.indexOf(":");
    const kind = prompt.slice(0, i), value = prompt.slice(i + 1);
    if (kind === "file") return (tryConfig.captions || {})[value] || `[recording ${value}]`;
    if (kind === "digits") return value.split("").join(" ");
    if (kind === "silence") return "[silence]";
    return value;
  }

  const SIM_LINE = {
    prompt_started: (d) => ["heard", `▶ ${captionOf(d)}`],
    dtmf: (d) => ["pressed", `☎ pressed ${d}`],
    queued: (d) => ["end", `handed to queue ${d}`],
    dialed: (d) => ["end", `dialling ${d}`],
    bridged: (d) => ["end", `connected to ${d}`],
    transferred: (d) => ["end", `transferred to ${d}`],
    hangup: (d) => ["end", `the call ended (${d})`],
  };

  function renderSimCall(call) {
    const lines = call.transcript.filter((e) => SIM_LINE[e.kind]).map((e) => {
      const [kind, text] = SIM_LINE[e.kind](e.detail);
      return el("li", { class: `t-${kind}` }, kind === "end" ? el("em", { text }) : el("span", { text }));
    });
    $("captions").replaceChildren(...lines);
    const over = call.state === "ended";
    $("try-state").textContent = over ? "Call over." : `In call on ${call.engine} (${call.id}).`;
    document.querySelectorAll("#try-keypad button").forEach((b) => { b.disabled = over; });
    if (over) stopSimCall();
  }

  function stopSimCall() { clearInterval(simTimer); simTimer = 0; simCall = null; }

  async function simStep(path, body) {
    if (!simCall) return;
    try { renderSimCall(await api("POST", `/sim/calls/${simCall}/${path}`, body)); }
    catch (err) { $("try-state").textContent = err.message; }
  }

  async function placeTrialCall(menus) {
    const t = await api("POST", "/api/menu-drafts/trial-calls", { menu: current, menus });
    $("try-number").textContent = t.number;
    if (!tryConfig.softphone) return;
    const call = await api("POST", "/sim/calls", { to: t.number, engine: $("try-engine").value });
    simCall = call.id;
    renderSimCall(call);
    simTimer = setInterval(async () => {
      if (!simCall) return;
      try { renderSimCall(await api("GET", `/sim/calls/${simCall}`)); }
      catch (err) { $("try-state").textContent = err.message; stopSimCall(); }
    }, 300);
  }

  async function tryStep(step) {
    if (step) trial.steps.push(step);
    try {
      const r = await api("POST", "/api/menu-drafts/try", trial);
      $("captions").replaceChildren(...r.transcript.map((e) => el("li", { class: `t-${e.kind}` },
        e.kind === "heard" ? el("span", { text: `▶ ${e.text}` })
          : e.kind === "pressed" ? el("span", { text: `☎ pressed ${e.text}` })
          : el("em", { text: e.text }))));
      $("try-state").textContent = r.state === "listening" ? `In menu ${r.menu}: waiting for a key.` : `Call over: ${r.state}.`;
      document.querySelectorAll("#try-keypad button, #try-silent").forEach((b) => { b.disabled = r.state !== "listening"; });
    } catch (err) {
      $("captions").replaceChildren();
      $("try-state").textContent = err.message;
    }
  }

  function press(key) {
    if (tryConfig.softphone) simStep("dtmf", { digits: key });
    else tryStep(key);
  }

  async function hangUpTrial() {
    if (simCall) await simStep("hangup");
    stopSimCall();
  }

  $("try").addEventListener("click", async () => {
    await hangUpTrial();
    const menus = dirty ? { [current]: collect() } : {};
    $("try-panel").hidden = false;
    $("try-menu").textContent = current;
    $("captions").replaceChildren();
    $("try-state").textContent = "";
    $("try-keypad").replaceChildren(...KEYS.map((k) => el("button", { type: "button", class: "key",
      "aria-label": `Press ${k}`, onclick: () => press(k) }, el("span", { class: "k", text: k }))));
    try {
      if (tryConfig.softphone || tryConfig.trial_calls) await placeTrialCall(menus);
      if (!tryConfig.softphone) { trial = { menu: current, menus, steps: [] }; await tryStep(null); }
    } catch (err) { $("try-state").textContent = err.message; }
    $("try-panel").scrollIntoView({ block: "nearest" });
    $("try-keypad").querySelector("button").focus();
  });
  if ($("try-silent")) $("try-silent").addEventListener("click", () => tryStep("silence"));
  $("try-hangup").addEventListener("click", async () => {
    await hangUpTrial();
    $("try-panel").hidden = true; trial = null; $("try").focus();
  });
  window.addEventListener("pagehide", () => { if (simCall) navigator.sendBeacon(`/sim/calls/${simCall}/hangup`); });
  window.callyardAdmin.tryIt = true;

  // ---------------------------------------------------------------- start
  window.callyardAdmin.current = () => ({ name: current, body: current ? collect() : null, dirty });
  (async () => {
    try {
      const who = await api("GET", "/api/auth/me");
      if (who.role === "agent") throw new Error("agent");
      showLoggedIn(who);
      await route();
    } catch { showLoggedIn(null); }
  })();
})();
