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
  const THUMBS = 8;
  const $ = (id) => document.getElementById(id);
  const el = {};
  ["banner", "back", "head", "outputs", "view", "live", "now-label", "now-confidence", "recording-mark", "record",
   "record-text", "message", "classes", "add-form", "add-name", "thumbs", "usage", "download", "uncertain",
   "uncertain-count", "teach", "force", "undo", "teach-result", "teach-title", "teach-detail", "scores",
   "accuracy-new", "accuracy-current", "confusion"].forEach((id) => { el[id] = $(id); });

  const app = {
    dataset: null, status: null, selected: params.get("label") || null, tab: "classes",
    recording: false, session: 0, teaching: false, offline: false, unauthorised: false,
    classesKey: "", thumbsKey: "", uncertainKey: "",
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

  function refreshDataset() {
    return get("/api/dataset").then((dataset) => {
      app.offline = app.unauthorised = false;
      app.dataset = dataset;
      render();
    }).catch(trouble);
  }

  function refreshStatus() {
    return get("/status").then((status) => {
      app.offline = app.unauthorised = false;
      app.status = status;
      if (status.last_result) showReading(status.last_result);
      renderHead();
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
    if (entry) {
      entry.count = answer.count;
      entry.latest = [{ file: answer.file }].concat(entry.latest || []).slice(0, THUMBS);
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
    const done = () => { app.selected = name; app.thumbsKey = ""; render(); };
    if (folder) return done();
    return post("/api/classes", { name: name }).then(() => { done(); return refreshDataset(); })
      .catch((error) => say(error.message, "error"));
  }

  el["add-form"].addEventListener("submit", (event) => {
    event.preventDefault();
    const name = el["add-name"].value.trim();
    if (!name) return;
    post("/api/classes", { name: name }).then((answer) => {
      el["add-name"].value = "";
      el["add-name"].blur();
      app.selected = answer.name || name;
      say("Added class " + app.selected + ": hold the record button to fill it.");
      return refreshDataset();
    }).catch((error) => say(error.message, "error"));
  });

  function deleteShot(file) {
    post("/api/dataset/delete", { file: file }).then(() => {
      const entry = app.dataset.classes.find((item) => (item.latest || []).some((shot) => shot.file === file));
      if (entry) {
        entry.latest = entry.latest.filter((shot) => shot.file !== file);
        entry.count = Math.max(0, entry.count - 1);
      }
      app.thumbsKey = "";
      say("Deleted " + file);
      render();
      refreshDataset();
    }).catch((error) => say(error.message, "error"));
  }

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

  // ---- unsure frames -------------------------------------------------------------------------
  function labelUncertain(id, label) {
    post("/api/uncertain/label", { id: id, label: label }).then((answer) => {
      say("Added to " + label + ": " + answer.file);
      app.uncertainKey = "";
      refreshDataset();
    }).catch((error) => say(error.message, "error"));
  }

  function discardUncertain(id) {
    post("/api/uncertain/discard", { id: id }).then(() => { app.uncertainKey = ""; refreshDataset(); })
      .catch((error) => say(error.message, "error"));
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
      const title = answer.accepted ? "Using the new head (revision " + answer.revision + ")"
        : "Kept the current head";
      const detail = (answer.reason || "") + " · " + answer.trained + " frames trained, " + answer.heldout +
        " held out · " + Number(answer.seconds || 0).toFixed(1) + " s";
      showTeach(answer.accepted ? "accepted" : "refused", title, detail);
      showScores(answer);
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
      showTeach("undone", "Back to revision " + answer.revision, "Labels: " + (answer.labels || []).join(", "));
      el.scores.hidden = el.confusion.hidden = true;
      renderTeachButtons(false);
      refreshStatus();
    }).catch((error) => showTeach("error", error.status === 409 ? "Nothing to undo" : "Undo failed", error.message));
  }

  function showTeach(state, title, detail) {
    el["teach-result"].dataset.state = state;
    el["teach-title"].textContent = title;
    el["teach-detail"].textContent = detail || "";
  }

  function renderTeachButtons(refused) {
    el.force.hidden = !refused;
    el.teach.disabled = el.undo.disabled = el.force.disabled = app.teaching;
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
    el.message.className = "message " + (kind || "");
  }

  function showReading(result) {
    el["now-label"].textContent = result.label;
    el["now-label"].dataset.label = result.label;
    el["now-confidence"].textContent = Math.round((result.confidence || 0) * 100) + "%";
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
    const entry = app.dataset && app.dataset.classes.find((item) => item.name === app.selected);
    const shots = ((entry && entry.latest) || []).slice().sort((a, b) => (a.file < b.file ? 1 : -1)); // newest first
    const key = app.selected + "|" + shots.map((shot) => shot.file).join("|");
    if (key === app.thumbsKey) return;
    app.thumbsKey = key;
    el.thumbs.replaceChildren(...shots.map((shot) => {
      const item = document.createElement("figure");
      item.className = "thumb";
      item.dataset.file = shot.file;
      item.appendChild(image(shot.file));
      item.appendChild(button("✕", "delete", () => deleteShot(shot.file), "delete"));
      return item;
    }));
    if (!shots.length) {
      el.thumbs.replaceChildren(cell("p", app.selected ? "No frames of " + app.selected + " yet."
        : "Pick a class above, or add one."));
      el.thumbs.firstChild.className = "hint";
    }
  }

  function renderUncertain() {
    const frames = (app.dataset && app.dataset.uncertain) || [];
    el["uncertain-count"].textContent = frames.length;
    const names = classEntries().map((entry) => entry.name);
    const key = frames.map((frame) => frame.id).join("|") + "#" + names.join("|");
    if (key === app.uncertainKey) return;
    app.uncertainKey = key;
    el.uncertain.replaceChildren(...frames.map((frame) => {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.testid = "uncertain-item";
      card.dataset.id = frame.id;
      card.appendChild(image(frame.file));
      card.appendChild(cell("div", frame.label + " " + Math.round(frame.confidence * 100) + "%")).className = "guess";
      const choices = document.createElement("div");
      choices.className = "choices";
      names.forEach((name) => choices.appendChild(
        button(name, "button small", () => labelUncertain(frame.id, name), "label-" + name)));
      choices.appendChild(button("Discard", "button small quiet", () => discardUncertain(frame.id), "discard"));
      card.appendChild(choices);
      return card;
    }));
    if (!frames.length) el.uncertain.replaceChildren(cell("p", "Nothing unsure right now."));
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
    if (!app.teaching) el.teach.disabled = el.undo.disabled = false;
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
