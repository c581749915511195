// Admin (superusers): users, API tokens and the audit log.

import { api, query } from "../api.js";
import { openDialog } from "../dialog.js";
import { clear, field, formatTime, h, notice, timeAgo } from "../dom.js";

function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table" },
      h("caption", { class: "visually-hidden", text: caption }),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows),
    ),
  );
}

/** The server's conflict message without its API advice ("…; PATCH it to change it"). */
function plainConflict(message) {
  return String(message).replace(/;\s*PATCH it.*$/i, ".").replace(/^User /, "A user named ");
}

function splitRoles(text) {
  return text.split(/[\s,]+/).map((r) => r.trim()).filter(Boolean);
}

function usersSection(status, onChange) {
  const section = h("section", { class: "card", "aria-labelledby": "users-title" }, h("h2", { id: "users-title", text: "Users" }));
  const list = h("div");
  const name = field("Username", h("input", { name: "username", autocomplete: "off", required: true }));
  const password = field("Password", h("input", { name: "password", type: "password", autocomplete: "new-password", minlength: "8" }), "At least 8 characters.");
  const roles = field("Roles", h("input", { name: "roles", autocomplete: "off" }), "Separated by commas, e.g. operator, viewer");
  const form = h("form", { class: "inline-form", "aria-label": "Create a user", novalidate: true }, name.wrap, password.wrap, roles.wrap, h("button", { type: "submit", class: "primary", text: "Create user" }));
  section.append(list, h("h3", { text: "Create a user" }), form);

  const run = async (fn, done = "Saved.") => {
    clear(status);
    try {
      await fn();
      await load();
      status.append(notice(done, "info"));
      onChange();
    } catch (err) {
      status.append(notice(err.status === 409 && err.code === "conflict" ? plainConflict(err.message) : err.message, "error"));
    }
  };

  const editRoles = (user) => {
    const input = field("Roles", h("input", { value: user.roles.join(", "), autocomplete: "off" }), "Separated by commas");
    const save = h("button", { type: "submit", class: "primary", text: "Save" });
    const f = h("form", {}, input.wrap, h("div", { class: "actions" }, save));
    const { close } = openDialog(`Roles of ${user.username}`, f);
    f.addEventListener("submit", (event) => {
      event.preventDefault();
      close();
      run(() => api(`/api/v1/users/${encodeURIComponent(user.username)}`, { method: "PATCH", body: { roles: splitRoles(input.input.value) } }));
    });
  };

  const load = async () => {
    const data = await api("/api/v1/users");
    clear(list).append(
      table(
        "Users",
        ["Username", "Roles", "State", "Created", "Actions"],
        (data.users || []).map((u) =>
          h(
            "tr",
            { dataset: { username: u.username } },
            h("td", { text: u.username }),
            h("td", { text: u.roles.join(", ") || "—" }),
            h("td", { text: u.disabled ? "disabled" : "active" }),
            h("td", { text: formatTime(u.created_at) }),
            h(
              "td",
              { class: "actions" },
              h("button", { type: "button", "aria-label": `Edit roles of ${u.username}`, text: "Roles", onclick: () => editRoles(u) }),
              h("button", {
                type: "button",
                "aria-label": `${u.disabled ? "Enable" : "Disable"} ${u.username}`,
                text: u.disabled ? "Enable" : "Disable",
                onclick: () => run(() => api(`/api/v1/users/${encodeURIComponent(u.username)}`, { method: "PATCH", body: { disabled: !u.disabled } })),
              }),
              h("button", {
                type: "button",
                class: "danger",
                "aria-label": `Delete ${u.username}`,
                text: "Delete",
                onclick: () => {
                  if (window.confirm(`Delete the user ${u.username}? Their tokens stop working.`)) {
                    run(() => api(`/api/v1/users/${encodeURIComponent(u.username)}`, { method: "DELETE" }));
                  }
                },
              }),
            ),
          ),
        ),
      ),
    );
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (password.input.value.length < 8) {
      password.error.textContent = "Passwords must be at least 8 characters long.";
      password.input.focus();
      return;
    }
    password.error.textContent = "";
    const username = name.input.value.trim();
    run(async () => {
      await api("/api/v1/users", { method: "POST", body: { username, password: password.input.value, roles: splitRoles(roles.input.value) } });
      form.reset();
    }, `User ${username} created.`);
  });
  load().catch((err) => list.append(notice(err.message, "error")));
  return section;
}

