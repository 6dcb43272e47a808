/**
 * XEP-0352 Client State Indication 1.0.0 (urn:xmpp:csi:0). While a client says it is inactive
 * (a phone in the background), stanzas that only update state — presence, chat states, PEP
 * notifications — are held back and collapsed (the newest presence and chat state per sender);
 * everything that matters (messages with content, receipts and markers, calls, IQs, errors,
 * subscription requests) goes out at once, after whatever was held, so order is kept. Everything
 * held goes out when the client becomes active again or the hold fills up.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import type { Session } from "../xmpp/sessions.js";
import { StreamError } from "../errors.js";
import { Priority } from "../hooks.js";

const CSI = "urn:xmpp:csi:0";
const PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event";

/** What may wait: state, not data. Messages the offline store would keep are never held. */
function holdable(stanza: Element): boolean {
  if (stanza.name === "presence") {
    const type = stanza.attrs.type;
    return type === undefined || type === "unavailable";
  }
  if (stanza.name !== "message") return false;
  const carbon = stanza.getChild("sent", NS.CARBONS) ?? stanza.getChild("received", NS.CARBONS);
  const message = carbon?.getChild("forwarded", "urn:xmpp:forward:0")?.getChild("message") ?? stanza;
  const type = message.attrs.type ?? "normal";
  if (type === "error") return false;
  if (type === "headline") return message.getChild("event", PUBSUB_EVENT) !== undefined;
  const children = childElements(message);
  if (message.getChild("store", NS.HINTS)) return false;
  // XEP-0085 chat states (XEP-0334 hints may ride along).
  return children.length > 0 && children.some((c) => c.getNS() === NS.CHATSTATES)
    && children.every((c) => c.getNS() === NS.CHATSTATES || c.getNS() === NS.HINTS);
}

/** Presence and chat states are superseded by the next one from the same sender. */
function collapseKey(stanza: Element, seq: number): string {
  if (stanza.name === "presence") return `p ${stanza.attrs.from ?? ""}`;
  if (stanza.name === "message" && stanza.attrs.type !== "headline") return `c ${stanza.attrs.from ?? ""} ${stanza.attrs.to ?? ""}`;
  return `n ${seq}`;
}

declare module "../hooks.js" {
  interface Events {
    /** A session said <active/> or <inactive/> (push notifies for inactive ones). */
    "session/csi": { session: Session; active: boolean };
  }
}

export const csi = defineModule({
  name: "csi",
  implements: [{ spec: "XEP-0352", version: "1.0.0" }],
  options: z.strictObject({
    /** Held stanzas per session before they are all sent anyway. */
    maxHeld: z.number().int().min(1).default(256),
  }),
  start(ctx) {
    /** Sessions that said <inactive/>, with what is held for them, oldest first. */
    const inactive = new WeakMap<Session, Map<string, Element>>();
    let seq = 0;

    ctx.streamFeature("post-auth", () => el("csi", { xmlns: CSI }));

    const release = (session: Session) => {
      const held = inactive.get(session);
      if (!held || held.size === 0) return;
      const stanzas = [...held.values()];
      held.clear();
      for (const stanza of stanzas) session.send(stanza);
    };

    const setState = (element: Element, session: Session): boolean => {
      if (element.name === "inactive") {
        if (!inactive.has(session)) inactive.set(session, new Map());
        void ctx.emit("session/csi", { session, active: false });
      } else if (element.name === "active") {
        release(session);
        inactive.delete(session);
        void ctx.emit("session/csi", { session, active: true });
      } else return false;
      return true;
    };
    ctx.nonza(CSI, (element, session) => {
      if (!setState(element, session)) session.close(new StreamError("unsupported-stanza-type"));
    });
    // XEP-0386: "the session must begin in that state".
    ctx.bindFeature(CSI, (element, session) => {
      setState(element, session);
      return undefined;
    });

    ctx.filter("stanza/out", (out) => {
      const held = inactive.get(out.session);
      if (!held) return out;
      if (holdable(out.stanza)) {
        const key = collapseKey(out.stanza, seq++);
        held.delete(key); // re-inserted at the end: the newest goes out in its own place
        held.set(key, out.stanza);
        if (held.size > ctx.options.maxHeld) release(out.session);
        return null;
      }
      release(out.session);
      return out;
    }, Priority.HOLD);
  },
});
