/**
 * Stream and stanza errors (RFC 6120 §4.9 and §8.3). Throwing a StanzaError from an IQ handler
 * becomes that error on the wire; throwing a StreamError from connection code closes the stream
 * with that condition. The condition names are the stable error codes tests assert on.
 */
import { Element, el } from "./xmpp/xml.js";
import { NS } from "./xmpp/ns.js";

export type StreamErrorCondition =
  | "bad-format" | "bad-namespace-prefix" | "conflict" | "connection-timeout" | "host-gone"
  | "host-unknown" | "improper-addressing" | "internal-server-error" | "invalid-from"
  | "invalid-namespace" | "invalid-xml" | "not-authorized" | "not-well-formed" | "policy-violation"
  | "remote-connection-failed" | "reset" | "resource-constraint" | "restricted-xml" | "see-other-host"
  | "system-shutdown" | "undefined-condition" | "unsupported-encoding" | "unsupported-feature"
  | "unsupported-stanza-type" | "unsupported-version";

export type StanzaErrorType = "auth" | "cancel" | "continue" | "modify" | "wait";

export type StanzaErrorCondition =
  | "bad-request" | "conflict" | "feature-not-implemented" | "forbidden" | "gone"
  | "internal-server-error" | "item-not-found" | "jid-malformed" | "not-acceptable" | "not-allowed"
  | "not-authorized" | "policy-violation" | "recipient-unavailable" | "redirect"
  | "registration-required" | "remote-server-not-found" | "remote-server-timeout"
  | "resource-constraint" | "service-unavailable" | "subscription-required"
  | "undefined-condition" | "unexpected-request";

/** RFC 6120 §8.3.3: the error type each condition usually carries. */
const DEFAULT_TYPE: Record<StanzaErrorCondition, StanzaErrorType> = {
  "bad-request": "modify", conflict: "cancel", "feature-not-implemented": "cancel", forbidden: "auth",
  gone: "cancel", "internal-server-error": "cancel", "item-not-found": "cancel", "jid-malformed": "modify",
  "not-acceptable": "modify", "not-allowed": "cancel", "not-authorized": "auth",
  "policy-violation": "modify", "recipient-unavailable": "wait", redirect: "modify",
  "registration-required": "auth", "remote-server-not-found": "cancel", "remote-server-timeout": "wait",
  "resource-constraint": "wait", "service-unavailable": "cancel", "subscription-required": "auth",
  "undefined-condition": "cancel", "unexpected-request": "wait",
};

export class StanzaError extends Error {
  readonly type: StanzaErrorType;
  constructor(
    readonly condition: StanzaErrorCondition,
    readonly text?: string,
    type?: StanzaErrorType,
    /** Application-specific condition element, e.g. XEP-0363 <file-too-large/>. */
    readonly appCondition?: Element,
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.type = type ?? DEFAULT_TYPE[condition];
  }

  toElement(): Element {
    return el("error", { type: this.type },
      el(this.condition, { xmlns: NS.STANZA_ERRORS }),
      this.text ? el("text", { xmlns: NS.STANZA_ERRORS }, this.text) : undefined,
      this.appCondition,
    );
  }
}

export class StreamError extends Error {
  constructor(
    readonly condition: StreamErrorCondition,
    readonly text?: string,
    readonly appCondition?: Element,
  ) {
    super(text ? `${condition}: ${text}` : condition);
  }

  toElement(): Element {
    return el("stream:error", {},
      el(this.condition, { xmlns: NS.STREAM_ERRORS }),
      this.text ? el("text", { xmlns: NS.STREAM_ERRORS }, this.text) : undefined,
      this.appCondition,
    );
  }
}

/**
 * The error reply to a stanza (RFC 6120 §8.3.1): same name and id, addresses swapped,
 * type='error', the original payload kept so the sender can correlate it.
 */
export function errorReply(stanza: Element, error: StanzaError): Element {
  const reply = new Element(stanza.name, {
    type: "error",
    id: stanza.attrs.id,
    from: stanza.attrs.to,
    to: stanza.attrs.from,
  });
  if (stanza.attrs.id === undefined) delete reply.attrs.id;
  if (stanza.attrs.to === undefined) delete reply.attrs.from;
  for (const c of stanza.children) if (typeof c !== "string") reply.cnode(c);
  reply.cnode(error.toElement());
  return reply;
}
