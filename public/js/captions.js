// Live captions: one row per utterance and speaker, with the original text
// and its translation side by side.

// Rows beyond this are removed, oldest first, so a long call keeps the page light.
const MAX_ROWS = 60;
// Within this many pixels of the bottom, new text scrolls the list down. A
// person who scrolled up to reread stays where they are.
const STICK_TO_BOTTOM_PX = 48;

export class CaptionBoard {
  #scroller;
  #list;
  #rows = new Map();

  constructor(scroller, list) {
    this.#scroller = scroller;
    this.#list = list;
  }

  /**
   * Show one `caption` message. Its text is the whole utterance so far, so
   * it replaces the text shown for the same utterance, kind and speaker.
   */
  show(caption, speakerLabel) {
    const atBottom =
      this.#scroller.scrollHeight - this.#scroller.scrollTop - this.#scroller.clientHeight <
      STICK_TO_BOTTOM_PX;
    const row = this.#row(caption.speaker, caption.utterance_id, speakerLabel);
    const kind = caption.kind === 'translation' ? 'translation' : 'original';
    const cell = row.querySelector(`[data-kind="${kind}"]`);
    cell.lang = caption.language;
    cell.textContent = caption.text;
    cell.classList.toggle('partial', !caption.final);
    if (atBottom) {
      this.#scroller.scrollTop = this.#scroller.scrollHeight;
    }
  }

  clear() {
    this.#rows.clear();
    this.#list.replaceChildren();
  }

  #row(speaker, utteranceId, speakerLabel) {
    const key = `${speaker}:${utteranceId}`;
    let row = this.#rows.get(key);
    if (row) {
      return row;
    }
    row = document.createElement('li');
    row.className = 'utterance';
    row.dataset.speaker = speaker === 'self' ? 'self' : 'partner';
    row.dataset.utterance = utteranceId;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = speakerLabel;
    row.append(who, this.#cell('original'), this.#cell('translation'));
    this.#list.append(row);
    this.#rows.set(key, row);
    while (this.#rows.size > MAX_ROWS) {
      const [oldestKey, oldest] = this.#rows.entries().next().value;
      oldest.remove();
      this.#rows.delete(oldestKey);
    }
    return row;
  }

  #cell(kind) {
    const cell = document.createElement('p');
    cell.className = 'text';
    cell.dataset.kind = kind;
    return cell;
  }
}
