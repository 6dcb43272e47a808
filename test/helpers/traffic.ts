/**
 * Fault-test bookkeeping (HARDENING §5): senders log what they sent and what the server acked
 * (XEP-0198 <a h/>) or refused; receivers log every delivery. The checker computes
 * lost = acked ∧ ¬delivered ∧ ¬errored, duplicates and ordering violations.
 */
import type { RawClient } from "./raw.js";

export class Sender {
  readonly sent: string[] = [];
  acked = 0;
  readonly errored = new Set<string>();
  constructor(readonly client: RawClient, readonly prefix: string) {
    client.socket.on("data", () => this.scan());
  }

  private scanned = 0;
  private scan(): void {
    const text = this.client.text.slice(this.scanned);
    for (const m of text.matchAll(/<a xmlns='urn:xmpp:sm:3' h='(\d+)'\/>/g)) this.acked = Math.max(this.acked, Number(m[1]));
    for (const m of text.matchAll(/<message[^>]*type="error"[^>]*>/g)) {
      const id = /id="([^"]+)"/.exec(m[0]);
      if (id) this.errored.add(id[1]!);
    }
    this.scanned = this.client.text.lastIndexOf(">") + 1;
  }

  send(to: string, n: number): void {
    const id = `${this.prefix}-${n}`;
    this.sent.push(id);
    this.client.send(`<message to='${to}' type='chat' id='${id}'><body>${n}</body></message>`);
  }

  /** Ask for an ack and wait until every message sent so far is acknowledged or refused. */
  async settle(timeoutMs = 10_000): Promise<void> {
    this.client.send("<r xmlns='urn:xmpp:sm:3'/>");
    const end = Date.now() + timeoutMs;
    while (this.acked < this.sent.length && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
      this.scan();
    }
  }
}

/** Deliveries of message ids with a given prefix, across every stream of one receiver. */
export function deliveries(streams: readonly string[], prefix: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<message[^>]*id="(${prefix}-\\d+)"[^>]*>`, "g");
  for (const text of streams) for (const m of text.matchAll(re)) if (!/type="error"/.test(m[0])) out.push(m[1]!);
  return out;
}

export interface Figures {
  sent: number;
  acked: number;
  delivered: number;
  duplicates: number;
  errored: number;
  lost: number;
  reordered: number;
}

export function check(sender: Sender, delivered: readonly string[]): Figures {
  const unique = new Set(delivered);
  const ackedIds = sender.sent.slice(0, sender.acked);
  const lost = ackedIds.filter((id) => !unique.has(id) && !sender.errored.has(id)).length;
  // First deliveries whose sequence number is lower than one delivered before them.
  let reordered = 0;
  let highest = -1;
  const seen = new Set<string>();
  for (const id of delivered) {
    if (seen.has(id)) continue;
    seen.add(id);
    const n = Number(id.slice(id.lastIndexOf("-") + 1));
    if (n < highest) reordered++;
    highest = Math.max(highest, n);
  }
  return {
    sent: sender.sent.length,
    acked: sender.acked,
    delivered: unique.size,
    duplicates: delivered.length - unique.size,
    errored: sender.errored.size,
    lost,
    reordered,
  };
}
