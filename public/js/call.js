// One person's part in calls: join, pairing, media, resume and leave, driven
// by the signaling messages of the call protocol. It does not touch the DOM.

import { log, warn } from './log.js';
import { MicrophoneError, missingCallSupport, openMicrophone, stopMicrophone } from './media.js';
import { MediaNegotiation } from './negotiation.js';
import { SignalingChannel } from './signaling.js';
import { clearCall, saveCall } from './store.js';

// A resume rejected as server_busy or rate_limited is sent again after a
// pause, at most this many times.
const MAX_RESUME_RETRIES = 5;
const RESUME_RETRY_DELAY_MS = 2000;
const RETRYABLE_ERRORS = new Set(['server_busy', 'rate_limited']);

const REDIRECT_URL = /^wss?:\/\/[^/?#]+(\/[^?#]*)?\/ws$/;

const PARTNER_LEFT_REASONS = {
  left: (partner) => `${partner} left the call.`,
  disconnected: (partner) => `${partner} lost the connection and did not come back.`,
  max_duration: () => 'The call reached its maximum length.',
  budget_exhausted: () => "The server's translation budget is used up for now.",
  server_shutdown: () => 'The server is restarting. Join again in a moment.',
  node_lost: () => 'The server that held the call stopped. Join again.',
};

const JOIN_ERRORS = {
  server_busy: 'The server is busy. Try again in a minute.',
  rate_limited: 'Too many attempts from this address. Wait a minute and press Join again.',
};

/**
 * Events: `change` (the phase or what it shows changed), `caption` and
 * `translation` (detail: the server message), `remotestream` (detail: the
 * partner's translated voice as a MediaStream), `notice` (detail: a message
 * for the person, or null to clear it).
 *
 * Phases: idle, connecting, waiting, connecting-audio, in-call,
 * partner-reconnecting, reconnecting (own signaling dropped), ended.
 */
export class CallSession extends EventTarget {
  phase = 'idle';
  partner = null;
  callId = null;
  waitingSince = null;
  endReason = '';
  muted = false;
  hearOriginal = false;
  request = null;

  #channel;
  #microphone = null;
  #media;
  #token = null;
  #awaiting = null;
  // The last join or resume sent. A `redirect` replies to it, and a redirect
  // in reply to a join needs fresh media on the node holding the call.
  #lastRequest = null;
  #joined = false;
  #signalingDown = false;
  #partnerReconnecting = false;
  #offerAfterResume = false;
  #settingsPending = false;
  #resumeRetries = 0;
  // Increased by each join, resume and end, so that an awaited step of an
  // abandoned attempt (Leave pressed while the microphone opens) stops there.
  #attempt = 0;

  constructor(channel = new SignalingChannel()) {
    super();
    this.#channel = channel;
    this.#media = new MediaNegotiation((message) => channel.send(message));
    this.#media.addEventListener('remotestream', (event) => {
      this.dispatchEvent(new CustomEvent('remotestream', { detail: event.detail }));
    });
    this.#media.addEventListener('change', () => this.#emitChange());
    this.#media.addEventListener('unsent', () => {
      this.#offerAfterResume = true;
    });
    this.#media.addEventListener('notice', (event) => this.#notice(event.detail));
    channel.setResumeToken(() => (this.active ? this.#token : null));
    channel.addEventListener('message', (event) => this.#onMessage(event.detail));
    channel.addEventListener('dropped', () => this.#onSignalingDropped());
    channel.addEventListener('reopened', () => {
      this.#awaiting = 'resumed';
      this.#lastRequest = 'resume';
    });
    channel.addEventListener('lost', () => {
      this.#end('The connection to the server was lost and could not be restored.');
    });
    channel.addEventListener('closed', () => this.#onSignalingClosed());
    window.addEventListener('online', () => channel.retryNow());
  }

  get active() {
    return this.phase !== 'idle' && this.phase !== 'ended';
  }

  get channel() {
    return this.#channel;
  }

  get microphone() {
    return this.#microphone;
  }

  /** Join a call: request is { language, name, room, hearOriginal }. */
  async join(request) {
    if (this.active) {
      return;
    }
    const attempt = this.#start(request);
    if (!(await this.#prepareMedia(attempt))) {
      return;
    }

    try {
      await this.#channel.open();
    } catch (error) {
      if (attempt === this.#attempt) {
        this.#fail(
          `Cannot reach the call server (${error.message}). Check your connection ` +
            'and press Join again.',
        );
      }
      return;
    }
    if (attempt !== this.#attempt) {
      return;
    }

    const message = { type: 'join', language: request.language };
    if (request.name) {
      message.name = request.name;
    }
    if (request.room) {
      message.room = request.room;
    }
    message.hear_original = this.hearOriginal;
    this.#awaiting = 'joined';
    this.#lastRequest = 'join';
    log('join', `language ${request.language}, room ${request.room || 'none'}`);
    this.#channel.send(message);
  }

  /** Take up a call saved before a reload: resume it and offer new media. */
  async resumeSaved(saved) {
    if (this.active) {
      return;
    }
    const attempt = this.#start({
      language: saved.language,
      name: saved.name ?? '',
      room: saved.room ?? '',
      hearOriginal: Boolean(saved.hearOriginal),
    });
    this.#token = saved.token;
    this.muted = Boolean(saved.muted);
    this.partner = saved.partner ?? null;
    this.callId = saved.callId ?? null;
    this.#signalingDown = true;
    this.#emitChange();
    if (!(await this.#prepareMedia(attempt))) {
      return;
    }

    try {
      await this.#channel.open();
    } catch (error) {
      if (attempt === this.#attempt) {
        this.#end(`The call could not be resumed: cannot reach the server (${error.message}).`);
      }
      return;
    }
    if (attempt !== this.#attempt) {
      return;
    }

    this.#awaiting = 'resumed';
    this.#lastRequest = 'resume';
    this.#offerAfterResume = true;
    log('resume', 'resuming the call after a reload');
    this.#channel.send({ type: 'resume', token: this.#token });
  }

  leave() {
    if (!this.active) {
      return;
    }
    log('call', 'leaving');
    if (this.#joined && this.#channel.isOpen) {
      this.#channel.send({ type: 'leave' });
    } else {
      // A server that never saw this participant, or cannot be reached now,
      // gets no leave message. It ends the call when its grace period runs out.
      this.#channel.close();
    }
    this.#end('You left the call.');
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.#microphone) {
      // NOTE: the protocol has no mute message. A disabled track sends
      // silence, so the partner's page cannot show that this side is muted.
      this.#microphone.track.enabled = !muted;
    }
    this.#save();
    this.#emitChange();
  }

  setHearOriginal(enabled) {
    this.hearOriginal = enabled;
    if (this.#joined && this.active) {
      this.#settingsPending = !this.#channel.send({
        type: 'settings',
        hear_original: enabled,
      });
    }
    this.#save();
  }

  #start(request) {
    this.#reset();
    this.request = request;
    this.hearOriginal = request.hearOriginal;
    this.muted = false;
    this.endReason = '';
    this.phase = 'connecting';
    this.dispatchEvent(new CustomEvent('notice', { detail: null }));
    this.#emitChange();
    return this.#attempt;
  }

  async #prepareMedia(attempt) {
    const unsupported = missingCallSupport();
    if (unsupported) {
      this.#fail(unsupported);
      return false;
    }
    let microphone;
    try {
      microphone = await openMicrophone();
    } catch (error) {
      if (!(error instanceof MicrophoneError)) {
        throw error;
      }
      if (attempt === this.#attempt) {
        this.#fail(error.message);
      }
      return false;
    }
    if (attempt !== this.#attempt) {
      stopMicrophone(microphone);
      return false;
    }
    this.#microphone = microphone;
    this.#media.microphone = microphone;
    this.#microphone.track.enabled = !this.muted;
    this.dispatchEvent(new Event('microphone'));
    return true;
  }

  #onMessage(message) {
    if (!this.active) {
      log('ws', `ignored ${message.type}: not in a call`);
      return;
    }
    switch (message.type) {
      case 'joined':
        this.#onJoined(message);
        break;
      case 'resumed':
        this.#onResumed(message);
        break;
      case 'waiting':
        log('call', 'waiting for a partner');
        this.callId = null;
        this.waitingSince = Date.now();
        break;
      case 'paired':
        this.#onPaired(message);
        break;
      case 'answer':
        this.#media.acceptAnswer(message.sdp);
        break;
      case 'caption':
      case 'translation':
        this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
        return;
      case 'partner_reconnecting':
        log('call', 'partner reconnecting');
        this.#partnerReconnecting = true;
        break;
      case 'partner_returned':
        log('call', 'partner returned');
        this.#partnerReconnecting = false;
        break;
      case 'partner_left':
        this.#onPartnerLeft(message.reason);
        return;
      case 'redirect':
        this.#onRedirect(message);
        return;
      case 'error':
        this.#onError(message);
        return;
      default:
        log('ws', `ignored unknown message type ${message.type}`);
        return;
    }
    this.#emitChange();
  }

  #onJoined(message) {
    log('join', `joined as ${message.participant_id}`);
    this.#awaiting = null;
    this.#joined = true;
    this.#token = message.resume_token;
    this.#media.iceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
    this.#save();
    this.#media.offer();
  }

  #onResumed(message) {
    log('resume', `resumed, call ${message.call_id ?? 'none'}`);
    this.#awaiting = null;
    this.#joined = true;
    this.#signalingDown = false;
    this.#resumeRetries = 0;
    this.#token = message.resume_token;
    if (Array.isArray(message.ice_servers)) {
      this.#media.iceServers = message.ice_servers;
    }
    this.callId = message.call_id ?? null;
    if (this.callId === null) {
      this.partner = null;
      this.waitingSince ??= Date.now();
    }
    this.#save();
    // An answer that was lost with the old socket never arrives, so offer again.
    const answerLost = this.#media.answerPending;
    this.#media.forgetOffers();
    if (this.#offerAfterResume || answerLost || !this.#media.hasPeer) {
      this.#offerAfterResume = false;
      this.#media.offer();
    }
    if (this.#settingsPending) {
      this.setHearOriginal(this.hearOriginal);
    }
  }

  #onPaired(message) {
    this.callId = message.call_id;
    this.partner = message.partner ?? null;
    this.waitingSince = null;
    this.#partnerReconnecting = false;
    log('call', `paired in call ${message.call_id}`);
    this.#save();
  }

  #onPartnerLeft(reason) {
    const who = this.partner?.name || 'Your partner';
    const describe = PARTNER_LEFT_REASONS[reason] ?? (() => 'The call ended.');
    log('call', `partner left: ${reason}`);
    this.#end(describe(who));
  }

  #onRedirect(message) {
    const { url, token } = message;
    if (typeof url !== 'string' || !REDIRECT_URL.test(url) || typeof token !== 'string') {
      warn('redirect', 'invalid redirect', url);
      this.#end('The server sent an invalid redirect, so the call cannot go on.');
      return;
    }
    // After a redirect in reply to a join, a media connection made with this
    // node is worth nothing, so the node holding the call gets a fresh offer.
    if (this.#lastRequest === 'join') {
      this.#media.close();
      this.#offerAfterResume = true;
    }
    log('redirect', `moving to ${url}`);
    this.#token = token;
    this.#awaiting = 'resumed';
    this.#lastRequest = 'resume';
    this.#save();
    this.#channel.moveTo(url);
  }

  #onError({ code, message }) {
    warn('error', `${code}: ${message}`);
    if (code === 'resume_failed') {
      this.#end(`The call could not be resumed; it may have ended. ${message}`);
    } else if (this.#awaiting === 'resumed') {
      this.#retryResume(code, message);
    } else if (this.#awaiting === 'joined') {
      this.#fail(JOIN_ERRORS[code] ?? message);
    } else if (code === 'translation_failed') {
      this.dispatchEvent(
        new CustomEvent('translation', {
          detail: { state: 'unavailable', engine: '', reason: message },
        }),
      );
    } else {
      this.#notice(`The server reported a problem: ${message}`);
    }
  }

  #retryResume(code, message) {
    if (!RETRYABLE_ERRORS.has(code) || this.#resumeRetries >= MAX_RESUME_RETRIES) {
      this.#end(`The call could not be resumed: ${message}`);
      return;
    }
    this.#resumeRetries += 1;
    log('resume', `${code}; resuming again in ${RESUME_RETRY_DELAY_MS} ms`);
    const attempt = this.#attempt;
    setTimeout(() => {
      if (attempt === this.#attempt && this.#awaiting === 'resumed') {
        this.#channel.send({ type: 'resume', token: this.#token });
      }
    }, RESUME_RETRY_DELAY_MS);
  }

  #onSignalingDropped() {
    log('ws', 'signaling dropped; the call goes on while it reconnects');
    this.#signalingDown = true;
    this.#emitChange();
  }

  #onSignalingClosed() {
    if (this.active) {
      this.#fail('The server closed the connection. Press Join to try again.');
    }
  }

  #fail(message) {
    warn('call', message);
    this.#cleanUp();
    this.phase = 'idle';
    this.#notice(message);
    this.#emitChange();
  }

  #end(reason) {
    log('call', `ended: ${reason}`);
    this.#cleanUp();
    this.endReason = reason;
    this.phase = 'ended';
    this.#emitChange();
  }

  #cleanUp() {
    this.#media.close();
    stopMicrophone(this.#microphone);
    clearCall();
    this.#reset();
  }

  #reset() {
    this.#attempt += 1;
    this.#microphone = null;
    this.#token = null;
    this.#awaiting = null;
    this.#lastRequest = null;
    this.#joined = false;
    this.#signalingDown = false;
    this.#partnerReconnecting = false;
    this.#offerAfterResume = false;
    this.#settingsPending = false;
    this.#resumeRetries = 0;
    this.callId = null;
    this.partner = null;
    this.waitingSince = null;
  }

  #save() {
    if (!this.#token || !this.active) {
      return;
    }
    saveCall({
      token: this.#token,
      language: this.request.language,
      name: this.request.name,
      room: this.request.room,
      hearOriginal: this.hearOriginal,
      muted: this.muted,
      partner: this.partner,
      callId: this.callId,
    });
  }

  #notice(message) {
    this.dispatchEvent(new CustomEvent('notice', { detail: message }));
  }

  #emitChange() {
    if (this.active) {
      this.phase = this.#currentPhase();
    }
    this.dispatchEvent(new Event('change'));
  }

  #currentPhase() {
    if (this.#signalingDown) {
      return 'reconnecting';
    }
    if (!this.#joined) {
      return 'connecting';
    }
    if (this.callId === null) {
      return 'waiting';
    }
    if (this.#partnerReconnecting) {
      return 'partner-reconnecting';
    }
    return this.#media.connected ? 'in-call' : 'connecting-audio';
  }
}
