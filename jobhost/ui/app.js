// The task-manager single-page app: hash routing, sign-in, theme, and the view shell.
// Each view module exports render(container, ctx) and may return a cleanup function
// (closing EventSources, timers) that runs when the user navigates away.

import { api, currentUser, onUnauthorized, setSession } from "./js/api.js";
import { clear, field, h, notice } from "./js/dom.js";
import * as admin from "./js/views/admin.js";
import * as catalog from "./js/views/catalog.js";
import * as execution from "./js/views/execution.js";
import * as history from "./js/views/history.js";
import * as running from "./js/views/running.js";
import * as schedules from "./js/views/schedules.js";

const ROUTES = {
  catalog: { view: catalog, title: "Catalog" },
  running: { view: running, title: "Running" },
  executions: { view: execution, title: "Execution" },
  history: { view: history, title: "History" },
  schedules: { view: schedules, title: "Schedules" },
  admin: { view: admin, title: "Admin", superuser: true },
};

const main = document.getElementById("view");
let cleanup = null;
let returnTo = null; // the hash to go back to after signing in again

/** "#/history?job_id=A/B" → {name: "history", rest: [], params: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "catalog", rest: parts.slice(1), params: new URLSearchParams(search) };
}

function runCleanup() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
  }
  cleanup = null;
}

function renderRoute() {
  runCleanup();
  const user = currentUser();
  if (!user) {
    showSignIn();
    return;
  }
  const route = parseHash();
  const entry = ROUTES[route.name];
  highlightNav(route.name);
  clear(main);
  if (!entry || (entry.superuser && !user.superuser)) {
    main.append(h("h1", { text: "Not found" }), notice(`There is no page called "${route.name}" here.`, "error"));
    return;
  }
  document.title = `${entry.title} · JobHost`;
  const result = entry.view.render(main, { route, user, navigate });
  cleanup = typeof result === "function" ? result : null;
}

function navigate(hash) {
  if (location.hash === hash) renderRoute();
  else location.hash = hash;
}

function highlightNav(name) {
  for (const link of document.querySelectorAll("#nav a")) {
    const here = link.dataset.route === (name === "executions" ? "running" : name);
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function updateChrome() {
  const user = currentUser();
  document.getElementById("nav").hidden = !user;
  document.getElementById("nav-admin").hidden = !(user && user.superuser);
  document.getElementById("sign-out").hidden = !user;
  const who = document.getElementById("whoami");
  who.textContent = user ? `${user.username}${user.superuser ? " (admin)" : ""}` : "";
}

function showSignIn(message) {
  runCleanup();
  clear(main);
  document.title = "Sign in · JobHost";
  const username = field("Username", h("input", { name: "username", autocomplete: "username", required: true }));
  const password = field(
    "Password",
    h("input", { name: "password", type: "password", autocomplete: "current-password", required: true }),
  );
  const status = h("div", { class: "form-status" });
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title", novalidate: true },
    h("h1", { id: "signin-title", text: "Sign in to JobHost" }),
    message ? notice(message, "error") : null,
    username.wrap,
    password.wrap,
    status,
    h("button", { type: "submit", class: "primary", text: "Sign in" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status);
    if (!username.input.value || !password.input.value) {
      status.append(notice("Enter your username and password.", "error"));
      return;
    }
    try {
      const me = await api("/api/v1/auth/login", {
        method: "POST",
        body: { username: username.input.value, password: password.input.value },
        quiet401: true,
      });
      setSession(me);
      updateChrome();
      const target = returnTo && !returnTo.startsWith("#/signin") ? returnTo : "#/catalog";
      returnTo = null;
      navigate(target);
    } catch (err) {
      status.append(notice(err.message, "error"));
      password.input.value = "";
      password.input.focus();
    }
  });
  main.append(form);
  username.input.focus();
}

onUnauthorized(() => {
  if (!currentUser()) return;
  returnTo = location.hash || "#/catalog";
  setSession(null);
  updateChrome();
  showSignIn("Your session expired — sign in again");
});

async function signOut() {
  try {
    await api("/api/v1/auth/logout", { method: "POST", quiet401: true });
  } catch {
    // Signed out either way: the session is gone from this page.
  }
  setSession(null);
  returnTo = null;
  updateChrome();
  showSignIn();
}

// Theme: follow prefers-color-scheme until the user picks one, then remember it.
function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const dark = theme ? theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  const button = document.getElementById("theme-toggle");
  button.textContent = dark ? "Light theme" : "Dark theme";
  button.setAttribute("aria-pressed", String(dark));
}

function toggleTheme() {
  const current = document.documentElement.dataset.theme
    || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
  const next = current === "dark" ? "light" : "dark";
  try {
    localStorage.setItem("jobhost-theme", next);
  } catch {
    // Storage may be disabled; the toggle still works for this page.
  }
  applyTheme(next);
}

async function boot() {
  let saved = null;
  try {
    saved = localStorage.getItem("jobhost-theme");
  } catch {
    saved = null;
  }
  applyTheme(saved);
  document.getElementById("theme-toggle").addEventListener("click", toggleTheme);
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", renderRoute);
  try {
    setSession(await api("/api/v1/auth/me", { quiet401: true }));
  } catch {
    setSession(null);
    returnTo = location.hash || null;
  }
  updateChrome();
  renderRoute();
}

boot();
