// "Your devices", live: the server keeps /sessions/live open while this session lives and
// sends `ended` (with the reason) when it ends anywhere; the page then says so and goes to
// the login page.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  if (!status || !window.EventSource) { return; }
  var words = {
    logout: "you signed out in another tab",
    revoked: "it was signed out from another device",
    limit: "you signed in on too many devices",
    expired: "it expired",
    gone: "it was ended elsewhere"
  };
  var stream = new EventSource("/sessions/live");
  stream.addEventListener("live", function () {
    status.textContent = "Live: this page will tell you if this session is signed out.";
  });
  stream.addEventListener("ended", function (e) {
    stream.close();
    status.className = "flash error";
    status.setAttribute("data-ended", e.data);
    status.setAttribute("data-ended-at", String(Date.now()));
    status.textContent = "This session has ended: " + (words[e.data] || e.data) + ".";
    setTimeout(function () { window.location.assign("/login"); }, 3000);
  });
})();
