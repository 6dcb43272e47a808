/**
 * One message record per message (docs/STORAGE.md): the sender's archive entry (MAM, outgoing),
 * the recipient's (MAM, incoming) and the undelivered queue entry (offline, XEP-0160 and durable
 * live delivery) are parts of one record that travels with the routed stanza and is written in
 * the store's next group commit. A part that comes after that commit took the record goes into a
 * new one (correct, only not merged).
 */
import { el, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import type { Routed } from "../hooks.js";
import type { MessageRecord, Storage } from "../storage/index.js";

export interface OpenRecord {
  readonly record: MessageRecord;
  /** Resolves after the commit that holds the record: with its queue entry, if it got one. */
  readonly written: Promise<number | undefined>;
}

declare module "../hooks.js" {
  interface Routed {
    /** The message record being assembled for this stanza, once a module has opened one. */
    record?: OpenRecord;
  }
}

/**
 * Adds parts to the routed stanza's record: the one there, or a new one — handed to the store at
 * once — when there is none or the store already took it. `fill` runs synchronously, before the
 * store can take the record, and must leave it with the stanza as it stands now.
 */
export function openRecord(routed: Routed, storage: Storage, fill: (record: MessageRecord) => void): OpenRecord {
  let open = routed.record;
  if (!open || open.record.sealed) {
    const record: MessageRecord = { stanza: "", storedAt: Date.now() };
    open = { record, written: storage.messages.write(record) };
    routed.record = open;
  }
  fill(open.record);
  return open;
}

/**
 * XEP-0203 §3 for a message leaving the undelivered queue: the delay says when and by whom it was
 * stored. A stanza that already carries this server's delay (re-routed from a session that ended,
 * with its original time; or stored before the records kept the stanza without it) keeps that one.
 */
export function withOfflineDelay(stanza: Element, domain: string, storedAt: number): Element {
  if (!stanza.getChildren("delay", NS.DELAY).some((d) => d.attrs.from === domain)) {
    stanza.cnode(el("delay", { xmlns: NS.DELAY, from: domain, stamp: new Date(storedAt).toISOString() }, "Offline Storage"));
  }
  return stanza;
}
