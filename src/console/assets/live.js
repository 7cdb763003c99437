// Live updates for the console: the hub's event stream (EventSource), with
// changes coalesced and applied at most every 500 ms, one repaint a batch.
(function () {
  "use strict";
  var url = document.body.dataset.live;
  if (!url || !window.EventSource) return;
  var pending = new Map();
  var timer = null;
  function when(ms) { return new Date(ms).toISOString().slice(0, 19) + "Z"; }
  function cell(row, cls, text) {
    var c = row.querySelector("." + cls);
    if (c) c.textContent = text;
    return c;
  }
  function apply(ev) {
    document.querySelectorAll('tr[data-id="' + ev.tagent_id + '"]').forEach(function (row) {
      if (ev.kind === "connected" || ev.kind === "disconnected") {
        var s = cell(row, "status", ev.kind);
        if (s) s.className = "status " + ev.kind;
        cell(row, "reason", ev.reason || "");
        cell(row, "since", when(ev.at));
      } else if (ev.kind === "deleted") {
        cell(row, "status", "deleted");
      }
      row.classList.add("changed");
    });
    var recent = document.getElementById("recent");
    var only = recent && recent.dataset.tagent;
    if (recent && (!only || only === String(ev.tagent_id))) {
      var tr = document.createElement("tr");
      [when(ev.at), ev.kind, ev.tagent_id, ev.ip + ":" + ev.port, ev.reason || ""].forEach(function (v, i) {
        var td = document.createElement("td");
        td.textContent = v;
        if (i === 1) td.className = ev.kind;
        tr.appendChild(td);
      });
      recent.insertBefore(tr, recent.firstChild);
      while (recent.children.length > 50) recent.removeChild(recent.lastChild);
    }
  }
  function flush() {
    timer = null;
    var batch = pending;
    pending = new Map();
    batch.forEach(apply);
  }
  var source = new EventSource(url);
  ["registered", "connected", "disconnected", "deleted"].forEach(function (kind) {
    source.addEventListener(kind, function (m) {
      var ev = JSON.parse(m.data);
      pending.set(ev.tagent_id, ev);
      if (!timer) timer = setTimeout(flush, 500);
    });
  });
})();
