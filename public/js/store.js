// The state a reload needs to resume the call, kept in sessionStorage.
//
// sessionStorage belongs to one tab and survives a reload of it, which is
// what resuming within the server's grace period needs. It contains the
// resume token, so it is cleared as soon as the call ends.
//
// NOTE: "Duplicate tab" copies sessionStorage, so two tabs may resume the same
// participant. The server closes the older socket at each resume, so the
// tabs take the participant from each other until a resume fails or the
// reconnection limit is reached. No test covers this case.

const KEY = 'callbridge.call';

// A saved call older than this is not resumed. The server's grace period
// (RESUME_GRACE_S, 30 s by default) decides in the end. This limit only
// spares a pointless attempt after a tab was restored hours later.
const MAX_AGE_MS = 10 * 60 * 1000;

export function saveCall(state) {
  try {
    sessionStorage.setItem(KEY, JSON.stringify({ ...state, savedAt: Date.now() }));
  } catch (error) {
    // Storage can be disabled or full. The call goes on, but a reload ends it.
    console.warn('[call] [store] cannot save the call for a reload:', error);
  }
}

export function loadCall() {
  let state;
  try {
    state = JSON.parse(sessionStorage.getItem(KEY) ?? 'null');
  } catch {
    state = null;
  }
  const valid =
    state !== null &&
    typeof state === 'object' &&
    typeof state.token === 'string' &&
    typeof state.language === 'string' &&
    typeof state.savedAt === 'number' &&
    Date.now() - state.savedAt < MAX_AGE_MS;
  if (!valid) {
    clearCall();
    return null;
  }
  return state;
}

export function clearCall() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // Nothing was stored if storage is unavailable.
  }
}
