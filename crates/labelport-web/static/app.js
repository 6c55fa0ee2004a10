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

// Cloud Storage settings: sync and delete storages; a running sync's state
// is polled from the API once a second, so its progress moves without a
// reload (Label Studio's page must be reloaded).
(() => {
  const cards = document.querySelectorAll("[data-storage]");
  if (!cards.length) return;
  const error = document.getElementById("storage-error");
  const label = (status) => {
    const words = status.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  };
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "Not synced yet");
  /** "Every 15 min · next 10:42:07", from the card's data. */
  const every = (el) => {
    const minutes = el.dataset.minutes;
    el.textContent = minutes
      ? "Every " + minutes + " min" + (el.dataset.next ? " · next " + new Date(el.dataset.next).toLocaleTimeString() : "")
      : "Off";
  };
  const progressText = (card, storage) => {
    const meta = storage.meta;
    if (storage.status === "queued") return "Queued: waiting for a worker…";
    if (card.dataset.direction === "source") {
      const parts = [];
      if (!meta) return "Starting…";
      if (meta.objects_listed !== undefined) parts.push(meta.objects_listed + " objects listed");
      if (meta.tasks_created !== undefined) parts.push(meta.tasks_created + " tasks created");
      if (meta.tasks_updated) parts.push(meta.tasks_updated + " updated");
      if (meta.tasks_failed_validation) parts.push(meta.tasks_failed_validation + " rows refused");
      return parts.length ? parts.join(" · ") : "Starting…";
    }
    return (storage.last_sync_count || 0) + " objects written";
  };

  function show(card, storage) {
    const active = storage.status === "queued" || storage.status === "in_progress";
    card.dataset.status = storage.status;
    const badge = card.querySelector(".status");
    badge.className = "badge status status-" + storage.status;
    badge.textContent = label(storage.status);
    card.querySelector(".last-sync").textContent = when(storage.last_sync);
    const interval = card.querySelector(".interval");
    if (interval) {
      interval.dataset.minutes = storage.sync_interval || "";
      interval.dataset.next = storage.next_sync || "";
      every(interval);
    }
    const count = storage.last_sync_count;
    card.querySelector(".sync-count").textContent = count === null || count === undefined ? "–" : count;
    const progress = card.querySelector(".sync-progress");
    progress.hidden = !active;
    progress.querySelector(".progress-text").textContent = active ? progressText(card, storage) : "";
    const errors = card.querySelector(".sync-errors");
    const traceback = (storage.traceback || "").trim();
    errors.hidden = !traceback;
    card.querySelector(".traceback").textContent = traceback;
    card.querySelector(".sync-button").disabled = active;
    return active;
  }

  async function poll(card) {
    for (;;) {
      const result = await lp.api("GET", card.dataset.api);
      if (!result.ok) {
        lp.show(error, lp.message(result));
        return;
      }
      if (!show(card, result.body)) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  /**
   * Test connection of a stored source storage again (its saved settings,
   * by `id`), with the CORS reading that presign adds: what the labeling
   * page's "media did not load" link asks for.
   */
  async function checkMedia(card) {
    const banner = document.getElementById("media-check");
    lp.show(banner, "Media did not load on the labeling page: the storages that serve them by signed URL are checked below.");
    const shown = card.querySelector(".cors-result");
    lp.show(shown, "Checking…");
    const validate = card.dataset.api.replace(/\/\d+$/, "/validate");
    const result = await lp.api("POST", validate, { id: Number(card.dataset.storage) });
    const cors = result.ok && result.body && result.body.cors;
    shown.classList.toggle("error", !result.ok || (cors && !cors.allowed));
    lp.show(
      shown,
      !result.ok
        ? lp.message(result)
        : cors && !cors.allowed
          ? cors.advice
          : "The connection works and the bucket's CORS policy lets this page's origin load its objects. " +
            "If media still fail, a browser outside the bucket's IP filter, or an expired signed URL (reload the task), may be why.",
    );
    card.dataset.mediaChecked = result.ok && (!cors || cors.allowed) ? "ok" : "problem";
  }

  cards.forEach((card) => {
    card.querySelectorAll(".interval").forEach(every);
    card.querySelectorAll(".last-sync[data-time], .last-notification[data-time]").forEach((el) => {
      if (el.dataset.time) el.textContent = when(el.dataset.time);
    });
    if (card.dataset.status === "queued" || card.dataset.status === "in_progress") poll(card);
    card.querySelector(".sync-button").addEventListener("click", async (event) => {
      event.target.disabled = true;
      lp.show(error, "");
      const result = await lp.api("POST", card.dataset.api + "/sync");
      if (!result.ok) {
        event.target.disabled = false;
        lp.show(error, lp.message(result));
        return;
      }
      show(card, result.body);
      poll(card);
    });
    const fixCors = card.querySelector(".fix-cors");
    if (fixCors && new URLSearchParams(location.search).get("check") === "media") checkMedia(card);
    if (fixCors) {
      fixCors.addEventListener("click", async () => {
        fixCors.disabled = true;
        const result = await lp.api("POST", card.dataset.api + "/cors");
        fixCors.disabled = false;
        const shown = card.querySelector(".cors-result");
        shown.classList.toggle("error", !result.ok);
        lp.show(
          shown,
          result.ok ? (result.body.changed ? "A CORS rule was added. " : "Nothing to change. ") + result.body.cors.advice : lp.message(result),
        );
      });
    }
    card.querySelector(".delete-storage").addEventListener("click", async (event) => {
      if (!confirm(event.target.dataset.confirm)) return;
      const result = await lp.api("DELETE", card.dataset.api);
      if (result.ok) card.remove();
      else lp.show(error, lp.message(result));
    });
  });
})();
