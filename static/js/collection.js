/* CNN Lab: the class builds its own dataset (issue 15). Does nothing outside a class.
 *
 * The class's event stream (opened by the class bar, templates/_class_bar.html) carries
 * `collection` events, JSON (app/routers/collection.py), into #class-collection-events; this
 * file takes them before htmx would swap them in:
 * - the projector's panel (#class-collection, templates/_class_collection.html): counts, bars,
 *   the newest thumbnails of each label (newest first; the column scrolls), removed drawings,
 *   the tally of the test and the drawings that fooled the model. When the phase or the labels
 *   change, the panel is fetched again from this page. Its buttons post the assistant's actions.
 * - a phone's page (#collect, templates/class_collect.html): the label asked for, the phone's
 *   own count and the phase; "Send" posts the drawing (data-draw-submit="manual" pad of
 *   static/js/draw.js); in the test phase it asks the model and shows the probabilities.
 * - a student's follow page: the class bar's "Draw for the class's dataset" link.
 * A refused request says why next to its control, and the drawing stays on the pad.
 */
(function () {
  "use strict";

  var KEPT = 24;  // thumbnails kept per label column (the newest; the column scrolls)
  var FOOLED_KEPT = 24;
  var known = {};  // the projector's thumbnails: id -> {id, label, png}; drawn again after a refresh
  var fooled = [];  // the drawings that fooled the model, oldest first
  var lastKey = null;
  var last = null;  // the newest event's data
  var refreshes = 0;
  var deadline = null;  // this browser's clock: when the collection's time is up

  /* ---------- talking to the API ---------- */

  function texts() {
    try {
      return JSON.parse(document.body.getAttribute("data-refusals") || "{}");
    } catch (err) {
      return {};
    }
  }

  function refusal(status, data, response) {
    if (data && typeof data.detail === "string") {
      return data.detail;
    }
    var t = texts();
    if (status === 0) {
      return t.network || "";
    }
    if (status === 429) {
      var wait = parseInt((response && response.headers.get("Retry-After")) || "", 10);
      return wait > 0 ? (t["429"] || "").replace("{seconds}", String(wait)) : t["429-later"] || "";
    }
    if (status >= 500) {
      return t["5xx"] || "";
    }
    return t[String(status)] || t["400"] || "";
  }

  /* fetch with a JSON body: resolves to {ok, status, data, message} (never rejects). */
  function call(method, path, body) {
    var options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return window.fetch(path, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try {
          data = text ? JSON.parse(text) : null;
        } catch (err) {
          data = null;
        }
        return { ok: response.ok, status: response.status, data: data,
                 message: response.ok ? "" : refusal(response.status, data, response) };
      });
    }, function () {
      return { ok: false, status: 0, data: null, message: refusal(0, null, null) };
    });
  }

  function api(code, rest) {
    return "/api/class/" + encodeURIComponent(code) + "/collection" + (rest || "");
  }

  function say(box, message) {
    if (box) {
      box.textContent = message || "";
    }
  }

  function fill(template, values) {
    return String(template || "").replace(/\{(\w+)\}/g, function (all, name) {
      return name in values ? String(values[name]) : all;
    });
  }

  function isOpen(data) {
    return !!data && (data.phase === "collect" || data.phase === "train" || data.phase === "test");
  }

  /* ---------- the projector's panel ---------- */

  function panelKey(data) {
    return isOpen(data) ? JSON.stringify([data.phase, data.labels, data.job || null]) : "none";
  }

  function shownKey(panel) {
    var key = null;
    try {
      key = JSON.parse(panel.getAttribute("data-key") || "null");
    } catch (err) {
      key = null;
    }
    return key && key[0] !== "closed" ? JSON.stringify([key[0], key[1], key[2] || null]) : "none";
  }

  function thumb(panel, item) {
    var template = document.getElementById("collection-thumb");
    var li = template.content.firstElementChild.cloneNode(true);
    li.setAttribute("data-id", String(item.id));
    var img = li.querySelector("img");
    img.src = item.png;
    img.alt = fill(panel.getAttribute("data-thumb-text"), { n: item.id });
    var remove = li.querySelector("[data-remove]");
    remove.setAttribute("aria-label", fill(panel.getAttribute("data-remove-text"), { n: item.id }));
    return li;
  }

  /* Each column newest first: a drawing goes before the first older one. */
  function placeThumbs(panel, items) {
    items.forEach(function (item) {
      var list = panel.querySelector('.collection-col[data-label="' + item.label + '"] [data-thumbs]');
      if (!list || list.querySelector('[data-id="' + item.id + '"]')) {
        return;
      }
      var before = Array.prototype.find.call(list.children, function (li) {
        return parseInt(li.getAttribute("data-id"), 10) < item.id;
      });
      list.insertBefore(thumb(panel, item), before || null);
      while (list.children.length > KEPT) {
        list.removeChild(list.lastElementChild);
      }
    });
  }

  function placeFooled(panel) {
    var list = panel.querySelector("#collection-fooled-list");
    var template = document.getElementById("collection-fooled-thumb");
    if (!list || !template || !last) {
      return;
    }
    var labels = last.labels || [];
    var items = fooled.slice().reverse().map(function (item) {
      var li = template.content.firstElementChild.cloneNode(true);
      var text = fill(panel.getAttribute("data-fooled-text"),
                      { label: labels[item.label], predicted: labels[item.predicted] });
      li.setAttribute("data-id", String(item.id));
      li.querySelector("img").src = item.png;
      li.querySelector("img").alt = text;
      li.querySelector("[data-says]").textContent = labels[item.label] + " → " + labels[item.predicted];
      return li;
    });
    list.replaceChildren.apply(list, items);
  }

  function setText(panel, selector, value) {
    var node = panel.querySelector(selector);
    if (node && value !== undefined && value !== null) {
      node.textContent = String(value);
    }
  }

  function showNumbers(panel, data) {
    setText(panel, "#collection-total", data.total);
    setText(panel, "#collection-contributors", data.contributors);
    setText(panel, "#collection-right", data.right);
    setText(panel, "#collection-fooled", data.fooled);
    (data.counts || []).forEach(function (n, k) {
      var col = panel.querySelector('.collection-col[data-label="' + k + '"]');
      if (!col) {
        return;
      }
      col.querySelector("[data-count]").textContent = String(n);
      var bar = col.querySelector("[data-bar]");
      bar.value = Math.min(n, bar.max);
      col.classList.toggle("is-full", n >= bar.max);
    });
  }

  function dropRemoved(panel, ids) {
    (ids || []).forEach(function (id) {
      delete known[id];
      var li = panel.querySelector('.collection-col [data-id="' + id + '"]');
      if (li) {
        li.remove();
      }
    });
  }

  function showAll(panel) {
    var items = Object.keys(known).map(function (id) { return known[id]; });
    placeThumbs(panel, items);
    placeFooled(panel);
    if (last) {
      showNumbers(panel, last);
    }
    timeLeft();
  }

  /* The panel as the server renders it now (the phase or the labels changed). */
  function refreshPanel() {
    var load = ++refreshes;
    return window.fetch(window.location.pathname, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        var panel = document.getElementById("class-collection");
        if (html === null || load !== refreshes || !panel) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("class-collection");
        if (!fresh) {
          return;
        }
        fresh = document.importNode(fresh, true);
        panel.replaceWith(fresh);
        if (window.htmx) {
          window.htmx.process(fresh);  // the run's live status streams by htmx's SSE extension
        }
        showAll(fresh);
      }, function () { /* offline for a moment: the next event tries again */ });
  }

  function onHostEvent(panel, data) {
    var key = panelKey(data);
    if (data.reset) {
      known = {};  // the first event of this screen, or a new collection: the whole picture
      fooled = [];
    }
    if (typeof data.remaining === "number") {
      deadline = Date.now() / 1000 + data.remaining;
    } else if ("remaining" in data) {
      deadline = null;
    }
    last = data;
    (data.new || []).forEach(function (item) { known[item.id] = item; });
    (data.fooled_new || []).forEach(function (item) { fooled.push(item); });
    fooled = fooled.slice(-FOOLED_KEPT);
    dropRemoved(panel, data.removed);
    if (key !== lastKey && key !== shownKey(panel)) {
      lastKey = key;
      refreshPanel();
      return;
    }
    lastKey = key;
    placeThumbs(panel, data.new || []);
    if ((data.fooled_new || []).length) {
      placeFooled(panel);
    }
    showNumbers(panel, data);
  }

  function clock(seconds) {
    var s = Math.max(0, Math.ceil(seconds));
    var m = Math.floor(s / 60);
    s = s % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function timeLeft() {
    var panel = document.getElementById("class-collection");
    var out = panel && panel.querySelector("#collection-left");
    if (!out || !deadline) {
      return;
    }
    var left = deadline - Date.now() / 1000;
    out.textContent = left > 0 ? fill(panel.getAttribute("data-left-text"), { time: clock(left) })
                               : panel.getAttribute("data-over-text");
    out.classList.toggle("is-over", left <= 0);
  }

  function hostAct(panel, button, method, path, body) {
    var form = button.closest("form");
    var box = (form || panel).querySelector("[data-collection-message]");
    button.disabled = true;
    return call(method, path, body).then(function (result) {
      button.disabled = false;
      say(box, result.message);
      if (result.ok) {
        refreshPanel();
      }
      return result;
    });
  }

  function openBody(form) {
    var own = form.querySelector("input[name=kind][value=own]").checked;
    var labels = null;
    if (own) {
      labels = form.querySelector("input[name=labels]").value.split(",")
        .map(function (s) { return s.trim(); })
        .filter(function (s) { return s.length > 0; });
    }
    var number = function (name) {
      var value = form.querySelector("input[name=" + name + "]").value.trim();
      return /^\d+$/.test(value) ? parseInt(value, 10) : value;
    };
    return { labels: labels, target: number("target"), minutes: number("minutes") };
  }

  document.addEventListener("click", function (event) {
    var panel = event.target.closest ? event.target.closest("#class-collection") : null;
    if (!panel) {
      return;
    }
    var code = panel.getAttribute("data-code");
    var remove = event.target.closest("[data-remove]");
    if (remove) {
      var li = remove.closest("[data-id]");
      var id = li.getAttribute("data-id");
      remove.disabled = true;
      call("DELETE", api(code, "/drawings/" + encodeURIComponent(id))).then(function (result) {
        remove.disabled = false;
        say(panel.querySelector("[data-collection-message]"), result.message);
        if (result.ok) {
          delete known[id];
          li.remove();
        }
      });
      return;
    }
    var post = event.target.closest("[data-collection-post]");
    if (post) {
      var action = post.getAttribute("data-collection-post");
      if (action === "train") {
        hostAct(panel, post, "POST", api(code, "/train"));
      } else if (action === "close") {
        hostAct(panel, post, "DELETE", api(code));
      }
    }
  });

  /* Typing labels chooses "our own labels". */
  document.addEventListener("input", function (event) {
    if (event.target && event.target.id === "collection-labels") {
      var own = document.getElementById("collection-own");
      if (own) {
        own.checked = event.target.value.trim() !== "";
      }
    }
  });

  /* ---------- a phone ---------- */

  var phone = { sending: false };

  function phoneState(root) {
    try {
      return JSON.parse(root.getAttribute("data-state") || "{}") || {};
    } catch (err) {
      return {};
    }
  }

  function showPhase(root, phase) {
    root.setAttribute("data-phase", phase);
    root.querySelectorAll("[data-when]").forEach(function (node) {
      node.hidden = node.getAttribute("data-when").split(" ").indexOf(phase) < 0;
    });
  }

  /* The label asked for changes only with this phone's own sending or undoing (``keep``
     otherwise): other phones' drawings change which label the server would ask next, and a
     label must not change under a student's pen. */
  function showAsk(root, state, keep) {
    var labels = state.labels || [];
    var ask = document.getElementById("collect-ask");
    var shown = ask ? parseInt(ask.getAttribute("data-ask"), 10) : NaN;
    if (ask && typeof state.ask === "number" && labels[state.ask] !== undefined
        && !(keep && labels[shown] !== undefined && ask.textContent === labels[shown])) {
      ask.setAttribute("data-ask", String(state.ask));
      ask.textContent = labels[state.ask];
    }
    var mine = document.getElementById("collect-mine");
    if (mine && typeof state.mine === "number") {
      mine.textContent = fill(root.getAttribute("data-mine-text"), { n: state.mine });
    }
  }

  function onPhoneEvent(root, data) {
    var state = phoneState(root);
    var phase = isOpen(data) ? data.phase : data.phase === "closed" ? "closed" : "none";
    if (JSON.stringify(data.labels || []) !== JSON.stringify(state.labels || []) && isOpen(data)) {
      // Another collection: the page brings its labels (nothing is on the pad yet).
      window.location.reload();
      return;
    }
    var next = {};
    Object.keys(state).forEach(function (k) { next[k] = state[k]; });
    Object.keys(data).forEach(function (k) { next[k] = data[k]; });
    root.setAttribute("data-state", JSON.stringify(next));
    if (phase !== root.getAttribute("data-phase")) {
      showPhase(root, phase);
    }
    showAsk(root, next, true);
  }

  /* A probability as the server writes percentages (app/numbers.py pct): "98,1 %" in
     Spanish, "98.1%" in English. */
  function percent(p) {
    var shown = (p * 100).toFixed(1);
    return document.documentElement.lang === "es" ? shown.replace(".", ",") + "\u00a0%" : shown + "%";
  }

  function answer(root, state, result) {
    var out = document.getElementById("collect-result");
    var labels = state.labels || [];
    var head = document.getElementById("collect-answer").content.cloneNode(true);
    head.querySelector("[data-predicted]").textContent = labels[result.predicted] || "";
    var verdict = head.querySelector("[data-verdict]");
    verdict.textContent = root.getAttribute(result.right ? "data-right-text" : "data-fooled-text");
    verdict.classList.add(result.right ? "is-right" : "is-fooled");
    var body = head.querySelector("tbody");
    var row = document.getElementById("collect-bar");
    (result.probabilities || []).forEach(function (p, k) {
      var tr = row.content.firstElementChild.cloneNode(true);
      tr.querySelector("[data-name]").textContent = labels[k];
      tr.querySelector("[data-bar]").value = Math.round(p * 1000);
      tr.querySelector("[data-p]").textContent = percent(p);
      if (k === result.predicted) {
        tr.classList.add("is-top");
      }
      body.appendChild(tr);
    });
    out.replaceChildren(head);
    // Under the pad, below a phone's first screen: brought into view, the pad's buttons kept.
    if (out.scrollIntoView) {
      out.scrollIntoView({ block: "nearest" });
    }
  }

  function send(root, form) {
    var code = root.getAttribute("data-collect");
    var state = phoneState(root);
    var phase = root.getAttribute("data-phase");
    var box = document.getElementById("collect-message");
    var grid = form.querySelector("input[name=grid]").value;
    if (!grid) {
      say(box, root.getAttribute("data-empty-text"));
      return;
    }
    if (phone.sending || (phase !== "collect" && phase !== "test")) {
      return;
    }
    var values = grid.split(",").map(Number);
    var button = document.getElementById("collect-send");
    var label = parseInt(document.getElementById("collect-ask").getAttribute("data-ask"), 10);  // what the student saw
    if (phase === "test") {
      var meant = form.querySelector("input[name=label]:checked");
      label = meant ? parseInt(meant.value, 10) : label;
    }
    phone.sending = true;
    button.disabled = true;
    call("POST", api(code, phase === "test" ? "/test" : "/drawings"), { grid: values, label: label })
      .then(function (result) {
        phone.sending = false;
        button.disabled = false;
        say(box, result.message);
        if (!result.ok) {
          return;  // the drawing stays on the pad: send it again
        }
        if (phase === "test") {
          answer(root, state, result.data || {});
          return;
        }
        var next = phoneState(root);
        if (result.data) {
          if (typeof result.data.ask === "number") next.ask = result.data.ask;
          if (typeof result.data.mine === "number") next.mine = result.data.mine;
        }
        root.setAttribute("data-state", JSON.stringify(next));
        document.getElementById("collect-clear").click();
        showAsk(root, next);
      });
  }

  function undo(root, button) {
    var code = root.getAttribute("data-collect");
    var box = document.getElementById("collect-undo-message");
    button.disabled = true;
    call("DELETE", api(code, "/drawings/last")).then(function (result) {
      button.disabled = false;
      say(box, result.message);
      if (result.ok && result.data) {
        var next = phoneState(root);
        if (typeof result.data.mine === "number") next.mine = result.data.mine;
        if (typeof result.data.ask === "number") next.ask = result.data.ask;
        root.setAttribute("data-state", JSON.stringify(next));
        showAsk(root, next);
      }
    });
  }

  document.addEventListener("submit", function (event) {
    var root = document.getElementById("collect");
    if (root && event.target && event.target.id === "collect-form") {
      event.preventDefault();
      send(root, event.target);
    } else if (event.target && event.target.id === "collection-open-form") {
      event.preventDefault();
      var panel = event.target.closest("#class-collection");
      hostAct(panel, document.getElementById("collection-start"), "POST",
              api(panel.getAttribute("data-code")), openBody(event.target));
    }
  });

  document.addEventListener("click", function (event) {
    var root = document.getElementById("collect");
    var target = event.target.closest ? event.target.closest("#collect-undo, #collect-clear") : null;
    if (!root || !target) {
      return;
    }
    if (target.id === "collect-undo") {
      undo(root, target);
    } else {
      say(document.getElementById("collect-message"), "");
    }
  });

  /* ---------- the class's stream ---------- */

  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    if (!event.target || event.target.id !== "class-collection-events") {
      return;
    }
    event.preventDefault();  // JSON, not HTML to swap in
    var data;
    try {
      data = JSON.parse((event.detail && event.detail.data) || "null");
    } catch (err) {
      return;
    }
    if (!data) {
      return;
    }
    var panel = document.getElementById("class-collection");
    var root = document.getElementById("collect");
    if (panel) {
      onHostEvent(panel, data);
    } else if (root) {
      onPhoneEvent(root, data);
    }
    var link = document.getElementById("class-collect-link");
    if (link) {
      link.hidden = !(data.phase === "collect" || data.phase === "test");
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("class-collection");
    if (panel) {
      lastKey = shownKey(panel);
      var remaining = parseFloat(panel.getAttribute("data-remaining") || "");
      deadline = isNaN(remaining) ? null : Date.now() / 1000 + remaining;
      window.setInterval(timeLeft, 1000);
      timeLeft();
    }
  });
})();
