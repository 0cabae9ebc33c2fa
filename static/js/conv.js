/* CNN Lab: the convolution stepper's keyboard, play/pause and term highlighting.
 *
 * Stepping itself is plain htmx: every step control is a submit button named "step" in the
 * #conv-stepper form, so this file only presses those buttons. It is loaded once per page
 * and listens on the document, so it keeps working after htmx swaps the stepper.
 *   → / ←   next / previous step      Home / End   first / last step
 *   Space   play or pause              (ignored while typing in a form field)
 */
(function () {
  "use strict";

  var SPEED_KEY = "cnnlab-conv-speed";
  var KEYS = {
    ArrowRight: function (k) { return k + 1; },
    ArrowLeft: function (k) { return k - 1; },
    Home: function () { return 0; },
    End: function () { return lastStep(); }
  };
  var playing = false;
  var timer = null;
  // Steps asked for while a request is on its way are added up here and sent when it lands,
  // so fast key presses count and no request is ever aborted.
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

  function stepper() {
    return byId("conv-stepper");
  }

  function shownStep() {
    var form = stepper();
    return form ? parseInt(form.getAttribute("data-step"), 10) : 0;
  }

  function lastStep() {
    var form = stepper();
    return form ? parseInt(form.getAttribute("data-steps"), 10) - 1 : 0;
  }

  function wantedStep() {
    return pending === null ? shownStep() : pending;
  }

  function send() {
    var jump = byId("conv-jump");
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

  /* Go to step k (clamped); false when already there. */
  function goTo(k) {
    var target = Math.max(0, Math.min(lastStep(), k));
    if (target === wantedStep()) {
      return false;
    }
    pending = target;
    send();
    return true;
  }

  /* ---------- play / pause ---------- */

  function delay() {
    var select = byId("conv-speed");
    var value = select ? parseInt(select.value, 10) : 700;
    return isNaN(value) ? 700 : value;
  }

  function showPlaying() {
    var button = byId("conv-play");
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
    }, delay());
  }

  function setPlaying(on) {
    playing = on;
    window.clearTimeout(timer);
    showPlaying();
    if (!on) {
      return;
    }
    if (wantedStep() >= lastStep()) {
      // At the last step, play starts again from the first one.
      goTo(0);
    } else {
      scheduleNext();
    }
  }

  function restoreSpeed() {
    var select = byId("conv-speed");
    if (!select) {
      return;
    }
    try {
      var saved = window.localStorage.getItem(SPEED_KEY);
      if (saved && select.querySelector('option[value="' + saved + '"]')) {
        select.value = saved;
      }
    } catch (err) {
      /* storage may be disabled: the default speed is fine */
    }
  }

  /* ---------- term highlighting: one term lights up its input, weight, product and text ---------- */

  function linked(tag) {
    var stepper = byId("conv-stepper");
    return stepper ? stepper.querySelectorAll('[data-t="' + tag + '"]') : [];
  }

  function highlight(event, on) {
    var target = event.target.closest ? event.target.closest("[data-t]") : null;
    if (!target) {
      return;
    }
    var cells = linked(target.getAttribute("data-t"));
    for (var i = 0; i < cells.length; i++) {
      cells[i].classList.toggle("is-linked", on);
    }
  }

  /* ---------- a click on a large output picture jumps to that cell ---------- */

  function jumpFromPicture(svg, event) {
    var box = svg.getBoundingClientRect();
    var wo = parseInt(svg.getAttribute("data-wo"), 10);
    var ho = parseInt(svg.getAttribute("data-ho"), 10);
    var first = parseInt(svg.getAttribute("data-first"), 10);
    var col = Math.min(wo - 1, Math.max(0, Math.floor(((event.clientX - box.left) / box.width) * wo)));
    var row = Math.min(ho - 1, Math.max(0, Math.floor(((event.clientY - box.top) / box.height) * ho)));
    goTo(first + row * wo + col);
  }

  /* ---------- language links and the upload form follow the address htmx pushes ---------- */

  function followAddress() {
    var links = document.querySelectorAll(".lang-switch a[hreflang]");
    for (var i = 0; i < links.length; i++) {
      var params = new URLSearchParams(window.location.search);
      params.set("lang", links[i].getAttribute("hreflang"));
      links[i].setAttribute("href", window.location.pathname + "?" + params.toString());
    }
    // A refused upload brings back exactly this view, step included.
    var state = document.querySelector("#conv-upload input[name=state]");
    if (state) {
      var current = new URLSearchParams(window.location.search);
      current.delete("lang");
      state.value = current.toString();
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || !byId("conv-stepper") || isTyping(event.target)) {
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
    if (event.target.closest("#conv-play")) {
      setPlaying(!playing);
      return;
    }
    var svg = event.target.closest("svg.picture-map--output");
    if (svg) {
      setPlaying(false);
      jumpFromPicture(svg, event);
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id === "conv-speed") {
      try {
        window.localStorage.setItem(SPEED_KEY, event.target.value);
      } catch (err) {
        /* see restoreSpeed() */
      }
      if (playing) {
        scheduleNext();
      }
    }
  });

  document.addEventListener("input", function (event) {
    // The slider's number follows the thumb; the request goes when it is released (change).
    if (event.target.id === "conv-size") {
      var output = byId("conv-size-value");
      if (output) {
        output.textContent = event.target.value;
      }
    }
  });

  document.addEventListener("mouseover", function (event) {
    highlight(event, true);
  });
  document.addEventListener("mouseout", function (event) {
    highlight(event, false);
  });

  function isStepRequest(event) {
    var elt = event.detail && event.detail.elt;
    return Boolean(elt && elt.id === "conv-stepper");
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
    restoreSpeed();
    if (target && target.id === "conv-lab") {
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

  document.addEventListener("htmx:pushedIntoHistory", followAddress);
  document.addEventListener("htmx:replacedInHistory", followAddress);
  window.addEventListener("popstate", function () {
    setPlaying(false);
  });

  document.addEventListener("DOMContentLoaded", function () {
    restoreSpeed();
    showPlaying();
  });
})();
