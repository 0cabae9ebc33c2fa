/* CNN Lab: the drawing pad of /train.
 *
 * A <canvas data-draw-pad data-grid="28"> inside a form with a hidden input[name=grid].
 * Mouse, touch and pen all arrive as Pointer Events. When a stroke ends, the drawing is
 * turned into the grid the network reads, the way MNIST was prepared: the ink's bounding box
 * is scaled (aspect kept) to fit a 20×20 box (8×8 digits: the whole 8×8) and centred, the
 * result averaged down to grid × grid values from 0 (paper) to 1 (ink). The grid is written
 * into the hidden input as comma-separated numbers, row by row, and the form is submitted
 * (htmx posts it and swaps in the probabilities).
 *
 * The keyboard draws too (the pad is focusable): the arrow keys move a pen over a 14×14
 * lattice (28×28 with Shift), drawing while it is down; Space lifts or lowers it; Enter reads
 * the digit. A ring shows where the pen is, and a live text says it for screen readers.
 */
(function () {
  "use strict";

  // Pen width as a fraction of the pad's side: about as thick as a digit's stroke in MNIST.
  var PEN_FRACTION = 0.075;

  function inkBox(ctx, size) {
    var data = ctx.getImageData(0, 0, size, size).data;
    var top = size, left = size, bottom = -1, right = -1;
    for (var y = 0; y < size; y++) {
      for (var x = 0; x < size; x++) {
        if (data[(y * size + x) * 4 + 3] > 0) {
          if (y < top) top = y;
          if (y > bottom) bottom = y;
          if (x < left) left = x;
          if (x > right) right = x;
        }
      }
    }
    return bottom < 0 ? null : { x: left, y: top, w: right - left + 1, h: bottom - top + 1 };
  }

  // The pad's ink → grid × grid values in [0, 1], row-major; null when nothing is drawn.
  function toGrid(canvas, grid) {
    var ctx = canvas.getContext("2d", { willReadFrequently: true });
    var box = inkBox(ctx, canvas.width);
    if (!box) {
      return null;
    }
    // Draw the ink box, scaled, into a large intermediate square first, then average blocks:
    // a browser's own downscaling may skip pixels.
    var fit = grid === 28 ? 20 : grid;
    var scale = 10;
    var side = grid * scale;
    var work = document.createElement("canvas");
    work.width = side;
    work.height = side;
    var wctx = work.getContext("2d", { willReadFrequently: true });
    var k = (fit * scale) / Math.max(box.w, box.h);
    var dw = box.w * k;
    var dh = box.h * k;
    wctx.drawImage(canvas, box.x, box.y, box.w, box.h, (side - dw) / 2, (side - dh) / 2, dw, dh);
    var data = wctx.getImageData(0, 0, side, side).data;
    var values = [];
    var peak = 0;
    for (var r = 0; r < grid; r++) {
      for (var c = 0; c < grid; c++) {
        var sum = 0;
        for (var y = r * scale; y < (r + 1) * scale; y++) {
          for (var x = c * scale; x < (c + 1) * scale; x++) {
            sum += data[(y * side + x) * 4 + 3];
          }
        }
        var v = sum / (scale * scale * 255);
        peak = Math.max(peak, v);
        values.push(v);
      }
    }
    // The datasets' strokes reach full ink; a thin stroke averaged down would not.
    return values.map(function (v) {
      return (peak > 0 ? Math.min(1, v / peak) : 0).toFixed(3);
    });
  }

  function setUp(canvas) {
    if (canvas.dataset.drawReady) {
      return;
    }
    canvas.dataset.drawReady = "1";
    var grid = parseInt(canvas.dataset.grid, 10);
    var form = canvas.closest("form");
    var input = form.querySelector("input[name=grid]");
    var ctx = canvas.getContext("2d", { willReadFrequently: true });
    var drawing = false;
    var last = null;

    function point(event) {
      var rect = canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - rect.left) * canvas.width) / rect.width,
        y: ((event.clientY - rect.top) * canvas.height) / rect.height,
      };
    }

    function stroke(from, to) {
      ctx.lineWidth = canvas.width * PEN_FRACTION;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.strokeStyle = "#000";
      ctx.beginPath();
      ctx.moveTo(from.x, from.y);
      ctx.lineTo(to.x, to.y);
      ctx.stroke();
    }

    canvas.addEventListener("pointerdown", function (event) {
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      drawing = true;
      last = point(event);
      stroke(last, last);
    });
    canvas.addEventListener("pointermove", function (event) {
      if (!drawing) return;
      var p = point(event);
      stroke(last, p);
      last = p;
    });

    function finish() {
      if (!drawing) return;
      drawing = false;
      var values = toGrid(canvas, grid);
      if (values) {
        input.value = values.join(",");
        form.requestSubmit();
      }
    }
    canvas.addEventListener("pointerup", finish);
    canvas.addEventListener("pointercancel", finish);

    // ---- the keyboard's pen ----
    var wrap = canvas.parentNode;
    var ring = wrap.querySelector("[data-draw-pen]");
    var status = form.querySelector("[data-draw-status]");
    var LATTICE = 14;
    var pen = { col: LATTICE / 2, row: LATTICE / 2, down: true };

    function penPoint() {
      return { x: (pen.col * canvas.width) / LATTICE, y: (pen.row * canvas.height) / LATTICE };
    }

    function showPen() {
      if (ring) {
        var scale = canvas.getBoundingClientRect().width / canvas.width;
        var p = penPoint();
        ring.hidden = false;
        ring.classList.toggle("is-down", pen.down);
        ring.style.transform = "translate(" + p.x * scale + "px, " + p.y * scale + "px)";
      }
      if (status) {
        status.textContent = (canvas.dataset.penText || "")
          .replace("{col}", String(Math.round(pen.col * 10) / 10))
          .replace("{row}", String(Math.round(pen.row * 10) / 10))
          .replace("{state}", pen.down ? canvas.dataset.penDown || "" : canvas.dataset.penUp || "");
      }
    }

    var MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    canvas.addEventListener("keydown", function (event) {
      var move = MOVES[event.key];
      if (move) {
        event.preventDefault();
        var step = event.shiftKey ? 0.5 : 1;
        var from = penPoint();
        pen.col = Math.min(LATTICE, Math.max(0, pen.col + move[0] * step));
        pen.row = Math.min(LATTICE, Math.max(0, pen.row + move[1] * step));
        if (pen.down) {
          stroke(from, penPoint());
        }
        showPen();
      } else if (event.key === " ") {
        event.preventDefault();
        pen.down = !pen.down;
        if (pen.down) {
          stroke(penPoint(), penPoint());
        }
        showPen();
      } else if (event.key === "Enter") {
        event.preventDefault();
        drawing = true;
        finish();
      }
    });
    canvas.addEventListener("focus", showPen);
    canvas.addEventListener("blur", function () {
      if (ring) ring.hidden = true;
    });

    var clear = form.querySelector("[data-draw-clear]");
    if (clear) {
      clear.addEventListener("click", function () {
        ctx.clearRect(0, 0, canvas.width, canvas.height);
        input.value = "";
        var out = document.getElementById(form.dataset.result);
        if (out) out.replaceChildren();
      });
    }
  }

  function setUpAll(root) {
    (root || document).querySelectorAll("canvas[data-draw-pad]").forEach(setUp);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpAll(document);
  });
  // A run panel swapped in by htmx brings its own pad.
  document.addEventListener("htmx:load", function (event) {
    setUpAll(event.target);
  });
})();
