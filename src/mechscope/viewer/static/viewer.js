// mechscope viewer: keyboard navigation and the token tooltip. No dependencies.
(function () {
  "use strict";

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  // j / → and k / ← follow the page's rel="next" / rel="prev" links; / focuses the search box.
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.key === "/") {
      var box = document.querySelector("[data-search]");
      if (box) {
        event.preventDefault();
        box.focus();
        box.select();
      }
      return;
    }
    var rel = { j: "next", ArrowRight: "next", k: "prev", ArrowLeft: "prev" }[event.key];
    if (!rel) return;
    var link = document.querySelector('a[rel="' + rel + '"]');
    if (link) {
      event.preventDefault();
      window.location.href = link.href;
    }
  });

  // Hovering a token shows its text and exact activation next to it.
  var tip = null;
  function showTip(tok) {
    if (tok.title) {
      tok.dataset.tip = tok.title; // replaces the slower native tooltip
      tok.removeAttribute("title");
    }
    if (!tip) {
      tip = document.createElement("div");
      tip.id = "tip";
      tip.setAttribute("role", "tooltip");
      document.body.appendChild(tip);
    }
    tip.textContent = tok.dataset.tip || tok.dataset.act || "";
    tip.style.display = "block";
    var box = tok.getBoundingClientRect();
    var left = Math.min(box.left, window.innerWidth - tip.offsetWidth - 4);
    var top = box.bottom + 4;
    if (top + tip.offsetHeight > window.innerHeight) top = box.top - tip.offsetHeight - 4;
    tip.style.left = Math.max(left, 4) + "px";
    tip.style.top = top + "px";
  }
  document.addEventListener("mouseover", function (event) {
    var tok = event.target.closest ? event.target.closest(".tok") : null;
    if (tok) showTip(tok);
    else if (tip) tip.style.display = "none";
  });
  document.addEventListener("scroll", function () {
    if (tip) tip.style.display = "none";
  }, { passive: true });
})();
