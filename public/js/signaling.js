// The signaling WebSocket: JSON messages, keep-alive pings, and reconnection
// with backoff that resumes the participant with its token.

import { log, warn } from './log.js';

const OPEN_TIMEOUT_MS = 8000;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5000;
// Reconnecting stops after this long. The server keeps a dropped participant
// for its grace period (RESUME_GRACE_S, 30 s by default) and rejects a later
// resume with resume_failed, so trying much longer gains nothing.
const GIVE_UP_AFTER_MS = 60 * 1000;
const MAX_RECONNECT_ATTEMPTS = 30;
// A socket that brings no message for this long after a ping counts as
// dropped: a phone that changed networks often leaves it half open.
const PING_INTERVAL_MS = 15 * 1000;
const PONG_TIMEOUT_MS = 8 * 1000;

export function defaultSignalingUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * One logical signaling connection that may span several WebSockets.
 *
 * Events: `message` (detail: the parsed message), `dropped` (the socket was
 * lost and reconnection began), `reopened` (a new socket is open and `resume`
 * was sent on it), `lost` (reconnection gave up), `closed` (the socket closed
 * while there was nothing to resume).
 */
export class SignalingChannel extends EventTarget {
  #url;
  #socket = null;
  #socketAbort = null;
  #resumeToken = () => null;
  #retryTimer = 0;
  #attempts = 0;
  #droppedAt = 0;
  #pingTimer = 0;
  #lastReceivedAt = 0;

  constructor(url = defaultSignalingUrl()) {
    super();
    this.#url = url;
  }

  get url() {
    return this.#url;
  }

  get isOpen() {
    return this.#socket?.readyState === WebSocket.OPEN;
  }

  get isReconnecting() {
    return this.#droppedAt !== 0;
  }

  // The raw socket, for tests that simulate a dropped connection.
  get socket() {
    return this.#socket;
  }

  /** Set where the resume token comes from; without a token nothing is resumed. */
  setResumeToken(getToken) {
    this.#resumeToken = getToken;
  }

  /** Open the socket if it is not open; rejects when the server cannot be reached. */
  async open() {
    if (this.isOpen) {
      return;
    }
    this.#stopReconnecting();
    await this.#openSocket(this.#url);
  }

  /** Send one message; returns false when no socket is open. */
  send(message) {
    if (!this.isOpen) {
      warn('ws', `not sent while disconnected: ${message.type}`);
      return false;
    }
    this.#socket.send(JSON.stringify(message));
    return true;
  }

  /** Close on purpose: no reconnection follows. */
  close() {
    this.#stopReconnecting();
    this.#detach(1000, 'closed by the page');
  }

  /**
   * Move to another server node after a `redirect`: open `url` and send
   * `resume` with the current token first. Later reconnections go there too.
   */
  async moveTo(url) {
    this.#stopReconnecting();
    this.#detach(1000, 'redirected');
    this.#url = url;
    this.#droppedAt = Date.now();
    try {
      await this.#openSocket(url);
      this.#sendResume();
    } catch (error) {
      warn('redirect', `cannot open ${url}:`, error.message);
      this.#scheduleReconnect();
    }
  }

  /** Reconnect at once, for example when the browser reports it is online again. */
  retryNow() {
    if (this.isReconnecting && !this.#socket) {
      clearTimeout(this.#retryTimer);
      this.#reconnect();
    }
  }

  #openSocket(url) {
    return new Promise((resolve, reject) => {
      log('ws', `opening ${url}`);
      const socket = new WebSocket(url);
      const abort = new AbortController();
      const timer = setTimeout(() => {
        abort.abort();
        socket.close();
        reject(new Error(`opening ${url} timed out after ${OPEN_TIMEOUT_MS / 1000} s`));
      }, OPEN_TIMEOUT_MS);
      const options = { signal: abort.signal };
      socket.addEventListener(
        'open',
        () => {
          clearTimeout(timer);
          abort.abort();
          this.#attach(socket);
          log('ws', 'open');
          resolve();
        },
        options,
      );
      socket.addEventListener(
        'close',
        (event) => {
          clearTimeout(timer);
          abort.abort();
          reject(new Error(`cannot connect to ${url} (close code ${event.code})`));
        },
        options,
      );
    });
  }

