/* CNN Lab: the pooling stepper's keyboard and play/pause (the same keys as the convolution
 * stepper). Stepping is plain htmx: every step control is a submit button named "step" in
 * #pool-stepper, so this file only presses those buttons. It listens on the document, so it
 * keeps working after htmx swaps the stepper.
 *   → / ←   next / previous step      Home / End   first / last step
 *   Space   play or pause              (ignored while typing in a form field)
 */
(function () {
  "use strict";

  var DELAY_MS = 700;
  var KEYS = {
    ArrowRight: function (k) { return k + 1; },
    ArrowLeft: function (k) { return k - 1; },
    Home: function () { return 0; },
    End: function () { return lastStep(); }
  };
  var playing = false;
  var timer = null;
  // Steps asked for while a request is on its way wait here, so fast key presses count.
  var pending = null;
  var inFlight = false;

  function byId(id) {
    return document.getElementById(id);
  }

  function isTyping(el) {
    if (!el || !el.tagName) {
      return false;
    }
    var tag = el.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable) {
      return true;
    }
    if (tag !== "INPUT") {
      return false;
    }
    var type = (el.getAttribute("type") || "text").toLowerCase();
    return ["button", "submit", "reset", "checkbox", "radio", "file"].indexOf(type) === -1;
  }

  function shownStep() {
    var form = byId("pool-stepper");
    return form ? parseInt(form.getAttribute("data-step"), 10) : 0;
  }

  function lastStep() {
    var form = byId("pool-stepper");
    return form ? parseInt(form.getAttribute("data-steps"), 10) - 1 : 0;
  }

  function wantedStep() {
    return pending === null ? shownStep() : pending;
  }

  function send() {
    var jump = byId("pool-jump");
    if (!jump || pending === null || inFlight) {
      return;
    }
    if (pending === shownStep()) {
      pending = null;
      return;
    }
    jump.value = String(pending);
    jump.click();
  }

  function goTo(k) {
    var target = Math.max(0, Math.min(lastStep(), k));
    if (target === wantedStep()) {
      return false;
    }
    pending = target;
    send();
    return true;
  }

  function showPlaying() {
    var button = byId("pool-play");
    if (!button) {
      return;
    }
    button.setAttribute("aria-pressed", playing ? "true" : "false");
    var label = button.querySelector(".play-label");
    var icon = button.querySelector(".play-icon");
    if (label) {
      label.textContent = " " + button.getAttribute(playing ? "data-label-pause" : "data-label-play");
    }
    if (icon) {
      icon.textContent = playing ? "\u2016" : "\u25B6";
    }
  }

  function scheduleNext() {
    window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      if (playing && !goTo(wantedStep() + 1)) {
        setPlaying(false);
      }
    }, DELAY_MS);
  }

  function setPlaying(on) {
    playing = on;
    window.clearTimeout(timer);
    showPlaying();
    if (!on) {
      return;
    }
    if (wantedStep() >= lastStep()) {
      goTo(0);
    } else {
      scheduleNext();
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || !byId("pool-stepper") || isTyping(event.target)) {
      return;
    }
    if (event.key === " " || event.key === "Spacebar") {
      event.preventDefault();
      setPlaying(!playing);
      return;
    }
    var move = KEYS[event.key];
    if (move) {
      event.preventDefault();
      setPlaying(false);
      goTo(move(wantedStep()));
    }
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest("#pool-play")) {
      setPlaying(!playing);
    }
  });

  function isStepRequest(event) {
    var elt = event.detail && event.detail.elt;
    return Boolean(elt && elt.id === "pool-stepper");
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (isStepRequest(event)) {
      inFlight = true;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (isStepRequest(event) && !(event.detail && event.detail.successful)) {
      inFlight = false;
      pending = null;
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "pool-lab") {
      // New settings: a new sequence of steps, so playing stops.
      playing = false;
      pending = null;
      window.clearTimeout(timer);
    }
    inFlight = false;
    showPlaying();
    if (pending !== null && pending !== shownStep()) {
      send();
      return;
    }
    pending = null;
    if (playing) {
      if (shownStep() >= lastStep()) {
        setPlaying(false);
      } else {
        scheduleNext();
      }
    }
  });

  window.addEventListener("popstate", function () {
    setPlaying(false);
  });
})();
