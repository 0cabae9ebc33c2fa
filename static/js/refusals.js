/* CNN Lab: no refusal is silent. When an htmx request is refused (any 4xx or 5xx) or the server
 * cannot be reached, say so where the person acted, in the page's language. htmx swaps nothing
 * then, so the previous view and its address stay as they were; what the refused request was
 * meant to replace, and no longer matches the inputs, is marked out of date.
 *
 * The words come from the server, so this file knows no language: the refusal's own message
 * (a JSON "detail", or the error page's [data-refusal-message] parts) when it has one, else
 * <body data-refusals='{"400": …, "429": "… {seconds} …", "network": …}'> (templates/base.html).
 *
 * Hooks, on the element that makes the request or any ancestor of it:
 *   data-refusal-at="<selector>"  the message goes into that element, not beside the control;
 *   data-stale="<selector>"       what no longer matches the inputs when the request is refused.
 */
(function () {
  "use strict";

  var texts = null;
  var keys = new WeakMap();
  var nextKey = 1;

  function text(name) {
    if (texts === null) {
      try {
        texts = JSON.parse(document.body.getAttribute("data-refusals") || "{}");
      } catch (err) {
        texts = {};
      }
    }
    return texts[name] || "";
  }

  /* One key per requesting element: its message and its stale marks carry it. */
  function keyOf(elt) {
    if (!keys.has(elt)) {
      keys.set(elt, String(nextKey++));
    }
    return keys.get(elt);
  }

  /* ---------- what to say ---------- */

  function serverMessage(xhr) {
    var type = (xhr.getResponseHeader("Content-Type") || "").toLowerCase();
    var body = xhr.responseText || "";
    if (type.indexOf("json") >= 0) {
      try {
        var detail = JSON.parse(body).detail;
        return typeof detail === "string" ? detail : "";
      } catch (err) {
        return "";
      }
    }
    if (type.indexOf("html") >= 0) {
      var doc = new DOMParser().parseFromString(body, "text/html");
      return Array.prototype.map.call(doc.querySelectorAll("[data-refusal-message]"), function (part) {
        return part.textContent.replace(/\s+/g, " ").trim();
      }).join(" ");
    }
    return "";
  }

  function refusal(xhr) {
    var status = xhr.status;
    var said = serverMessage(xhr);
    if (said) {
      return said;
    }
    if (status === 429) {
      var wait = parseInt(xhr.getResponseHeader("Retry-After") || "", 10);
      return wait > 0 ? text("429").replace("{seconds}", String(wait)) : text("429-later");
    }
    if (status >= 500) {
      return text("5xx");
    }
    return text(String(status)) || text("400");
  }

  /* ---------- where to say it ---------- */

  /* The control the person used: the button that submitted (a stepper's keys click its hidden
     "jump" button), the field that changed, else the requesting element itself (a link, a button). */
  function actedOn(detail) {
    var elt = detail.elt;
    var event = detail.requestConfig && detail.requestConfig.triggeringEvent;
    var control = event && (event.submitter || event.target);
    control = control && control.closest ? control.closest("button, a, input, select, textarea") : null;
    return control && control !== elt && elt.contains(control) ? control : elt;
  }

  function place(detail, key, message) {
    var elt = detail.elt;
    var control = actedOn(detail);
    var named = control.closest("[data-refusal-at]");
    var region = named ? document.querySelector(named.getAttribute("data-refusal-at")) : null;
    if (region) {
      region.textContent = message;
      region.setAttribute("data-refusal-for", key);
      return region;
    }
    var box = document.createElement("p");
    box.className = "refusal";
    box.setAttribute("role", "alert");
    box.setAttribute("data-refusal-for", key);
    box.textContent = message;
    if (control === elt && elt.tagName === "FORM") {
      elt.insertBefore(box, elt.firstChild);  // a form sent with no control named (Enter, a script): at its top
      return box;
    }
    // Beside the control's own block (its field, its button row), inside the requesting element;
    // a link or button that makes the request alone goes after its paragraph.
    var block = control.closest(".control, .field, label, [role=group], p, li");
    var anchor = block && (block === elt || elt.contains(block) || block === elt.parentElement) ? block : control;
    if (anchor !== control) {
      // The server's message about this control's previous attempt is not current any more.
      var old = anchor.querySelectorAll(".field-error");
      for (var i = 0; i < old.length; i++) {
        old[i].hidden = true;
      }
    }
    anchor.insertAdjacentElement("afterend", box);
    return box;
  }

  /* ---------- what is out of date ---------- */

  function markStale(detail, key) {
    var owner = actedOn(detail).closest("[data-stale]");
    if (!owner) {
      return;
    }
    var parts = document.querySelectorAll(owner.getAttribute("data-stale"));
    for (var i = 0; i < parts.length; i++) {
      parts[i].classList.add("is-stale");
      parts[i].setAttribute("data-stale-label", text("stale"));
      parts[i].setAttribute("data-stale-by", key);
    }
  }

  function clear(key) {
    var said = document.querySelectorAll('[data-refusal-for="' + key + '"]');
    for (var i = 0; i < said.length; i++) {
      if (said[i].classList.contains("refusal")) {
        said[i].remove();
      } else {
        said[i].textContent = "";  // a named region stays, empty
        said[i].removeAttribute("data-refusal-for");
      }
    }
    var stale = document.querySelectorAll('[data-stale-by="' + key + '"]');
    for (var j = 0; j < stale.length; j++) {
      stale[j].classList.remove("is-stale");
      stale[j].removeAttribute("data-stale-by");
      stale[j].removeAttribute("data-stale-label");
    }
  }

  function refused(event, message) {
    var detail = event.detail;
    if (!detail || !detail.elt) {
      return;
    }
    var key = keyOf(detail.elt);
    clear(key);
    markStale(detail, key);
    var box = place(detail, key, message);
    if (box.scrollIntoView) {
      box.scrollIntoView({ block: "nearest" });
    }
  }

  document.addEventListener("htmx:responseError", function (event) {
    refused(event, refusal(event.detail.xhr));
  });
  document.addEventListener("htmx:sendError", function (event) {
    refused(event, text("network"));
  });
  document.addEventListener("htmx:timeout", function (event) {
    refused(event, text("network"));
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var detail = event.detail;
    if (detail && detail.successful && detail.elt && keys.has(detail.elt)) {
      clear(keys.get(detail.elt));
    }
  });
})();
