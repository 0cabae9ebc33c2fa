/* CNN Lab: keyboard and play/pause for every step-by-step page (convolution, pooling).
 *
 * A stepper is a GET form marked data-stepper="<prefix>" (with data-step / data-steps) whose
 * step controls are submit buttons named "step", so stepping itself is plain htmx and this file
 * only presses those buttons: the hidden #<prefix>-jump for any step, #<prefix>-play to play or
 * pause, and the optional #<prefix>-speed select (its choice is remembered; 700 ms without it).
 * It listens on the document, so it keeps working after htmx swaps the stepper.
 *   → / ←   next / previous step      Home / End   first / last step
 *   Space   play or pause              (ignored while typing in a form field)
 * Page scripts call window.CNNLab.stepper.goTo(prefix, k) to jump to step k (it pauses playing).
 */
(function () {
  "use strict";

  var DEFAULT_DELAY_MS = 700;
  var KEYS = {
    ArrowRight: function (s, k) { return k + 1; },
    ArrowLeft: function (s, k) { return k - 1; },
    Home: function () { return 0; },
    End: function (s) { return lastStep(s); }
  };
  // One record per prefix: playing, its timer, and the steps asked for while a request is on
  // its way (added up here and sent when it lands, so fast key presses count and no request
  // is ever aborted).
  var states = {};
  // htmx wires swapped-in content only when it settles (~20 ms later): a step asked for in
  // between would submit the bare form and reload the whole page.
  var settling = false;

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

  function state(prefix) {
    if (!states[prefix]) {
      states[prefix] = { prefix: prefix, playing: false, timer: null, pending: null, inFlight: false };
    }
    return states[prefix];
  }

  function eachState(fn) {
    for (var prefix in states) {
      if (Object.prototype.hasOwnProperty.call(states, prefix)) {
        fn(states[prefix]);
      }
    }
  }

  /* The stepper form on the page, or null. */
  function shownForm() {
    return document.querySelector("form[data-stepper]");
  }

  function form(s) {
    return document.querySelector('form[data-stepper="' + s.prefix + '"]');
  }

  function part(s, name) {
    return byId(s.prefix + "-" + name);
  }

  function shownStep(s) {
    var f = form(s);
    return f ? parseInt(f.getAttribute("data-step"), 10) : 0;
  }

  function lastStep(s) {
    var f = form(s);
    return f ? parseInt(f.getAttribute("data-steps"), 10) - 1 : 0;
  }

  function wantedStep(s) {
    return s.pending === null ? shownStep(s) : s.pending;
  }

  function send(s) {
    var jump = part(s, "jump");
    if (!jump || s.pending === null || s.inFlight) {
      return;
    }
    if (s.pending === shownStep(s)) {
      s.pending = null;
      return;
    }
    if (settling && window.htmx) {
      window.htmx.process(form(s));
    }
    jump.value = String(s.pending);
    jump.click();
  }

  /* Go to step k (clamped); false when already there. */
  function goTo(s, k) {
    var target = Math.max(0, Math.min(lastStep(s), k));
    if (target === wantedStep(s)) {
      return false;
    }
    s.pending = target;
    send(s);
    return true;
  }

  /* ---------- play / pause ---------- */

  function speedKey(s) {
    return "cnnlab-" + s.prefix + "-speed";
  }

  function delay(s) {
    var select = part(s, "speed");
    var value = select ? parseInt(select.value, 10) : DEFAULT_DELAY_MS;
    return isNaN(value) ? DEFAULT_DELAY_MS : value;
  }

  function showPlaying(s) {
    var button = part(s, "play");
    if (!button) {
      return;
    }
    button.setAttribute("aria-pressed", s.playing ? "true" : "false");
    var label = button.querySelector(".play-label");
    var icon = button.querySelector(".play-icon");
    if (label) {
      label.textContent = " " + button.getAttribute(s.playing ? "data-label-pause" : "data-label-play");
    }
    if (icon) {
      icon.textContent = s.playing ? "\u2016" : "\u25B6";
    }
  }

  function scheduleNext(s) {
    window.clearTimeout(s.timer);
    s.timer = window.setTimeout(function () {
      if (s.playing && !goTo(s, wantedStep(s) + 1)) {
        setPlaying(s, false);
      }
    }, delay(s));
  }

  function setPlaying(s, on) {
    s.playing = on;
    window.clearTimeout(s.timer);
    showPlaying(s);
    if (!on) {
      return;
    }
    if (wantedStep(s) >= lastStep(s)) {
      // At the last step, play starts again from the first one.
      goTo(s, 0);
    } else {
      scheduleNext(s);
    }
  }

  function restoreSpeed(s) {
    var select = part(s, "speed");
    if (!select) {
      return;
    }
    try {
      var saved = window.localStorage.getItem(speedKey(s));
      if (saved && select.querySelector('option[value="' + saved + '"]')) {
        select.value = saved;
      }
    } catch (err) {
      /* storage may be disabled: the default speed is fine */
    }
  }

  /* ---------- events ---------- */

  document.addEventListener("keydown", function (event) {
    var f = shownForm();
    if (event.altKey || event.ctrlKey || event.metaKey || !f || isTyping(event.target)) {
      return;
    }
    var s = state(f.getAttribute("data-stepper"));
    if (event.key === " " || event.key === "Spacebar") {
      event.preventDefault();
      setPlaying(s, !s.playing);
      return;
    }
    var move = KEYS[event.key];
    if (move) {
      event.preventDefault();
      setPlaying(s, false);
      goTo(s, move(s, wantedStep(s)));
    }
  });

  document.addEventListener("click", function (event) {
    var f = shownForm();
    if (!f) {
      return;
    }
    var s = state(f.getAttribute("data-stepper"));
    if (event.target.closest("#" + s.prefix + "-play")) {
      setPlaying(s, !s.playing);
    }
  });

  document.addEventListener("change", function (event) {
    var f = shownForm();
    if (!f) {
      return;
    }
    var s = state(f.getAttribute("data-stepper"));
    if (event.target.id === s.prefix + "-speed") {
      try {
        window.localStorage.setItem(speedKey(s), event.target.value);
      } catch (err) {
        /* see restoreSpeed() */
      }
      if (s.playing) {
        scheduleNext(s);
      }
    }
  });

  /* The stepper a request comes from, or null. */
  function stepRequest(event) {
    var elt = event.detail && event.detail.elt;
    var prefix = elt && elt.getAttribute ? elt.getAttribute("data-stepper") : null;
    return prefix ? state(prefix) : null;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var s = stepRequest(event);
    if (s) {
      s.inFlight = true;
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var s = stepRequest(event);
    if (s && !(event.detail && event.detail.successful)) {
      s.inFlight = false;
      s.pending = null;
    }
  });

  function settled(s, target) {
    restoreSpeed(s);
    if (target && target.id === s.prefix + "-lab") {
      // New settings: a new sequence of steps, so playing stops.
      s.playing = false;
      s.pending = null;
      window.clearTimeout(s.timer);
    }
    s.inFlight = false;
    showPlaying(s);
    if (s.pending !== null && s.pending !== shownStep(s)) {
      send(s);
      return;
    }
    s.pending = null;
    if (s.playing) {
      if (shownStep(s) >= lastStep(s)) {
        setPlaying(s, false);
      } else {
        scheduleNext(s);
      }
    }
  }

  document.addEventListener("htmx:afterSwap", function () {
    settling = true;
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    settling = false;
    var f = shownForm();
    if (f) {
      state(f.getAttribute("data-stepper"));
    }
    var target = event.detail && event.detail.target;
    eachState(function (s) {
      settled(s, target);
    });
  });

  window.addEventListener("popstate", function () {
    eachState(function (s) {
      setPlaying(s, false);
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    var f = shownForm();
    if (f) {
      var s = state(f.getAttribute("data-stepper"));
      restoreSpeed(s);
      showPlaying(s);
    }
  });

  window.CNNLab = window.CNNLab || {};
  window.CNNLab.stepper = {
    /* Pause and go to step k of the stepper data-stepper="prefix" (clamped). */
    goTo: function (prefix, k) {
      var s = state(prefix);
      setPlaying(s, false);
      return goTo(s, k);
    }
  };
})();
