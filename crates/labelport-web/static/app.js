// Labelport pages: every write goes through the REST API (the same calls as
// the SDK), with the session cookie and the session's CSRF token.
"use strict";

const lp = (() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  /** Calls the API; resolves to {ok, status, body}. `body` may be an object
   *  (sent as JSON) or FormData (sent as multipart). */
  async function api(method, url, body) {
    const headers = { "X-CSRFToken": csrf, Accept: "application/json" };
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
    } catch (e) {
      return { ok: false, status: 0, body: { detail: "The server could not be reached: " + e.message } };
    }
    let parsed = null;
    const text = await response.text();
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch (_) {
        parsed = { detail: text };
      }
    }
    return { ok: response.ok, status: response.status, body: parsed };
  }

  /** A readable message from an API error body (Label Studio's shape). */
  function message(result) {
    const b = result.body || {};
    const parts = [];
    if (b.validation_errors) {
      for (const [field, errors] of Object.entries(b.validation_errors)) {
        const list = Array.isArray(errors) ? errors : [errors];
        parts.push((field === "non_field_errors" ? "" : field + ": ") + list.join(" "));
      }
    }
    if (!parts.length) parts.push(b.detail || "The request failed (HTTP " + result.status + ").");
    return parts.join("\n");
  }

  function show(el, text) {
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  return { api, message, show };
})();

// Sign out.
document.getElementById("sign-out")?.addEventListener("click", async () => {
  await lp.api("POST", "/api/auth/logout");
  location.href = "/user/login";
});

// Sign in.
document.getElementById("login-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const error = document.getElementById("login-error");
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    lp.show(error, "Enter your email (or username) and password.");
    return;
  }
  const result = await lp.api("POST", "/api/auth/login", { username, password });
  if (result.ok) {
    location.href = form.dataset.next || "/projects";
  } else {
    lp.show(error, result.status === 400 ? "Wrong email or password." : lp.message(result));
  }
});

// Create or edit a project.
(() => {
  const form = document.getElementById("project-form");
  if (!form) return;
  const templates = JSON.parse(document.getElementById("templates-data").textContent);
  form.querySelectorAll("[data-template]").forEach((button) => {
    button.addEventListener("click", () => {
      form.label_config.value = templates[Number(button.dataset.template)].config;
    });
  });
  const clearErrors = () => form.querySelectorAll(".error").forEach((el) => lp.show(el, ""));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const id = form.dataset.project;
    if (!form.title.value.trim()) {
      lp.show(form.querySelector('[data-error-for="title"]'), "Give the project a name.");
      form.title.focus();
      return;
    }
    const body = {
      title: form.title.value.trim(),
      description: form.description.value,
      label_config: form.label_config.value,
    };
    const result = id
      ? await lp.api("PATCH", "/api/projects/" + id, body)
      : await lp.api("POST", "/api/projects", body);
    if (result.ok) {
      location.href = "/projects/" + result.body.id + "/data";
      return;
    }
    const errors = (result.body && result.body.validation_errors) || {};
    let placed = false;
    for (const [field, list] of Object.entries(errors)) {
      const target = form.querySelector('[data-error-for="' + CSS.escape(field) + '"]');
      if (target) {
        lp.show(target, (Array.isArray(list) ? list : [list]).join(" "));
        placed = true;
      }
    }
    if (!placed) lp.show(document.getElementById("form-error"), lp.message(result));
  });
  document.getElementById("delete-project")?.addEventListener("click", async () => {
    if (!confirm("Delete this project with all its tasks and annotations? This cannot be undone.")) return;
    const result = await lp.api("DELETE", "/api/projects/" + form.dataset.project);
    if (result.ok) location.href = "/projects";
    else lp.show(document.getElementById("form-error"), lp.message(result));
  });
})();

// Data manager: select and delete tasks, import files.
(() => {
  const table = document.getElementById("task-table");
  if (!table) return;
  const project = table.dataset.project;
  const error = document.getElementById("data-error");
  const notice = document.getElementById("data-notice");
  const boxes = () => Array.from(table.querySelectorAll(".select-task"));
  const deleteButton = document.getElementById("delete-selected");
  const refresh = () => {
    if (deleteButton) {
      const n = boxes().filter((b) => b.checked).length;
      deleteButton.disabled = n === 0;
      deleteButton.textContent = n ? "Delete " + n + (n === 1 ? " task" : " tasks") : "Delete selected";
    }
  };
  document.getElementById("select-all")?.addEventListener("change", (event) => {
    boxes().forEach((b) => (b.checked = event.target.checked));
    refresh();
  });
  boxes().forEach((b) => b.addEventListener("change", refresh));
  deleteButton?.addEventListener("click", async () => {
    const ids = boxes().filter((b) => b.checked).map((b) => b.value);
    const what = ids.length === 1 ? "1 task" : ids.length + " tasks";
    if (!ids.length || !confirm("Delete " + what + " with their annotations? This cannot be undone.")) return;
    deleteButton.disabled = true;
    for (const id of ids) {
      const result = await lp.api("DELETE", "/api/tasks/" + id);
      if (!result.ok && result.status !== 404) {
        lp.show(error, "Task " + id + ": " + lp.message(result));
        return;
      }
    }
    location.reload();
  });
  document.getElementById("import-file")?.addEventListener("change", async (event) => {
    const files = Array.from(event.target.files || []);
    if (!files.length) return;
    const data = new FormData();
    files.forEach((f) => data.append("file", f, f.name));
    lp.show(error, "");
    lp.show(notice, "Importing " + files.map((f) => f.name).join(", ") + "…");
    const result = await lp.api("POST", "/api/projects/" + project + "/import", data);
    event.target.value = "";
    if (result.ok) {
      // The reloaded table says how many arrived.
      location.href = "/projects/" + project + "/data?imported=" + result.body.task_count;
    } else {
      lp.show(notice, "");
      lp.show(error, lp.message(result));
    }
  });
})();