function tokensSection(status, onChange) {
  const section = h("section", { class: "card", "aria-labelledby": "tokens-title" }, h("h2", { id: "tokens-title", text: "API tokens" }));
  const list = h("div");
  const reveal = h("div", { "aria-live": "polite" });
  const name = field("Token name", h("input", { name: "name", autocomplete: "off" }));
  const days = field("Expires in (days)", h("input", { name: "expires_in_days", type: "number", min: "1", step: "1" }), "Leave empty for no expiry.");
  const form = h("form", { class: "inline-form", "aria-label": "Create a token", novalidate: true }, name.wrap, days.wrap, h("button", { type: "submit", class: "primary", text: "Create token" }));
  section.append(list, h("h3", { text: "Create a token" }), form, reveal);

  const load = async () => {
    const data = await api("/api/v1/auth/tokens?all=true");
    clear(list).append(
      table(
        "API tokens",
        ["Name", "Owner", "Created", "Expires", "Last used", "State", "Actions"],
        (data.tokens || []).map((t) =>
          h(
            "tr",
            {},
            h("td", { text: t.name }),
            h("td", { text: t.username }),
            h("td", { text: formatTime(t.created_at) }),
            h("td", { text: t.expires_at ? formatTime(t.expires_at) : "never" }),
            h("td", { text: formatTime(t.last_used_at) }),
            h("td", { text: t.revoked ? "revoked" : "active" }),
            h(
              "td",
              {},
              t.revoked
                ? null
                : h("button", {
                    type: "button",
                    class: "danger",
                    "aria-label": `Revoke token ${t.name}`,
                    text: "Revoke",
                    onclick: async () => {
                      clear(status);
                      try {
                        await api(`/api/v1/auth/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
                        await load();
                        status.append(notice(`Token ${t.name} revoked.`, "info"));
                        onChange();
                      } catch (err) {
                        status.append(notice(err.message, "error"));
                      }
                    },
                  }),
            ),
          ),
        ),
      ),
    );
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status);
    clear(reveal);
    try {
      const body = { name: name.input.value.trim() };
      if (days.input.value) body.expires_in_days = Number(days.input.value);
      const created = await api("/api/v1/auth/tokens", { method: "POST", body });
      const value = h("input", { readonly: true, value: created.token, class: "token-value", "aria-label": "New token" });
      const copy = h("button", {
        type: "button",
        text: "Copy",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(created.token);
            copy.textContent = "Copied";
          } catch {
            value.select(); // clipboard blocked: select it for Ctrl+C
          }
        },
      });
      reveal.append(notice("Copy this token now: it is shown only once.", "info"), h("div", { class: "token-reveal" }, value, copy));
      form.reset();
      await load();
      onChange();
      value.focus();
    } catch (err) {
      status.append(notice(err.message, "error"));
    }
  });
  load().catch((err) => list.append(notice(err.message, "error")));
  return section;
}

function auditSection() {
  const section = h("section", { class: "card", "aria-labelledby": "audit-title" }, h("h2", { id: "audit-title", text: "Audit log" }));
  const user = field("User", h("input", { name: "user", autocomplete: "off" }));
  const action = field("Action", h("input", { name: "action", autocomplete: "off", placeholder: "job.start" }));
  const target = field("Target", h("input", { name: "target", autocomplete: "off" }));
  const form = h("form", { class: "inline-form", "aria-label": "Audit filters" }, user.wrap, action.wrap, target.wrap, h("button", { type: "submit", text: "Filter" }));
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true, text: "Load more" });
  const status = h("div", { "aria-live": "polite" });
  section.append(
    form,
    status,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "table" },
        h("caption", { class: "visually-hidden", text: "Audit log" }),
        h("thead", {}, h("tr", {}, ["When", "User", "Action", "Target", "Outcome", "Address", "Details"].map((t) => h("th", { scope: "col", text: t })))),
        body,
      ),
    ),
    more,
  );
  let cursor = null;
  const load = async (reset) => {
    clear(status);
    if (reset) {
      cursor = null;
      clear(body);
    }
    try {
      const page = await api(`/api/v1/audit${query({ user: user.input.value.trim(), action: action.input.value.trim(), target: target.input.value.trim(), limit: 50, cursor })}`);
      for (const e of page.events || []) {
        body.append(
          h(
            "tr",
            {},
            h("td", { class: "nowrap", title: formatTime(e.at) }, timeAgo(e.at)),
            h("td", { text: e.user || "—" }),
            h("td", { text: e.action }),
            h("td", {}, /^[0-9a-f]{32}$/.test(e.target || "") ? h("a", { href: `#/executions/${e.target}?from=history`, text: e.target }) : e.target || "—"),
            h("td", { text: e.outcome }),
            h("td", { text: e.address || "—" }),
            h("td", {}, h("code", { text: Object.keys(e.details || {}).length ? JSON.stringify(e.details) : "" })),
          ),
        );
      }
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
    } catch (err) {
      status.append(notice(err.message, "error"));
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
  return { section, refresh: () => load(true) };
}

export function render(container) {
  const status = h("div", { "aria-live": "polite" });
  const audit = auditSection();
  container.append(h("h1", { text: "Administration" }), status, usersSection(status, audit.refresh), tokensSection(status, audit.refresh), audit.section);
}
