/* CNN Lab: where /pipeline's explanation box stands.
 *
 * The box (#pipeline-explain) is part of the page's flow, never laid over the grids: a click
 * on a number moves it right under that number's row before htmx swaps its contents in, and
 * then scrolls just enough to show it whole. On load (and after the whole lab is redrawn) it
 * goes under the number the URL names. Without JavaScript it stays after the loss.
 */
(function () {
  "use strict";

  var NUMBER = '#pipeline-forward button[name="show"]';
  var CURRENT = '#pipeline-forward [aria-current="true"], #pipeline-forward .is-current > button, #pipeline-forward button.is-current';
  var reveal = false;

  function placeUnder(button) {
    var box = document.getElementById("pipeline-explain");
    var row = button ? button.closest(".pl-row, .pl-stage") : null;
    if (box && row && row.nextElementSibling !== box) {
      row.after(box);
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(NUMBER) : null;
    if (button) {
      placeUnder(button);
      reveal = true;
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    placeUnder(document.querySelector(CURRENT));
  });

  document.addEventListener("htmx:afterSettle", function () {
    var box = document.getElementById("pipeline-explain");
    if (box && !box.parentElement.closest("#pipeline-forward")) {
      placeUnder(document.querySelector(CURRENT)); // the whole lab was redrawn
    }
    if (box && reveal) {
      reveal = false;
      box.scrollIntoView({ block: "nearest" });
    }
  });
})();
