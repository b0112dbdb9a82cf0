/* luopan report: sortable tables, the sample browser and side-by-side models.
   Data from the run is only ever put into the page with textContent, never parsed as markup. */
(function () {
  "use strict";
  var INDEX = JSON.parse(document.getElementById("luopan-index").textContent);
  var PAGE = 50;
  var store = {};     // unit key -> {prefixes, rows}
  var waiting = {};   // unit key -> [callbacks]

  window.__luopan_samples_load = function (key, data) {
    store[key] = data;
    var cbs = waiting[key] || [];
    delete waiting[key];
    cbs.forEach(function (cb) { cb(data); });
  };

  function unitOf(key) {
    for (var i = 0; i < INDEX.units.length; i++) if (INDEX.units[i].key === key) return INDEX.units[i];
    return null;
  }

  function load(key, cb) {
    if (store[key]) { cb(store[key]); return; }
    if (waiting[key]) { waiting[key].push(cb); return; }
    waiting[key] = [cb];
    var u = unitOf(key);
    var s = document.createElement("script");
    s.src = u.file.split("/").map(encodeURIComponent).join("/");
    s.onerror = function () {
      delete waiting[key];
      cb(null);
    };
    document.body.appendChild(s);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function option(sel, value, text) {
    var o = el("option", null, text);
    o.value = value;
    sel.appendChild(o);
  }

  /* ---------------------------------------------------------------- sortable tables */
  function sortTable(th) {
    var table = th.closest("table"), tbody = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("data-sort") !== "asc";
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("data-sort"); });
    th.setAttribute("data-sort", asc ? "asc" : "desc");
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var ca = a.cells[col], cb = b.cells[col];
      var va = ca.getAttribute("data-v"), vb = cb.getAttribute("data-v");
      var r;
      if (va !== "" && vb !== "" && va !== null && vb !== null) r = parseFloat(va) - parseFloat(vb);
      else if (va !== "" && va !== null) r = 1;
      else if (vb !== "" && vb !== null) r = -1;
      else r = ca.textContent.localeCompare(cb.textContent);
      return asc ? r : -r;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.addEventListener("click", function () { sortTable(th); });
  });

  /* ---------------------------------------------------------------- rendering one sample */
  function textBlock(label, text, cls) {
    var box = el("div", "field " + (cls || ""));
    box.appendChild(el("div", "label", label));
    box.appendChild(el("pre", "text", text));
    return box;
  }

  function foldable(summary, text) {
    var d = el("details", "fold");
    d.appendChild(el("summary", null, summary));
    d.appendChild(el("pre", "text", text));
    return d;
  }

  function promptNode(data, row) {
    var box = el("div", "field prompt");
    box.appendChild(el("div", "label", "prompt"));
    if (row.pp >= 0) {
      var pre = data.prefixes[row.pp];
      box.appendChild(foldable("shared prefix (few-shot examples, instructions): " + pre.length + " characters", pre));
    }
    box.appendChild(el("pre", "text", row.p));
    return box;
  }

  var THINK = /<think>([\s\S]*?)(<\/think>|$)/;
  function outputNode(row, label) {
    var box = el("div", "field output");
    box.appendChild(el("div", "label", label || "output"));
    if (row.t) {
      row.t.forEach(function (t, i) { box.appendChild(textBlock("turn " + (i + 1), t)); });
      return box;
    }
    var text = row.o;
    var m = THINK.exec(text);
    if (m) {
      box.appendChild(foldable("reasoning (" + m[1].length + " characters)", m[1]));
      text = text.slice(0, m.index) + text.slice(m.index + m[0].length);
    }
    box.appendChild(el("pre", "text", text));
    return box;
  }

  function logprobNode(row) {
    var t = el("table", "lp");
    var head = el("tr");
    ["option", "log-likelihood", ""].forEach(function (h) { head.appendChild(el("th", null, h)); });
    t.appendChild(head);
    var best = -Infinity;
    row.lp.forEach(function (v) { if (v !== null && v > best) best = v; });
    row.lp.forEach(function (v, i) {
      var choice = row.ch ? row.ch[i] : String(i);
      var tr = el("tr", v === best ? "picked" : null);
      tr.appendChild(el("td", null, choice));
      tr.appendChild(el("td", "num", v === null ? "-" : v.toFixed(4)));
      var marks = [];
      if (v === best) marks.push("predicted");
      if (row.g !== "" && String(choice).trim() === row.g) marks.push("gold");
      tr.appendChild(el("td", "muted", marks.join(", ")));
      t.appendChild(tr);
    });
    return t;
  }

  function verdictNode(row) {
    var v = el("div", "verdict");
    v.appendChild(el("span", "badge " + row.st, row.st));
    v.appendChild(el("span", null, " predicted: "));
    v.appendChild(el("code", null, row.pr === "" ? "(none)" : row.pr));
    if (row.x !== undefined && row.x !== row.pr) {
      v.appendChild(el("span", null, " extracted: "));
      v.appendChild(el("code", null, row.x));
    }
    v.appendChild(el("span", null, " gold: "));
    v.appendChild(el("code", null, row.g));
    v.appendChild(el("span", "muted", " score: " + (row.sc === null || row.sc === undefined ? "-" : row.sc)));
    if (row.v) v.appendChild(el("div", "muted", row.v));
    if (row.e) v.appendChild(el("div", "error", "failed: " + row.e));
    return v;
  }

  function sampleNode(data, row, names) {
    var card = el("article", "sample " + row.st);
    var h = el("div", "sid");
    h.appendChild(el("code", null, row.id));
    h.appendChild(el("span", "muted", "  " + (names[row.s] || row.s || "")));
    card.appendChild(h);
    card.appendChild(verdictNode(row));
    card.appendChild(promptNode(data, row));
    if (row.o !== undefined || row.t) card.appendChild(outputNode(row));
    if (row.lp) card.appendChild(logprobNode(row));
    return card;
  }

  function matches(data, row, q) {
    if (!q) return true;
    return (String(row.id).toLowerCase().indexOf(q) >= 0 || row.p.toLowerCase().indexOf(q) >= 0 ||
            (row.o && row.o.toLowerCase().indexOf(q) >= 0) ||
            (row.pp >= 0 && data.prefixes[row.pp].toLowerCase().indexOf(q) >= 0));
  }

  /* ---------------------------------------------------------------- the sample browser */
  var sUnit = document.getElementById("s-unit"), sStatus = document.getElementById("s-status"),
      sSubset = document.getElementById("s-subset"), sSearch = document.getElementById("s-search"),
      sList = document.getElementById("s-list"), sMore = document.getElementById("s-more"),
      sInfo = document.getElementById("s-info");
  var sShown = 0, sRows = [];

  INDEX.units.forEach(function (u) {
    var c = u.counts;
    option(sUnit, u.key, u.key + " (" + c.right + " right, " + c.wrong + " wrong, " + c.unparsed +
           " unparsed, " + c.failed + " failed)");
  });

  function fillSubsets(u) {
    while (sSubset.options.length > 1) sSubset.remove(1);
    u.subsets.forEach(function (s) { option(sSubset, s, u.names[s] || s); });
  }

  function sRender(more) {
    var key = sUnit.value;
    if (!key) return;
    sInfo.textContent = "loading…";
    load(key, function (data) {
      if (!data) { sInfo.textContent = "could not load " + unitOf(key).file; return; }
      if (key !== sUnit.value) return;
      var u = unitOf(key);
      if (!more) {
        var st = sStatus.value, sub = sSubset.value, q = sSearch.value.toLowerCase();
        sRows = data.rows.filter(function (r) {
          return (!st || r.st === st) && (!sub || r.s === sub) && matches(data, r, q);
        });
        sList.textContent = "";
        sShown = 0;
      }
      var end = Math.min(sRows.length, sShown + PAGE);
      var frag = document.createDocumentFragment();
      for (var i = sShown; i < end; i++) frag.appendChild(sampleNode(data, sRows[i], u.names));
      sList.appendChild(frag);
      sShown = end;
      sInfo.textContent = sRows.length + " of " + data.rows.length + " samples; showing " + sShown;
      sMore.hidden = sShown >= sRows.length;
    });
  }
  sUnit.addEventListener("change", function () { fillSubsets(unitOf(sUnit.value)); sRender(false); });
  [sStatus, sSubset].forEach(function (e) { e.addEventListener("change", function () { sRender(false); }); });
  var sTimer = null;
  sSearch.addEventListener("input", function () {
    clearTimeout(sTimer);
    sTimer = setTimeout(function () { sRender(false); }, 200);
  });
  sMore.addEventListener("click", function () { sRender(true); });

  /* ---------------------------------------------------------------- side by side */
  var cDataset = document.getElementById("c-dataset"), cA = document.getElementById("c-a"),
      cB = document.getElementById("c-b"), cFilter = document.getElementById("c-filter"),
      cSearch = document.getElementById("c-search"), cList = document.getElementById("c-list"),
      cMore = document.getElementById("c-more"), cInfo = document.getElementById("c-info");
  var cShown = 0, cPairs = [], cCtx = null;

  INDEX.datasets.forEach(function (d) {
    var n = INDEX.units.filter(function (u) { return u.dataset === d; }).length;
    if (n >= 2) option(cDataset, d, d + " (" + n + " models)");
  });

  function fillModels() {
    [cA, cB].forEach(function (s) { s.textContent = ""; });
    INDEX.units.forEach(function (u) {
      if (u.dataset === cDataset.value) { option(cA, u.key, u.model); option(cB, u.key, u.model); }
    });
    if (cB.options.length > 1) cB.selectedIndex = 1;
  }

  function right(r) { return r && r.st === "right"; }

  function cRender(more) {
    if (!cA.value || !cB.value) {
      cInfo.textContent = cDataset.options.length ? "" : "no dataset was run by two or more models";
      return;
    }
    var ka = cA.value, kb = cB.value;
    cInfo.textContent = "loading…";
    load(ka, function (da) {
      load(kb, function (db) {
        if (!da || !db) { cInfo.textContent = "could not load the samples"; return; }
        if (ka !== cA.value || kb !== cB.value) return;
        if (!more) {
          var byId = {};
          db.rows.forEach(function (r) { byId[r.id] = r; });
          var f = cFilter.value, q = cSearch.value.toLowerCase();
          cPairs = [];
          da.rows.forEach(function (a) {
            var b = byId[a.id];
            if (!b) return;
            var keep = !f || (f === "ab" && right(a) && !right(b)) || (f === "ba" && right(b) && !right(a)) ||
                       (f === "allwrong" && !right(a) && !right(b)) ||
                       (f === "disagree" && (a.pr !== b.pr || a.st !== b.st));
            if (keep && (matches(da, a, q) || matches(db, b, q))) cPairs.push([a, b]);
          });
          cList.textContent = "";
          cShown = 0;
          cCtx = [da, db, unitOf(ka), unitOf(kb)];
        }
        var end = Math.min(cPairs.length, cShown + PAGE);
        var frag = document.createDocumentFragment();
        for (var i = cShown; i < end; i++) frag.appendChild(pairNode(cPairs[i][0], cPairs[i][1]));
        cList.appendChild(frag);
        cShown = end;
        cInfo.textContent = cPairs.length + " items; showing " + cShown;
        cMore.hidden = cShown >= cPairs.length;
      });
    });
  }

  function pairNode(a, b) {
    var da = cCtx[0], db = cCtx[1], ua = cCtx[2], ub = cCtx[3];
    var card = el("article", "sample pair");
    var h = el("div", "sid");
    h.appendChild(el("code", null, a.id));
    h.appendChild(el("span", "muted", "  " + (ua.names[a.s] || a.s || "")));
    card.appendChild(h);
    card.appendChild(promptNode(da, a));
    var cols = el("div", "cols");
    [[a, ua, da], [b, ub, db]].forEach(function (x) {
      var col = el("div", "col");
      col.appendChild(el("div", "model", x[1].model));
      col.appendChild(verdictNode(x[0]));
      if (x[0].pp >= 0 && x[2] !== da && x[2].prefixes[x[0].pp] !== da.prefixes[a.pp]) {
        col.appendChild(promptNode(x[2], x[0]));
      }
      if (x[0].o !== undefined || x[0].t) col.appendChild(outputNode(x[0]));
      if (x[0].lp) col.appendChild(logprobNode(x[0]));
      cols.appendChild(col);
    });
    card.appendChild(cols);
    return card;
  }

  cDataset.addEventListener("change", function () { fillModels(); cRender(false); });
  [cA, cB, cFilter].forEach(function (e) { e.addEventListener("change", function () { cRender(false); }); });
  var cTimer = null;
  cSearch.addEventListener("input", function () {
    clearTimeout(cTimer);
    cTimer = setTimeout(function () { cRender(false); }, 200);
  });
  cMore.addEventListener("click", function () { cRender(true); });

  /* ---------------------------------------------------------------- start */
  // a unit's samples load when asked for (the buttons, a filter), or at once for small runs and #samples
  var SMALL = 2000;
  function size(key) {
    var c = unitOf(key).counts;
    return c.right + c.wrong + c.unparsed + c.failed;
  }
  document.getElementById("s-load").addEventListener("click", function () { sRender(false); });
  document.getElementById("c-load").addEventListener("click", function () { cRender(false); });
  if (INDEX.units.length) {
    fillSubsets(INDEX.units[0]);
    if (location.hash === "#samples" || size(INDEX.units[0].key) <= SMALL) sRender(false);
    else sInfo.textContent = size(INDEX.units[0].key) + " samples: press \u201cshow samples\u201d to load them";
  }
  if (cDataset.options.length) {
    fillModels();
    if (location.hash === "#compare" || (size(cA.value) <= SMALL && size(cB.value) <= SMALL)) cRender(false);
    else cInfo.textContent = "press \u201ccompare\u201d to load both models' samples";
  } else {
    cInfo.textContent = "no dataset was run by two or more models";
  }
})();
