// What the agent console and the wallboard share: JSON calls to the API with the session
// cookie (an error carries the API's message, status and refusal code), and the login form.
"use strict";
window.Callyard = (() => {
  async function api(method, path, body) {
    const r = await fetch(path, {
      method, credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) {
      const d = data && data.detail;
      const msg = typeof d === "string" ? d : d && d.message ? d.message : JSON.stringify(d);
      throw Object.assign(new Error(msg || r.statusText), { status: r.status, code: d && d.code });
    }
    return data;
  }

  // Log in with the page's #login-form, then call done() (errors shown in #login-error).
  function onLogin(done) {
    const form = document.getElementById("login-form"), error = document.getElementById("login-error");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      error.textContent = "";
      try {
        await api("POST", "/api/auth/login", { username: f.get("username"), password: f.get("password") });
        await done();
      } catch (err) { error.textContent = err.message; }
    });
  }

  return { api, onLogin };
})();
