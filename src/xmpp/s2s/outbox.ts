/**
 * Which stanzas for a remote server are kept in the durable outbox (storage s2sOutbox) until the
 * remote server has them: the ones a local server keeps for an offline user too.
 *
 * - Messages of type normal and chat. RFC 6121 §8.5.2.1.1: the server "MUST" either deliver a
 *   chat or normal message to the user or store it offline (or bounce it); groupchat and headline
 *   messages are not stored (§5.2.2, "the server SHOULD NOT store it offline" for headline; a
 *   groupchat message to an occupant who is gone is dropped, XEP-0045 §7.4), and error messages are
 *   never bounced again.
 * - Presence subscription requests and answers. RFC 6121 §3.1.3: the contact's server "MUST"
 *   keep an inbound subscription request until the contact can answer it; losing one loses a contact.
 *
 * Everything else is held in memory only: an IQ has a requester waiting with a timeout (sent again
 * after a restart it would answer nobody), and available or unavailable presence is replaced by the
 * next one and re-probed (RFC 6121 §4.3) when the stream comes back.
 */
import type { Element } from "../xml.js";

const SUBSCRIPTION_TYPES = new Set(["subscribe", "subscribed", "unsubscribe", "unsubscribed"]);

export function keptDurable(stanza: Element): boolean {
  const type = stanza.attrs.type as string | undefined;
  if (stanza.name === "message") return type === undefined || type === "normal" || type === "chat";
  if (stanza.name === "presence") return type !== undefined && SUBSCRIPTION_TYPES.has(type);
  return false;
}
