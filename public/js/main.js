// The call page: wires the form, the controls and the captions to a CallSession.

import { CallSession } from './call.js';
import { CaptionBoard } from './captions.js';
import { LevelMeter, audioContext } from './levels.js';
import { log, warn } from './log.js';
import { missingCallSupport } from './media.js';
import { loadCall } from './store.js';
import { StatusView } from './status.js';

const ROOM_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const LEVEL_INTERVAL_MS = 100;

const $ = (id) => document.getElementById(id);

const session = new CallSession();
const view = new StatusView(session);
const captions = new CaptionBoard($('caption-scroller'), $('caption-list'));
const audio = $('remote-audio');

let languages = new Map();
let micMeter = null;
let remoteMeter = null;
let levelTimer = 0;

// For tests and for debugging in the console.
window.callbridge = {
  session,
  levels: () => ({
    microphone: micMeter?.peak ?? 0,
    remote: remoteMeter?.read() ?? 0,
    remotePeak: remoteMeter?.peak ?? 0,
  }),
  resetPeaks: () => {
    for (const meter of [micMeter, remoteMeter]) {
      if (meter) {
        meter.peak = 0;
      }
    }
  },
};

function showNotice(message, { retry = false } = {}) {
  $('notice').hidden = !message;
  $('notice-text').textContent = message ?? '';
  $('retry').hidden = !retry;
}

async function loadLanguages() {
  let status;
  try {
    const response = await fetch('/api/status', { cache: 'no-store' });
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    status = await response.json();
  } catch (error) {
    warn('page', 'cannot load /api/status:', error.message);
    showNotice(
      `Cannot reach the server at ${location.host} (${error.message}). ` +
        'Check your connection and retry.',
      { retry: true },
    );
    return false;
  }
  languages = new Map(status.languages.map((language) => [language.code, language]));
  view.setLanguages(languages);
  fillLanguageSelect(status.languages);
  const engineNote = $('engine-note');
  engineNote.hidden = status.engine !== 'off';
  engineNote.textContent =
    'Translation is off on this server, so you and your partner hear each other’s own voices.';
  showNotice(null);
  log('page', `${languages.size} languages, engine ${status.engine}`);
  return true;
}

function fillLanguageSelect(list) {
  const select = $('language');
  const options = list.map((language) => {
    const option = new Option(language.native_name, language.code);
    option.lang = language.code;
    option.title = language.name;
    return option;
  });
  select.replaceChildren(...options);
  select.value = preferredLanguage(list.map((language) => language.code));
  select.disabled = false;
  $('join').disabled = Boolean(missingCallSupport());
}

// The first of the browser's languages that the server supports, by primary
// subtag ("pt-BR" picks "pt"); English, or the first language, otherwise.
function preferredLanguage(codes) {
  for (const tag of navigator.languages ?? [navigator.language]) {
    const primary = String(tag).split('-')[0].toLowerCase();
    if (codes.includes(primary)) {
      return primary;
    }
  }
  return codes.includes('en') ? 'en' : codes[0];
}

function roomFromLink() {
  const room = new URLSearchParams(location.search).get('room');
  if (room === null) {
    return;
  }
  if (ROOM_PATTERN.test(room)) {
    $('room').value = room;
  } else {
    showNotice(
      'The room name in this link is invalid: use 1 to 64 letters, digits, - or _. ' +
        'Check the link you were sent.',
    );
  }
}

function updateInvite() {
  const room = (session.active ? session.request?.room : $('room').value.trim()) ?? '';
  const valid = ROOM_PATTERN.test(room);
  $('invite').hidden = !valid;
  if (valid) {
    const url = new URL('/', location.href);
    url.searchParams.set('room', room);
    $('invite-link').value = url.href;
  }
  $('copy-result').textContent = '';
}

function newRoom() {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  $('room').value = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  updateInvite();
}

async function copyInvite() {
  const link = $('invite-link');
  try {
    await navigator.clipboard.writeText(link.value);
    $('copy-result').textContent = 'Copied. Send the link to the person you want to call.';
  } catch (error) {
    warn('page', 'clipboard write failed:', error.message);
    link.select();
    $('copy-result').textContent = 'The link is selected: copy it with Ctrl+C or ⌘C.';
  }
}

