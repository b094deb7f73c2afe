// The overview keeps its live sessions and pending requests current: every
// few seconds it fetches that part of the page, rendered and escaped by the
// server like the page itself, and puts it in place. The title counts the
// live cross-border sessions, so that a background tab shows them too.
// The fetches carry X-Sekisho-Poll, so an unattended overview still signs
// out when idle; once signed out it stops and says so.
(function () {
  "use strict";

  const box = document.getElementById("overview-live");
  if (box === null) {
    return;
  }
  const every = 5000;
  const title = document.title;

  function showTitle() {
    const n = box.querySelectorAll("#live-sessions tr.cross-border").length;
    document.title = n > 0 ? "(" + n + " cross-border) " + title : title;
  }

  function stop(why) {
    const note = document.createElement("p");
    note.className = "error";
    note.id = "refresh-stopped";
    note.textContent = why;
    box.prepend(note);
  }

  async function refresh() {
    let resp;
    try {
      resp = await fetch(box.dataset.refresh, {
        headers: { "X-Sekisho-Poll": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (e) {
      setTimeout(refresh, every); // the network may come back
      return;
    }
    if (resp.status === 401) {
      stop("Signed out: this page no longer refreshes. Sign in again with ssh … login.");
      return;
    }
    if (resp.ok) {
      box.innerHTML = await resp.text(); // the server's escaped template, as the page
      showTitle();
    }
    setTimeout(refresh, every);
  }

  showTitle();
  setTimeout(refresh, every);
})();
