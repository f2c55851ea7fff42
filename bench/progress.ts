// The progress line: rewritten in place on a terminal, a line every few seconds otherwise (CI logs).
export class Progress {
  private lastPrint = 0;
  private shown = false;
  private readonly tty = Boolean(process.stderr.isTTY);

  update(text: string): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${text.slice(0, (process.stderr.columns || 160) - 1)}`);
      this.shown = true;
    } else if (Date.now() - this.lastPrint >= 3_000) {
      process.stderr.write(`${text}\n`);
      this.lastPrint = Date.now();
    }
  }

  /** Ends the line (the next output starts on a fresh one). */
  clear(): void {
    if (this.tty && this.shown) process.stderr.write('\r\x1b[K');
    this.shown = false;
    this.lastPrint = 0;
  }

  /** A message of its own, above the progress line. */
  say(text: string): void {
    this.clear();
    process.stderr.write(`${text}\n`);
  }
}

export const progress = new Progress();
