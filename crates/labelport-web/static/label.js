// The labeling page: Label Studio's editor (1.4.0) on one task; Submit,
// Update and Skip save through the REST API as Label Studio's own data
// manager does (create: POST /api/tasks/{id}/annotations; update: PATCH
// /api/annotations/{id}; skip: an annotation with was_cancelled: true).
"use strict";

(() => {
  const boot = JSON.parse(document.getElementById("boot-data").textContent);
  const status = document.getElementById("label-status");
  const error = document.getElementById("label-error");
  const taskId = boot.task.id;
  const started = Date.now();
  // "Label all tasks" moves on to the next task after each save.
  const nextUrl = boot.stream ? "/projects/" + boot.project + "/label" : null;

  const payload = (annotation, wasCancelled) => ({
    result: annotation ? annotation.serializeAnnotation() : [],
    lead_time: (Date.now() - started) / 1000,
    was_cancelled: wasCancelled,
  });

  function fail(result) {
    lp.show(error, lp.message(result));
    status.textContent = "";
  }

  function done(what) {
    lp.show(error, "");
    status.textContent = what;
    document.body.dataset.saved = what;
    if (nextUrl) location.href = nextUrl;
  }

  async function create(annotation, wasCancelled) {
    const result = await lp.api("POST", "/api/tasks/" + taskId + "/annotations", payload(annotation, wasCancelled));
    if (!result.ok) {
      fail(result);
      return false;
    }
    // The editor now knows the stored id: its button becomes Update.
    if (annotation) annotation.updatePersonalKey(String(result.body.id));
    return true;
  }

  async function update(annotation, wasCancelled) {
    const result = await lp.api("PATCH", "/api/annotations/" + annotation.pk, payload(annotation, wasCancelled));
    if (!result.ok) {
      fail(result);
      return false;
    }
    return true;
  }

  function startAnnotation(store) {
    const prediction = store.predictions[0];
    const annotation = prediction
      ? store.addAnnotationFromPrediction(prediction)
      : store.addAnnotation({ userGenerate: true });
    store.selectAnnotation(annotation.id);
  }

  // Media that do not load (a bucket's CORS policy or IP filter refusing
  // this browser, a signed URL that expired, the proxy refused) show as a
  // broken image in the editor and nothing more: say so, and send managers
  // to the storage check (issue 17, item 2). `error` does not bubble, so it
  // is caught on the way down.
  const mediaError = document.getElementById("media-error");
  document.addEventListener(
    "error",
    (event) => {
      const el = event.target;
      if (!mediaError.hidden || !(el instanceof HTMLElement) || !el.closest("#label-studio")) return;
      if (!["IMG", "AUDIO", "VIDEO", "SOURCE"].includes(el.tagName)) return;
      mediaError.textContent = "A media file of this task did not load. ";
      if (boot.storage_check) {
        const link = document.createElement("a");
        link.href = boot.storage_check;
        link.id = "media-check-link";
        link.textContent = "Check this project's storages (connection, CORS policy, IP filter)";
        mediaError.append(link);
      } else {
        mediaError.append("Tell a project manager: its Cloud Storage settings can check why.");
      }
      mediaError.hidden = false;
    },
    true,
  );

  // eslint-disable-next-line no-undef
  new LabelStudio("label-studio", {
    config: boot.config,
    task: boot.task,
    user: boot.user,
    users: boot.users,
    interfaces: [
      "panel", "update", "submit", "skip", "controls", "infobar", "topbar", "instruction",
      "side-column", "annotations:history", "annotations:tabs", "annotations:menu",
      "annotations:current", "annotations:add-new", "annotations:delete", "annotations:view-all",
      "predictions:tabs", "predictions:menu", "edit-history",
    ],
    onStorageInitialized(ls) {
      // A task with no annotation to show opens on a new annotation: a copy
      // of the first prediction when there is one (as Label Studio's data
      // manager does), else a blank one.
      // (Annotators are given their own annotations only; managers see
      // everyone's and open on the last one, as in Label Studio.)
      if (boot.task.annotations.length === 0) startAnnotation(ls.annotationStore);
      document.body.dataset.editorReady = "true";
    },
    async onSubmitAnnotation(ls, annotation) {
      if (await create(annotation, false)) done("Submitted");
    },
    async onUpdateAnnotation(ls, annotation) {
      if (await update(annotation, false)) done("Updated");
    },
    async onSkipTask(ls) {
      const annotation = ls.annotationStore.selected;
      const saved = annotation && annotation.pk ? await update(annotation, true) : await create(annotation, true);
      if (saved) done("Skipped");
    },
    async onDeleteAnnotation(ls, annotation) {
      if (annotation.pk) {
        const result = await lp.api("DELETE", "/api/annotations/" + annotation.pk);
        if (result.ok) status.textContent = "Deleted";
        else fail(result);
      }
      // Never leave the task without an annotation to work on (the editor
      // has removed it even when the server refused: reload to see it).
      setTimeout(() => {
        if (ls.annotationStore.annotations.length === 0) startAnnotation(ls.annotationStore);
      }, 0);
    },
  });
})();
