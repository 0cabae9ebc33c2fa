/* CNN Lab: reading pixel values on /grid. Pointing at (or tapping) a pixel of a .pixgrid shows
 * "row r, column c: value" in #grid-readout; a focused grid moves a cursor with the arrow keys,
 * so every value is reachable from the keyboard with one tab stop per grid.
 */
(function () {
  "use strict";

  var cursor = {};

  function cellAt(svg, row, col) {
    var w = parseInt(svg.getAttribute("data-w"), 10);
    return svg.querySelectorAll("rect[data-v]")[row * w + col];
  }

  function show(svg, row, col) {
    var cell = cellAt(svg, row, col);
    var readout = document.getElementById("grid-readout");
    if (!cell || !readout) {
      return;
    }
    var title = cell.querySelector("title");
    var channel = svg.getAttribute("data-channel");
    readout.textContent = (channel ? channel + " · " : "") + (title ? title.textContent : cell.getAttribute("data-v"));
    var mark = svg.querySelector(".pixgrid__cursor");
    if (mark) {
      mark.setAttribute("x", String(col));
      mark.setAttribute("y", String(row));
      mark.removeAttribute("hidden");
    }
    cursor = { svg: svg, row: row, col: col };
  }

  function fromPointer(event) {
    var svg = event.target.closest ? event.target.closest("svg.pixgrid") : null;
    if (!svg) {
      return;
    }
    var box = svg.getBoundingClientRect();
    var w = parseInt(svg.getAttribute("data-w"), 10);
    var h = parseInt(svg.getAttribute("data-h"), 10);
    var col = Math.min(w - 1, Math.max(0, Math.floor(((event.clientX - box.left) / box.width) * w)));
    var row = Math.min(h - 1, Math.max(0, Math.floor(((event.clientY - box.top) / box.height) * h)));
    show(svg, row, col);
  }

  var MOVES = {
    ArrowRight: [0, 1],
    ArrowLeft: [0, -1],
    ArrowDown: [1, 0],
    ArrowUp: [-1, 0]
  };

  document.addEventListener("pointermove", fromPointer);
  document.addEventListener("pointerdown", fromPointer);

  document.addEventListener("focusin", function (event) {
    var svg = event.target;
    if (svg.classList && svg.classList.contains("pixgrid")) {
      if (cursor.svg === svg) {
        show(svg, cursor.row, cursor.col);
      } else {
        show(svg, 0, 0);
      }
    }
  });

  document.addEventListener("keydown", function (event) {
    var svg = event.target;
    var move = MOVES[event.key];
    if (!move || !svg.classList || !svg.classList.contains("pixgrid")) {
      return;
    }
    event.preventDefault();
    var w = parseInt(svg.getAttribute("data-w"), 10);
    var h = parseInt(svg.getAttribute("data-h"), 10);
    var row = cursor.svg === svg ? cursor.row : 0;
    var col = cursor.svg === svg ? cursor.col : 0;
    show(svg, Math.min(h - 1, Math.max(0, row + move[0])), Math.min(w - 1, Math.max(0, col + move[1])));
  });
})();
