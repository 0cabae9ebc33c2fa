/* CNN Lab: reading pixel values on /grid. Pointing at (or tapping) a pixel of a .pixgrid shows
 * "row r, column c: value" in #grid-readout; a focused grid moves a cursor with the arrow keys,
 * so every value is reachable from the keyboard with one tab stop per grid.
 *
 * The close-up (#grid-loupe) repeats the pixels around the cursor with their row and column
 * numbers at a size a projector shows from the back of a room (the whole picture's own
 * numbers are a few pixels tall). It starts at the picture's centre and follows the cursor.
 */
(function () {
  "use strict";

  var cursor = {};
  // Pixels each side of the centre: 7×7 when the side column has room, else 5×5.
  var RADII = [3, 2];

  // Black or white, whichever contrasts more with the pixel's colour "rgb(r,g,b)" (WCAG's
  // relative luminance): at least 4.6:1 either way.
  function inkOn(fill) {
    var lum = fill.match(/\d+/g).reduce(function (sum, v, k) {
      var c = Number(v) / 255;
      c = c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
      return sum + c * [0.2126, 0.7152, 0.0722][k];
    }, 0);
    return (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) ? "#000000" : "#ffffff";
  }

  function fillLoupe(loupe, svg, row, col, radius) {
    var w = parseInt(svg.getAttribute("data-w"), 10);
    var h = parseInt(svg.getAttribute("data-h"), 10);
    var rects = svg.querySelectorAll("rect[data-v]");
    // The window stays inside the picture, so it is always full; the cursor is framed in it.
    var r0 = Math.max(0, Math.min(row - radius, h - 2 * radius - 1));
    var c0 = Math.max(0, Math.min(col - radius, w - 2 * radius - 1));
    var r1 = Math.min(h - 1, r0 + 2 * radius);
    var c1 = Math.min(w - 1, c0 + 2 * radius);
    var table = loupe.querySelector("table");
    var head = document.createElement("tr");
    head.appendChild(document.createElement("td"));
    for (var c = c0; c <= c1; c++) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = String(c + 1);
      head.appendChild(th);
    }
    var rows = [head];
    for (var r = r0; r <= r1; r++) {
      var tr = document.createElement("tr");
      var rh = document.createElement("th");
      rh.scope = "row";
      rh.textContent = String(r + 1);
      tr.appendChild(rh);
      for (c = c0; c <= c1; c++) {
        var td = document.createElement("td");
        var i = r * w + c;
        td.textContent = rects[i].getAttribute("data-v");
        td.style.backgroundColor = rects[i].getAttribute("fill");
        td.style.color = inkOn(rects[i].getAttribute("fill"));
        if (r === row && c === col) {
          td.className = "is-centre";
        }
        tr.appendChild(td);
      }
      rows.push(tr);
    }
    table.replaceChildren.apply(table, rows);
  }

  // Frames pixel (row, col): the square on the picture and the close-up around it.
  function frame(svg, row, col) {
    var mark = svg.querySelector(".pixgrid__cursor");
    if (mark) {
      mark.setAttribute("x", String(col));
      mark.setAttribute("y", String(row));
      mark.removeAttribute("hidden");
    }
    var loupe = document.getElementById("grid-loupe");
    if (!loupe) {
      return;
    }
    var channel = svg.getAttribute("data-channel");
    loupe.querySelector("figcaption").textContent = (channel ? channel + " · " : "") +
      loupe.getAttribute("data-caption").replace("{row}", String(row + 1)).replace("{col}", String(col + 1));
    loupe.hidden = false;
    for (var k = 0; k < RADII.length; k++) {
      fillLoupe(loupe, svg, row, col, RADII[k]);
      if (loupe.scrollWidth <= loupe.clientWidth) {
        break;
      }
    }
  }

  function start() {
    var svg = document.querySelector("svg.pixgrid");
    if (svg) {
      var w = parseInt(svg.getAttribute("data-w"), 10);
      var h = parseInt(svg.getAttribute("data-h"), 10);
      frame(svg, Math.floor(h / 2), Math.floor(w / 2));
    }
  }

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
    cursor = { svg: svg, row: row, col: col };
    frame(svg, row, col);
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

  document.addEventListener("DOMContentLoaded", start);
  // A new picture (the form swaps #grid-lab): the close-up starts again at its centre.
  document.addEventListener("htmx:afterSettle", function () {
    var loupe = document.getElementById("grid-loupe");
    if (loupe && loupe.hidden) {
      cursor = {};
      start();
    }
  });

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
