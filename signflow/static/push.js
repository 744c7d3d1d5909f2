// Web Push: one tap registers the service worker, subscribes with the server's VAPID
// key and sends the subscription; the server then pushes a code to confirm.
"use strict";
(function () {
  const button = document.querySelector("[data-push-enable]");
  if (!button) return;
  const status = document.getElementById("push-status");
  const say = (text) => { status.textContent = text; };
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
    button.disabled = true;
    say(button.dataset.msgUnsupported);
    return;
  }
  function keyBytes(base64url) {
    const padded = (base64url + "===".slice((base64url.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }
  button.addEventListener("click", async function () {
    button.disabled = true;
    say(button.dataset.msgWorking);
    try {
      const permission = await Notification.requestPermission();
      if (permission !== "granted") {
        say(button.dataset.msgDenied);
        return;
      }
      await navigator.serviceWorker.register(button.dataset.sw, { scope: "/" });
      const registration = await navigator.serviceWorker.ready;
      let subscription = await registration.pushManager.getSubscription();
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true, applicationServerKey: keyBytes(button.dataset.key) });
      }
      const response = await fetch(button.dataset.subscribe, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json",
                   "X-CSRFToken": button.dataset.csrf },
        body: JSON.stringify(subscription.toJSON()),
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        say(answer.detail || button.dataset.msgFailed);
        return;
      }
      window.location.assign(answer.next);
    } catch (error) {
      say(button.dataset.msgFailed + " (" + (error && error.name ? error.name : "error") + ")");
    } finally {
      button.disabled = false;
    }
  });
})();
