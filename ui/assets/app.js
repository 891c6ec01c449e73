// regrpo ui: keyboard review. Loaded from the binary (no inline script: the CSP forbids it).
//   j / k   next / previous record within the filter
//   a       accept          r   reject (type the reason, Enter)
//   f       flag            u   undo your last review
//   ?       this help       Esc leave a text field
(function () {
  "use strict";
  function typing(el) {
    return el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].indexOf(el.tagName) >= 0);
  }
  function byKey(name) {
    return document.querySelector('[data-key="' + name + '"]');
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (typing(e.target)) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    var actions = { j: "next", k: "prev", a: "accept", f: "flag", u: "undo" };
    if (actions[e.key]) {
      var el = byKey(actions[e.key]);
      if (el) {
        e.preventDefault();
        el.click();
      }
    } else if (e.key === "r") {
      var reason = byKey("reason");
      if (reason) {
        e.preventDefault();
        reason.focus();
      }
    } else if (e.key === "?") {
      var help = document.getElementById("help");
      if (help) {
        e.preventDefault();
        help.hidden = !help.hidden;
      }
    }
  });
  // Raw / pretty toggles for tool-call arguments.
  document.addEventListener("click", function (e) {
    var t = e.target.closest && e.target.closest("[data-toggle]");
    if (!t) return;
    var box = document.getElementById(t.getAttribute("data-toggle"));
    if (!box) return;
    var pretty = box.querySelector(".pretty"), raw = box.querySelector(".raw");
    pretty.hidden = !pretty.hidden;
    raw.hidden = !raw.hidden;
    t.textContent = raw.hidden ? "raw" : "pretty";
  });
})();