async function onJoin(event) {
  event.preventDefault();
  const form = $('join-form');
  if (!form.reportValidity()) {
    return;
  }
  // Created inside the click, because browsers let audio start only after a gesture.
  await startAudioContext();
  captions.clear();
  $('captions').hidden = true;
  view.clearBanners();
  await session.join({
    language: $('language').value,
    name: $('name').value.trim(),
    room: $('room').value.trim(),
    hearOriginal: $('hear-original').checked,
  });
}

async function startAudioContext() {
  const ctx = audioContext();
  if (ctx.state === 'suspended') {
    try {
      await ctx.resume();
    } catch (error) {
      warn('audio', 'cannot resume the AudioContext:', error.message);
    }
  }
}

async function playRemote(stream) {
  audio.srcObject = stream;
  remoteMeter?.close();
  remoteMeter = new LevelMeter(stream);
  await playAudio();
}

async function playAudio() {
  try {
    await audio.play();
    $('enable-audio').hidden = audioContext().state !== 'suspended';
    log('audio', 'playing the translated voice');
  } catch (error) {
    if (error.name !== 'NotAllowedError') {
      warn('audio', `cannot play: ${error.name}: ${error.message}`);
      return;
    }
    log('audio', 'autoplay blocked; waiting for "Enable audio"');
    $('enable-audio').hidden = false;
  }
}

async function enableAudio() {
  await startAudioContext();
  await playAudio();
}

function onMicrophone() {
  micMeter?.close();
  micMeter = new LevelMeter(session.microphone.stream);
  if (!levelTimer) {
    levelTimer = setInterval(updateLevels, LEVEL_INTERVAL_MS);
  }
}

function updateLevels() {
  if (!session.active) {
    clearInterval(levelTimer);
    levelTimer = 0;
    $('mic-level').value = 0;
    return;
  }
  const level = session.muted ? 0 : (micMeter?.read() ?? 0);
  // A square root spreads quiet speech over more of the meter.
  $('mic-level').value = Math.min(1, Math.sqrt(level));
  remoteMeter?.read();
}

function onChange() {
  view.render();
  const active = session.active;
  document.body.dataset.phase = session.phase;
  $('join-form').hidden = active;
  $('call-controls').hidden = !active;
  $('mute').textContent = session.muted ? 'Unmute' : 'Mute';
  $('mute').setAttribute('aria-pressed', String(session.muted));
  $('muted-label').hidden = !session.muted;
  $('hear-original').checked = session.hearOriginal;
  if (!active) {
    $('enable-audio').hidden = true;
    audio.srcObject = null;
  }
  updateInvite();
}

function onCaption(event) {
  const caption = event.detail;
  const label = caption.speaker === 'self' ? 'You' : session.partner?.name || 'Partner';
  captions.show(caption, label);
  $('captions').hidden = !$('captions-on').checked;
}

function wire() {
  $('join-form').addEventListener('submit', onJoin);
  $('room').addEventListener('input', updateInvite);
  $('new-room').addEventListener('click', newRoom);
  $('copy-invite').addEventListener('click', copyInvite);
  $('retry').addEventListener('click', start);
  $('leave').addEventListener('click', () => session.leave());
  $('mute').addEventListener('click', () => session.setMuted(!session.muted));
  $('enable-audio').addEventListener('click', enableAudio);
  $('volume').addEventListener('input', (event) => {
    audio.volume = Number(event.target.value) / 100;
  });
  $('captions-on').addEventListener('change', (event) => {
    $('captions').hidden = !event.target.checked || !$('caption-list').hasChildNodes();
  });
  $('hear-original').addEventListener('change', (event) => {
    session.setHearOriginal(event.target.checked);
  });
  session.addEventListener('change', onChange);
  session.addEventListener('notice', (event) => showNotice(event.detail));
  session.addEventListener('caption', onCaption);
  session.addEventListener('translation', (event) => view.showTranslation(event.detail));
  session.addEventListener('microphone', onMicrophone);
  session.addEventListener('remotestream', (event) => playRemote(event.detail));
}

async function start() {
  const unsupported = missingCallSupport();
  const loaded = await loadLanguages();
  if (unsupported) {
    showNotice(unsupported);
    return;
  }
  const saved = loadCall();
  if (saved && loaded) {
    log('page', 'found a call saved before a reload');
    // Fill in the form, so that Join starts a similar call if the resume fails.
    $('language').value = saved.language;
    $('name').value = saved.name ?? '';
    $('room').value = saved.room ?? '';
    $('hear-original').checked = Boolean(saved.hearOriginal);
    await session.resumeSaved(saved);
  }
}

wire();
roomFromLink();
updateInvite();
start();
