/* CNN Lab: /train's layer view (templates/_train_inside.html, app/routers/train_inside.py).
 *
 * - A click on the enlarged map picks the cell under the pointer: its row and column go into
 *   the view's form, which htmx posts; the answer frames that cell's receptive field on the
 *   input. (The numbers under the map are buttons too: the same without a pointer.)
 * - A view opened from a thumbnail scrolls to the top of the screen, so the enlarged map and
 *   the input stand on the first screen (projector, phone); a cell clicked inside it keeps
 *   the view where it is.
 */
(function () {
  "use strict";

  var fromThumbnail = false;

  function clamp(v, n) {
    return Math.min(n - 1, Math.max(0, v));
  }

  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest(".train-maps__pick")) {
      fromThumbnail = true;
      return;
    }
    var svg = event.target.closest("svg[data-inside-cells]");
    if (!svg) return;
    var form = svg.closest("form");
    var box = svg.getBoundingClientRect();
    var rows = Number(svg.dataset.rows);
    var cols = Number(svg.dataset.cols);
    if (!form || !box.width || !box.height) return;
    form.querySelector("[data-inside-row]").value = clamp(Math.floor((event.clientY - box.top) / box.height * rows), rows);
    form.querySelector("[data-inside-col]").value = clamp(Math.floor((event.clientX - box.left) / box.width * cols), cols);
    if (form.requestSubmit) {
      form.requestSubmit();
    } else if (window.htmx) {
      window.htmx.trigger(form, "submit");
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || target.id !== "train-inside") return;
    target.scrollIntoView({ block: fromThumbnail ? "start" : "nearest" });
    fromThumbnail = false;
    // A table wider than the screen scrolls by itself: bring the chosen cell's column into view.
    var cell = target.querySelector("#train-inside-values td.is-current");
    var scroller = cell ? cell.closest(".matrix-scroll") : null;
    if (scroller && scroller.scrollWidth > scroller.clientWidth) {
      scroller.scrollLeft = cell.offsetLeft - (scroller.clientWidth - cell.offsetWidth) / 2;
    }
  });
})();
