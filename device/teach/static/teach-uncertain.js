/* edgecam Teach view: the frames the model was unsure about (the daemon's uncertain ring, drifted frames first) and
 * the banner (loaded after teach-core.js, which lists the view's files). Alike unsure frames are grouped by an 8x8
 * fingerprint, so a group is labelled or discarded at once. The banner says what stops the page or the camera, or
 * that the scene drifted (device/drift.py). */
(function () {
  "use strict";

  const view = window.edgecamTeach;
  const { app, el, post, say, cell, image, button } = view;
  const ALIKE_BITS = 6; // unsure frames whose 64-bit fingerprints differ in at most this many bits are one group

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
      view.refreshDataset();
    }).catch((error) => say(error.message, "error"));
  }

  function discardFrames(frames) {
    post("/api/dataset/remove", { files: frames.map((frame) => frame.file) }).then((answer) => {
      say("Discarded " + answer.removed.length + " unsure frame" + (answer.removed.length === 1 ? "" : "s") + ".");
      app.uncertainKey = "";
      view.refreshDataset();
    }).catch((error) => say(error.message, "error"));
  }

  // ---- drawing --------------------------------------------------------------------------------
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
    const names = view.classEntries().map((entry) => entry.name);
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

  Object.assign(view, { renderBanner, renderUncertain });
})();
