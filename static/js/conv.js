/* CNN Lab: what only the convolution page needs on top of static/js/stepper.js (keyboard,
 * play/pause and speed of the #conv-stepper form): colour-coded terms that light up together,
 * a click on a large output picture jumping to that cell, the kernel-size slider's number,
 * the upload form following the address htmx pushes, and in projector mode the stepper
 * scrolled to the top of the screen.
 */
(function () {
  "use strict";

  function byId(id) {
    return document.getElementById(id);
  }

  /* ---------- term highlighting: one term lights up its input, weight, product and text ---------- */

  function linked(tag) {
    var stepper = byId("conv-stepper");
    return stepper ? stepper.querySelectorAll('[data-t="' + tag + '"]') : [];
  }

  function highlight(event, on) {
    var target = event.target.closest ? event.target.closest("[data-t]") : null;
    if (!target) {
      return;
    }
    var cells = linked(target.getAttribute("data-t"));
    for (var i = 0; i < cells.length; i++) {
      cells[i].classList.toggle("is-linked", on);
    }
  }

  /* ---------- a click on a large output picture jumps to that cell ---------- */

  function jumpFromPicture(svg, event) {
    var box = svg.getBoundingClientRect();
    var wo = parseInt(svg.getAttribute("data-wo"), 10);
    var ho = parseInt(svg.getAttribute("data-ho"), 10);
    var first = parseInt(svg.getAttribute("data-first"), 10);
    var col = Math.min(wo - 1, Math.max(0, Math.floor(((event.clientX - box.left) / box.width) * wo)));
    var row = Math.min(ho - 1, Math.max(0, Math.floor(((event.clientY - box.top) / box.height) * ho)));
    window.CNNLab.stepper.goTo("conv", first + row * wo + col);
  }

  /* ---------- the upload form follows the address htmx pushes (lesson.js does the language links) ---------- */

  function followAddress() {
    // A refused upload brings back exactly this view, step included.
    var state = document.querySelector("#conv-upload input[name=state]");
    if (state) {
      var current = new URLSearchParams(window.location.search);
      current.delete("lang");
      state.value = current.toString();
    }
  }

  document.addEventListener("click", function (event) {
    var svg = event.target.closest("svg.picture-map--output");
    if (svg) {
      jumpFromPicture(svg, event);
    }
  });

  document.addEventListener("input", function (event) {
    // The slider's number follows the thumb; the request goes when it is released (change).
    if (event.target.id === "conv-size") {
      var output = byId("conv-size-value");
      if (output) {
        output.textContent = event.target.value;
      }
    }
  });

  document.addEventListener("mouseover", function (event) {
    highlight(event, true);
  });
  document.addEventListener("mouseout", function (event) {
    highlight(event, false);
  });

  /* ---------- projector mode: the stepper is the first screen ---------- */

  // In projector mode the stepper, sum included, is sized to fill the screen: a page opened
  // there, or a picture just uploaded from the settings below, shows it from its top, or from
  // the class bar above it in a class (static/js/classroom.js puts it in #class-slot).
  function stepperToTop() {
    var top = byId("class-slot") || byId("conv-stepper");
    if (top && byId("conv-stepper") && document.documentElement.classList.contains("projector")) {
      top.scrollIntoView({ block: "start" });
    }
  }

  document.addEventListener("DOMContentLoaded", stepperToTop);
  document.addEventListener("cnnlab:classbar", stepperToTop);
  document.addEventListener("htmx:afterSettle", function (event) {
    var config = event.detail && event.detail.requestConfig;
    if (config && config.elt && config.elt.id === "conv-upload") {
      stepperToTop();
    }
  });

  document.addEventListener("htmx:pushedIntoHistory", followAddress);
  document.addEventListener("htmx:replacedInHistory", followAddress);
  // The page as loaded (its step is not part of the settings) and a swap that keeps the address
  // (a refused upload) must bring back this view too.
  document.addEventListener("DOMContentLoaded", followAddress);
  document.addEventListener("htmx:afterSettle", followAddress);
})();
