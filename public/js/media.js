// The microphone and the WebRTC connection to the server.

import { log, warn } from './log.js';

// The offer carries the ICE candidates gathered within this time. Candidates
// found later are trickled as `candidate` messages.
const ICE_GATHERING_WAIT_MS = 2500;

export const MICROPHONE_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: false,
};

export class MicrophoneError extends Error {}

const MICROPHONE_MESSAGES = {
  NotAllowedError:
    'Microphone access was denied. Allow the microphone for this site in the ' +
    "browser's site settings, then press Join again.",
  SecurityError:
    'The browser blocks the microphone on this page. Open the page over https:// ' +
    'and press Join again.',
  NotFoundError: 'No microphone was found. Connect one and press Join again.',
  OverconstrainedError: 'No microphone was found. Connect one and press Join again.',
  NotReadableError:
    'The microphone could not be started; another program may be using it. ' +
    'Close that program and press Join again.',
  AbortError:
    'The microphone could not be started; another program may be using it. ' +
    'Close that program and press Join again.',
};

/** Return why this browser cannot make a call, or null when it can. */
export function missingCallSupport() {
  if (typeof RTCPeerConnection === 'undefined') {
    return (
      'This browser does not support WebRTC calls. Open the page in a current ' +
      'version of Chrome, Edge, Firefox or Safari.'
    );
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    if (!window.isSecureContext) {
      return (
        'The microphone is only available on secure pages. Open this page over ' +
        'https:// (or on localhost).'
      );
    }
    return 'This browser gives pages no access to the microphone, so it cannot make calls.';
  }
  return null;
}

/** Open the microphone; throws MicrophoneError with a message for the person. */
export async function openMicrophone() {
  log('mic', 'requesting the microphone');
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(MICROPHONE_CONSTRAINTS);
  } catch (error) {
    warn('mic', `${error.name}: ${error.message}`);
    const message =
      MICROPHONE_MESSAGES[error.name] ??
      `The microphone could not be opened (${error.name}: ${error.message}).`;
    throw new MicrophoneError(message);
  }
  const [track] = stream.getAudioTracks();
  log('mic', `opened "${track.label}"`);
  return { stream, track };
}

export function stopMicrophone(microphone) {
  for (const track of microphone?.stream.getTracks() ?? []) {
    track.stop();
  }
}

/**
 * One RTCPeerConnection to the server: sends the microphone, receives the
 * translated voice.
 *
 * Events: `track` (detail: the remote MediaStream), `statechange` (detail:
 * connectionState), `candidate` (detail: a late candidate's JSON, or null
 * when gathering ended after the offer was taken).
 */
// `?ice=relay` in the page address makes every call go through the TURN
// relay, as it must for a person behind a strict NAT: a way to check that the
// TURN server works.
const ICE_TRANSPORT_POLICY =
  new URLSearchParams(location.search).get('ice') === 'relay' ? 'relay' : 'all';

export class PeerLink extends EventTarget {
  #pc;
  #offerTaken = false;

  constructor({ iceServers, microphone }) {
    super();
    this.#pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: ICE_TRANSPORT_POLICY });
    this.#pc.addTrack(microphone.track, microphone.stream);
    this.#pc.addEventListener('track', (event) => {
      log('pc', 'remote track received');
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      this.dispatchEvent(new CustomEvent('track', { detail: stream }));
    });
    this.#pc.addEventListener('connectionstatechange', () => {
      const state = this.#pc.connectionState;
      log('pc', `connection ${state}`);
      this.dispatchEvent(new CustomEvent('statechange', { detail: state }));
    });
    this.#pc.addEventListener('icecandidate', (event) => {
      if (this.#offerTaken) {
        const candidate = event.candidate ? event.candidate.toJSON() : null;
        this.dispatchEvent(new CustomEvent('candidate', { detail: candidate }));
      }
    });
  }

  get connectionState() {
    return this.#pc.connectionState;
  }

  get awaitingAnswer() {
    return this.#pc.signalingState === 'have-local-offer';
  }

  /** Create the offer and return its SDP once ICE gathering is done or has had time. */
  async createOffer() {
    await this.#pc.setLocalDescription(await this.#pc.createOffer());
    await this.#gathered();
    this.#offerTaken = this.#pc.iceGatheringState !== 'complete';
    log('offer', `created, ICE gathering ${this.#pc.iceGatheringState}`);
    return this.#pc.localDescription.sdp;
  }

  async acceptAnswer(sdp) {
    await this.#pc.setRemoteDescription({ type: 'answer', sdp });
    log('answer', 'applied');
  }

  close() {
    this.#pc.close();
    log('pc', 'closed');
  }

  #gathered() {
    if (this.#pc.iceGatheringState === 'complete') {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#pc.removeEventListener('icegatheringstatechange', onChange);
        resolve();
      };
      const onChange = () => {
        if (this.#pc.iceGatheringState === 'complete') {
          done();
        }
      };
      const timer = setTimeout(done, ICE_GATHERING_WAIT_MS);
      this.#pc.addEventListener('icegatheringstatechange', onChange);
    });
  }
}
