/**
 * XEP-0288 Bidirectional Server-to-Server Connections 1.0.1: one TCP connection carries stanzas
 * both ways between two servers (config s2s.bidi, on by default as Prosody's mod_s2s_bidi).
 *
 * - §2.1: "If a server supports bidirectional server-to-server streams, it should inform the
 *   connecting entity when returning stream features": <bidi xmlns='urn:xmpp:features:bidi'/>,
 *   offered on incoming streams once TLS is up, until a domain is authenticated (./incoming.ts).
 * - §2.2: "the connecting server sends a <bidi/> element qualified by the 'urn:xmpp:bidi'
 *   namespace. This SHOULD be done before either SASL negotiation or Server Dialback." No reply
 *   comes (./outgoing.ts sends it with the features that offered it, then authenticates).
 * - "The receiving server MUST NOT send stanzas to the peer before it has authenticated via SASL,
 *   or the peer's identity has been verified via Server Dialback": the incoming stream hands itself
 *   to the pool (./pool.ts `attachReverse`) only then — after SASL, once the restarted stream is
 *   open, for dialback once <db:result type='valid'/> is sent.
 * - "the receiving server MUST only send stanzas for which it has been authenticated - in the case
 *   of TLS/SASL based authentication, this is the value of the stream's 'to' attribute, whereas in
 *   the case of Server Dialback this is the inverse of any domain pair that has been used in a
 *   dialback request": the reverse stream serves only the pool's route (local = that domain,
 *   remote = the authenticated peer domain); a route is per (from domain, to domain), so nothing
 *   else is written on it.
 * - "the receiving server MUST NOT attempt to verify a dialback key on the same connection where
 *   the corresponding request was issued": verification always opens a stream of its own
 *   (./pool.ts `verifyDialback`).
 * The initiating server accepts on its outgoing stream only stanzas from the domain it connected to,
 * to the domain it authenticated as, through the same checks and limits as an incoming stream
 * (./inbound.ts).
 */
import { StreamError } from "../../errors.js";
import type { Jid } from "../jid.js";
import type { AuthMethod } from "./outgoing.js";

export const NS_BIDI = "urn:xmpp:bidi";
export const NS_BIDI_FEATURE = "urn:xmpp:features:bidi";
export const BIDI_FEATURE = `<bidi xmlns='${NS_BIDI_FEATURE}'/>`;
export const BIDI_REQUEST = `<bidi xmlns='${NS_BIDI}'/>`;

/** An incoming stream the pool may send on, from `local` to the authenticated `remote` only. */
export interface ReverseStream {
  readonly local: string;
  readonly remote: string;
  readonly authMethod: AuthMethod;
  readonly isReady: boolean;
  send(xml: string): void;
  close(error?: StreamError): void;
}

/** Hands a reverse stream to the pool; the function returned is called once the stream ended. */
export type AttachReverse = (stream: ReverseStream) => () => void;

/**
 * What the initiating server takes back on its stream (from `local` to `remote`): stanzas from the
 * domain it called to the domain it authenticated as — the pair reversed — and nothing else.
 * RFC 6120 §4.9.3.9 invalid-from for another sender; host-unknown for another recipient (that
 * pair has, or gets, a stream of its own).
 */
export function reverseStanzaRefusal(local: string, remote: string, from: Jid, to: Jid): StreamError | undefined {
  if (from.domain !== remote) return new StreamError("invalid-from", "Not the domain this stream was opened to");
  if (to.domain !== local) return new StreamError("host-unknown", "Not the domain this stream authenticated");
  return undefined;
}
