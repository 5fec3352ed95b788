/* edgecam Teach view: the Regions pane (docs/regions.md). Pick a region or name a new one, drag on the whole
 * frame to draw its box (saved to the state folder by POST /api/regions; the daemon reads it within a second),
 * see its crop live, record frames with a label for it, teach its own head, read the advice, undo.
 * Its own file beside the Teach view's other scripts (teach-core.js lists them): it talks to /api/regions* only. */
(function () {
  "use strict";

  const POLL_MS = 2000;
  const FRAME_MS = 1000;
  const el = {};
  ["region-pick", "region-name", "region-add", "region-frame", "region-frame-image", "region-box", "region-box-text",
   "region-save", "region-crop", "region-counts", "region-label", "region-record", "region-teach", "region-undo",
   "region-result", "region-advice"].forEach((id) => { el[id] = document.getElementById(id); });
  if (!el["region-pick"]) return;
  const state = { regions: [], selected: null, draft: null, drag: null, busy: false };

  function reply(response) {
    return response.json().catch(() => ({})).then((data) => {
      if (response.ok) return data;
      throw new Error(data.error || "the daemon answered " + response.status);
    });
  }

  function post(path, body) {
    return fetch(path, { method: "POST", cache: "no-store", headers: { "Content-Type": "application/json" },
                         body: JSON.stringify(body || {}) }).then(reply);
  }

  function say(text, advice) {
    el["region-result"].textContent = text;
    el["region-advice"].replaceChildren(...(advice || []).map((line) => {
      const item = document.createElement("li");
      item.textContent = line;
      return item;
    }));
  }

  function current() {
    return state.regions.find((region) => region.name === state.selected) || null;
  }

  function refresh() {
    return fetch("/api/regions", { cache: "no-store" }).then(reply).then((answer) => {
      state.regions = answer.regions || [];
      if (!state.selected && state.regions.length) state.selected = state.regions[0].name;
      render();
    }).catch(() => {});
  }

  function render() {
    const names = state.regions.map((region) => region.name);
    if (state.selected && !names.includes(state.selected)) names.push(state.selected); // new, not saved yet
    const options = names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      return option;
    });
    if (el["region-pick"].options.length !== options.length ||
        [...el["region-pick"].options].some((option, index) => option.value !== names[index])) {
      el["region-pick"].replaceChildren(...options);
    }
    el["region-pick"].value = state.selected || "";
    const region = current();
    const box = state.draft || (region && region.box);
    el["region-box"].hidden = !box;
    if (box) {
      ["left", "top", "width", "height"].forEach((side, index) => { el["region-box"].style[side] = box[index] * 100 + "%"; });
      el["region-box-text"].textContent = "Box " + box.map((value) => value.toFixed(2)).join(", ") +
        (state.draft ? " (not saved)" : "");
    }
    const frames = (region && region.frames) || {};
    el["region-counts"].replaceChildren(...Object.keys(frames).map((label) => {
      const item = document.createElement("li");
      item.textContent = label + ": " + frames[label];
      return item;
    }));
    const head = region && region.head;
    el["region-undo"].disabled = !head || !head.revision;
    el["region-teach"].disabled = el["region-record"].disabled = !region;
    el["region-save"].disabled = !state.draft || !state.selected;
  }

  function fraction(event) {
    const rect = el["region-frame-image"].getBoundingClientRect();
    return [Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)),
            Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height))];
  }

  el["region-frame"].addEventListener("pointerdown", (event) => {
    state.drag = fraction(event);
    el["region-frame"].setPointerCapture(event.pointerId);
  });
  el["region-frame"].addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    const [x, y] = fraction(event);
    const [x0, y0] = state.drag;
    state.draft = [Math.min(x0, x), Math.min(y0, y), Math.abs(x - x0), Math.abs(y - y0)];
    render();
  });
  el["region-frame"].addEventListener("pointerup", () => {
    state.drag = null;
    if (state.draft && (state.draft[2] < 0.01 || state.draft[3] < 0.01)) state.draft = null; // a click, not a box
    render();
  });

  el["region-pick"].addEventListener("change", () => { state.selected = el["region-pick"].value; state.draft = null; render(); });
  el["region-add"].addEventListener("click", () => {
    const name = el["region-name"].value.trim();
    if (!/^[A-Za-z0-9_-]{1,40}$/.test(name)) return say("A region's name is 1-40 letters, digits, - or _ (e.g. door).");
    state.selected = name;
    state.draft = null;
    el["region-name"].value = "";
    say("Now drag on the frame to draw " + name + "'s box, then Save box.");
    render();
  });
  el["region-save"].addEventListener("click", () => {
    const regions = state.regions.filter((region) => region.name !== state.selected).map((region) => ({
      name: region.name, box: region.box, repeat: region.repeat,
      ...(region.smoothing !== undefined ? { smoothing: region.smoothing } : {}),
      ...(region.threshold !== undefined ? { threshold: region.threshold } : {}) }));
    const previous = current();
    regions.push({ name: state.selected, box: state.draft, repeat: previous ? previous.repeat : 1 });
    post("/api/regions", { regions: regions }).then(() => {
      state.draft = null;
      say("Saved: the daemon reads the new box within a second.");
      return refresh();
    }).catch((error) => say(error.message));
  });
  el["region-record"].addEventListener("click", () => {
    const label = el["region-label"].value.trim();
    post("/api/regions/capture", { region: state.selected, label: label })
      .then((answer) => { say("Recorded " + label + " for " + answer.region + " (" + answer.count + ")."); return refresh(); })
      .catch((error) => say(error.message));
  });
  el["region-teach"].addEventListener("click", () => {
    say("Teaching " + state.selected + "…");
    post("/api/regions/teach", { region: state.selected }).then((answer) => {
      const verdict = answer.accepted ? "Accepted: now head revision " + answer.revision
        : answer.unchanged ? "Unchanged: still head revision " + answer.revision : "Refused: still revision " + answer.revision;
      say(verdict + " (" + Math.round((answer.accuracy_new || 0) * 100) + "% cross-validated). " + (answer.reason || ""),
          answer.advice);
      return refresh();
    }).catch((error) => say(error.message));
  });
  el["region-undo"].addEventListener("click", () => {
    post("/api/regions/undo", { region: state.selected })
      .then((answer) => { say("Now head revision " + answer.revision + " for " + answer.region + "."); return refresh(); })
      .catch((error) => say(error.message));
  });

  function pictures() {
    const pane = el["region-frame"].closest(".pane");
    if (pane && pane.hidden) return;
    el["region-frame-image"].src = "/api/regions/frame?t=" + Date.now();
    if (current()) el["region-crop"].src = "/api/regions/crop?region=" + encodeURIComponent(state.selected) + "&t=" + Date.now();
  }

  refresh();
  setInterval(refresh, POLL_MS);
  setInterval(pictures, FRAME_MS);
})();
