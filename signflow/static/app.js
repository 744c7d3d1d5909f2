// Live status on the technician's list: poll a small JSON view, update badges; each
// change is also written to the list's aria-live region, so a screen reader says it
// (a badge changing silently in the middle of the list would go unnoticed).
"use strict";
(function () {
  const list = document.querySelector("[data-live-status]");
  if (!list) return;
  const url = list.getAttribute("data-live-status");
  const announce = document.querySelector("[data-live-announce]");
  async function refresh() {
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const states = await resp.json();
      const changes = [];
      for (const badge of list.querySelectorAll("[data-state-for]")) {
        const info = states[badge.getAttribute("data-state-for")];
        if (!info) continue;
        const text = info.text || info.state;
        if (badge.textContent !== text) {
          badge.textContent = text;
          badge.className = "badge state-" + info.state;
          const item = badge.closest("li");
          const title = item ? item.querySelector("strong") : null;
          changes.push((title ? title.textContent + ": " : "") + text);
        }
      }
      if (announce && changes.length) announce.textContent = changes.join(". ");
    } catch (e) { /* offline for a moment: try again at the next tick */ }
  }
  setInterval(refresh, 10000);
})();

// Stamp placement: a tap on a page preview posts where, as fractions of the page.
(function () {
  const form = document.getElementById("stamp-form");
  if (!form) return;
  for (const img of document.querySelectorAll("img[data-stamp-page]")) {
    img.addEventListener("click", function (event) {
      const box = img.getBoundingClientRect();
      const fx = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
      const fy = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
      document.getElementById("stamp-page").value = img.getAttribute("data-stamp-page");
      document.getElementById("stamp-fx").value = fx.toFixed(4);
      document.getElementById("stamp-fy").value = fy.toFixed(4);
      form.submit();
    });
  }
})();

// A page the server could not render is never signed blind: the physician is told
// why and the sign panel goes (the upload check makes this rare; the server also
// refuses to sign without the exact bytes shown).
(function () {
  for (const img of document.querySelectorAll(".pages img")) {
    const fail = function () {
      const note = document.createElement("p");
      note.className = "flash error";
      // The sentence comes translated from the page (data-text-failed).
      note.textContent = img.getAttribute("data-text-failed") || img.alt;
      img.replaceWith(note);
      const panel = document.querySelector(".sign-panel #sign-form");
      if (panel) panel.remove();
    };
    if (img.loading !== "lazy" && img.complete && img.naturalWidth === 0) fail();
    else img.addEventListener("error", fail);
  }
})();

// The escalation ladder on a pending request's page: the rung and who is paged come
// from a small JSON view polled every 15 s (announced through the aria-live region
// when they change); the time left counts down every second in between (role=timer,
// not announced each second).
(function () {
  const box = document.querySelector("[data-ladder]");
  if (!box) return;
  const url = box.getAttribute("data-ladder");
  const rung = box.querySelector("[data-ladder-rung]");
  const paged = box.querySelector("[data-ladder-paged]");
  const left = box.querySelector("[data-ladder-left]");
  const fill = function (template, values) {
    return template.replace(/\{(\w+)\}/g, function (_m, key) { return String(values[key]); });
  };
  const names = JSON.parse(box.getAttribute("data-rung-names") || "[]");
  const states = JSON.parse(box.getAttribute("data-page-states") || "{}");
  let deadline = Date.now() + 1000 * Number(left.getAttribute("data-seconds-left") || 0);
  let pending = true;
  function tick() {
    if (!pending) return;
    const seconds = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    const text = seconds > 0
      ? fill(left.getAttribute("data-text-left"), { time: Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0") })
      : left.getAttribute("data-text-now");
    if (left.textContent !== text) left.textContent = text;
  }
  async function refresh() {
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const info = await resp.json();
      if (info.state !== "pending") {
        // Said once through the live region (the timer is not announced), and the
        // page's badge shows the new state.
        pending = false;
        left.textContent = left.getAttribute("data-text-done");
        rung.textContent = left.getAttribute("data-text-done");
        paged.textContent = "";
        const badge = document.querySelector("[data-state-for]");
        if (badge) {
          badge.textContent = info.state;
          badge.className = "badge state-" + info.state;
        }
        return;
      }
      deadline = Date.now() + 1000 * info.seconds_left;
      const rungText = fill(left.getAttribute("data-text-rung"), { rung: info.rung, rungs: info.rungs, name: names[Math.min(info.rung, names.length) - 1] || info.rung_name });
      const pagedText = info.paged.length
        ? info.paged.map(function (p) { return p.name + " (" + (states[p.state] || p.state) + ")"; }).join(", ")
        : left.getAttribute("data-text-nobody");
      if (rung.textContent !== rungText) rung.textContent = rungText;
      if (paged.textContent !== pagedText) paged.textContent = pagedText;
      tick();
    } catch (e) { /* offline for a moment: try again at the next poll */ }
  }
  setInterval(tick, 1000);
  setInterval(refresh, 15000);
})();
