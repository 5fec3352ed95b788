/* edgecam kiosk page: live view, current reading, probability bars and the game, fed by the daemon's
 * /events stream (Server-Sent Events). When the stream drops it reconnects with backoff (1 s doubling to
 * 10 s) and re-reads /status; when the daemon is degraded the banner says so in plain words.
 * Query parameters: token (once: the daemon answers with a same-site cookie), countdown (ms per 3-2-1 step), min_confidence. */
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  // Opened as ?token=TOKEN, the page got the token back as an HttpOnly, same-site cookie that every request
  // of this page carries: take it out of the address bar, so it is in no later URL, log or bookmark.
  if (params.has("token")) {
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : "") + location.hash);
  }
  const COUNTDOWN_MS = numberParam("countdown", 900, 50, 5000);
  const MIN_CONFIDENCE = numberParam("min_confidence", 0.6, 0, 2); // above 1: never sure enough
  const STALE_MS = 5000;          // running, yet no result for this long: say so
  const STATUS_POLL_MS = 5000;    // also a heartbeat: a half-dead stream is noticed
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 10000;
  const FPS_WINDOW_MS = 2500;

  const el = {};
  ["banner", "live", "view-empty", "label", "label-icon", "confidence", "bars", "countdown", "game", "play",
   "result", "result-title", "result-detail", "reveal", "you-icon", "you-choice", "computer-icon", "computer-choice",
   "score-you", "score-computer", "score-draws", "outputs", "you-who", "computer-who", "tally-you",
   "tally-computer"].forEach((id) => { el[id] = document.getElementById(id); });
  ["banner-text", "banner-detail", "model", "fps", "state", "state-text"].forEach((id) => {
    el[id] = document.querySelector('[data-testid="' + id + '"]');
  });

  const app = {
    connected: false, everConnected: false, unauthorised: false,
    status: null, latest: null, labels: [], recent: [], pageLoaded: false, regions: {}, regionNames: [],
  };
  let events = null;
  let backoff = BACKOFF_MIN_MS;
  let reconnectTimer = null;
  let liveAttempt = 0;
  let liveTimer = null;
  const game = window.EdgecamGame.create({
    countdownMs: COUNTDOWN_MS, minConfidence: MIN_CONFIDENCE, latest: () => app.latest, render: renderGame,
    players: () => (app.regionNames.length === 2 ? app.regionNames.slice() : null), // two regions: two players
    latestOf: (name) => app.regions[name] || null,
  });

  function numberParam(name, fallback, min, max) {
    const value = Number(params.get(name));
    return params.has(name) && Number.isFinite(value) ? Math.min(max, Math.max(min, value)) : fallback;
  }


  // ---- talking to the daemon ----------------------------------------------------------------
  function connect() {
    clearTimeout(reconnectTimer);
    if (events) events.close();
    events = new EventSource("/events");
    events.addEventListener("open", () => {
      backoff = BACKOFF_MIN_MS;
      app.connected = app.everConnected = true;
      app.unauthorised = false;
      refreshStatus();
      startLive();
      render();
    });
    events.addEventListener("status", (event) => applyStatus(JSON.parse(event.data)));
    events.addEventListener("result", (event) => applyResult(JSON.parse(event.data), Date.now()));
    events.addEventListener("output_failed", refreshStatus);
    events.addEventListener("error", dropped);
  }

  function dropped() {
    if (events) events.close();
    events = null;
    app.connected = false;
    render();
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    refreshStatus(); // tells a missing token apart from a daemon that is down
  }

  function refreshStatus() {
    return fetch("/status", { cache: "no-store" })
      .then((response) => {
        app.unauthorised = response.status === 401;
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(applyStatus)
      .catch(() => {
        if (app.connected) dropped(); // the stream looked alive but the daemon does not answer
        else render();
      });
  }

  function applyStatus(status) {
    const current = app.status;
    if (current && current.pid === status.pid && status.uptime_s < current.uptime_s) return; // a late reply
    app.status = status;
    const names = (status.regions || []).map((region) => region.name);
    if (names.join("\n") !== app.regionNames.join("\n")) {
      app.regionNames = names;
      renderGame(game.view); // the players' names (two regions) or You / Computer
    }
    if (status.model && status.model.labels) setLabels(status.model.labels);
    const last = status.last_result;
    if (last && (!app.latest || last.time > app.latest.time)) {
      applyResult(last, status.state === "running" ? Date.now() : 0);
    } else {
      render();
    }
  }

  function applyResult(result, receivedAt) {
    result.receivedAt = receivedAt;
    if (result.region) {  // regions: each region's newest result; the reading shows the first region's
      app.regions[result.region] = result;
      if (app.regionNames.length && result.region !== app.regionNames[0]) return;
    }
    app.latest = result;
    if (receivedAt) app.recent.push({ frame: result.frame, time: result.time, at: receivedAt });
    if (!app.labels.length) setLabels(Object.keys(result.probabilities || {}));
    render();
  }

  function fps(now) {
    app.recent = app.recent.filter((item) => now - item.at <= FPS_WINDOW_MS);
    if (!app.connected || !app.status || app.status.state !== "running") return 0;
    const recent = app.recent;
    if (recent.length >= 2) {
      const first = recent[0];
      const last = recent[recent.length - 1];
      // frame numbers, so events a lagging browser missed still count
      if (last.time > first.time && last.frame > first.frame) {
        return (last.frame - first.frame) / (last.time - first.time);
      }
    }
    const status = app.status;
    return recent.length ? status.fps : 0;
  }

  // ---- the live view -------------------------------------------------------------------------
  function startLive() {
    clearTimeout(liveTimer);
    if (!app.pageLoaded || document.hidden) return;
    liveAttempt += 1;
    el.live.src = "/stream.mjpg?n=" + liveAttempt;
  }

  function stopLive() {
    clearTimeout(liveTimer);
    el.live.removeAttribute("src"); // the daemon stops encoding for us
  }

  el.live.addEventListener("load", () => {
    el.live.classList.remove("empty");
    el["view-empty"].hidden = true;
  });
  el.live.addEventListener("error", () => {
    clearTimeout(liveTimer);
    if (app.connected) liveTimer = setTimeout(startLive, 2000);
  });
  el.live.classList.add("empty");
  document.addEventListener("visibilitychange", () => (document.hidden ? stopLive() : startLive()));
  window.addEventListener("load", () => {
    app.pageLoaded = true; // an endless MJPEG response must not hold up the page's load event
    if (app.connected) startLive();
  });

  // ---- drawing --------------------------------------------------------------------------------
  function setLabels(labels) {
    if (labels.join("\n") === app.labels.join("\n")) return;
    app.labels = labels.slice();
    el.bars.replaceChildren(...labels.map((label) => {
      const item = document.createElement("li");
      item.className = "bar";
      item.dataset.testid = "bar-" + label;
      item.dataset.label = label;
      item.dataset.percent = "0";
      const name = document.createElement("span");
      name.className = "bar-name";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.appendChild(fill);
      const percent = document.createElement("span");
      percent.className = "bar-percent";
      percent.dataset.testid = "percent-" + label;
      percent.textContent = "–";
      item.append(name, track, percent);
      return item;
    }));
    const playable = window.EdgecamGame.supports(labels);
    el.game.classList.toggle("disabled", !playable);
    game.enable(playable);
  }

  function bannerMessage(now) {
    const status = app.status;
    if (!app.connected) {
      if (app.unauthorised) return ["This page needs the daemon's token", "Open it as /?token=YOUR_TOKEN", "warn"];
      if (!app.everConnected) return ["Connecting to the camera service…", "", "info"];
      return ["Lost contact with the camera service — reconnecting…",
              "This page recovers by itself when it is back.", "warn"];
    }
    if (!status) return null;
    const source = status.source || {};
    if (status.state === "reloading") return ["Loading a new model…", "", "info"];
    if (status.state === "degraded") {
      const retries = source.retries ? " (attempt " + source.retries + ")" : "";
      return ["Camera lost — reconnecting…", (source.error || "") + retries, "warn"];
    }
    if (source.state === "ended") return ["The replay has ended", "", "info"];
    if (status.state === "starting") return ["Starting the camera…", "", "info"];
    if (app.latest && app.latest.receivedAt && now - app.latest.receivedAt > STALE_MS) {
      return ["The camera has stopped sending pictures — waiting…", "", "warn"];
    }
    return null;
  }

  function stateName() {
    if (!app.connected) return ["offline", "Offline"];
    const state = (app.status && app.status.state) || "starting";
    const names = { running: "Live", degraded: "Camera lost", reloading: "Loading model", starting: "Starting" };
    return [state, names[state] || state];
  }

  function render() {
    const now = Date.now();
    const message = bannerMessage(now);
    el.banner.hidden = !message;
    if (message) {
      el["banner-text"].textContent = message[0];
      el["banner-detail"].textContent = message[1];
      el.banner.className = "banner " + message[2];
    }
    const [state, stateText] = stateName();
    el.state.dataset.state = state;
    el["state-text"].textContent = stateText;
    const result = app.latest;
    const stale = !result || !result.receivedAt || Boolean(message && message[2] === "warn");
    el.live.classList.toggle("stale", stale && app.everConnected);
    const status = app.status;
    el.model.textContent = (result && result.model) || (status && status.model && status.model.format) || "–";
    el.fps.textContent = fps(now).toFixed(1);
    drawReading(result, stale);
    drawOutputs(status && status.outputs);
  }

  // One small line with the health of the outputs that leave this machine (MQTT, webhook) and of any
  // output that turned itself off (a full disk): /status "outputs". Nothing shows when there are none.
  function describeOutputs(outputs) {
    const parts = [];
    let health = "ok";
    Object.keys(outputs || {}).forEach((name) => {
      const output = outputs[name];
      if (output.state === "failed" || output.state === "disabled") {
        health = "warn";
        parts.push(name + " off: " + (output.last_error || output.reason || output.state));
      } else if (output.connected === true) {
        parts.push(name + " connected");
      } else if (output.connected === false) {
        health = "warn";
        parts.push(name + " not connected" + (output.last_error ? " (" + output.last_error + ")" : ""));
      }
    });
    return [parts.join(" · "), health];
  }

  function drawOutputs(outputs) {
    const [text, health] = describeOutputs(outputs);
    el.outputs.hidden = !text;
    el.outputs.textContent = text;
    el.outputs.dataset.health = health;
  }

  function drawReading(result, stale) {
    const label = result ? result.label : "…";
    el.label.textContent = label;
    el.label.dataset.label = result ? result.label : "";
    el.label.classList.toggle("unknown", label === "unknown");
    el.label.parentElement.classList.toggle("stale", stale);
    const gesture = window.EdgecamGame.gestureOf(label);
    el["label-icon"].firstElementChild.setAttribute("href", "#icon-" + (gesture || "question"));
    el.confidence.textContent = result ? Math.round(result.confidence * 100) + "% sure" +
      (result.label === "unknown" ? " (best guess: " + result.raw_label + ")" : "") : " ";
    const probabilities = (result && result.probabilities) || {};
    let top = null;
    app.labels.forEach((name) => {
      if (top === null || (probabilities[name] || 0) > (probabilities[top] || 0)) top = name;
    });
    Array.from(el.bars.children).forEach((item) => {
      const value = probabilities[item.dataset.label];
      const percent = typeof value === "number" ? value * 100 : 0;
      item.dataset.percent = percent.toFixed(2);
      item.classList.toggle("top", result !== null && item.dataset.label === top);
      item.querySelector(".bar-fill").style.width = Math.min(100, percent).toFixed(1) + "%";
      item.querySelector(".bar-percent").textContent = typeof value === "number" ? Math.round(percent) + "%" : "–";
    });
  }

  function renderGame(view) {
    el.countdown.hidden = view.count === null;
    el.countdown.textContent = view.count || "";
    el.countdown.classList.toggle("go", view.count === "Go!");
    el.play.disabled = view.phase === "counting" || !view.enabled;
    el.result.dataset.outcome = view.outcome;
    el.result.dataset.round = view.round;
    el["result-title"].textContent = view.enabled
      ? view.title || "Show rock, paper or scissors, then press Play"
      : "The game needs a model that knows rock, paper and scissors.";
    el.reveal.hidden = !view.reveal;
    if (view.player) {
      el["you-choice"].textContent = view.player;
      el["computer-choice"].textContent = view.computer;
      el["you-icon"].firstElementChild.setAttribute("href", "#icon-" + view.player);
      el["computer-icon"].firstElementChild.setAttribute("href", "#icon-" + view.computer);
    }
    el["result-detail"].textContent = view.detail || "";
    const names = view.names || (app.regionNames.length === 2 ? app.regionNames : ["You", "Computer"]);
    [el["you-who"].textContent, el["computer-who"].textContent] = names;
    [el["tally-you"].textContent, el["tally-computer"].textContent] = names;
    el["score-you"].textContent = view.score.you;
    el["score-computer"].textContent = view.score.computer;
    el["score-draws"].textContent = view.score.draws;
  }

  // ---- input: button (mouse and touch), Space and Enter ---------------------------------------
  el.play.addEventListener("click", () => game.play());
  document.addEventListener("keydown", (event) => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) {
      event.preventDefault();
      game.play();
    }
  });

  document.getElementById("teach-link").href = "/teach"; // the Teach view (device/teach/): the token cookie goes along
  setInterval(() => { if (app.connected) refreshStatus(); }, STATUS_POLL_MS);
  setInterval(render, 1000); // fps decays and the stale-camera message appears without new events
  connect();
  render();
})();
