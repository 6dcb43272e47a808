/**
 * Fault-test bookkeeping (HARDENING §5): senders log what they sent and what the server acked
 * (XEP-0198 <a h/>) or refused; receivers log every delivery. The checker computes
 * lost = acked ∧ ¬delivered ∧ ¬errored, duplicates and ordering violations.
 */
import type { Element } from "@xmpp/xml";
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
    for (const e of this.client.elements.slice(this.scanned)) {
      if (e.is("a", "urn:xmpp:sm:3")) this.acked = Math.max(this.acked, Number(e.attrs.h));
      if (e.is("message") && e.attrs.type === "error" && e.attrs.id) this.errored.add(e.attrs.id);
    }
    this.scanned = this.client.elements.length;
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

/** Deliveries of message ids with a given prefix, across every stream (its received elements) of one receiver. */
export function deliveries(streams: ReadonlyArray<readonly Element[]>, prefix: string): string[] {
  const id = new RegExp(`^${prefix}-\\d+$`);
  return streams.flat().filter((e) => e.is("message") && e.attrs.type !== "error" && id.test(e.attrs.id ?? "")).map((e) => e.attrs.id as string);
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
