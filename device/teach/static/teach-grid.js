/* edgecam Teach view: the data set's grid (loaded after teach-core.js, which lists the view's files): pages of the
 * picked class, picking frames (tap, shift-tap, drag), moving and deleting many at once, the undo bar for a delete,
 * and the data set's disk use. */
(function () {
  "use strict";

  const view = window.edgecamTeach;
  const { PAGE, app, el, get, post, say, cell, image } = view;

  function syncPage() { // the grid follows frames recorded, moved or deleted elsewhere (another tab, the CLI)
    const entry = app.selected && app.dataset.classes.find((item) => item.name === app.selected);
    if (app.selected && !entry && !(app.dataset.model_labels || []).includes(app.selected)) app.selected = null;
    if (!entry || app.recording) return;
    if (app.page.label !== app.selected) loadPage(0);
    else if (entry.count !== app.page.total) loadPage(app.page.offset);
  }

  function loadPage(offset) {
    const label = app.selected;
    if (!label) return Promise.resolve();
    return get("/api/dataset/frames?label=" + encodeURIComponent(label) + "&offset=" + Math.max(0, offset) +
      "&limit=" + PAGE).then((page) => {
      if (app.selected !== label) return;
      if (page.offset > 0 && page.offset >= page.total) return loadPage(page.offset - PAGE); // the last page emptied
      app.page = page;
      renderThumbs();
    }).catch((error) => { if (error.status === 404) { app.page = { label: null, offset: 0, total: 0, files: [] }; renderThumbs(); } });
  }

  function choose(file, on) {
    if (on) app.chosen.add(file); else app.chosen.delete(file);
  }

  function pressThumb(event, file, index) {
    if (event.button !== 0) return;
    event.preventDefault();
    if (event.shiftKey && app.anchor !== null) { // shift-click: everything between the last pick and this one
      const [first, last] = [Math.min(app.anchor, index), Math.max(app.anchor, index)];
      app.page.files.slice(first, last + 1).forEach((name) => choose(name, true));
    } else {
      const on = !app.chosen.has(file);
      choose(file, on);
      app.dragging = { on: on };
      app.anchor = index;
    }
    renderSelection();
  }

  el.thumbs.addEventListener("pointermove", (event) => { // a drag across thumbnails picks (or drops) them all
    if (!app.dragging || !event.buttons) { app.dragging = null; return; }
    const target = document.elementFromPoint(event.clientX, event.clientY);
    const figure = target && target.closest(".thumb");
    if (figure && !app.chosen.has(figure.dataset.file) === app.dragging.on) {
      choose(figure.dataset.file, app.dragging.on);
      renderSelection();
    }
  });
  document.addEventListener("pointerup", () => { app.dragging = null; });

  function renderSelection() {
    el.thumbs.querySelectorAll(".thumb").forEach((figure) => {
      const on = app.chosen.has(figure.dataset.file);
      figure.classList.toggle("chosen", on);
      figure.setAttribute("aria-pressed", on ? "true" : "false");
    });
    const count = app.chosen.size;
    el.bulk.hidden = !count;
    el["bulk-count"].textContent = count + " selected";
    const targets = view.classEntries().filter((entry) => entry.folder && entry.name !== app.selected).map((entry) => entry.name);
    const options = targets.map((name) => { const option = document.createElement("option"); option.value = option.textContent = name; return option; });
    if (el["move-to"].dataset.key !== targets.join("|")) {
      el["move-to"].replaceChildren(...options);
      el["move-to"].dataset.key = targets.join("|");
    }
    el.move.disabled = !targets.length;
  }

  // ---- moving and deleting many, undoing a delete ------------------------------------------------
  function bulk(path, body, done) {
    return post(path, body).then((answer) => {
      const failed = answer.failed || [];
      done(answer);
      if (failed.length) say(failed.length + " not done: " + failed[0].file + ": " + failed[0].error, "error");
      app.chosen.clear();
      loadPage(app.page.offset);
      view.refreshDataset();
      return answer;
    }).catch((error) => say(error.message, "error"));
  }

  function moveChosen() {
    const label = el["move-to"].value;
    if (!label || !app.chosen.size) return;
    bulk("/api/dataset/move", { files: Array.from(app.chosen), label: label }, (answer) => {
      say("Moved " + answer.moved.length + " frame" + (answer.moved.length === 1 ? "" : "s") + " to " + label + ".");
    });
  }

  function removeFiles(files, what) {
    return bulk("/api/dataset/remove", { files: files }, (answer) => {
      offerUndo(answer.undo, "Deleted " + (what || answer.removed.length + " frame" + (answer.removed.length === 1 ? "" : "s")) + ".");
    });
  }

  function offerUndo(batch, text) {
    app.undoBatch = batch || null;
    el["undo-bar"].hidden = !batch;
    el["undo-text"].textContent = text;
    if (!batch) say(text);
  }

  el["undo-delete"].addEventListener("click", () => {
    const batch = app.undoBatch;
    if (!batch) return;
    offerUndo(null, "");
    post("/api/dataset/restore", { undo: batch }).then((answer) => {
      say("Restored " + answer.restored.length + " frame" + (answer.restored.length === 1 ? "" : "s") + ".");
      app.classesKey = "";
      loadPage(app.page.offset);
      view.refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  el.move.addEventListener("click", moveChosen);
  el.remove.addEventListener("click", () => removeFiles(Array.from(app.chosen)));
  el["select-none"].addEventListener("click", () => { app.chosen.clear(); renderSelection(); });
  el["select-page"].addEventListener("click", () => { app.page.files.forEach((file) => app.chosen.add(file)); renderSelection(); });
  el.newer.addEventListener("click", () => loadPage(app.page.offset - PAGE));
  el.older.addEventListener("click", () => loadPage(app.page.offset + PAGE));

  // ---- drawing --------------------------------------------------------------------------------
  function renderThumbs() {
    const page = app.page;
    const files = page.label === app.selected ? page.files : [];
    el["class-tools"].hidden = !app.selected || !view.classEntries().some((entry) => entry.name === app.selected && entry.folder);
    if (app.confirmClass !== app.selected) el["delete-class"].textContent = "Delete class";
    el.pager.textContent = files.length ? (page.offset + 1) + "–" + (page.offset + files.length) + " of " + page.total : "";
    el.newer.disabled = page.offset <= 0;
    el.older.disabled = page.offset + files.length >= page.total;
    el["select-page"].disabled = !files.length;
    const key = app.selected + "|" + page.offset + "|" + files.join("|");
    if (key !== app.thumbsKey) {
      app.thumbsKey = key;
      el.thumbs.replaceChildren(...files.map((file, index) => {
        const item = document.createElement("figure");
        item.className = "thumb";
        item.dataset.file = file;
        item.dataset.testid = "thumb";
        item.appendChild(image(file));
        item.addEventListener("pointerdown", (event) => pressThumb(event, file, index));
        return item;
      }));
      if (!files.length) {
        el.thumbs.replaceChildren(cell("p", app.selected ? "No frames of " + app.selected + " yet."
          : "Pick a class above, or add one."));
        el.thumbs.firstChild.className = "hint";
      }
    }
    renderSelection();
  }

  function size(bytes) {
    if (bytes >= 1e9) return (bytes / 1e9).toFixed(bytes < 1e10 ? 1 : 0) + " GB";
    return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0) + " MB";
  }

  function renderUsage() {
    const dataset = app.dataset;
    if (!dataset) return;
    const images = dataset.classes.reduce((sum, item) => sum + item.count, 0);
    el.usage.textContent = images + " frames · " + size(dataset.bytes) + " of " + size(dataset.limit_bytes) +
      " · " + size(dataset.free_bytes) + " free";
  }

  Object.assign(view, { syncPage, loadPage, offerUndo, renderThumbs, renderUsage });
})();
