/* CNN Lab: the "why" panel of /train (templates/_train_why.html, app/routers/train_why.py).
 *
 * A click on the overlay picks that pixel: its row and column go into the form's two fields
 * and the form is submitted, so htmx swaps in the panel with that pixel's numbers written out.
 * Without JavaScript (or from the keyboard) the row and column are typed into those fields.
 */
(function () {
  "use strict";

  function cell(position, start, size, count) {
    return Math.min(count - 1, Math.max(0, Math.floor(((position - start) / size) * count)));
  }

  document.addEventListener("click", function (event) {
    var map = event.target.closest ? event.target.closest("#train-why-map") : null;
    var form = map ? map.closest("form") : null;
    if (!form || !form.elements.row || !form.elements.col) return;
    var box = map.getBoundingClientRect();
    form.elements.row.value = cell(event.clientY, box.top, box.height, Number(map.dataset.rows));
    form.elements.col.value = cell(event.clientX, box.left, box.width, Number(map.dataset.cols));
    if (form.requestSubmit) {
      form.requestSubmit();
    } else if (window.htmx) {
      window.htmx.trigger(form, "submit");
    }
  });
})();
