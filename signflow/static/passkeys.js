// Passkeys (WebAuthn): add one on the account page, log in with one, use one as the
// second factor, and confirm with one on the sign page. The server sends the options
// as JSON and checks every answer; this file only carries them to the authenticator.
"use strict";
(function () {
  if (!window.PublicKeyCredential) return;

  function csrfOf(el) {
    const input = el.querySelector("input[name=csrf_token]");
    return el.getAttribute("data-csrf") || (input && input.value) ||
      (document.querySelector("input[name=csrf_token]") || {}).value || "";
  }

  async function post(url, csrf, body) {
    const headers = { "X-CSRFToken": csrf, Accept: "application/json" };
    let payload = "csrf_token=" + encodeURIComponent(csrf);
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    } else {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
    }
    const resp = await fetch(url, { method: "POST", credentials: "same-origin", headers, body: payload });
    const data = await resp.json().catch(function () { return {}; });
    if (!resp.ok) throw new Error(data.detail || data.title || String(resp.status));
    return data;
  }

  function say(box, template, error) {
    if (!box) return;
    const problem = (error && error.message) || String(error);
    box.textContent = template ? template.replace("%(problem)s", problem) : problem;
    box.hidden = false;
  }

  async function getAssertion(optionsUrl, csrf) {
    const options = await post(optionsUrl, csrf);
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
    const credential = await navigator.credentials.get({ publicKey });
    return JSON.stringify(credential.toJSON());
  }

  // Account page: add a passkey under the name typed.
  const register = document.getElementById("passkey-register");
  if (register) {
    const status = document.getElementById("passkey-status");
    register.addEventListener("submit", async function (event) {
      event.preventDefault();
      const csrf = csrfOf(register);
      try {
        const options = await post(register.getAttribute("data-options"), csrf);
        const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
        const credential = await navigator.credentials.create({ publicKey });
        const name = register.querySelector("input[name=name]").value;
        const done = await post(register.getAttribute("data-register"), csrf,
          { name, credential: JSON.stringify(credential.toJSON()) });
        window.location.assign(done.redirect);
      } catch (e) { say(status, register.getAttribute("data-failed"), e); }
    });
  }

  // Login page (passwordless) and second-factor page: one button each.
  for (const box of document.querySelectorAll("[data-passkey-login], [data-passkey-second-factor]")) {
    box.hidden = false;
    const status = box.querySelector("[data-passkey-status]");
    box.querySelector("button").addEventListener("click", async function () {
      const csrf = csrfOf(box);
      try {
        const answer = await getAssertion(box.getAttribute("data-options"), csrf);
        const done = await post(box.getAttribute("data-verify"), csrf, { credential: answer });
        window.location.assign(done.redirect);
      } catch (e) { say(status, box.getAttribute("data-failed"), e); }
    });
  }

  // Sign page, step-up: the passkey's answer travels with the sign form (and its PIN).
  for (const button of document.querySelectorAll("[data-passkey-step-up]")) {
    const form = button.closest("form");
    button.addEventListener("click", async function () {
      const status = form.querySelector(".step-up .flash");
      try {
        const answer = await getAssertion(button.getAttribute("data-options"), csrfOf(form));
        form.querySelector("input[name=step_up_passkey]").value = answer;
        form.submit();
      } catch (e) { say(status, button.getAttribute("data-failed"), e); }
    });
  }
})();
