/**
 * What a session holds for its client: stanzas not yet written, and (with XEP-0198) those written
 * but not yet acknowledged. Serialized once, kept as strings; counted in characters so that every
 * queue has a byte bound (HARDENING §2.2; issue 21 items 1 and 6).
 *
 *   entries: [ written, unacknowledged … | not yet written … ]
 *                                        ^ cursor
 */
export interface Outgoing {
  /** The stanza's element name and type, so that whoever gets it back need not parse it to know what it is. */
  name: string;
  type: string | undefined;
  xml: string;
  /** When it was queued, for the XEP-0203 delay if it has to be re-routed. */
  at: number;
  /** Told true when the client acknowledges it, false when the session ends first. */
  confirm?: (acknowledged: boolean) => void;
}

export class OutboundQueue {
  private entries: Outgoing[] = [];
  private cursor = 0;
  /** Entries [0, everWritten) were written at least once (a resumption writes them again). */
  private everWritten = 0;
  private chars = 0;
  /** Written entries stay until acknowledged (stream management is on). */
  private retaining = false;

  get heldChars(): number {
    return this.chars;
  }

  get unwritten(): number {
    return this.entries.length - this.cursor;
  }

  /** Written and waiting for an acknowledgement. */
  get unacknowledged(): number {
    return this.everWritten;
  }

  /** From now on, written entries are kept until acknowledged (XEP-0198 enable). */
  retainWritten(): void {
    this.retaining = true;
  }

  push(entry: Outgoing): void {
    this.entries.push(entry);
    this.chars += entry.xml.length;
  }

  /** The next entry to write; `first` when it was never written before. */
  take(): { entry: Outgoing; first: boolean } | undefined {
    const entry = this.entries[this.cursor];
    if (!entry) return undefined;
    if (!this.retaining) {
      this.entries.shift();
      this.chars -= entry.xml.length;
      return { entry, first: true };
    }
    const first = this.cursor >= this.everWritten;
    this.cursor++;
    if (first) this.everWritten = this.cursor;
    return { entry, first };
  }

  /** The client acknowledged the `n` oldest written entries. */
  acknowledge(n: number): Outgoing[] {
    const count = Math.min(n, this.everWritten);
    const done = this.entries.splice(0, count);
    this.cursor = Math.max(0, this.cursor - count);
    this.everWritten -= count;
    for (const e of done) this.chars -= e.xml.length;
    return done;
  }

  /** XEP-0198 §5: after a resumption everything unacknowledged is written again, in order. */
  rewind(): void {
    this.cursor = 0;
  }

  /**
   * A session that continues on another node: what it held, oldest first, and how many of those
   * were written at least once (XEP-0198: the client may have them, and its 'h' counts them).
   */
  restore(entries: readonly Outgoing[], written: number): void {
    if (this.entries.length > 0) throw new Error("restoring into a queue that holds stanzas");
    this.entries = [...entries];
    this.everWritten = this.cursor = Math.min(written, entries.length);
    this.chars = entries.reduce((n, e) => n + e.xml.length, 0);
  }

  /** Everything held (the session ends; the caller decides where it goes). */
  drain(): Outgoing[] {
    const all = this.entries;
    this.entries = [];
    this.cursor = this.everWritten = this.chars = 0;
    return all;
  }
}
