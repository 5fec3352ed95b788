/* edgecam Teach view: recording and the class list (loaded after teach-core.js, which lists the view's files).
 * Recording: while the record button, the live view or Space is held, POST /api/capture repeats at up to the
 * daemon's capture_fps. A class is picked, added, renamed or deleted (undoable) here. */
(function () {
  "use strict";

  const view = window.edgecamTeach;
  const { PAGE, app, el, post, say, button } = view;
  const NAME = /^[A-Za-z0-9_-]{1,40}$/; // the daemon's class-name rule, checked before asking it

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
          view.refreshDataset();
          return;
        }
      }
      await sleep(Math.max(0, 1000 / captureFps() - (performance.now() - started)));
    }
    if (app.session !== session || app.recording) return; // a newer hold owns the message
    if (saved) say("Saved " + saved + " frame" + (saved === 1 ? "" : "s") + " of " + label + ".");
    view.refreshDataset();
  }

  function captured(label, answer, saved) {
    const entry = app.dataset && app.dataset.classes.find((item) => item.name === label);
    if (entry) entry.count = answer.count;
    if (app.page.label === label && app.page.offset === 0) { // the newest page shows the new frame at once
      app.page.files = [answer.file].concat(app.page.files).slice(0, PAGE);
      app.page.total = answer.count;
    }
    if (app.recording) say("Recording " + label + ": " + saved + " saved (" + answer.count + " in all)");
    view.render();
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

  // ---- classes: pick, add, rename, delete (undoable) ----------------------------------------
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
      view.loadPage(0);
      view.render();
    };
    if (folder) return done();
    return post("/api/classes", { name: name }).then(() => { done(); return view.refreshDataset(); })
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
      return view.refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  el["rename-class"].addEventListener("click", () => {
    const old = app.selected;
    const name = (window.prompt("New name for " + old + " (letters, digits, - or _):", old) || "").trim();
    if (!name || name === old) return;
    const problem = nameProblem(name);
    if (problem) return say(problem, "error");
    post("/api/classes/rename", { name: old, to: name }).then(() => {
      app.selected = name;
      say("Renamed " + old + " to " + name + ".");
      view.loadPage(0);
      return view.refreshDataset();
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
      view.offerUndo(answer.undo, "Deleted class " + name + ".");
      app.page = { label: null, offset: 0, total: 0, files: [] };
      return view.refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

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

  Object.assign(view, { stopRecording, renderRecord, classEntries, renderClasses });
})();
