// Audio levels measured with Web Audio: the microphone meter, and the level
// of the translated voice, which tests read to check that speech arrives.

// One AudioContext for the page. Browsers allow it to run only after a user
// gesture, so it is created on the Join click and resumed by "Enable audio".
let context = null;

export function audioContext() {
  if (context === null) {
    context = new AudioContext();
  }
  return context;
}

/** The RMS level of one MediaStream's audio, from 0 (silence) to 1 (full scale). */
export class LevelMeter {
  #source;
  #analyser;
  #samples;
  peak = 0;

  constructor(stream) {
    const ctx = audioContext();
    this.#source = ctx.createMediaStreamSource(stream);
    this.#analyser = ctx.createAnalyser();
    this.#analyser.fftSize = 2048;
    this.#samples = new Float32Array(this.#analyser.fftSize);
    // Chromium (checked with version 156) processes an AnalyserNode that has
    // no path to the destination, so the meter adds no second copy of the
    // sound to what the page plays.
    this.#source.connect(this.#analyser);
  }

  /** Return the RMS of the last 2048 samples (about 43 ms at 48 kHz). */
  read() {
    this.#analyser.getFloatTimeDomainData(this.#samples);
    let sum = 0;
    for (const sample of this.#samples) {
      sum += sample * sample;
    }
    const rms = Math.sqrt(sum / this.#samples.length);
    this.peak = Math.max(this.peak, rms);
    return rms;
  }

  close() {
    this.#source.disconnect();
  }
}
