/* edgecam Teach view: record labelled camera frames, label the frames the model was unsure about, teach a new
 * classifier head and undo it. Talks only to the daemon (the Teach HTTP API, /status, /events, /stream.mjpg).
 * Recording: while the record button, the live view or Space is held, POST /api/capture repeats at up to the
 * daemon's capture_fps. Query parameter: token (once: the daemon answers with a same-site cookie). */
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  // Opened as ?token=TOKEN, the page got the token back as an HttpOnly, same-site cookie that every request
  // of this page carries: take it out of the address bar, so it is in no later URL, log or bookmark.
  if (params.has("token")) {
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
  }
  const DATASET_POLL_MS = 4000;
  const STATUS_POLL_MS = 3000;
  const PAGE = 24; // frames per page of the grid
  const MESSAGE_MS = 8000; // a status line goes away after this, so it never goes stale
  const NAME = /^[A-Za-z0-9_-]{1,40}$/; // the daemon's class-name rule, checked before asking it
  const ALIKE_BITS = 6; // unsure frames whose 64-bit fingerprints differ in at most this many bits are one group
  const $ = (id) => document.getElementById(id);
  const el = {};
  ["banner", "back", "head", "outputs", "view", "live", "now-label", "now-confidence", "recording-mark", "record",
   "record-text", "message", "classes", "add-form", "add-name", "thumbs", "usage", "download", "uncertain",
   "uncertain-count", "teach", "force", "undo", "teach-result", "teach-title", "teach-detail", "scores",
   "accuracy-new", "accuracy-current", "confusion", "bars", "undo-bar", "undo-text", "undo-delete", "class-tools",
   "rename-class", "delete-class", "select-page", "pager", "newer", "older", "bulk", "bulk-count", "move-to", "move",
   "remove", "select-none", "uncertain-hint", "uncertain-all", "advice", "per-class"].forEach((id) => { el[id] = $(id); });

  const app = {
    dataset: null, status: null, selected: params.get("label") || null, tab: "classes",
    recording: false, session: 0, teaching: false, offline: false, unauthorised: false,
    classesKey: "", thumbsKey: "", uncertainKey: "",
    page: { label: null, offset: 0, total: 0, files: [] }, chosen: new Set(), anchor: null, dragging: null,
    prints: {}, undoBatch: null, messageTimer: 0, confirmClass: null,
  };

  // ---- talking to the daemon ----------------------------------------------------------------

  function reply(response) {
    return response.json().catch(() => ({})).then((data) => {
      if (response.ok) return data;
      const error = new Error(data.error || "the daemon answered " + response.status);
      error.status = response.status;
      throw error;
    });
  }

  function get(path) { return fetch(path, { cache: "no-store" }).then(reply); }

  function post(path, body) {
    return fetch(path, {
      method: "POST", cache: "no-store", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    }).then(reply);
  }

  function trouble(error) {
    app.offline = !error.status;
    app.unauthorised = error.status === 401;
    renderBanner();
  }

  function syncPage() { // the grid follows frames recorded, moved or deleted elsewhere (another tab, the CLI)
    const entry = app.selected && app.dataset.classes.find((item) => item.name === app.selected);
    if (app.selected && !entry && !(app.dataset.model_labels || []).includes(app.selected)) app.selected = null;
    if (!entry || app.recording) return;
    if (app.page.label !== app.selected) loadPage(0);
    else if (entry.count !== app.page.total) loadPage(app.page.offset);
  }

  function refreshDataset() {
    return get("/api/dataset").then((dataset) => {
      app.offline = app.unauthorised = false;
      app.dataset = dataset;
      syncPage();
      render();
    }).catch(trouble);
  }

  function refreshStatus() {
    return get("/status").then((status) => {
      app.offline = app.unauthorised = false;
      app.status = status;
      if (status.last_result) showReading(status.last_result);
      renderHead();
      renderTeachButtons();
      renderBanner();
    }).catch(trouble);
  }

  function listen() {
    const events = new EventSource("/events");
    events.addEventListener("result", (event) => showReading(JSON.parse(event.data)));
    events.addEventListener("error", () => { events.close(); setTimeout(listen, 2000); });
  }

  // ---- recording ------------------------------------------------------------------------------
  function captureFps() {
    const fps = app.dataset && Number(app.dataset.capture_fps);
    return fps > 0 ? fps : 2;
  }

  function canRecord() {
    return Boolean(app.selected && app.dataset && !app.dataset.recording_blocked && !app.teaching);
  }

  function startRecording() {
    if (app.recording || !canRecord()) return;
    app.recording = true;
    app.session += 1;
    renderRecord();
    captureLoop(app.session, app.selected);
  }

  function stopRecording() {
    if (!app.recording) return;
    app.recording = false; // the loop below finishes the capture on its way, then says what it saved
    renderRecord();
  }

  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  async function captureLoop(session, label) {
    let saved = 0;
    while (app.recording && app.session === session) {
      const started = performance.now();
      try {
        saved += 1;
        captured(label, await post("/api/capture", { label: label }), saved);
      } catch (error) {
        saved -= 1;
        if (error.status !== 429) { // 429: faster than capture_fps; just wait for the next turn
          app.recording = false;
          renderRecord();
          say(error.message, "error");
          refreshDataset();
          return;
        }
      }
      await sleep(Math.max(0, 1000 / captureFps() - (performance.now() - started)));
    }
    if (app.session !== session || app.recording) return; // a newer hold owns the message
    if (saved) say("Saved " + saved + " frame" + (saved === 1 ? "" : "s") + " of " + label + ".");
    refreshDataset();
  }

  function captured(label, answer, saved) {
    const entry = app.dataset && app.dataset.classes.find((item) => item.name === label);
    if (entry) entry.count = answer.count;
    if (app.page.label === label && app.page.offset === 0) { // the newest page shows the new frame at once
      app.page.files = [answer.file].concat(app.page.files).slice(0, PAGE);
      app.page.total = answer.count;
    }
    if (app.recording) say("Recording " + label + ": " + saved + " saved (" + answer.count + " in all)");
    render();
  }

  function holdable(element) {
    element.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      element.setPointerCapture(event.pointerId);
      startRecording();
    });
    ["pointerup", "pointercancel", "lostpointercapture"].forEach((name) => element.addEventListener(name, stopRecording));
    element.addEventListener("contextmenu", (event) => event.preventDefault()); // a long press is not a menu
  }

  holdable(el.record);
  holdable(el.view);
  document.addEventListener("keydown", (event) => {
    if (event.key !== " " || event.target.tagName === "INPUT") return;
    event.preventDefault();
    if (!event.repeat) startRecording();
  });
  document.addEventListener("keyup", (event) => {
    if (event.key !== " " || event.target.tagName === "INPUT") return;
    event.preventDefault(); // Space must not also press the focused button
    stopRecording();
  });
  window.addEventListener("blur", stopRecording);

  // ---- classes, thumbnails, deleting -------------------------------------------------------
  function classEntries() {
    const dataset = app.dataset || { classes: [], model_labels: [] };
    const entries = dataset.classes.map((item) => ({ name: item.name, count: item.count, folder: true }));
    (dataset.model_labels || []).forEach((name) => {
      if (!entries.some((item) => item.name === name)) entries.push({ name: name, count: 0, folder: false });
    });
    return entries;
  }

  function select(name, folder) {
    stopRecording();
    const done = () => {
      if (app.selected !== name) app.chosen.clear();
      app.selected = name;
      app.confirmClass = null;
      loadPage(0);
      render();
    };
    if (folder) return done();
    return post("/api/classes", { name: name }).then(() => { done(); return refreshDataset(); })
      .catch((error) => say(error.message, "error"));
  }

  function nameProblem(name) {
    return NAME.test(name) ? "" : "A class name is 1-40 letters, digits, - or _ (e.g. nothing).";
  }

  el["add-name"].addEventListener("input", () => {
    const name = el["add-name"].value.trim();
    el["add-name"].setCustomValidity(name ? nameProblem(name) : "");
  });

  el["add-form"].addEventListener("submit", (event) => {
    event.preventDefault();
    const name = el["add-name"].value.trim();
    if (!name) return;
    const problem = nameProblem(name);
    el["add-name"].setCustomValidity(problem);
    if (problem) return say(problem, "error");
    post("/api/classes", { name: name }).then((answer) => {
      el["add-name"].value = "";
      el["add-name"].blur();
      app.selected = answer.name || name;
      say("Added class " + app.selected + ": hold the record button to fill it.");
      return refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  // ---- the data set's grid: pages of the picked class, selection, moving and deleting many -----------
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
    const targets = classEntries().filter((entry) => entry.folder && entry.name !== app.selected).map((entry) => entry.name);
    const options = targets.map((name) => { const option = document.createElement("option"); option.value = option.textContent = name; return option; });
    if (el["move-to"].dataset.key !== targets.join("|")) {
      el["move-to"].replaceChildren(...options);
      el["move-to"].dataset.key = targets.join("|");
    }
    el.move.disabled = !targets.length;
  }

  function bulk(path, body, done) {
    return post(path, body).then((answer) => {
      const failed = answer.failed || [];
      done(answer);
      if (failed.length) say(failed.length + " not done: " + failed[0].file + ": " + failed[0].error, "error");
      app.chosen.clear();
      loadPage(app.page.offset);
      refreshDataset();
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
      refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  el.move.addEventListener("click", moveChosen);
  el.remove.addEventListener("click", () => removeFiles(Array.from(app.chosen)));
  el["select-none"].addEventListener("click", () => { app.chosen.clear(); renderSelection(); });
  el["select-page"].addEventListener("click", () => { app.page.files.forEach((file) => app.chosen.add(file)); renderSelection(); });
  el.newer.addEventListener("click", () => loadPage(app.page.offset - PAGE));
  el.older.addEventListener("click", () => loadPage(app.page.offset + PAGE));

  // ---- a class: rename, delete (undoable) ------------------------------------------------------
  el["rename-class"].addEventListener("click", () => {
    const old = app.selected;
    const name = (window.prompt("New name for " + old + " (letters, digits, - or _):", old) || "").trim();
    if (!name || name === old) return;
    const problem = nameProblem(name);
    if (problem) return say(problem, "error");
    post("/api/classes/rename", { name: old, to: name }).then(() => {
      app.selected = name;
      say("Renamed " + old + " to " + name + ".");
      loadPage(0);
      return refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  el["delete-class"].addEventListener("click", () => {
    const name = app.selected;
    if (app.confirmClass !== name) { // a second tap confirms: one tap never deletes a class
      app.confirmClass = name;
      el["delete-class"].textContent = "Tap again to delete " + name;
      return;
    }
    app.confirmClass = null;
    post("/api/classes/delete", { name: name }).then((answer) => {
      app.selected = null;
      app.chosen.clear();
      offerUndo(answer.undo, "Deleted class " + name + ".");
      app.page = { label: null, offset: 0, total: 0, files: [] };
      return refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  function image(file) {
    const picture = document.createElement("img");
    picture.src = "/api/dataset/image?file=" + encodeURIComponent(file) + "&thumb=1";
    picture.alt = file;
    picture.loading = "lazy";
    return picture;
  }

  function button(text, className, action, testid) {
    const item = document.createElement("button");
    item.type = "button";
    item.className = className;
    item.textContent = text;
    if (testid) item.dataset.testid = testid;
    item.addEventListener("click", action);
    return item;
  }

  // ---- unsure frames: alike ones grouped, a group labelled or discarded at once ----------------------
  function fingerprint(frame) {
    if (app.prints[frame.id]) return Promise.resolve(app.prints[frame.id]);
    return new Promise((resolve) => {
      const picture = new Image();
      picture.onload = () => { // 8x8 grey, each pixel above or below the mean: near-identical frames agree
        const canvas = document.createElement("canvas");
        canvas.width = canvas.height = 8;
        const context = canvas.getContext("2d", { willReadFrequently: true });
        context.drawImage(picture, 0, 0, 8, 8);
        const pixels = context.getImageData(0, 0, 8, 8).data;
        const grey = [];
        for (let index = 0; index < pixels.length; index += 4) grey.push(pixels[index] + pixels[index + 1] + pixels[index + 2]);
        const mean = grey.reduce((sum, value) => sum + value, 0) / grey.length;
        app.prints[frame.id] = grey.map((value) => (value > mean ? 1 : 0));
        resolve(app.prints[frame.id]);
      };
      picture.onerror = () => resolve(null);
      picture.src = "/api/dataset/image?file=" + encodeURIComponent(frame.file) + "&thumb=1";
    });
  }

  function alike(first, second) {
    if (!first || !second) return false;
    let differ = 0;
    for (let index = 0; index < first.length; index += 1) differ += first[index] !== second[index] ? 1 : 0;
    return differ <= ALIKE_BITS;
  }

  function groups(frames) {
    const found = [];
    frames.forEach((frame) => {
      const print = app.prints[frame.id];
      const group = print && found.find((item) => alike(app.prints[item[0].id], print));
      if (group) group.push(frame); else found.push([frame]);
    });
    return found;
  }

  function labelFrames(frames, label) {
    const files = frames.map((frame) => frame.file);
    post("/api/dataset/move", { files: files, label: label }).then((answer) => {
      say("Added " + answer.moved.length + " frame" + (answer.moved.length === 1 ? "" : "s") + " to " + label + ".");
      app.uncertainKey = "";
      refreshDataset();
    }).catch((error) => say(error.message, "error"));
  }

  function discardFrames(frames) {
    post("/api/dataset/remove", { files: frames.map((frame) => frame.file) }).then((answer) => {
      say("Discarded " + answer.removed.length + " unsure frame" + (answer.removed.length === 1 ? "" : "s") + ".");
      app.uncertainKey = "";
      refreshDataset();
    }).catch((error) => say(error.message, "error"));
  }

  // ---- teaching ------------------------------------------------------------------------------
  function percent(value) { return typeof value === "number" ? (value * 100).toFixed(1) + "%" : "–"; }

  function teach(force) {
    if (app.teaching) return;
    stopRecording();
    app.teaching = true;
    const started = Date.now();
    showTeach("running", "Teaching…", "Embedding the frames and fitting a new head; this takes seconds.");
    const ticker = setInterval(() => {
      el["teach-detail"].textContent = "Working for " + Math.round((Date.now() - started) / 1000) + " s…";
    }, 1000);
    renderTeachButtons(false);
    post("/api/teach", { force: Boolean(force) }).then((answer) => {
      if (answer.unchanged) {
        showTeach("unchanged", "Nothing changed, nothing taught", answer.reason || "The data set is the same as at the last teach.");
        showAdvice(answer);
        renderTeachButtons(false);
        return;
      }
      const title = answer.accepted ? "Using the new head (revision " + answer.revision + ")"
        : "Kept the current head";
      const counts = answer.trained == null ? "" : answer.trained + " frames trained" +
        (answer.heldout == null ? "" : ", " + answer.heldout + " held out");
      const method = answer.method === "nearest-mean" ? "nearest class mean (few frames)"
        : answer.method === "softmax" ? "softmax regression" : "";
      const detail = [answer.reason, counts, method, answer.validation,
        Number(answer.seconds || 0).toFixed(1) + " s"].filter(Boolean).join(" · ");
      showTeach(answer.accepted ? "accepted" : "refused", title, detail);
      showScores(answer);
      showAdvice(answer);
      renderTeachButtons(!answer.accepted);
    }).catch((error) => {
      showTeach("error", error.status === 409 ? "Not enough to teach yet" : "Teaching failed", error.message);
      renderTeachButtons(false);
    }).finally(() => {
      clearInterval(ticker);
      app.teaching = false;
      el.force.disabled = false;
      render();
      refreshStatus();
    });
  }

  function undo() {
    post("/api/teach/undo", {}).then((answer) => {
      const labels = answer.labels || [];
      const lost = classEntries().filter((entry) => entry.folder && entry.count && !labels.includes(entry.name));
      showTeach("undone", "Back to revision " + answer.revision, "Labels: " + labels.join(", ") +
        (lost.length ? " · this head does not know " + lost.map((entry) => entry.name).join(", ") + ": teach again to add" : ""));
      el.scores.hidden = el.confusion.hidden = el.advice.hidden = true;
      el["per-class"].hidden = true;
      renderTeachButtons(false);
      refreshStatus();
    }).catch((error) => showTeach("error", error.status === 409 ? "Nothing to undo" : "Undo failed", error.message));
  }

  function showAdvice(answer) {
    const advice = Array.isArray(answer.advice) ? answer.advice : [];
    el.advice.hidden = !advice.length;
    el.advice.replaceChildren(...advice.map((line) => cell("li", line)));
    const rows = Array.isArray(answer.per_class) ? answer.per_class : [];
    el["per-class"].hidden = !rows.length;
    if (!rows.length) return el["per-class"].replaceChildren();
    const head = document.createElement("tr");
    ["class", "accuracy", "frames", "confused with", "more frames?"].forEach((text) => head.appendChild(cell("th", text)));
    el["per-class"].replaceChildren(head, ...rows.map((row) => {
      const line = document.createElement("tr");
      line.dataset.label = row.label;
      const confused = (row.confused_with || []).map((item) => item.label + " ×" + item.count).join(", ");
      const more = row.more_frames_help === true ? "help" : row.more_frames_help === false ? "no longer help" : "–";
      [row.label, percent(row.accuracy), row.frames == null ? "–" : String(row.frames), confused || "–", more]
        .forEach((text) => line.appendChild(cell("td", text)));
      return line;
    }));
  }

  function showTeach(state, title, detail) {
    el["teach-result"].dataset.state = state;
    el["teach-title"].textContent = title;
    el["teach-detail"].textContent = detail || "";
  }

  function renderTeachButtons(refused) {
    if (refused !== undefined) el.force.hidden = !refused;
    el.teach.disabled = el.force.disabled = app.teaching;
    const head = app.status && app.status.head;
    el.undo.disabled = app.teaching || !(head && head.revision > 0); // nothing to undo at the bundle's own head
    el.undo.title = el.undo.disabled && !app.teaching ? "Nothing to undo: this is the bundle's own head" : "";
  }

  function showScores(answer) {
    el.scores.hidden = false;
    el["accuracy-new"].textContent = percent(answer.accuracy_new);
    el["accuracy-current"].textContent = percent(answer.accuracy_current);
    const confusion = answer.confusion || { labels: [], matrix: [] };
    el.confusion.hidden = !confusion.labels.length;
    const head = document.createElement("tr");
    head.appendChild(cell("th", "true \\ said"));
    confusion.labels.forEach((label) => head.appendChild(cell("th", label)));
    const rows = confusion.matrix.map((counts, row) => {
      const line = document.createElement("tr");
      line.appendChild(cell("th", confusion.labels[row]));
      counts.forEach((count, column) => {
        const item = line.appendChild(cell("td", String(count)));
        if (row === column) item.className = "hit";
        else if (count) item.className = "miss";
      });
      return line;
    });
    el.confusion.replaceChildren(head, ...rows);
  }

  function cell(tag, text) {
    const item = document.createElement(tag);
    item.textContent = text;
    return item;
  }

  el.teach.addEventListener("click", () => teach(false));
  el.force.addEventListener("click", () => teach(true));
  el.undo.addEventListener("click", undo);

  // ---- drawing --------------------------------------------------------------------------------
  function say(text, kind) {
    el.message.textContent = text;
    el.message.title = text; // the whole line, when it is cut to the width
    el.message.className = "message " + (kind || "");
    clearTimeout(app.messageTimer);
    app.messageTimer = setTimeout(() => { el.message.textContent = ""; el.message.title = ""; }, MESSAGE_MS);
  }

  function showReading(result) {
    el["now-label"].textContent = result.label;
    el["now-label"].dataset.label = result.label;
    el["now-confidence"].textContent = Math.round((result.confidence || 0) * 100) + "%";
    const probabilities = result.probabilities || {};
    const labels = Object.keys(probabilities);
    if (el.bars.dataset.key !== labels.join("|")) { // one bar per class of the head that read the frame
      el.bars.dataset.key = labels.join("|");
      el.bars.replaceChildren(...labels.map((label) => {
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.dataset.label = label;
        bar.append(cell("span", label), document.createElement("i"), cell("b", ""));
        return bar;
      }));
    }
    el.bars.querySelectorAll(".bar").forEach((bar) => {
      const value = Number(probabilities[bar.dataset.label]) || 0;
      bar.querySelector("i").style.width = Math.round(value * 100) + "%";
      bar.querySelector("b").textContent = Math.round(value * 100) + "%";
      bar.classList.toggle("top", bar.dataset.label === result.raw_label);
    });
  }

  function size(bytes) {
    if (bytes >= 1e9) return (bytes / 1e9).toFixed(bytes < 1e10 ? 1 : 0) + " GB";
    return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0) + " MB";
  }

  function renderHead() {
    const status = app.status || {};
    const head = status.head;
    el.head.textContent = head
      ? "Head r" + head.revision + " · " + head.source + (head.accuracy == null ? "" : " · " + percent(head.accuracy))
      : (status.model ? status.model.format || "" : "–");
    el.head.dataset.revision = head ? head.revision : "";
    const outputs = status.outputs || {};
    const names = Object.keys(outputs);
    el.outputs.hidden = !names.length;
    el.outputs.replaceChildren(...names.map((name) => {
      const item = document.createElement("li");
      const output = outputs[name] || {};
      const bad = output.state !== "ok" || output.connected === false;
      item.className = "output " + (bad ? "bad" : "ok");
      item.dataset.testid = "output-" + name;
      item.textContent = name;
      item.title = output.last_error || output.state || "";
      return item;
    }));
  }

  function renderBanner() {
    const dataset = app.dataset;
    let text = "";
    if (app.unauthorised) text = "This page needs the daemon's token: open it as /teach?token=YOUR_TOKEN";
    else if (app.offline) text = "Lost contact with the camera service — retrying…";
    else if (dataset && dataset.recording_blocked) text = "Recording is stopped: " + dataset.recording_blocked;
    else if (app.status && app.status.state === "degraded") text = "Camera lost — reconnecting…";
    else if (app.status && app.status.drift && app.status.drift.state !== "ok") {  // device/drift.py
      text = (app.status.drift.state === "drifted" ? "Needs teaching: the scene no longer looks like what was taught — "
        : "The scene is changing — ") + app.status.drift.reason +
        ". The frames that drifted most come first under Unsure: label them, then Teach.";
    }
    el.banner.hidden = !text;
    el.banner.textContent = text;
  }

  function renderRecord() {
    const ready = canRecord();
    el.record.disabled = !ready && !app.recording;
    el.record.classList.toggle("on", app.recording);
    el.view.classList.toggle("recording", app.recording);
    el["recording-mark"].hidden = !app.recording;
    el["record-text"].textContent = app.recording ? "Recording " + app.selected
      : app.selected ? "Record " + app.selected : "Pick a class first";
    el.record.dataset.state = app.recording ? "recording" : ready ? "ready" : "off";
  }

  function renderClasses() {
    const entries = classEntries();
    const key = app.selected + "|" + entries.map((entry) => entry.name + ":" + entry.count + ":" + entry.folder).join("|");
    if (key === app.classesKey) return; // unchanged: keep the buttons (a finger may be on one)
    app.classesKey = key;
    el.classes.replaceChildren(...entries.map((entry) => {
      const item = button("", "class" + (entry.name === app.selected ? " selected" : "") + (entry.folder ? "" : " new"),
        () => select(entry.name, entry.folder), "class-" + entry.name);
      item.dataset.count = entry.count;
      const name = document.createElement("span");
      name.className = "class-name";
      name.textContent = entry.name;
      const count = document.createElement("span");
      count.className = "class-count";
      count.dataset.testid = "count-" + entry.name;
      count.textContent = entry.count;
      item.append(name, count);
      return item;
    }));
  }

  function renderThumbs() {
    const page = app.page;
    const files = page.label === app.selected ? page.files : [];
    el["class-tools"].hidden = !app.selected || !classEntries().some((entry) => entry.name === app.selected && entry.folder);
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

  function renderUncertain() {
    const dataset = app.dataset;
    const frames = (dataset && dataset.uncertain) || [];
    el["uncertain-count"].textContent = frames.length;
    const off = Boolean(dataset) && dataset.keep_uncertain === 0;
    el["uncertain-hint"].textContent = off
      ? "Unsure frames are not kept: start the daemon with --keep-uncertain 50 (and --threshold) to collect them."
      : "Frames the model was unsure about, alike ones together. Tap the right class to teach it, or discard.";
    el["uncertain-hint"].dataset.state = off ? "off" : "on";
    const missing = frames.filter((frame) => !app.prints[frame.id]);
    if (missing.length) Promise.all(missing.map(fingerprint)).then(() => { app.uncertainKey = ""; renderUncertain(); });
    const names = classEntries().map((entry) => entry.name);
    const grouped = groups(frames);
    const key = grouped.map((group) => group.map((frame) => frame.id).join(",")).join("|") + "#" + names.join("|");
    if (key === app.uncertainKey) return;
    app.uncertainKey = key;
    el["uncertain-all"].hidden = frames.length < 2;
    el["uncertain-all"].replaceChildren(cell("span", "All " + frames.length + ":"),
      ...names.map((name) => button(name, "button small", () => labelFrames(frames, name), "all-label-" + name)),
      button("Discard all", "button small quiet", () => discardFrames(frames), "all-discard"));
    el.uncertain.replaceChildren(...grouped.map((group) => {
      const frame = group[0];
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.testid = "uncertain-item";
      card.dataset.id = frame.id;
      card.dataset.count = group.length;
      card.appendChild(image(frame.file));
      const guesses = Array.from(new Set(group.map((item) => item.label))).join(" / ");
      card.appendChild(cell("div", guesses + " " + Math.round(frame.confidence * 100) + "%" +
        (group.length > 1 ? " · ×" + group.length + " alike" : "") +
        (frame.drift > 1.5 ? " · far from anything taught (" + frame.drift.toFixed(1) + "×)" : ""))).className = "guess";
      const choices = document.createElement("div");
      choices.className = "choices";
      names.forEach((name) => choices.appendChild(
        button(name, "button small", () => labelFrames(group, name), "label-" + name)));
      choices.appendChild(button("Discard", "button small quiet", () => discardFrames(group), "discard"));
      card.appendChild(choices);
      return card;
    }));
    if (!frames.length) el.uncertain.replaceChildren(cell("p", off ? "" : "Nothing unsure right now."));
  }

  function renderUsage() {
    const dataset = app.dataset;
    if (!dataset) return;
    const images = dataset.classes.reduce((sum, item) => sum + item.count, 0);
    el.usage.textContent = images + " frames · " + size(dataset.bytes) + " of " + size(dataset.limit_bytes) +
      " · " + size(dataset.free_bytes) + " free";
  }

  function render() {
    renderBanner();
    renderRecord();
    renderClasses();
    renderThumbs();
    renderUncertain();
    renderUsage();
    renderTeachButtons();
  }

  function showTab(name) {
    app.tab = name;
    document.querySelectorAll(".tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.tab === name));
    document.querySelectorAll(".pane").forEach((pane) => { pane.hidden = pane.dataset.pane !== name; });
  }

  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => showTab(tab.dataset.tab)));

  // ---- start ----------------------------------------------------------------------------------
  window.addEventListener("load", () => { el.live.src = "/stream.mjpg"; }); // an endless response: after load
  el.live.addEventListener("error", () => setTimeout(() => { el.live.src = "/stream.mjpg?n=" + Date.now(); }, 2000));
  showTab(app.tab);
  render();
  refreshDataset();
  refreshStatus();
  listen();
  setInterval(() => { if (!app.recording) refreshDataset(); }, DATASET_POLL_MS);
  setInterval(refreshStatus, STATUS_POLL_MS);
})();
