// Add Source Storage / Add Target Storage: the seed's wizard, step by step.
// Source: Select Provider → Configure Connection (Test Connection must pass)
// → Import Settings & Preview → Review & Confirm (Save, or Save & Sync).
// Target: Select Provider → Configure Connection → Save. Every call is the
// REST API's (validate, files, create, sync); what is typed is kept when
// moving back and forth.
"use strict";

(() => {
  const dialog = document.getElementById("storage-wizard");
  if (!dialog) return;
  const form = document.getElementById("wizard-form");
  const project = Number(dialog.dataset.project);
  const error = document.getElementById("wizard-error");
  const next = document.getElementById("wizard-next");
  const back = document.getElementById("wizard-back");
  const save = document.getElementById("wizard-save");
  const saveSync = document.getElementById("wizard-save-sync");
  const verified = document.getElementById("connection-ok");
  const STEPS = {
    source: [["provider", "Select Provider"], ["connection", "Configure Connection"], ["import", "Import Settings & Preview"], ["review", "Review & Confirm"]],
    target: [["provider", "Select Provider"], ["connection", "Configure Connection"]],
  };
  let direction = "source";
  let at = 0;
  let tested = false;
  // Set while editing: {api, type}; the provider is fixed and a stored key
  // is kept unless a new one is typed.
  let editing = null;
  // The settings the preview shown was loaded with, and how many were asked.
  let previewOf = null;
  let previews = 0;
  // Test Connection clicks so far.
  let tests = 0;
  const steps = () => STEPS[direction].filter(([name]) => !(editing && name === "provider"));

  const provider = () => (editing ? editing.type : form.querySelector("input[name=provider]:checked").value);
  const base = () => "/api/storages/" + (direction === "target" ? "export/" : "") + provider();
  const value = (name) => (form.elements[name] ? form.elements[name].value.trim() : "");
  const checked = (name) => Boolean(form.elements[name] && form.elements[name].checked);

  /** The storage as the API takes it, from everything typed so far. */
  function body() {
    const b = { project, title: value("title"), bucket: value("bucket"), google_project_id: value("google_project_id") };
    if (provider() === "gcs") {
      const key = form.elements.google_application_credentials.value.trim();
      if (key) b.google_application_credentials = key;
    } else {
      for (const f of ["google_wif_pool_id", "google_wif_provider_id", "google_service_account_email", "google_project_number"]) b[f] = value(f);
    }
    if (direction === "source") {
      b.presign = checked("presign");
      b.presign_ttl = Number(form.elements.presign_ttl.value || 15);
      {
        b.prefix = value("prefix");
        b.use_blob_urls = form.elements.use_blob_urls.value === "true";
        b.regex_filter = value("regex_filter");
        b.recursive_scan = checked("recursive_scan");
        const every = value("sync_interval");
        b.sync_interval = every === "" ? null : Number(every);
        b.pubsub_push_service_account = value("pubsub_push_service_account");
      }
    } else {
      b.prefix = value("prefix_target");
      b.can_delete_objects = checked("can_delete_objects");
    }
    return b;
  }

  /** The body of a check (validate, files): while editing, with the
   * storage's id, so the API fills in what is stored (the key above all). */
  function checkBody() {
    return editing ? { ...body(), id: Number(editing.api.split("/").pop()) } : body();
  }

  const fixCors = document.getElementById("wizard-fix-cors");
  const permissions = document.getElementById("missing-permissions");

  /** The `permissions` member of an answer (what IAM says is missing and
   * the role that grants each), as a list; hidden when there is none. */
  function showPermissions(answer) {
    const report = answer && answer.permissions;
    const list = permissions.querySelector("ul");
    list.innerHTML = "";
    permissions.hidden = !(report && report.missing && report.missing.length);
    if (permissions.hidden) return;
    for (const p of report.missing) {
      const li = document.createElement("li");
      const name = document.createElement("code");
      name.textContent = p.permission;
      li.append(name, " on " + p.resource + " (" + p.used_for + "): grant " + p.role_title + " (" + p.role + ")");
      if (p.grant_command) {
        const command = document.createElement("code");
        command.className = "grant-command";
        command.textContent = p.grant_command;
        li.append(document.createElement("br"), command);
      }
      list.appendChild(li);
    }
  }

  /** The CORS part of a validate answer, with Fix CORS when it fails. */
  function showCors(cors, proxied) {
    const advice = document.getElementById("cors-advice");
    advice.classList.remove("error");
    // Media served by the proxy anyway (the emulator without a key): said
    // as a plain note.
    advice.classList.toggle("warning", !proxied);
    lp.show(advice, cors && (!cors.allowed || proxied) ? cors.advice : "");
    fixCors.hidden = !(cors && !cors.allowed);
  }

  fixCors.addEventListener("click", async () => {
    fixCors.disabled = true;
    const result = await lp.api("POST", base() + "/cors", checkBody());
    fixCors.disabled = false;
    const advice = document.getElementById("cors-advice");
    if (!result.ok) {
      // The connection is tested first: its problems (and the missing
      // permissions) are shown as Test Connection shows them.
      advice.classList.remove("warning");
      advice.classList.add("error");
      lp.show(advice, lp.message(result));
      showPermissions(result.body);
      return;
    }
    advice.classList.remove("error");
    const cors = result.body.cors;
    fixCors.hidden = cors.allowed;
    advice.classList.toggle("warning", !cors.allowed);
    lp.show(advice, (result.body.changed ? "A CORS rule was added. " : "Nothing to change. ") + cors.advice);
  });

  function clearErrors() {
    showCors(null);
    showPermissions(null);
    form.querySelectorAll(".field-error").forEach((el) => lp.show(el, ""));
    lp.show(error, "");
  }

  /** What a preview depends on: the body without its title or interval. */
  function previewKey() {
    const { title, sync_interval, pubsub_push_service_account, ...rest } = body();
    return JSON.stringify(rest);
  }

  /** Shows the preview as made with other settings than those typed now. */
  function stale(yes) {
    document.getElementById("preview-stale").hidden = !yes;
    for (const id of ["preview-list", "preview-tasks"]) document.getElementById(id).classList.toggle("stale", yes);
  }

  /** Whether `el` belongs to the form as the provider and direction now show it. */
  function inMode(el) {
    for (let node = el; node && node !== form; node = node.parentElement) {
      if (node.matches(".source-only, .target-only, .gcs-only, .wif-only") && node.hidden) return false;
    }
    return true;
  }

  /**
   * Puts an API error next to the field it names — going back to the step
   * that holds the field when needed (a prefix with nothing under it, found
   * at Save, shows on Import Settings) — and the rest above the buttons.
   */
  function showErrors(result) {
    const errors = (result.body && result.body.validation_errors) || {};
    const placed = [];
    const loose = [];
    for (const [field, list] of Object.entries(errors)) {
      const text = (Array.isArray(list) ? list : [list]).join(" ");
      const target = [...form.querySelectorAll('[data-error-for="' + CSS.escape(field) + '"]')].find(inMode);
      const step = target && target.closest(".step");
      const index = step ? steps().findIndex(([name]) => name === step.dataset.step) : -1;
      if (index >= 0) placed.push([target, text, index]);
      else loose.push(text);
    }
    if (placed.length) {
      // The earliest step with a problem is where the user goes; a problem
      // of the connection asks for a new Test Connection.
      const first = Math.min(...placed.map(([, , i]) => i));
      if (placed.some(([target]) => target.closest('[data-step="connection"]'))) tested = false;
      if (first !== at) {
        at = first;
        render();
      }
      for (const [target, text] of placed) lp.show(target, text);
    }
    if (loose.length || !Object.keys(errors).length) lp.show(error, loose.length ? loose.join("\n") : lp.message(result));
  }

  function render() {
    const shown = steps();
    const name = shown[at][0];
    const verb = editing ? "Edit " : "Connect ";
    document.getElementById("wizard-title").textContent = verb + (direction === "source" ? "Source Storage" : "Target Storage");
    document.getElementById("wizard-steps").innerHTML = "";
    shown.forEach(([, title], i) => {
      const li = document.createElement("li");
      li.textContent = i + 1 + ". " + title;
      li.className = i < at ? "done" : i === at ? "current" : "";
      document.getElementById("wizard-steps").appendChild(li);
    });
    form.querySelectorAll(".step").forEach((s) => (s.hidden = s.dataset.step !== name));
    const wif = provider() === "gcswif";
    form.querySelectorAll(".wif-only").forEach((el) => (el.hidden = !wif));
    form.querySelectorAll(".gcs-only").forEach((el) => (el.hidden = wif));
    form.querySelectorAll(".source-only").forEach((el) => (el.hidden = direction !== "source"));
    form.querySelectorAll(".target-only").forEach((el) => (el.hidden = direction !== "target"));
    document.getElementById("connection-heading").textContent = wif ? "Google Cloud Storage (WIF Auth)" : "Google Cloud Storage";
    form.elements.presign_ttl.disabled = !checked("presign");
    verified.hidden = !tested;
    back.disabled = at === 0;
    const last = at === shown.length - 1;
    next.hidden = last;
    // Configure Connection: Next waits for a passing Test Connection.
    next.disabled = name === "connection" && !tested && !editing;
    next.title = next.disabled ? "Test connection before continuing" : "";
    save.hidden = !last;
    saveSync.hidden = !(last && direction === "source");
    save.disabled = direction === "target" && !tested && !editing;
    if (name === "review") review();
  }

  function review() {
    const b = body();
    const rows = [
      ["Provider", provider() === "gcs" ? "Google Cloud Storage" : "Google Cloud Storage (WIF Auth)"],
      ["Storage Title", b.title || "—"],
      ["Storage Location", "gs://" + b.bucket + (b.prefix ? "/" + b.prefix.replace(/^\/+/, "") : "")],
      ["Import Method", b.use_blob_urls ? "Files: one task per object" : "Tasks: JSON, JSONL or Parquet task files"],
      ["File Name Filter", b.regex_filter || "none"],
      ["Scan all sub-folders", b.recursive_scan ? "Yes" : "No"],
      ["Interval sync", b.sync_interval ? "Every " + b.sync_interval + " min" : "Off: sync when asked"],
      ["Bucket notifications", b.pubsub_push_service_account ? "From " + b.pubsub_push_service_account : "Off"],
      ["Media", b.presign ? "Pre-signed URLs, " + b.presign_ttl + " min" : "Proxied through Labelport"],
    ];
    const list = document.getElementById("review-list");
    list.innerHTML = "";
    for (const [k, v] of rows) {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      div.append(dt, dd);
      list.appendChild(div);
    }
  }

  function open(which) {
    direction = which;
    at = 0;
    tested = false;
    editing = null;
    previewOf = null;
    form.elements.google_application_credentials.placeholder = form.elements.google_application_credentials.dataset.placeholder;
    form.reset();
    clearErrors();
    document.getElementById("preview-list").innerHTML = '<li class="muted">No preview yet: press Load Preview.</li>';
    document.getElementById("preview-tasks").hidden = true;
    document.getElementById("preview-tasks-head").hidden = true;
    stale(false);
    render();
    dialog.showModal();
  }

  /** The same wizard, filled from the stored storage (testing is optional). */
  async function openEdit(card) {
    const result = await lp.api("GET", card.dataset.api);
    if (!result.ok) {
      lp.show(document.getElementById("storage-error"), lp.message(result));
      return;
    }
    const s = result.body;
    open(card.dataset.direction);
    editing = { api: card.dataset.api, type: s.type };
    const set = (name, v) => {
      if (form.elements[name] && v !== undefined && v !== null) form.elements[name].value = v;
    };
    for (const f of ["title", "bucket", "google_project_id", "regex_filter", "presign_ttl", "sync_interval", "pubsub_push_service_account",
      "google_wif_pool_id", "google_wif_provider_id", "google_service_account_email", "google_project_number"]) set(f, s[f]);
    set(direction === "source" ? "prefix" : "prefix_target", s.prefix);
    if (direction === "source") {
      form.elements.use_blob_urls.value = s.use_blob_urls ? "true" : "false";
      form.elements.presign.checked = Boolean(s.presign);
      form.elements.recursive_scan.checked = Boolean(s.recursive_scan);
    } else {
      form.elements.can_delete_objects.checked = Boolean(s.can_delete_objects);
    }
    // A stored key is never shown; empty keeps it.
    form.elements.google_application_credentials.placeholder = "A key may be stored: leave empty to keep it, or paste a new one";
    render();
  }
  document.querySelectorAll(".storage-card .edit-storage").forEach((button) =>
    button.addEventListener("click", () => openEdit(button.closest(".storage-card"))),
  );

  document.getElementById("add-source-storage").addEventListener("click", () => open("source"));
  document.getElementById("add-target-storage").addEventListener("click", () => open("target"));
  document.getElementById("wizard-close").addEventListener("click", () => dialog.close());
  form.addEventListener("change", (event) => {
    // A changed connection field must be tested again; presign settings need not.
    if (event.target.closest('[data-step="connection"]') && !["presign", "presign_ttl", "can_delete_objects"].includes(event.target.name)) tested = false;
    // A preview made with other settings than those now typed is stale
    // (the change event of a field may come after Load Preview's click).
    // Marked, not emptied: the layout must not move under the pointer
    // (this runs on the field's blur, between Load Preview's mouse down
    // and up).
    if (previewOf !== null) {
      stale(previewOf !== previewKey());
    }
    if (event.target.name === "provider") tested = false;
    render();
  });
  form.addEventListener("input", (event) => {
    if (!event.target.closest('[data-step="connection"]') || event.target.name === "presign_ttl") return;
    // What Test Connection said was about the settings before this edit.
    showCors(null);
    showPermissions(null);
    if (tested) {
      tested = false;
      render();
    }
  });
  document.getElementById("w-credentials-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) form.elements.google_application_credentials.value = await file.text();
    tested = false;
    render();
  });

  next.addEventListener("click", async () => {
    clearErrors();
    const name = steps()[at][0];
    if (name === "connection" && !tested && !editing) return;
    if (name === "import") {
      // The prefix and filter are checked before Review, so a prefix with
      // nothing under it is named here, at its field.
      next.disabled = true;
      back.disabled = true;
      const result = await lp.api("POST", base() + "/validate", checkBody());
      next.disabled = false;
      back.disabled = false;
      if (!result.ok) {
        showErrors(result);
        return;
      }
    }
    at += 1;
    render();
  });
  back.addEventListener("click", () => {
    clearErrors();
    at = Math.max(0, at - 1);
    render();
  });

  document.getElementById("test-connection").addEventListener("click", async () => {
    clearErrors();
    const b = body();
    let missing = false;
    for (const [field, label] of [["title", "Storage title"], ["bucket", "Bucket name"]]) {
      if (!b[field]) {
        lp.show(form.querySelector('[data-error-for="' + field + '"]'), label + " is required");
        missing = true;
      }
    }
    if (missing) return;
    // Only the answer to the latest click is shown.
    const asked = ++tests;
    const result = await lp.api("POST", base() + "/validate", checkBody());
    if (asked !== tests) return;
    tested = result.ok;
    if (!result.ok) showErrors(result);
    showPermissions(result.body);
    // With presign on, the answer says whether browsers may read the
    // bucket's objects (its CORS policy); Fix CORS adds the rule.
    showCors(result.ok && result.body && result.body.cors, result.ok && result.body && result.body.proxied);
    render();
  });

  document.getElementById("load-preview").addEventListener("click", async () => {
    clearErrors();
    const list = document.getElementById("preview-list");
    list.innerHTML = '<li class="muted">Loading…</li>';
    previewOf = previewKey();
    stale(false);
    // Only the answer to the latest click is shown.
    const asked = ++previews;
    const result = await lp.api("POST", base() + "/files", { ...checkBody(), limit: 30 });
    if (asked !== previews) return;
    if (!result.ok) {
      previewOf = null;
      document.getElementById("preview-tasks").hidden = true;
      document.getElementById("preview-tasks-head").hidden = true;
      list.innerHTML = '<li class="muted">No preview.</li>';
      showErrors(result);
      return;
    }
    list.innerHTML = "";
    const files = result.body.files || [];
    if (!files.length) list.innerHTML = '<li class="muted">No files found: check the prefix and the filter.</li>';
    for (const f of files) {
      const li = document.createElement("li");
      if (f.key === null) {
        li.textContent = "… preview limit reached …";
        li.className = "muted";
      } else {
        const key = document.createElement("span");
        key.textContent = f.key;
        key.className = "preview-key";
        const size = document.createElement("span");
        size.className = "muted";
        size.textContent = f.size === undefined ? "" : f.size + " B";
        li.append(key, size);
      }
      list.appendChild(li);
    }
    const tasks = document.getElementById("preview-tasks");
    tasks.innerHTML = "";
    tasks.hidden = !result.body.tasks;
    document.getElementById("preview-tasks-head").hidden = !result.body.tasks;
    for (const t of result.body.tasks || []) {
      const li = document.createElement("li");
      const where = document.createElement("span");
      where.className = "preview-key";
      where.textContent = t.key + (t.position ? ":" + t.position : "");
      const what = document.createElement("code");
      if (t.error !== undefined) {
        what.className = "error";
        what.textContent = t.error;
      } else {
        const text = t.data_truncated !== undefined ? t.data_truncated : JSON.stringify(t.data);
        what.textContent = text.length > 160 ? text.slice(0, 160) + "…" : text;
        what.className = "preview-task";
      }
      li.append(where, what);
      tasks.appendChild(li);
    }
    if (result.body.tasks && !result.body.tasks.length) tasks.innerHTML = '<li class="muted">No task file among the files listed.</li>';
  });

  async function finish(sync) {
    clearErrors();
    const saved = editing ? await lp.api("PATCH", editing.api, body()) : await lp.api("POST", base(), body());
    if (!saved.ok) {
      showErrors(saved);
      return;
    }
    if (sync) {
      const started = await lp.api("POST", base() + "/" + saved.body.id + "/sync");
      // A sync that does not start leaves the storage saved: its card says so.
      if (!started.ok) console.warn("sync did not start", started.status);
    }
    location.reload();
  }
  save.addEventListener("click", () => finish(false));
  saveSync.addEventListener("click", () => finish(true));
})();
