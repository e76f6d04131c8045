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

// Graph runs (pages/graph.py): hovering a node shows it beside the graph, clicking a latent
// opens its feature page; shift-, ctrl- or cmd-click (or the table's boxes) selects nodes,
// saved as a named supernode by POSTing the new list of groups as JSON. Text from the run
// goes in with textContent only.
(function () {
  "use strict";
  var figure = document.getElementById("graph");
  var svg = document.getElementById("graph-svg");
  if (!figure || !svg || !figure.dataset.graph) return;
  var data = JSON.parse(figure.dataset.graph);
  var info = document.getElementById("graph-info");
  var selected = [];
  var nodes = {};
  var edges = {};
  var glyphs = { "\n": "↵", "\r": "␍", "\t": "⇥" };

  svg.querySelectorAll(".node").forEach(function (el) {
    nodes[el.dataset.id] = el;
    var title = el.querySelector("title"); // our panel replaces the native tooltip
    if (title) {
      el.setAttribute("aria-label", title.textContent);
      title.remove();
    }
  });
  svg.querySelectorAll("line.edge").forEach(function (line) {
    [line.dataset.s, line.dataset.t].forEach(function (id) {
      (edges[id] = edges[id] || []).push(line);
    });
  });

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function number(x) {
    return x === null || x === undefined ? "—" : Number(x).toPrecision(4).replace(/\.?0+$/, "");
  }
  function shown(tok) {
    var out = "";
    for (var i = 0; i < tok.length; i++) out += glyphs[tok[i]] || tok[i];
    return out || "∅";
  }
  function exampleView(ex, scale) {
    var div = el("div", null, "tokens");
    ex.tokens.forEach(function (tok, i) {
      var act = ex.acts[i] || 0;
      var span = el("span", shown(tok), i === ex.peak ? "tok max" : "tok");
      span.dataset.act = number(act);
      var alpha = scale > 0 ? Math.min(Math.abs(act) / scale, 1) : 0;
      if (alpha >= 0.005) {
        span.style.background = act > 0 ? "rgba(255,110,0," + alpha.toFixed(3) + ")"
          : "rgba(30,110,255," + alpha.toFixed(3) + ")";
      }
      div.appendChild(span);
    });
    return div;
  }

  var hot = [];
  function unfocus() {
    hot.forEach(function (e) { e.classList.remove("hot"); });
    hot = [];
    svg.classList.remove("focus");
  }
  function show(id) {
    var node = data.nodes[id];
    if (!node) return;
    unfocus();
    hot = [nodes[id]].concat(edges[id] || []);
    hot.forEach(function (e) { e.classList.add("hot"); });
    svg.classList.add("focus");
    info.textContent = "";
    info.appendChild(el("h3", node.desc, "node-desc"));
    var dl = el("dl", null, "facts");
    var facts = [["node", id], ["kind", node.kind]];
    if (node.label) facts.push(["label", node.label]);
    facts.push([node.act_name, number(node.act)], ["influence", number(node.infl)]);
    if (node.site) facts.push(["site", node.site]);
    facts.forEach(function (f) {
      dl.appendChild(el("dt", f[0]));
      dl.appendChild(el("dd", f[1]));
    });
    info.appendChild(dl);
    if (node.kind !== "feature") return;
    if (node.href) info.appendChild(el("p", "Click to open its feature page.", "muted"));
    else if (data.harvest_note) info.appendChild(el("p", data.harvest_note, "muted harvest-note"));
    var unit = node.examples ? data.examples[node.examples] : null;
    if (!unit) {
      if (data.note) info.appendChild(el("p", data.note, "muted"));
      return;
    }
    info.appendChild(el("p", "In the harvest: max " + number(unit.max) + ", active on " +
      (unit.active === null ? "—" : (100 * unit.active).toFixed(1) + "%") + " of tokens. Top examples:", "muted"));
    unit.examples.forEach(function (ex) {
      info.appendChild(exampleView(ex, unit.max || ex.max || 0));
    });
  }

  var count = document.getElementById("selection-count");
  var form = document.getElementById("supernode-form");
  var nameBox = document.getElementById("supernode-name");
  var status = document.getElementById("supernode-status");
  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "error" : "";
  }
  function mark(id, on) {
    if (nodes[id]) nodes[id].classList.toggle("selected", on);
    document.querySelectorAll('#node-table tr[data-id]').forEach(function (row) {
      if (row.dataset.id !== id) return;
      row.classList.toggle("selected", on);
      var box = row.querySelector("input.select-node");
      if (box) box.checked = on;
    });
  }
  function select(id, on) {
    var at = selected.indexOf(id);
    if (on && at < 0) selected.push(id);
    if (!on && at >= 0) selected.splice(at, 1);
    mark(id, on);
    var n = selected.length;
    count.textContent = n === 0 ? "no nodes selected"
      : n + " node" + (n === 1 ? "" : "s") + " selected: " + selected.slice(0, 6).join(", ") + (n > 6 ? ", …" : "");
  }
  function clear() {
    selected.slice().forEach(function (id) { select(id, false); });
  }

  svg.addEventListener("mouseover", function (event) {
    var target = event.target.closest ? event.target.closest(".node") : null;
    if (target) show(target.dataset.id);
  });
  svg.addEventListener("mouseout", function (event) {
    var target = event.target.closest ? event.target.closest(".node") : null;
    if (target) unfocus();
  });
  svg.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest(".node") : null;
    if (!target) return;
    var id = target.dataset.id;
    if (event.shiftKey || event.ctrlKey || event.metaKey) {
      event.preventDefault();
      select(id, selected.indexOf(id) < 0);
      return;
    }
    var node = data.nodes[id];
    if (node && node.href) window.location.href = node.href;
  });
  document.querySelectorAll("#node-table input.select-node").forEach(function (box) {
    box.addEventListener("change", function () { select(box.dataset.id, box.checked); });
  });
  document.querySelectorAll("#node-table tr[data-id]").forEach(function (row) {
    row.addEventListener("mouseenter", function () { show(row.dataset.id); });
  });

  function save(groups, done) {
    say("saving…");
    fetch(data.post, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(groups),
    }).then(function (resp) {
      return resp.json().then(function (answer) { return { ok: resp.ok, answer: answer }; });
    }).then(function (res) {
      if (!res.ok) return say(res.answer.error || "not saved", true);
      data.supernodes = res.answer.supernodes;
      say(done);
      window.location.reload();
    }).catch(function (err) { say("not saved: " + err, true); });
  }
  if (form) {
    form.hidden = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var name = nameBox.value.trim();
      if (!name) return say("give the supernode a name", true);
      if (!selected.length) return say("select nodes first (shift-click them, or tick them below)", true);
      var groups = data.supernodes.filter(function (g) { return g[0] !== name; });
      save(groups.concat([[name].concat(selected)]), "saved " + name);
    });
    document.getElementById("selection-clear").addEventListener("click", clear);
  }
  document.querySelectorAll(".supernode-actions").forEach(function (cell) { cell.hidden = false; });
  function group(name) {
    return data.supernodes.filter(function (g) { return g[0] === name; })[0] || [name];
  }
  document.querySelectorAll("button.supernode-select").forEach(function (button) {
    button.addEventListener("click", function () {
      clear();
      group(button.dataset.name).slice(1).forEach(function (id) { select(id, true); });
      nameBox.value = button.dataset.name;
    });
  });
  document.querySelectorAll("button.supernode-delete").forEach(function (button) {
    button.addEventListener("click", function () {
      var name = button.dataset.name;
      save(data.supernodes.filter(function (g) { return g[0] !== name; }), "deleted " + name);
    });
  });
  document.querySelectorAll("#supernode-table tr[data-name]").forEach(function (row) {
    var members = group(row.dataset.name).slice(1);
    row.addEventListener("mouseenter", function () {
      members.forEach(function (id) { if (nodes[id]) nodes[id].classList.add("member"); });
    });
    row.addEventListener("mouseleave", function () {
      members.forEach(function (id) { if (nodes[id]) nodes[id].classList.remove("member"); });
    });
  });
})();
