// WebAuthn ceremonies for cityid (CSP: script-src 'self', so no inline script).
// The server's options arrive in their JSON form (binary values base64url); responses go back
// in the same form (WebAuthn L3 §5.1 RegistrationResponseJSON / AuthenticationResponseJSON).
"use strict";
(function () {
  function b64urlToBuf(s) {
    var b64 = s.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }

  function bufToB64url(buf) {
    var bytes = new Uint8Array(buf);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      return { type: d.type, id: b64urlToBuf(d.id), transports: d.transports };
    });
  }

  function showError(message) {
    var box = document.getElementById("webauthn-status");
    if (!box) { return; }
    box.textContent = message;
    box.hidden = false;
    box.focus && box.focus();
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        if (!resp.ok) {
          var err = new Error(data.error_description || "request failed");
          err.code = data.error || "server_error";
          throw err;
        }
        return data;
      });
    });
  }

  function register(button) {
    var csrf = button.dataset.csrf;
    var nameInput = document.getElementById("webauthn-name");
    return post(button.dataset.begin, csrf, {}).then(function (options) {
      var pk = options.publicKey;
      pk.challenge = b64urlToBuf(pk.challenge);
      pk.user.id = b64urlToBuf(pk.user.id);
      pk.excludeCredentials = descriptors(pk.excludeCredentials);
      return navigator.credentials.create({ publicKey: pk });
    }).then(function (cred) {
      return post(button.dataset.finish, csrf, {
        name: nameInput ? nameInput.value : "",
        credential: {
          id: cred.id,
          rawId: bufToB64url(cred.rawId),
          type: cred.type,
          response: {
            clientDataJSON: bufToB64url(cred.response.clientDataJSON),
            attestationObject: bufToB64url(cred.response.attestationObject),
          },
          clientExtensionResults: cred.getClientExtensionResults(),
        },
      });
    }).then(function (result) {
      document.body.dataset.webauthnRegistered = JSON.stringify(result);
      window.location.reload();
    });
  }

  function authenticate(button) {
    var csrf = button.dataset.csrf;
    return post(button.dataset.begin, csrf, {}).then(function (options) {
      var pk = options.publicKey;
      pk.challenge = b64urlToBuf(pk.challenge);
      pk.allowCredentials = descriptors(pk.allowCredentials);
      return navigator.credentials.get({ publicKey: pk });
    }).then(function (cred) {
      var r = cred.response;
      return post(button.dataset.finish, csrf, {
        credential: {
          id: cred.id,
          rawId: bufToB64url(cred.rawId),
          type: cred.type,
          response: {
            clientDataJSON: bufToB64url(r.clientDataJSON),
            authenticatorData: bufToB64url(r.authenticatorData),
            signature: bufToB64url(r.signature),
            userHandle: r.userHandle ? bufToB64url(r.userHandle) : null,
          },
          clientExtensionResults: cred.getClientExtensionResults(),
        },
      });
    }).then(function (result) {
      window.location.assign(result.redirect);
    });
  }

  function wire(id, ceremony) {
    var button = document.getElementById(id);
    if (!button) { return; }
    button.addEventListener("click", function () {
      if (!window.PublicKeyCredential || !navigator.credentials) {
        showError(button.dataset.unsupported);
        return;
      }
      button.disabled = true;
      ceremony(button).catch(function (err) {
        button.disabled = false;
        // DOMException NotAllowedError: the citizen cancelled or the key timed out
        showError(err && err.name === "NotAllowedError" ? button.dataset.cancelled : err.message);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire("webauthn-register", register);
    wire("webauthn-authenticate", authenticate);
  });
})();
