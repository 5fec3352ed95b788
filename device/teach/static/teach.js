/* edgecam Teach view: the start (loaded last of the view's files, listed in teach-core.js). Reads /api/dataset and
 * /status on a timer and the live reading from /events; draws the live reading, the top bar (head revision,
 * outputs) and the whole page; switches the tabs; shows /stream.mjpg. */
(function () {
  "use strict";

  const view = window.edgecamTeach;
  const { app, el, get, trouble, cell, percent } = view;
  const DATASET_POLL_MS = 4000;
  const STATUS_POLL_MS = 3000;

  function refreshDataset() {
    return get("/api/dataset").then((dataset) => {
      app.offline = app.unauthorised = false;
      app.dataset = dataset;
      view.syncPage();
      render();
    }).catch(trouble);
  }

  function refreshStatus() {
    return get("/status").then((status) => {
      app.offline = app.unauthorised = false;
      app.status = status;
      if (status.last_result) showReading(status.last_result);
      renderHead();
      view.renderTeachButtons();
      view.renderBanner();
    }).catch(trouble);
  }

  function listen() {
    const events = new EventSource("/events");
    events.addEventListener("result", (event) => showReading(JSON.parse(event.data)));
    events.addEventListener("error", () => { events.close(); setTimeout(listen, 2000); });
  }

  // ---- drawing --------------------------------------------------------------------------------
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

  function render() {
    view.renderBanner();
    view.renderRecord();
    view.renderClasses();
    view.renderThumbs();
    view.renderUncertain();
    view.renderUsage();
    view.renderTeachButtons();
  }

  function showTab(name) {
    app.tab = name;
    document.querySelectorAll(".tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.tab === name));
    document.querySelectorAll(".pane").forEach((pane) => { pane.hidden = pane.dataset.pane !== name; });
  }

  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => showTab(tab.dataset.tab)));
  Object.assign(view, { refreshDataset, refreshStatus, render });

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
