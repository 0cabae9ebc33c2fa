// The practice page (/practice) and its worksheet: after a check, put the cursor in the first
// wrong cell; the worksheet's Print button. Everything else works without JavaScript.
(function () {
  "use strict";

  function focusFirstWrong(root) {
    var cell = root.querySelector(".practice-grid .is-wrong input, .practice-grid .is-bad input");
    if (cell) {
      cell.focus();
      cell.select();
    }
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.id === "practice-exercise") {
      focusFirstWrong(document.getElementById("practice-exercise") || document);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var print = document.getElementById("worksheet-print");
    if (print) {
      print.addEventListener("click", function () {
        window.print();
      });
    }
  });
})();
