/* CNN Lab: the small behaviour of /train that is not htmx's.
 *
 * - The optimizer's own fields (momentum; Adam's β₁, β₂) show only for that optimizer.
 * - The extra conv blocks' fields (block 2, block 3) show only for the chosen number of blocks.
 * - The Stop button hides once the run has ended (the live part, streamed by server-sent
 *   events through htmx's SSE extension, says so with data-status), or once its stream has
 *   ended without it (the server stopped, or no longer has the run: data-stream-ended).
 * - A run's own page (/train/jobs/…) opens on the run: progress and curves fill the screen.
 *   (A run started here is scrolled there by its swap, hx-swap="outerHTML show:top".)
 * The drawing pad lives in draw.js.
 */
(function () {
  "use strict";

  var FINISHED = { done: true, stopped: true, failed: true };

  function showOptimizerFields(form) {
    var select = form.querySelector("select[name=optimizer]");
    if (!select) return;
    form.querySelectorAll(".train-opt[data-optimizer]").forEach(function (field) {
      field.hidden = field.dataset.optimizer !== select.value;
    });
  }

  function showBlockFields(form) {
    var select = form.querySelector("select[name=blocks]");
    if (!select) return;
    var count = parseInt(select.value, 10) || 1;
    form.querySelectorAll(".train-block[data-block]").forEach(function (block) {
      block.hidden = parseInt(block.dataset.block, 10) > count;
    });
  }

  function syncStop() {
    var status = document.querySelector("#train-live .train-status");
    var ended = document.querySelector("#train-live [data-stream-ended]");
    var stop = document.getElementById("train-stop");
    if (stop && (status || ended)) {
      stop.hidden = ended !== null || FINISHED[status.dataset.status] === true;
    }
  }

  document.addEventListener("change", function (event) {
    if (event.target.name === "optimizer") {
      showOptimizerFields(event.target.form);
    }
    if (event.target.name === "blocks") {
      showBlockFields(event.target.form);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var run = document.getElementById("train-run");
    if (run && document.getElementById("train-stream") && !window.location.hash) {
      run.scrollIntoView({ block: "start" });
    }
  });

  document.addEventListener("htmx:afterSwap", syncStop);
  document.addEventListener("htmx:sseMessage", syncStop);
})();
