// The status line that shows the person the state of the call, and the
// banners for a reconnecting partner and for degraded translation.

const $ = (id) => document.getElementById(id);

export class StatusView {
  #session;
  #languages = new Map();
  #timer = 0;

  constructor(session) {
    this.#session = session;
  }

  setLanguages(languages) {
    this.#languages = languages;
  }

  render() {
    const session = this.#session;
    const status = $('status');
    status.dataset.phase = session.phase;
    status.hidden = session.phase === 'idle';
    status.textContent = this.#text();
    $('waiting-note').hidden = session.phase !== 'waiting';
    this.#renderPartnerBanner();
    if (!session.active) {
      $('translation-banner').hidden = true;
    }
    this.#keepTimer(session.phase === 'waiting');
  }

  /** Show a `translation` message: a banner unless translation is ready. */
  showTranslation({ state, engine, reason }) {
    const banner = $('translation-banner');
    banner.dataset.state = state;
    if (state === 'ready' || !this.#session.active) {
      banner.hidden = true;
      return;
    }
    const detail = reason ? ` ${reason}` : '';
    banner.textContent =
      state === 'degraded'
        ? `Translation is degraded${engine ? ` (${engine})` : ''}.${detail}`
        : `Translation is unavailable; you hear the original voice.${detail}`;
    banner.hidden = false;
  }

  clearBanners() {
    $('translation-banner').hidden = true;
    $('partner-banner').hidden = true;
  }

  #text() {
    const session = this.#session;
    switch (session.phase) {
      case 'connecting':
        return 'Connecting…';
      case 'waiting':
        return `Waiting for a partner: ${elapsed(session.waitingSince)}`;
      case 'connecting-audio':
        return `Connecting audio with ${this.#partnerName()}…`;
      case 'in-call':
        return `In a call with ${this.#partnerName()} (${this.#partnerLanguage()})`;
      case 'partner-reconnecting':
        return `In a call with ${this.#partnerName()}: partner reconnecting…`;
      case 'reconnecting':
        return 'Reconnecting to the server… The call goes on meanwhile.';
      case 'ended':
        return `Call ended. ${session.endReason}`;
      default:
        return '';
    }
  }

  #renderPartnerBanner() {
    const banner = $('partner-banner');
    const reconnecting = this.#session.phase === 'partner-reconnecting';
    banner.hidden = !reconnecting;
    if (reconnecting) {
      const name = this.#partnerName();
      banner.textContent =
        `${name[0].toUpperCase()}${name.slice(1)}’s connection dropped. ` +
        'The call is held while they reconnect.';
    }
  }

  #partnerName() {
    return this.#session.partner?.name || 'your partner';
  }

  #partnerLanguage() {
    const code = this.#session.partner?.language ?? '';
    return this.#languages.get(code)?.native_name ?? code;
  }

  // Tick once a second while waiting, so the elapsed time stays current.
  #keepTimer(running) {
    if (running && !this.#timer) {
      this.#timer = setInterval(() => this.render(), 1000);
    } else if (!running && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = 0;
    }
  }
}

function elapsed(since) {
  const seconds = since ? Math.max(0, Math.floor((Date.now() - since) / 1000)) : 0;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${String(seconds % 60).padStart(2, '0')}`;
}
