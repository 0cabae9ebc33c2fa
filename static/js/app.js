/* CNN Lab: the little JavaScript every page shares.
 *
 * Projector mode: large type and high contrast for a classroom projector. The choice is kept
 * in localStorage so it survives reloads and page changes. `?present=1` in any address turns it
 * on (`?present=0` off) and remembers that, so a bookmark opens the lesson in projector mode; the
 * key P toggles it (not while typing in a form field). This file is loaded in <head> without
 * `defer` so the class is on <html> before the first paint (no flash of small text).
 */
(function () {
  "use strict";

  var STORAGE_KEY = "cnnlab-projector";
  var root = document.documentElement;

  function remembered() {
    try {
      return window.localStorage.getItem(STORAGE_KEY) === "on";
    } catch (err) {
      // Storage can be disabled (private mode, strict settings): projector mode still works per page.
      return false;
    }
  }

  function remember(on) {
    try {
      window.localStorage.setItem(STORAGE_KEY, on ? "on" : "off");
    } catch (err) {
      /* see remembered() */
    }
  }

  function applyProjector(on) {
    root.classList.toggle("projector", on);
    var button = document.getElementById("projector-toggle");
    if (button) {
      button.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  function toggleProjector() {
    var on = !root.classList.contains("projector");
    remember(on);
    applyProjector(on);
  }

  /* ?present=1 or ?present=0 in the address wins and is remembered, as the button's choice is. */
  function initial() {
    var asked = new URLSearchParams(window.location.search).get("present");
    if (asked === "1" || asked === "0") {
      remember(asked === "1");
      return asked === "1";
    }
    return remembered();
  }

  function isTyping(el) {
    var tag = el && el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || Boolean(el && el.isContentEditable);
  }

  applyProjector(initial());

  document.addEventListener("keydown", function (event) {
    if ((event.key === "p" || event.key === "P") && !event.altKey && !event.ctrlKey && !event.metaKey &&
        !isTyping(event.target)) {
      toggleProjector();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    applyProjector(root.classList.contains("projector"));
    var button = document.getElementById("projector-toggle");
    if (button) {
      button.addEventListener("click", toggleProjector);
    }
  });

  window.CNNLab = { toggleProjector: toggleProjector };
})();
