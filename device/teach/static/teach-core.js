/* edgecam Teach view: record labelled camera frames, label the frames the model was unsure about, teach a new
 * classifier head and undo it. Talks only to the daemon (the Teach HTTP API, /status, /events, /stream.mjpg).
 * Query parameter: token (once: the daemon answers with a same-site cookie).
 *
 * The view is a few plain scripts that teach.html loads in this order, sharing one object, window.edgecamTeach:
 *   teach-core.js       this file: the page's state, its elements, the API client, small drawing helpers
 *   teach-capture.js    recording (hold to record) and the class list (add, pick, rename, delete)
 *   teach-grid.js       the data set's grid: pages of a class, selection, moving and deleting many, undo
 *   teach-uncertain.js  the unsure frames (alike ones grouped) and the banner (contact, recording, drift)
 *   teach-head.js       teaching a new head, its scores and advice, undo to the previous head
 *   teach.js            the live reading, the top bar, the tabs, and the start: polling and /events
 *   regions.js          the Regions pane, on its own (it talks to /api/regions* only)
 * A file calls another file's function through the shared object (view.loadPage(0)), looked up at call time. */
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  // Opened as ?token=TOKEN, the page got the token back as an HttpOnly, same-site cookie that every request
  // of this page carries: take it out of the address bar, so it is in no later URL, log or bookmark.
  if (params.has("token")) {
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
  }
  const PAGE = 24; // frames per page of the grid
  const MESSAGE_MS = 8000; // a status line goes away after this, so it never goes stale
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

  const view = window.edgecamTeach = { PAGE, app, el };

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
    view.renderBanner();
  }

  // ---- drawing helpers ------------------------------------------------------------------------
  function say(text, kind) {
    el.message.textContent = text;
    el.message.title = text; // the whole line, when it is cut to the width
    el.message.className = "message " + (kind || "");
    clearTimeout(app.messageTimer);
    app.messageTimer = setTimeout(() => { el.message.textContent = ""; el.message.title = ""; }, MESSAGE_MS);
  }

  function cell(tag, text) {
    const item = document.createElement(tag);
    item.textContent = text;
    return item;
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

  function percent(value) { return typeof value === "number" ? (value * 100).toFixed(1) + "%" : "–"; }

  Object.assign(view, { get, post, trouble, say, cell, image, button, percent });
})();
