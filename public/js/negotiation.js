// The media side of a call: one PeerLink at a time, its offer and answer, and
// a new offer when the connection fails.

import { log, warn } from './log.js';
import { PeerLink } from './media.js';

// A media connection that fails is offered anew, at most this many times in
// a row. A connection that reaches "connected" resets the count.
const MAX_MEDIA_RESTARTS = 5;
const MEDIA_RESTART_DELAY_MS = 1000;

/**
 * Events: `remotestream` (detail: the partner's translated voice as a
 * MediaStream), `change` (connected or not), `unsent` (an offer found no open
 * signaling socket, so it must be made again after the resume), `notice`
 * (detail: a message for the person).
 */
export class MediaNegotiation extends EventTarget {
  iceServers = [];
  microphone = null;

  #send;
  #peer = null;
  // Peers whose offer was sent, oldest first. The server replies to offers in
  // order, so each answer belongs to the first of them.
  #answerQueue = [];
  #connected = false;
  #restarts = 0;

  /** `send` sends one signaling message and returns false when it cannot. */
  constructor(send) {
    super();
    this.#send = send;
  }

  get connected() {
    return this.#connected;
  }

  get hasPeer() {
    return this.#peer !== null;
  }

  /** Whether an offer was sent whose answer has not arrived. */
  get answerPending() {
    return this.#answerQueue.length > 0;
  }

  /** Replace the media connection with a new one and send its offer. */
  offer() {
    this.#makeOffer().catch((error) => {
      warn('offer', error);
      this.#notice(`The audio connection could not be set up (${error.message}).`);
    });
  }

  async acceptAnswer(sdp) {
    const peer = this.#answerQueue.shift();
    if (!peer || peer !== this.#peer) {
      log('answer', 'ignored an answer to a replaced offer');
      return;
    }
    try {
      await peer.acceptAnswer(sdp);
    } catch (error) {
      warn('answer', error);
      this.#notice(`The audio connection could not be set up (${error.message}).`);
    }
  }

  /** Forget sent offers, whose answers were lost with a signaling socket. */
  forgetOffers() {
    this.#answerQueue = [];
  }

  close() {
    this.#peer?.close();
    this.#peer = null;
    this.#answerQueue = [];
    this.#connected = false;
    this.#restarts = 0;
  }

  async #makeOffer() {
    this.#peer?.close();
    this.#connected = false;
    const peer = new PeerLink({ iceServers: this.iceServers, microphone: this.microphone });
    this.#peer = peer;
    peer.addEventListener('track', (event) => {
      this.dispatchEvent(new CustomEvent('remotestream', { detail: event.detail }));
    });
    peer.addEventListener('statechange', (event) => this.#onState(peer, event.detail));
    peer.addEventListener('candidate', (event) => {
      if (peer === this.#peer) {
        this.#send({ type: 'candidate', candidate: event.detail });
      }
    });

    const sdp = await peer.createOffer();
    if (peer !== this.#peer) {
      return;
    }
    if (this.#send({ type: 'offer', sdp })) {
      this.#answerQueue.push(peer);
      log('offer', 'sent');
    } else {
      this.dispatchEvent(new Event('unsent'));
    }
    this.dispatchEvent(new Event('change'));
  }

  #onState(peer, state) {
    if (peer !== this.#peer) {
      return;
    }
    this.#connected = state === 'connected';
    if (state === 'connected') {
      this.#restarts = 0;
    } else if (state === 'failed') {
      this.#restart(peer);
    }
    this.dispatchEvent(new Event('change'));
  }

  #restart(peer) {
    if (this.#restarts >= MAX_MEDIA_RESTARTS) {
      this.#notice(
        'The audio connection keeps failing. A firewall may block it; try ' +
          'another network, or leave and join again.',
      );
      return;
    }
    this.#restarts += 1;
    // The browser test reaches this path by making the connection report
    // "failed": a real ICE failure takes Chromium about 30 s to declare.
    log('ice', `media connection failed; new offer ${this.#restarts}`);
    setTimeout(() => {
      if (peer === this.#peer) {
        this.offer();
      }
    }, MEDIA_RESTART_DELAY_MS);
  }

  #notice(message) {
    this.dispatchEvent(new CustomEvent('notice', { detail: message }));
  }
}
