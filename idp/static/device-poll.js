// Polls the device confirmation and continues the login once it is approved.
// CSP forbids inline script; without JavaScript the "Check again" button does the same.
(function () {
  "use strict";
  var box = document.getElementById("device-binding");
  var form = document.getElementById("device-continue");
  var live = document.getElementById("device-poll-status");
  if (!box || !form || !window.fetch) { return; }
  var url = box.getAttribute("data-status-url");
  var delay = 2000;
  var stopAt = Date.now() + 5 * 60 * 1000;
  function poll() {
    if (Date.now() > stopAt) { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        if (live && live.textContent) { live.textContent = ""; }
        if (data.status === "approved" || data.status === "denied" || data.status === "expired") {
          form.submit();
          return;
        }
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        // a real sentence for screen readers (WCAG 4.1.3), set by the template in the page's language
        if (live) { live.textContent = live.getAttribute("data-offline"); }
        window.setTimeout(poll, delay * 2);
      });
  }
  window.setTimeout(poll, delay);
}());