  #attach(socket) {
    this.#socket = socket;
    this.#socketAbort = new AbortController();
    const options = { signal: this.#socketAbort.signal };
    socket.addEventListener('message', (event) => this.#onMessage(event), options);
    socket.addEventListener('close', (event) => this.#onClose(event), options);
    this.#lastReceivedAt = Date.now();
    this.#pingTimer = setInterval(() => this.#ping(), PING_INTERVAL_MS);
  }

  // Forget the current socket without reacting to its close event.
  #detach(code, reason) {
    const socket = this.#socket;
    if (!socket) {
      return;
    }
    this.#socketAbort.abort();
    clearInterval(this.#pingTimer);
    this.#socket = null;
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
      socket.close(code, reason);
    }
  }

  #onMessage(event) {
    this.#lastReceivedAt = Date.now();
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      warn('ws', 'ignored a message that is not JSON');
      return;
    }
    if (typeof message !== 'object' || message === null || typeof message.type !== 'string') {
      warn('ws', 'ignored a message without a type');
      return;
    }
    if (message.type === 'pong') {
      return;
    }
    this.dispatchEvent(new CustomEvent('message', { detail: message }));
  }

  #onClose(event) {
    log('ws', `closed with code ${event.code}`);
    this.#detach();
    this.#dropped(event.code);
  }

  #dropped(code) {
    if (!this.#resumeToken()) {
      this.dispatchEvent(new CustomEvent('closed', { detail: { code } }));
      return;
    }
    if (!this.isReconnecting) {
      this.#droppedAt = Date.now();
      this.#attempts = 0;
      this.dispatchEvent(new Event('dropped'));
    }
    this.#scheduleReconnect();
  }

  #ping() {
    if (!this.isOpen) {
      return;
    }
    if (Date.now() - this.#lastReceivedAt > PING_INTERVAL_MS + PONG_TIMEOUT_MS) {
      warn('ws', 'no answer to ping; reconnecting');
      this.#detach(4000, 'ping timed out');
      this.#dropped(4000);
      return;
    }
    this.send({ type: 'ping' });
  }

  #scheduleReconnect() {
    const waited = Date.now() - this.#droppedAt;
    if (waited > GIVE_UP_AFTER_MS || this.#attempts >= MAX_RECONNECT_ATTEMPTS) {
      warn('ws', `gave up reconnecting after ${this.#attempts} attempts`);
      this.#stopReconnecting();
      this.dispatchEvent(new Event('lost'));
      return;
    }
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.#attempts);
    // Jitter keeps many pages that lost one server from returning in step.
    const delay = backoff * (0.8 + 0.4 * Math.random());
    this.#attempts += 1;
    log('ws', `reconnecting in ${Math.round(delay)} ms (attempt ${this.#attempts})`);
    this.#retryTimer = setTimeout(() => this.#reconnect(), delay);
  }

  async #reconnect() {
    try {
      await this.#openSocket(this.#url);
    } catch (error) {
      log('ws', error.message);
      this.#scheduleReconnect();
      return;
    }
    this.#sendResume();
  }

  #sendResume() {
    const token = this.#resumeToken();
    if (!token) {
      this.#stopReconnecting();
      return;
    }
    this.#stopReconnecting();
    log('resume', 'sending resume');
    this.send({ type: 'resume', token });
    this.dispatchEvent(new Event('reopened'));
  }

  #stopReconnecting() {
    clearTimeout(this.#retryTimer);
    this.#droppedAt = 0;
    this.#attempts = 0;
  }
}
