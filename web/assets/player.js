// The console's terminal player: a recording (asciicast v2) with its
// timeline as markers, or a live session over server-sent events. It
// wraps asciinema-player (assets/vendor, from npm at build time) and uses
// no inline script or style attribute, so that pages keep a strict CSP.
//
// Markup (the player element is required, the rest optional):
//   <div id="player" data-cast="URL" data-timeline="URL"
//        data-cols="80" data-rows="24"></div>   a recording
//   <div id="player" data-live="URL"></div>      a live session
//   <select id="speed"> options 0.5 1 2 4 8 </select>
//   any element with class "jump" and data-time="seconds": seeks there
//   and plays.
// window.sekishoPlayer is the current player object (getCurrentTime,
// getDuration, seek, play, pause); a change of speed replaces it.
(function () {
  "use strict";

  const el = document.getElementById("player");
  if (el === null || typeof AsciinemaPlayer === "undefined") {
    return;
  }

  // positive returns the attribute as a positive number, or undefined.
  function positive(value) {
    const n = Number(value);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  }

  const common = {
    fit: "width",
    terminalFontFamily: "monospace",
    cols: positive(el.dataset.cols),
    rows: positive(el.dataset.rows),
  };

  if (el.dataset.live) {
    window.sekishoPlayer = AsciinemaPlayer.create(
      { driver: "eventsource", url: el.dataset.live },
      el,
      Object.assign({}, common, { autoPlay: true, controls: false }),
    );
    return;
  }
  if (!el.dataset.cast) {
    return;
  }

  // markers reads the timeline as the player's markers, [time, label]. A
  // timeline that cannot be read leaves the recording without markers.
  async function markers(url) {
    if (!url) {
      return [];
    }
    try {
      const resp = await fetch(url, { headers: { Accept: "application/json" } });
      if (!resp.ok) {
        throw new Error(url + ": " + resp.status);
      }
      const items = await resp.json();
      return (Array.isArray(items) ? items : [])
        .filter((e) => e && Number.isFinite(e.time) && e.time >= 0)
        .map((e) => {
          const text = String(e.text ?? "");
          const label = e.kind === "command" || !e.kind ? text : e.kind + ": " + text;
          return [e.time, label.length > 200 ? label.slice(0, 200) + "…" : label];
        });
    } catch (err) {
      console.warn("sekisho: timeline not shown:", err);
      return [];
    }
  }

  let player = null;
  let playing = false;

  // create replaces the player with one at speed, at time startAt,
  // playing if play: the player cannot change speed once created.
  function create(marks, speed, startAt, play) {
    if (player !== null) {
      player.dispose();
    }
    player = AsciinemaPlayer.create(
      el.dataset.cast,
      el,
      Object.assign({}, common, {
        controls: true,
        markers: marks,
        speed: speed,
        startAt: startAt,
        autoPlay: play,
        preload: true,
      }),
    );
    playing = play;
    player.addEventListener("play", () => {
      playing = true;
    });
    player.addEventListener("playing", () => {
      playing = true;
    });
    player.addEventListener("pause", () => {
      playing = false;
    });
    player.addEventListener("ended", () => {
      playing = false;
    });
    window.sekishoPlayer = player;
    // startAt applies when playback starts; a paused player is moved to
    // the same place at once, so a change of speed keeps the frame.
    if (!play && startAt > 0) {
      player.seek(startAt);
    }
  }

  const select = document.getElementById("speed");

  function selectedSpeed() {
    return select === null ? 1 : positive(select.value) ?? 1;
  }

  markers(el.dataset.timeline).then((marks) => {
    create(marks, selectedSpeed(), 0, false);
    if (select !== null) {
      select.addEventListener("change", () => {
        create(marks, selectedSpeed(), player.getCurrentTime() || 0, playing);
      });
    }
  });

  // Jumps are delegated, so that elements added later work too.
  document.addEventListener("click", (ev) => {
    const target = ev.target instanceof Element ? ev.target.closest(".jump[data-time]") : null;
    if (target === null || player === null) {
      return;
    }
    const t = Number(target.dataset.time);
    if (!Number.isFinite(t) || t < 0) {
      return;
    }
    ev.preventDefault();
    Promise.resolve(player.seek(t)).then(() => player.play());
  });
})();
