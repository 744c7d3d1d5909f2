// Live status on the technician's list: poll a small JSON view, update badges.
"use strict";
(function () {
  const list = document.querySelector("[data-live-status]");
  if (!list) return;
  const url = list.getAttribute("data-live-status");
  async function refresh() {
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const states = await resp.json();
      for (const badge of list.querySelectorAll("[data-state-for]")) {
        const info = states[badge.getAttribute("data-state-for")];
        if (!info) continue;
        const text = info.state + (info.state === "pending" && info.level ? " · escalated " + info.level : "");
        if (badge.textContent !== text) {
          badge.textContent = text;
          badge.className = "badge state-" + info.state;
        }
      }
    } catch (e) { /* offline for a moment: try again at the next tick */ }
  }
  setInterval(refresh, 10000);
})();
