// The viewer page: one WebSocket brings JPEG frames and PCM (each with its pts, SPEC §8 header)
// plus JSON state. A picture is a key frame (a whole JPEG) or a patch: a JPEG of the rectangle
// that changed since the picture named in it, drawn over the canvas; pictures are applied in
// the order they came, and a patch whose picture this page never drew waits for the next key. Audio plays through an AudioWorklet with a small jitter buffer; a frame is
// drawn when the audio clock reaches its pts, so lips and sound stay together. Until sound is
// allowed (browsers need a click) or while no audio plays, a wall clock paces the frames.
(() => {
  "use strict";

  const JITTER_MS = 80; // audio queued before playback starts
  const MAX_BUFFER_MS = 400; // beyond this the worklet drops its oldest audio
  const MAX_FRAMES = 60; // decoded frames waiting for their pts
  const KIND_JPEG = 1;
  const KIND_PCM = 2;
  const KIND_PATCH = 4; // payload: base frame u32, x u16, y u16, then the JPEG (none: unchanged)
  const PATCH_BYTES = 8;
  const HEADER_BYTES = 16;

  const $ = (id) => document.getElementById(id);
  const canvas = $("video");
  const g = canvas.getContext("2d");
  const soundButton = $("sound");

  const path = location.pathname.replace(/\/+$/, "");
  const token = new URLSearchParams(location.search).get("token") || "";
  const wsUrl =
    (location.protocol === "https:" ? "wss://" : "ws://") +
    location.host + path + "/ws?token=" + encodeURIComponent(token);

  let format = null; // {width, height, sample_rate_hz}
  let audio = null; // {ctx, node, rate, ready}
  let audioClock = null; // the worklet's last report: pts started playing at ctx time t
  let wallClock = null; // {pts, at}: fallback clock anchor, performance.now() ms
  let serverOffsetMs = null; // server wall clock minus pts, from `clock` messages
  let frames = []; // [{pts, frameIndex, base, x, y, bitmap, ready}] in the order they came
  let composed = -1; // the frame index of the picture the canvas holds (-1: none)
  let newestPts = -Infinity;
  let ended = false;
  // The state line: speaking / idle / ended first, then the room's state (joined_room, …).
  let stateText = "connecting";
  let roomText = "";
  let socket = null;
  let lastText = 0;
  let shown = null; // the frame on the canvas: {pts, frameIndex, atPts (the clock then)}

  // ---- audio -------------------------------------------------------------------------------

  function newContext(rate) {
    try {
      return new AudioContext({ sampleRate: rate, latencyHint: "interactive" });
    } catch (_) {
      return new AudioContext({ latencyHint: "interactive" }); // we resample ourselves
    }
  }

  async function ensureAudio(rate) {
    if (audio && audio.rate === rate) return;
    if (audio) audio.ctx.close();
    const a = { ctx: newContext(rate), node: null, rate, ready: false };
    audio = a;
    audioClock = null;
    a.ctx.onstatechange = updateSoundButton;
    try {
      await a.ctx.audioWorklet.addModule("/viewer/viewer-worklet.js");
    } catch (err) {
      setText("event", "audio unavailable: " + err);
      return;
    }
    if (audio !== a) return; // the format changed meanwhile
    a.node = new AudioWorkletNode(a.ctx, "pcm-player", {
      outputChannelCount: [1],
      processorOptions: { jitterMs: JITTER_MS, maxBufferMs: MAX_BUFFER_MS },
    });
    a.node.port.onmessage = (e) => {
      if (e.data.type === "clock") onAudioClock(e.data);
    };
    a.node.connect(a.ctx.destination);
    a.ready = true;
    updateSoundButton();
  }

  function audioRunning() {
    return audio && audio.ready && audio.ctx.state === "running";
  }

  function updateSoundButton() {
    soundButton.hidden = Boolean(audioRunning()) || !format;
  }

  soundButton.addEventListener("click", async () => {
    if (!format) return;
    await ensureAudio(format.sample_rate_hz);
    await audio.ctx.resume();
    updateSoundButton();
  });

  function onAudioClock(m) {
    audioClock = m;
    setTextThrottled("buffer", Math.round(m.bufferedMs) + " ms");
  }

  function resample(input, from, to) {
    if (from === to) return input;
    const out = new Float32Array(Math.round((input.length * to) / from));
    const step = from / to;
    for (let i = 0; i < out.length; i++) {
      const x = i * step;
      const j = Math.floor(x);
      const k = Math.min(j + 1, input.length - 1);
      out[i] = input[j] + (input[k] - input[j]) * (x - j);
    }
    return out;
  }

  function pushAudio(pts, pcm) {
    if (!audioRunning()) return; // no sound yet: the wall clock paces the video
    let samples = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
    samples = resample(samples, audio.rate, audio.ctx.sampleRate);
    audio.node.port.postMessage({ type: "pcm", pts, samples }, [samples.buffer]);
  }

  // ---- the clock ---------------------------------------------------------------------------

  // The pts being heard now: from the audio clock when sound plays, else from the wall clock.
  function currentPts() {
    const now = performance.now();
    if (audioRunning() && audioClock && audioClock.pts !== null) {
      const ctx = audio.ctx;
      const outputS = (ctx.outputLatency || 0) + (ctx.baseLatency || 0);
      const pts = audioClock.pts + (ctx.currentTime - audioClock.t - outputS) * 1000;
      wallClock = { pts, at: now }; // so a fallback continues from here, without a jump
      return pts;
    }
    if (newestPts === -Infinity) return null;
    const pts = wallClock ? wallClock.pts + (now - wallClock.at) : null;
    if (pts === null || pts > newestPts + 200 || pts < newestPts - MAX_BUFFER_MS) {
      wallClock = { pts: newestPts - JITTER_MS, at: now };
      return wallClock.pts;
    }
    return pts;
  }

  function draw() {
    requestAnimationFrame(draw);
    const pts = currentPts();
    if (pts === null) return;
    let pick = null;
    // Every picture up to the clock, in order (a patch needs the one before it on the canvas).
    while (frames.length && frames[0].ready && frames[0].pts <= pts) {
      const f = frames.shift();
      if (f.base < 0 && f.bitmap) {
        g.drawImage(f.bitmap, 0, 0, canvas.width, canvas.height);
        composed = f.frameIndex;
        pick = f;
      } else if (f.base >= 0 && f.base === composed) {
        if (f.bitmap) g.drawImage(f.bitmap, f.x, f.y);
        composed = f.frameIndex;
        pick = f;
      }
      if (f.bitmap) f.bitmap.close();
    }
    if (pick) shown = { pts: pick.pts, frameIndex: pick.frameIndex, atPts: pts };
    setTextThrottled("clock", (pts / 1000).toFixed(2) + " s" + (audioRunning() ? "" : " (no sound)"));
    if (serverOffsetMs !== null) {
      setTextThrottled("delay", Math.max(0, Math.round(Date.now() - serverOffsetMs - pts)) + " ms");
    }
  }

  // ---- messages ----------------------------------------------------------------------------

  function onBinary(buf) {
    if (buf.byteLength < HEADER_BYTES) return;
    const view = new DataView(buf);
    const kind = view.getUint8(0);
    const pts = Number(view.getBigUint64(4, true));
    const frameIndex = view.getUint32(12, true);
    if (kind === KIND_JPEG || kind === KIND_PATCH) {
      const patch = kind === KIND_PATCH;
      if (patch && buf.byteLength < HEADER_BYTES + PATCH_BYTES) return;
      newestPts = Math.max(newestPts, pts);
      const f = { pts, frameIndex, base: -1, x: 0, y: 0, bitmap: null, ready: false };
      let start = HEADER_BYTES;
      if (patch) {
        f.base = view.getUint32(start, true);
        f.x = view.getUint16(start + 4, true);
        f.y = view.getUint16(start + 6, true);
        start += PATCH_BYTES;
      }
      frames.push(f);
      while (frames.length > MAX_FRAMES) {
        const old = frames.shift(); // the patches after it then wait for a key frame
        old.gone = true;
        if (old.bitmap) old.bitmap.close();
      }
      if (start === buf.byteLength) {
        f.ready = true; // a patch with nothing changed
        return;
      }
      const blob = new Blob([new Uint8Array(buf, start)], { type: "image/jpeg" });
      createImageBitmap(blob).then(
        (bitmap) => {
          if (f.gone) return bitmap.close();
          f.bitmap = bitmap;
          f.ready = true;
        },
        () => {
          f.ready = true; // undecodable: drawn as nothing, so the chain waits for a key
          f.base = patch ? -2 : -1;
        },
      );
    } else if (kind === KIND_PCM) {
      pushAudio(pts, new Int16Array(buf, HEADER_BYTES, (buf.byteLength - HEADER_BYTES) >> 1));
    }
  }

  function onText(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch (_) {
      return;
    }
    if (m.type === "format") {
      format = m;
      canvas.width = m.width;
      canvas.height = m.height;
      // Starts suspended unless the browser already allows sound here; the button resumes it.
      ensureAudio(m.sample_rate_hz);
      updateSoundButton();
    } else if (m.type === "state") {
      stateText = m.state + (m.reason ? " (" + m.reason + ")" : "");
      setText("state", stateText + roomText);
      ended = m.state === "ended";
    } else if (m.type === "room") {
      roomText = " · room " + m.state + (m.reason ? " (" + m.reason + ")" : "");
      setText("state", stateText + roomText);
    } else if (m.type === "clock") {
      serverOffsetMs = m.wall_ms - m.pts_ms;
    } else {
      setText("event", JSON.stringify(m));
    }
  }

  function resetMedia() {
    for (const f of frames) {
      f.gone = true;
      if (f.bitmap) f.bitmap.close();
    }
    frames = [];
    composed = -1;
    newestPts = -Infinity;
    wallClock = null;
    audioClock = null;
    if (audio && audio.node) audio.node.port.postMessage({ type: "reset" });
  }

  function connect() {
    resetMedia();
    socket = new WebSocket(wsUrl);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => setText("event", "");
    socket.onmessage = (e) => (typeof e.data === "string" ? onText(e.data) : onBinary(e.data));
    socket.onclose = () => {
      if (ended) return;
      setText("event", "connection lost, retrying…");
      setTimeout(connect, 1000);
    };
  }

  // ---- text --------------------------------------------------------------------------------

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  const pendingText = {};
  function setTextThrottled(id, text) {
    pendingText[id] = text;
    const now = performance.now();
    if (now - lastText < 250) return;
    lastText = now;
    for (const key of Object.keys(pendingText)) setText(key, pendingText[key]);
  }

  // For diagnostics and automated checks: what plays and what is shown, right now.
  window.agenthumanViewer = {
    stats: () => ({
      clockPts: currentPts(),
      audio: Boolean(audioRunning()),
      audioState: audio ? audio.ctx.state : null,
      audioRateHz: audio ? audio.ctx.sampleRate : null,
      shown,
      framesWaiting: frames.length,
      bufferedMs: audioClock ? audioClock.bufferedMs : null,
    }),
  };

  connect();
  requestAnimationFrame(draw);
})();
