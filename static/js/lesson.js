/* CNN Lab: walking the lesson with the keyboard. PageDown follows the page's "next section"
 * link (a[rel=next] in .lesson-nav), PageUp the "previous" one, so a teaching assistant can
 * go through the whole session without the mouse. Keys typed in a form field are left alone.
 * A page holding two sections (/pipeline: 5 at #backprop, 8 at #loss) has a .lesson-nav per
 * section: the one whose data-anchor is the address's #fragment is followed, else the first.
 * Also: after htmx pushes a new address (a changed setting), the language links follow it,
 * so switching language keeps the view.
 */
(function () {
  "use strict";

  var KEYS = { PageDown: "next", PageUp: "prev" };

  function isTyping(el) {
    if (!el || !el.tagName) {
      return false;
    }
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  function followAddress() {
    var links = document.querySelectorAll(".lang-switch a[hreflang]");
    for (var i = 0; i < links.length; i++) {
      var params = new URLSearchParams(window.location.search);
      params.set("lang", links[i].getAttribute("hreflang"));
      links[i].setAttribute("href", window.location.pathname + "?" + params.toString());
    }
  }

  document.addEventListener("htmx:pushedIntoHistory", followAddress);
  document.addEventListener("htmx:replacedInHistory", followAddress);

  document.addEventListener("keydown", function (event) {
    var rel = KEYS[event.key];
    if (!rel || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey || isTyping(event.target)) {
      return;
    }
    var anchor = window.location.hash.slice(1);
    var nav = (anchor && document.querySelector('.lesson-nav[data-anchor="' + CSS.escape(anchor) + '"]')) ||
      document.querySelector(".lesson-nav");
    var link = nav && nav.querySelector('a[rel="' + rel + '"]');
    if (link) {
      event.preventDefault();
      window.location.assign(link.href);
    }
  });
})();
