/* edgecam Teach view: teaching a new classifier head (loaded after teach-core.js, which lists the view's files).
 * "Teach now" posts /api/teach and shows whether the new head is used, its scores against the current one, the
 * confusion matrix, per-class accuracy and the advice; "Use anyway" forces a refused head; "Undo" goes back to
 * the previous head revision. */
(function () {
  "use strict";

  const view = window.edgecamTeach;
  const { app, el, post, cell, percent } = view;

  function teach(force) {
    if (app.teaching) return;
    view.stopRecording();
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
      view.render();
      view.refreshStatus();
    });
  }

  function undo() {
    post("/api/teach/undo", {}).then((answer) => {
      const labels = answer.labels || [];
      const lost = view.classEntries().filter((entry) => entry.folder && entry.count && !labels.includes(entry.name));
      showTeach("undone", "Back to revision " + answer.revision, "Labels: " + labels.join(", ") +
        (lost.length ? " · this head does not know " + lost.map((entry) => entry.name).join(", ") + ": teach again to add" : ""));
      el.scores.hidden = el.confusion.hidden = el.advice.hidden = true;
      el["per-class"].hidden = true;
      renderTeachButtons(false);
      view.refreshStatus();
    }).catch((error) => showTeach("error", error.status === 409 ? "Nothing to undo" : "Undo failed", error.message));
  }

  // ---- drawing --------------------------------------------------------------------------------
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

  el.teach.addEventListener("click", () => teach(false));
  el.force.addEventListener("click", () => teach(true));
  el.undo.addEventListener("click", undo);

  Object.assign(view, { renderTeachButtons });
})();
