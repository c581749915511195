// The task-manager single-page app: hash routing, sign-in, theme, and the view shell.
// Each view module exports render(container, ctx) and may return a cleanup function
// (closing EventSources, timers) that runs when the user navigates away.
//
// A view renders into its own element, which is detached the moment the user leaves:
// a late answer from a slow API call can then only write into a node nobody sees.
// ctx.alive() tells a view whether it is still shown, and ctx.eventSource() opens a
// stream that is closed on leaving (or at once, if the view was already left).
// Views are loaded on demand, so a viewer's browser never fetches the admin code.

import { api, currentUser, onUnauthorized, setSession } from "./js/api.js";
import { clear, field, h, nextZoneMode, notice, setZoneMode, zoneMode } from "./js/dom.js";

const ROUTES = {
  catalog: { load: () => import("./js/views/catalog.js"), title: "Catalog" },
  running: { load: () => import("./js/views/running.js"), title: "Running" },
  executions: { load: () => import("./js/views/execution.js"), title: "Execution" },
  history: { load: () => import("./js/views/history.js"), title: "History" },
  schedules: { load: () => import("./js/views/schedules.js"), title: "Schedules" },
  admin: { load: () => import("./js/views/admin.js"), title: "Admin", superuser: true },
};

const main = document.getElementById("view");
let cleanup = null;
let scope = null; // the shown view's {left, sources, root}
let returnTo = null; // the hash to go back to after signing in again

/** "#/history?job_id=A/B" → {name: "history", rest: [], params: URLSearchParams}. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "catalog", rest: parts.slice(1), params: new URLSearchParams(search) };
}

function runCleanup() {
  // Dialogs belong to the page that opened them: leaving it closes them.
  for (const dialog of document.querySelectorAll("dialog.dialog[open]")) dialog.close();
  if (scope) {
    scope.left = true;
    for (const source of scope.sources) source.close();
    scope.sources.clear();
    scope.root.remove();
    scope = null;
  }
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
  highlightNav(route.name, route);
  clear(main);
  const here = { left: false, sources: new Set(), root: h("div", { class: "view" }) };
  scope = here;
  main.append(here.root);
  if (!entry) {
    here.root.append(h("h1", { tabindex: "-1", text: "Not found" }), notice(`There is no page called "${route.name}" here.`, "error"));
    focusHeading(here);
    return;
  }
  if (entry.superuser && !user.superuser) {
    document.title = `${entry.title} · JobHost`;
    here.root.append(
      h("h1", { tabindex: "-1", text: entry.title }),
      notice(`You need admin rights to open this page; you are signed in as ${user.username}.`, "error"),
    );
    focusHeading(here);
    return;
  }
  document.title = `${entry.title} · JobHost`;
  const placeholder = h("p", { class: "loading", role: "status", text: "Loading…" });
  here.root.append(placeholder);
  const ctx = {
    route,
    user,
    navigate,
    alive: () => !here.left,
    section: (name) => {
      if (!here.left) markSection(name);
    },
    eventSource: (url) => {
      const source = new EventSource(url);
      if (here.left) source.close();
      else here.sources.add(source);
      return source;
    },
  };
  entry
    .load()
    .then((view) => {
      if (here.left) return;
      placeholder.remove();
      const result = view.render(here.root, ctx);
      if (here.left) {
        if (typeof result === "function") result();
        return;
      }
      cleanup = typeof result === "function" ? result : null;
      focusHeading(here);
    })
    .catch((err) => {
      if (here.left) return;
      placeholder.remove();
      here.root.append(notice(`This page could not be loaded (${err.message}); reload to try again.`, "error"));
    });
}

/** Move focus to the new page's heading, so keyboard and screen-reader users land on it. */
function focusHeading(here) {
  if (document.querySelector("dialog[open]")) return;
  const heading = here.root.querySelector("h1");
  if (!heading) return;
  if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
  heading.focus({ preventScroll: true });
}

function navigate(hash) {
  if (location.hash === hash) renderRoute();
  else location.hash = hash;
}

// An execution page belongs to Running while the run is live and to History after: the
// link that led there may say which (#/executions/ID?from=history), and the view says
// so itself (ctx.section) once it knows the run's status.
function highlightNav(name, route) {
  const section = name === "executions" ? route.params.get("from") || "running" : name;
  markSection(section);
}

function markSection(section) {
  for (const link of document.querySelectorAll("#nav a")) {
    const here = link.dataset.route === section;
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

// Times: the browser's zone, UTC, or each job's own zone (remembered); the view redraws.
function showZone() {
  const button = document.getElementById("zone-toggle");
  const mode = zoneMode();
  const local = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  const labels = { browser: `Times in ${local}`, UTC: "Times in UTC", job: "Times in each job's zone" };
  const next = { browser: "UTC", UTC: "each job's own zone", job: "this browser's zone" };
  button.textContent = labels[mode];
  button.dataset.mode = mode;
  button.setAttribute("aria-pressed", String(mode !== "browser"));
  button.title = `Show times in ${next[mode]}`;
}

function toggleZone() {
  setZoneMode(nextZoneMode());
  showZone();
  if (currentUser()) renderRoute();
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
  document.getElementById("zone-toggle").addEventListener("click", toggleZone);
  showZone();
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
