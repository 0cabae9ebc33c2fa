/* CNN Lab: scrolling boxes a keyboard can reach.
 *
 * A wide matrix, a long audio strip or a long formula scrolls sideways inside its box. A mouse
 * or a finger can scroll it; a keyboard can only if the box can take the focus. So every box
 * that scrolls *right now* (it depends on the screen width, projector mode and the numbers
 * shown) gets tabindex="0" and a name, and loses them again when it no longer scrolls: no
 * extra tab stops on a wide screen. Runs at start, after every htmx swap, on resize and when
 * projector mode changes.
 */
(function () {
  "use strict";

  var SCROLLING = /(auto|scroll)/;
  var MARK = "data-scroll-focus";
  var pending = 0;

  function scrolls(el) {
    var style = window.getComputedStyle(el);
    return (SCROLLING.test(style.overflowX) && el.scrollWidth > el.clientWidth + 1) ||
      (SCROLLING.test(style.overflowY) && el.scrollHeight > el.clientHeight + 1);
  }

  function update() {
    pending = 0;
    var main = document.getElementById("main");
    if (!main) {
      return;
    }
    // Cells, rows and inline text never scroll here; skipping them keeps this to a few ms.
    var boxes = main.querySelectorAll("div, aside, p, dl, math, pre, figure, section, table, ul, ol, form, fieldset, svg");
    for (var i = 0; i < boxes.length; i++) {
      var el = boxes[i];
      var marked = el.hasAttribute(MARK);
      if (scrolls(el)) {
        if (!marked && !el.hasAttribute("tabindex")) {
          el.setAttribute("tabindex", "0");
          el.setAttribute(MARK, "");
          // A plain box gets a name so a screen reader says what the stop is; a formula or a
          // table keeps its own meaning.
          if (el.tagName.toLowerCase() === "div" && !el.hasAttribute("role") && !el.hasAttribute("aria-label")) {
            el.setAttribute("role", "group");
            el.setAttribute("aria-label", document.body.getAttribute("data-scroll-label") || "");
            el.setAttribute(MARK, "named");
          }
        }
      } else if (marked) {
        if (el.getAttribute(MARK) === "named") {
          el.removeAttribute("role");
          el.removeAttribute("aria-label");
        }
        el.removeAttribute("tabindex");
        el.removeAttribute(MARK);
      }
    }
  }

  function later() {
    if (!pending) {
      pending = window.requestAnimationFrame(update);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    update();
    window.addEventListener("resize", later);
    document.body.addEventListener("htmx:afterSettle", later);
    new MutationObserver(later).observe(document.documentElement, { attributes: true, attributeFilter: ["class"] });
  });
})();
