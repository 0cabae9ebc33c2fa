/* CNN Lab: the little JavaScript every page shares.
 *
 * Projector mode: large type and high contrast for a classroom projector. The choice is kept
 * in localStorage so it survives reloads and page changes. This file is loaded in <head>
 * without `defer` so the class is on <html> before the first paint (no flash of small text).
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

  applyProjector(remembered());

  document.addEventListener("DOMContentLoaded", function () {
    applyProjector(remembered());
    var button = document.getElementById("projector-toggle");
    if (button) {
      button.addEventListener("click", toggleProjector);
    }
  });

  window.CNNLab = { toggleProjector: toggleProjector };
})();
