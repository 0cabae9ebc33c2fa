/* CNN Lab: the drawing pad of /train.
 *
 * A <canvas data-draw-pad data-grid="28"> inside a form with a hidden input[name=grid].
 * Mouse, touch and pen all arrive as Pointer Events. The pad keeps the pen's path; when a
 * stroke ends, the path is drawn again into the grid the network reads, the way its dataset
 * was made (toGrid below), and the grid is written into the hidden input as comma-separated
 * numbers from 0 (paper) to 1 (ink), row by row, and the form is submitted (htmx posts it
 * and swaps in the probabilities; with data-draw-submit="manual", only Enter or the form's
 * own button sends it). Drawing the path again, rather than shrinking the pad's
 * pixels, gives every drawing the dataset's stroke width, however small or large it was
 * drawn and however thick the pad's pen looks.
 *
 * The keyboard draws too (the pad is focusable): the arrow keys move a pen over a 14×14
 * lattice (28×28 with Shift), drawing while it is down; Space lifts or lowers it; Enter reads
 * the digit. A ring shows where the pen is, and a live text says it for screen readers.
 */
(function () {
  "use strict";

  // The pen the person sees, as a fraction of the pad's side.
  var PEN_FRACTION = 0.075;

  // MNIST (LeCun et al.): each digit's box scaled, aspect kept, to fit 20×20 with grey
  // anti-aliased edges, then placed in 28×28 so that its centre of mass (grey levels as
  // weights) is at pixel (14, 14). Its strokes are about 2.5 pixels wide.
  var MNIST = { grid: 28, box: 20, pen: 2.5, centre: 14, scale: 10 };
  // 8×8 digits (UCI optical digits, NIST's preparation): each digit scaled, aspect kept, to
  // fit a 32×32 black-and-white bitmap, its strokes thickened or thinned so that ink covers
  // about 30 % of it (in the dataset every digit, a 1 as much as an 8, averages 30 %), then
  // the ink pixels counted in each 4×4 block: 0..16, divided by 16.
  var DIGITS = { grid: 8, bitmap: 32, ink: 0.305, minPen: 1.5, maxPen: 12 };

  function pathBox(segments) {
    var box = { left: Infinity, top: Infinity, right: -Infinity, bottom: -Infinity };
    segments.forEach(function (s) {
      box.left = Math.min(box.left, s[0], s[2]);
      box.right = Math.max(box.right, s[0], s[2]);
      box.top = Math.min(box.top, s[1], s[3]);
      box.bottom = Math.max(box.bottom, s[1], s[3]);
    });
    box.w = box.right - box.left;
    box.h = box.bottom - box.top;
    return box;
  }

  // The path drawn into a side × side square with a round pen `pen` pixels wide: the box
  // scaled by k, its corner at (x, y). Returns the ink (alpha 0..255) of every pixel.
  function render(segments, box, side, k, x, y, pen) {
    var work = document.createElement("canvas");
    work.width = side;
    work.height = side;
    var ctx = work.getContext("2d", { willReadFrequently: true });
    ctx.lineWidth = pen;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    segments.forEach(function (s) {
      ctx.moveTo(x + (s[0] - box.left) * k, y + (s[1] - box.top) * k);
      ctx.lineTo(x + (s[2] - box.left) * k, y + (s[3] - box.top) * k);
    });
    ctx.stroke();
    var rgba = ctx.getImageData(0, 0, side, side).data;
    var alpha = new Float64Array(side * side);
    for (var i = 0; i < alpha.length; i++) alpha[i] = rgba[i * 4 + 3];
    return alpha;
  }

  // The box scaled by k, centred in a side × side square: its top-left corner.
  function centred(box, side, k) {
    return { x: (side - box.w * k) / 2, y: (side - box.h * k) / 2 };
  }

  // Mean ink of each block × block square: grid × grid values in [0, 1], row-major.
  function blocks(alpha, grid, block, ink) {
    var side = grid * block;
    var values = [];
    for (var r = 0; r < grid; r++) {
      for (var c = 0; c < grid; c++) {
        var sum = 0;
        for (var y = r * block; y < (r + 1) * block; y++) {
          for (var x = c * block; x < (c + 1) * block; x++) {
            sum += ink(alpha[y * side + x]);
          }
        }
        values.push(sum / (block * block));
      }
    }
    return values;
  }

  function grey(a) {
    return a / 255;
  }

  function bit(a) {
    return a >= 128 ? 1 : 0;
  }

  function toMnist(segments, box) {
    var m = MNIST;
    var side = m.grid * m.scale;
    var pen = m.pen * m.scale;
    var k = (m.box * m.scale - pen) / Math.max(box.w, box.h, 1e-9);
    var at = centred(box, side, k);
    var values = blocks(render(segments, box, side, k, at.x, at.y, pen), m.grid, m.scale, grey);
    var mass = 0, rows = 0, cols = 0;
    values.forEach(function (v, i) {
      mass += v;
      rows += v * Math.floor(i / m.grid);
      cols += v * (i % m.grid);
    });
    // Move the centre of mass onto (14, 14), to the nearest tenth of a pixel.
    var dx = Math.round((m.centre - cols / mass) * m.scale);
    var dy = Math.round((m.centre - rows / mass) * m.scale);
    values = blocks(render(segments, box, side, k, at.x + dx, at.y + dy, pen), m.grid, m.scale, grey);
    // The dataset's strokes reach full ink in their middle.
    var peak = Math.max.apply(null, values);
    return values.map(function (v) {
      return Math.min(1, v / peak);
    });
  }

  function toDigits(segments, box) {
    var d = DIGITS;
    var area = d.bitmap * d.bitmap;
    var lo = d.minPen, hi = d.maxPen, bitmap = null;
    // Bisect the pen width until the ink covers the dataset's share of the bitmap.
    for (var i = 0; i < 12; i++) {
      var pen = (lo + hi) / 2;
      var k = (d.bitmap - pen) / Math.max(box.w, box.h, 1e-9);
      var at = centred(box, d.bitmap, k);
      bitmap = render(segments, box, d.bitmap, k, at.x, at.y, pen);
      var ink = 0;
      for (var j = 0; j < area; j++) ink += bit(bitmap[j]);
      if (ink / area < d.ink) lo = pen;
      else hi = pen;
    }
    return blocks(bitmap, d.grid, d.bitmap / d.grid, bit);
  }

  // The pen's path (segments [x0, y0, x1, y1] in pad pixels) → grid × grid values in
  // [0, 1], row-major, prepared like the dataset of that size; null when nothing is drawn.
  function toGrid(segments, grid) {
    if (!segments.length) {
      return null;
    }
    var box = pathBox(segments);
    var values = grid === MNIST.grid ? toMnist(segments, box) : toDigits(segments, box);
    return values.map(function (v) {
      return v.toFixed(4);
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
    var segments = []; // the pen's path since the pad was cleared: [x0, y0, x1, y1] each

    function point(event) {
      var rect = canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - rect.left) * canvas.width) / rect.width,
        y: ((event.clientY - rect.top) * canvas.height) / rect.height,
      };
    }

    function stroke(from, to) {
      segments.push([from.x, from.y, to.x, to.y]);
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

    // data-draw-submit="manual": a stroke's end only writes the grid; the form is sent by its
    // own button (the class's collection pad, static/js/collection.js), or by Enter.
    var manual = canvas.dataset.drawSubmit === "manual";

    function finish(send) {
      if (!drawing) return;
      drawing = false;
      var values = toGrid(segments, grid);
      if (values) {
        input.value = values.join(",");
        if (!manual || send === true) {
          form.requestSubmit();
        }
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
        finish(true);
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
        segments = [];
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
