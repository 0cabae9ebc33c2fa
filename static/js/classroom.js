/* CNN Lab: classrooms (/class). Does nothing in a tab that is not in a class.
 *
 * A tab is in a class once it has shown /class/<code>/present (the assistant) or
 * /class/<code> (a student): the code and the role are kept in sessionStorage, per tab.
 * - The assistant's tab reports every page and step it shows (path + query, after each
 *   htmx swap or history change) with POST /api/class/<code>/view; the server checks the
 *   secret cookie. Every lesson page of that tab gets the class bar (/class/<code>/bar).
 * - A student's follow page (/class/<code>) loads each view the event stream announces
 *   (event "view") into #class-stage: the whole page's #main the first time, only the
 *   stepper when just the step changed — taken from the "stepper" event the server sends
 *   just before (first line the view, then the fragment), or fetched when it did not. "Detach" opens that view as a page of its own,
 *   with a bar whose "Follow again" link comes back here.
 * - Errors of the class buttons (JSON {"detail"}) are shown in the bar.
 */
(function () {
  "use strict";

  var KEY = "cnnlab-class";
  var reported = null;
  var stage = null;
  var loads = 0;
  var prepared = { url: null, html: null };  // the last "stepper" event

  function saved() {
    try {
      var value = JSON.parse(window.sessionStorage.getItem(KEY) || "null");
      return value && typeof value.code === "string" ? value : null;
    } catch (err) {
      return null;
    }
  }

  function save(value) {
    try {
      if (value) {
        window.sessionStorage.setItem(KEY, JSON.stringify(value));
      } else {
        window.sessionStorage.removeItem(KEY);
      }
    } catch (err) {
      /* storage disabled: the class works on its own pages only */
    }
  }

  function onClassPage() {
    return window.location.pathname === "/class" || window.location.pathname.indexOf("/class/") === 0;
  }

  /* ---------- the assistant: report the view ---------- */

  function reportView() {
    var mark = saved();
    if (!mark || mark.role !== "host" || onClassPage()) {
      return;
    }
    var url = window.location.pathname + window.location.search;
    // A /train run (/train/jobs/<id>, the collection's "Watch it learn" too) is this browser's
    // own, not a lesson page the class can be shown (the server would refuse it with a 422).
    if (url === reported || window.location.pathname.indexOf("/train/jobs/") === 0) {
      return;
    }
    reported = url;
    window.fetch("/api/class/" + encodeURIComponent(mark.code) + "/view", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url: url }),
      credentials: "same-origin"
    }).then(function (response) {
      if (response.status === 403 || response.status === 404) {
        save(null);
      }
    }, function () {
      reported = null;
    });
  }

  function scheduleReport() {
    window.setTimeout(reportView, 0);
  }

  /* ---------- the bar on lesson pages ---------- */

  function injectBar(mark) {
    var main = document.getElementById("main");
    if (!main || document.getElementById("class-bar")) {
      return;
    }
    var slot = document.createElement("div");
    slot.className = "class-slot";
    slot.id = "class-slot";
    main.parentNode.insertBefore(slot, main);
    window.fetch("/class/" + encodeURIComponent(mark.code) + "/bar", { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          save(null);
          slot.remove();
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        slot.innerHTML = html;
        if (window.htmx) {
          window.htmx.process(slot);
        }
        // The page may lay itself out around the bar (static/js/conv.js in projector mode).
        document.dispatchEvent(new CustomEvent("cnnlab:classbar"));
      }, function () {
        slot.remove();
      });
  }

  /* ---------- a student: the followed view ---------- */

  function withoutStep(url) {
    var parts = url.split("?");
    var params = new URLSearchParams(parts[1] || "");
    params.delete("step");
    return parts[0] + "?" + params.toString();
  }

  /* While a quick question is open, the followed view offers no way to its next step (whose
     value may be the answer): "Detach" waits until the answer is revealed. */
  function questionOpen() {
    return !!document.querySelector("#class-panel .class-question:not(.is-revealed)");
  }

  function setDetach(url) {
    var detach = document.getElementById("class-detach");
    if (detach) {
      detach.disabled = !url || questionOpen();
    }
  }

  function showView(url) {
    if (!stage) {
      return;
    }
    stage.setAttribute("data-view", url);
    setDetach(url);
    if (!url) {
      return;
    }
    if (url === stage.getAttribute("data-shown") || url === stage.getAttribute("data-loading")) {
      return;
    }
    stage.setAttribute("data-loading", url);
    var load = ++loads;
    var shown = stage.getAttribute("data-shown");
    var stepper = stage.querySelector("form[data-stepper]");
    var headers = {};
    var onlyStepper = stepper && shown && withoutStep(shown) === withoutStep(url);
    if (onlyStepper) {
      // Same page, another step: the route answers with just the stepper (a few ms).
      headers = { "HX-Request": "true", "HX-Target": stepper.id };
    }
    // The stream sent this step's stepper along: no request at all.
    var loaded = onlyStepper && prepared.url === url
      ? Promise.resolve(prepared.html)
      : window.fetch(url, { credentials: "same-origin", headers: headers }).then(function (response) {
        return response.ok ? response.text() : null;
      });
    loaded
      .then(function (html) {
        if (load !== loads) {
          return;
        }
        if (html === null) {
          stage.removeAttribute("data-loading");  // the same view may be tried again
          return;
        }
        var doc = new DOMParser().parseFromString(html, "text/html");
        if (onlyStepper) {
          var fresh = doc.querySelector("form[data-stepper]");
          var old = stage.querySelector("form[data-stepper]");
          if (fresh && old) {
            old.replaceWith(document.importNode(fresh, true));
          }
        } else {
          var main = doc.getElementById("main");
          if (!main) {
            return;
          }
          var nodes = Array.prototype.map.call(main.childNodes, function (node) {
            return document.importNode(node, true);
          });
          stage.replaceChildren.apply(stage, nodes);
        }
        stage.setAttribute("data-shown", url);
        stage.dispatchEvent(new CustomEvent("class:shown", { bubbles: true, detail: { url: url } }));
      }, function () {
        if (load === loads) {
          stage.removeAttribute("data-loading");  // offline for a moment: the next event tries again
        }
      });
  }

  /* ---------- events ---------- */

  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var target = event.target;
    if (target && target.id === "class-stepper") {
      event.preventDefault();
      var data = event.detail ? event.detail.data || "" : "";
      var cut = data.indexOf("\n");
      prepared = cut < 0 ? { url: null, html: null } : { url: data.slice(0, cut), html: data.slice(cut + 1) };
    } else if (target && target.id === "class-view") {
      event.preventDefault();
      showView(event.detail ? event.detail.data || "" : "");
    } else if (target && target.id === "class-closed") {
      save(null);
    }
  });

  document.addEventListener("click", function (event) {
    var detach = event.target.closest ? event.target.closest("#class-detach") : null;
    if (detach && stage) {
      var url = stage.getAttribute("data-view");
      if (url) {
        window.location.href = url;
      }
      return;
    }
    if (event.target.closest && event.target.closest("#class-leave")) {
      save(null);
      var slot = document.getElementById("class-slot");
      if (slot) {
        slot.remove();
      }
    }
  });

  function barMessage(event) {
    var elt = event.detail && event.detail.elt;
    var bar = elt && elt.closest ? elt.closest(".class-bar") : null;
    return bar ? bar.querySelector("[data-class-message]") : null;
  }

  document.addEventListener("htmx:responseError", function (event) {
    var box = barMessage(event);
    if (!box) {
      return;
    }
    var xhr = event.detail.xhr;
    var text = xhr.statusText;
    try {
      text = JSON.parse(xhr.responseText).detail || text;
    } catch (err) {
      /* not JSON: the status text will do */
    }
    box.textContent = text;
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var box = barMessage(event);
    if (box && event.detail.successful) {
      box.textContent = "";
    }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    if (stage && event.target && event.target.id === "class-panel") {
      setDetach(stage.getAttribute("data-view") || "");  // a question asked, revealed or put away
    }
  });

  ["htmx:afterSettle", "htmx:pushedIntoHistory", "htmx:replacedInHistory"].forEach(function (name) {
    document.addEventListener(name, scheduleReport);
  });
  window.addEventListener("popstate", scheduleReport);

  document.addEventListener("DOMContentLoaded", function () {
    var present = document.querySelector("[data-class-present]");
    var follow = document.querySelector("[data-class-follow]");
    if (present) {
      save({ code: present.getAttribute("data-class-present"), role: "host" });
    } else if (follow) {
      save({ code: follow.getAttribute("data-class-follow"), role: "student" });
      stage = document.getElementById("class-stage");
      showView(stage.getAttribute("data-view") || "");
    }
    var mark = saved();
    if (mark && !onClassPage()) {
      injectBar(mark);
      reportView();
    }
  });
})();
