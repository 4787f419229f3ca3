// The viewer's audio output: a queue of PCM segments, each tagged with its pts, played through
// a small jitter buffer. It reports which pts is at the output so the page can draw the video
// frame that belongs to the sound being played. Runs on the audio thread: no allocation in
// process() beyond what the main thread hands over.

class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    // Playback starts (and restarts after an underrun) once this much audio is queued.
    this.startSamples = Math.round((sampleRate * (o.jitterMs || 80)) / 1000);
    // Beyond this the oldest audio is dropped: a late page catches up instead of lagging.
    this.maxSamples = Math.round((sampleRate * (o.maxBufferMs || 400)) / 1000);
    this.segments = [];
    this.buffered = 0;
    this.playing = false;
    this.lastReport = -1;
    this.lastPts = null;
    this.port.onmessage = (e) => this.receive(e.data);
  }

  receive(m) {
    if (m.type === "pcm") {
      this.segments.push({ pts: m.pts, data: m.samples, offset: 0 });
      this.buffered += m.samples.length;
      while (this.buffered > this.maxSamples && this.segments.length > 1) {
        const s = this.segments.shift();
        this.buffered -= s.data.length - s.offset;
      }
    } else if (m.type === "reset") {
      this.segments = [];
      this.buffered = 0;
      this.playing = false;
    }
  }

  process(_inputs, outputs) {
    const channels = outputs[0];
    const out = channels[0];
    if (!this.playing && this.buffered >= this.startSamples) this.playing = true;
    let pts = null;
    if (this.playing) {
      let i = 0;
      while (i < out.length && this.segments.length) {
        const s = this.segments[0];
        if (pts === null) pts = s.pts + (s.offset * 1000) / sampleRate;
        const n = Math.min(out.length - i, s.data.length - s.offset);
        out.set(s.data.subarray(s.offset, s.offset + n), i);
        i += n;
        s.offset += n;
        this.buffered -= n;
        if (s.offset >= s.data.length) this.segments.shift();
      }
      if (i < out.length) this.playing = false; // underrun: the rest stays silent
    }
    for (let c = 1; c < channels.length; c++) channels[c].set(out);
    // About every 30 ms: the pts that started playing at `currentTime` (null = not playing).
    if (currentTime - this.lastReport >= 0.03 || (pts === null) !== (this.lastPts === null)) {
      this.lastReport = currentTime;
      this.port.postMessage({
        type: "clock",
        pts,
        t: currentTime,
        bufferedMs: (this.buffered * 1000) / sampleRate,
      });
    }
    this.lastPts = pts;
    return true;
  }
}

registerProcessor("pcm-player", PcmPlayer);
