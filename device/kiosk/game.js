/* edgecam kiosk: rock-paper-scissors. The rules as small pure functions, and one round's timeline
 * (3, 2, 1, Go!). The player's gesture is the daemon's newest (already smoothed) result at "Go!". No DOM
 * here: kiosk.js passes `latest()` (the newest result) and `render(view)` (draws the game).
 * Two players (a daemon with two regions, docs/regions.md): `players()` names them (null: one player against
 * the computer) and `latestOf(name)` gives each region's newest result; both hands are read at "Go!". */
(function () {
  "use strict";

  const GESTURES = ["rock", "paper", "scissors"];
  const BEATS = { rock: "scissors", paper: "rock", scissors: "paper" };
  const VERBS = { rock: "crushes", paper: "covers", scissors: "cut" };
  const RETRY = "Didn't catch that — try again";
  const MAX_AGE_MS = 2000; // a reading older than this is not "what the camera sees now"
  const REVEAL_MS = 4000;  // how long both choices stay over the live view

  function gestureOf(label) {
    const name = String(label || "").trim().toLowerCase();
    return GESTURES.includes(name) ? name : null;
  }

  function supports(labels) {
    const known = (labels || []).map(gestureOf);
    return GESTURES.every((gesture) => known.includes(gesture));
  }

  function outcome(player, computer) {
    if (player === computer) return "draw";
    return BEATS[player] === computer ? "win" : "lose";
  }

  function computerPick() {
    const random = new Uint32Array(1);
    crypto.getRandomValues(random);
    return GESTURES[random[0] % GESTURES.length];
  }

  function capital(word) {
    return word.charAt(0).toUpperCase() + word.slice(1);
  }

  function explain(player, computer, result) {
    if (result === "draw") return "You both chose " + player;
    const [winner, loser] = result === "win" ? [player, computer] : [computer, player];
    return capital(winner) + " " + VERBS[winner] + " " + loser;
  }

  /* The newest result -> {gesture} or {reason} (why it cannot count). */
  function read(result, now, minConfidence) {
    if (!result || now - result.receivedAt > MAX_AGE_MS) {
      return { reason: "No picture from the camera just now." };
    }
    if (result.label === "unknown") return { reason: "Hold your hand still, in front of the camera." };
    const gesture = gestureOf(result.label);
    if (!gesture) return { reason: "That looked like “" + result.label + "”: show rock, paper or scissors." };
    if (!(result.confidence >= minConfidence)) {
      const percent = Math.round(result.confidence * 100);
      return { reason: "Only " + percent + "% sure it was " + gesture + ": hold it steady." };
    }
    return { gesture: gesture };
  }

  /* Two players' readings at "Go!" -> the view's fields (a winner, a draw, or why the round cannot count). */
  function duel(names, readings) {
    const missing = readings.findIndex((reading) => !reading.gesture);
    if (missing >= 0) {
      return { outcome: "retry", title: RETRY, detail: capital(names[missing]) + ": " + readings[missing].reason,
               player: null, computer: null };
    }
    const [first, second] = readings.map((reading) => reading.gesture);
    const result = outcome(first, second);
    const title = result === "draw" ? "Draw!" : capital(names[result === "win" ? 0 : 1]) + " wins!";
    const detail = result === "draw" ? "Both chose " + first : explain(first, second, result);
    return { outcome: result, title: title, detail: detail, player: first, computer: second };
  }

  function create(options) {
    const stepMs = options.countdownMs;
    const score = { you: 0, computer: 0, draws: 0 };
    const view = { phase: "idle", count: null, reveal: false, outcome: "idle", title: null, detail: null,
                   player: null, computer: null, score: score, enabled: true, round: 0 };
    const timers = [];

    function draw() {
      options.render(view);
    }

    function finish() {
      const names = options.players ? options.players() : null;
      view.names = names;
      if (names) {
        const now = Date.now();
        Object.assign(view, duel(names, names.map((name) => read(options.latestOf(name), now, options.minConfidence))),
                      { count: "Go!" });
        if (view.outcome === "win") score.you += 1;
        else if (view.outcome === "lose") score.computer += 1;
        else if (view.outcome === "draw") score.draws += 1;
        return reveal();
      }
      const reading = read(options.latest(), Date.now(), options.minConfidence);
      view.count = "Go!";
      if (!reading.gesture) {
        Object.assign(view, { outcome: "retry", title: RETRY, detail: reading.reason, player: null, computer: null });
      } else {
        const computer = computerPick();
        const result = outcome(reading.gesture, computer);
        if (result === "win") score.you += 1;
        else if (result === "lose") score.computer += 1;
        else score.draws += 1;
        const title = { win: "You win!", lose: "Computer wins!", draw: "Draw!" }[result];
        Object.assign(view, { outcome: result, title: title, detail: explain(reading.gesture, computer, result),
                              player: reading.gesture, computer: computer });
      }
      reveal();
    }

    function reveal() {
      draw();
      timers.push(setTimeout(() => {
        Object.assign(view, { phase: "result", count: null, reveal: Boolean(view.player) });
        draw();
        timers.push(setTimeout(() => { view.reveal = false; draw(); }, REVEAL_MS));
      }, Math.max(stepMs, 400)));
    }

    function play() {
      if (view.phase === "counting" || !view.enabled) return false;
      timers.splice(0).forEach(clearTimeout);
      view.round += 1;
      Object.assign(view, { phase: "counting", count: "3", reveal: false, outcome: "counting", title: "Get ready…",
                            detail: options.players && options.players() ? "Both players: show your hands at “Go!”"
                              : "Show your hand at “Go!”", player: null, computer: null });
      draw();
      ["2", "1"].forEach((count, index) => {
        timers.push(setTimeout(() => { view.count = count; draw(); }, stepMs * (index + 1)));
      });
      timers.push(setTimeout(finish, stepMs * 3));
      return true;
    }

    function enable(enabled) {
      if (view.enabled === enabled) return;
      view.enabled = enabled;
      draw();
    }

    draw();
    return { play: play, enable: enable, view: view };
  }

  window.EdgecamGame = { GESTURES, gestureOf, supports, outcome, explain, read, duel, create, RETRY };
})();
