"""The dashboard's one page: HTML, a little CSS, and a script that polls ``/api/cluster``.

Everything the page shows is drawn in the browser from the JSON snapshot, with
text inserted as text (``textContent``), never as markup, so job data cannot
inject anything into the page.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PAGE"]

PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Titan dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 ui-monospace, Menlo, Consolas, monospace; margin: 1.5em; background: #0f1419; color: #d9dde3; }
  h1 { font-size: 18px; margin: 0 0 .2em; } h2 { font-size: 15px; margin: 1.4em 0 .4em; color: #9fb3c8; }
  #status { color: #8a96a3; } .bad { color: #ff6b6b; } .ok { color: #7bd88f; }
  .counts { display: flex; gap: 1.2em; flex-wrap: wrap; }
  .count { background: #1a222c; padding: .5em .8em; border-radius: 6px; min-width: 8em; }
  .count b { display: block; font-size: 20px; }
  ul.tree, ul.tree ul { list-style: none; padding-left: 1.4em; margin: 0; }
  ul.tree { padding-left: 0; } .service { color: #7bd88f; } .task { color: #5ccfe6; } .dim { color: #6c7680; }
  table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; border-bottom: 1px solid #222c36; }
  .COMPLETED { color: #7bd88f; } .RUNNING { color: #5ccfe6; } .PENDING { color: #ffd580; } .DEAD, .FAILED { color: #ff6b6b; }
  .BLOCKED { color: #73a5ff; } .DELAYED { color: #d4bfff; } .CANCELLED, .SKIPPED, .STOPPED { color: #6c7680; }
</style>
</head>
<body>
<h1>TITAN CLUSTER</h1>
<div id="status">connecting...</div>
<h2>Counts</h2><div class="counts" id="counts"></div>
<h2>Workers</h2><ul class="tree" id="workers"></ul>
<h2>Autoscaler</h2><div id="autoscaler" class="dim">off</div>
<h2>Recent jobs</h2><table><thead><tr><th>ID</th><th>TYPE</th><th>DATA</th><th>STATE</th>
<th>ATTEMPTS</th><th>WORKER</th></tr></thead><tbody id="jobs"></tbody></table>
<script>
"use strict";
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
function label(w) {
  const pct = w.capacity ? Math.round(100 * w.load / w.capacity) : 0;
  let text = "\\u2022 [" + (w.port || w.name) + "] Load: " + w.load + "/" + w.capacity + " (" + pct + "%) | Skills: ["
    + w.skills.join(", ") + "]";
  if (w.memory_used_mb) text += " | Memory: " + w.memory_used_mb + "/" + (w.memory_mb ?? "no limit") + " MiB";
  if (w.health !== "HEALTHY") text += " | " + w.health;
  return el("span", text, w.health === "HEALTHY" ? "" : "bad");
}
function branch(w, kids, seen) {
  seen.add(w.id);
  const item = el("li"); item.appendChild(label(w));
  const list = el("ul");
  for (const s of w.services) list.appendChild(el("li", "\\u2514\\u2500\\u2500 Service ID: " + s, "service"));
  for (const t of w.tasks) if (!w.services.includes(t)) list.appendChild(el("li", "\\u2514\\u2500\\u2500 Task: " + t, "task"));
  for (const c of kids.get(w.id) || []) if (!seen.has(c.id)) list.appendChild(branch(c, kids, seen));
  item.appendChild(list);
  return item;
}
function draw(data) {
  const status = document.getElementById("status");
  status.textContent = (data.connected ? "master " : "cannot reach master ") + data.master
    + (data.error ? ": " + data.error : "") + " \\u2014 " + new Date(data.t * 1000).toLocaleTimeString();
  status.className = data.connected ? "ok" : "bad";
  if (!data.connected) return;
  const s = data.stats;
  const active = s.workers.filter(w => w.health === "HEALTHY" || w.health === "DRAINING").length;
  const counts = document.getElementById("counts"); counts.replaceChildren();
  for (const [name, value] of [["Active Workers", active], ["Execution Queue", s.queued], ["Running", s.running],
      ["Delayed (Time)", s.delayed], ["Blocked (DAG)", s.blocked], ["Dead Letter (DLQ)", s.dead],
      ["Completed", s.completed]]) {
    const box = el("div", undefined, "count"); box.appendChild(el("b", String(value))); box.appendChild(el("span", name));
    counts.appendChild(box);
  }
  const ids = new Set(s.workers.map(w => w.id)); const kids = new Map(); const roots = [];
  for (const w of s.workers) {
    if (w.parent && ids.has(w.parent) && w.parent !== w.id) {
      if (!kids.has(w.parent)) kids.set(w.parent, []);
      kids.get(w.parent).push(w);
    } else roots.push(w);
  }
  const tree = document.getElementById("workers"); tree.replaceChildren(); const seen = new Set();
  for (const w of roots) tree.appendChild(branch(w, kids, seen));
  if (!s.workers.length) tree.appendChild(el("li", "no workers registered", "dim"));
  const auto = document.getElementById("autoscaler"); auto.replaceChildren();
  const a = (s.extra || {}).autoscaler;
  if (a && a.enabled) {  // a master without --autoscale says {"enabled": false} and nothing more
    auto.className = "";
    const l = a.limits;
    auto.appendChild(el("div", "limits: " + l.max_workers + " workers, " + l.max_children + " children each, depth "
      + l.max_depth + "; pending spawns: " + a.pending_spawns));
    for (const d of a.decisions.slice().reverse())
      auto.appendChild(el("div", new Date(d.t * 1000).toLocaleTimeString() + "  " + d.action + " " + d.worker
        + ": " + d.reason, "dim"));
  } else { auto.className = "dim"; auto.textContent = "off"; }
  const body = document.getElementById("jobs"); body.replaceChildren();
  for (const j of data.jobs) {
    const row = el("tr");
    for (const [text, cls] of [[j.id], [j.type], [j.data], [j.state, j.state], [j.attempts + "/" + j.max_attempts],
        [j.worker || "-"]]) row.appendChild(el("td", text, cls));
    body.appendChild(row);
  }
}
async function poll() {
  try {
    const answer = await fetch("/api/cluster", {cache: "no-store"});
    draw(await answer.json());
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = "dashboard unreachable: " + err; status.className = "bad";
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""
