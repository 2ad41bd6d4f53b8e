// Tagged console logging, so each step of call set-up can be followed in the
// browser's console: "[call] [ws] open", "[call] [offer] sent".

export function log(tag, ...details) {
  console.info(`[call] [${tag}]`, ...details);
}

export function warn(tag, ...details) {
  console.warn(`[call] [${tag}]`, ...details);
}
