// The moderator's page: its live view (player.js) keeps the moderator
// seated while it streams. The controls post without leaving the page,
// since a reload would unseat the moderator for a moment and hold the
// technician's input; the state line follows the session every 2 s.
(function () {
  "use strict";

  const result = document.getElementById("moderate-result");
  const state = document.getElementById("moderation-state");

  function show(text, failed) {
    result.textContent = text;
    result.className = failed ? "error" : "muted";
  }

  function describe(s) {
    const who = s.moderators && s.moderators.length ? s.moderators.join(", ") : "nobody yet";
    let text = (s.started ? "Running" : "Waiting for moderators") + "; watching: " + who;
    if (s.held) {
      text += "; input held" + (s.held_by ? " by " + s.held_by : "");
    }
    return text + ".";
  }

  for (const form of document.querySelectorAll("form.moderate")) {
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const body = new FormData(form);
      let resp;
      try {
        resp = await fetch(form.dataset.api, {
          method: "POST",
          body: new URLSearchParams(body),
          headers: { "X-CSRF-Token": body.get("csrf"), Accept: "application/json" },
          credentials: "same-origin",
        });
      } catch (e) {
        show("Not sent: the console cannot be reached.", true);
        return;
      }
      const answer = await resp.json().catch(function () { return {}; });
      if (!resp.ok) {
        show(answer.error || "Refused (" + resp.status + ").", true);
        return;
      }
      show(answer.done + ".", false);
      if (answer.session) {
        state.textContent = describe(answer.session);
      }
      const text = form.querySelector('input[name="text"]');
      if (text !== null) {
        text.value = "";
      }
    });
  }

  async function follow() {
    let resp;
    try {
      resp = await fetch(state.dataset.state, {
        headers: { "X-Sekisho-Poll": "1", Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (e) {
      setTimeout(follow, 2000);
      return;
    }
    if (resp.status === 404) {
      state.textContent = "The session has ended.";
      return;
    }
    if (resp.ok) {
      state.textContent = describe(await resp.json());
    }
    setTimeout(follow, 2000);
  }
  if (state !== null) {
    setTimeout(follow, 2000);
  }
})();
