/**
 * XEP-0280 Message Carbons 1.0.1 (urn:xmpp:carbons:2), with the XEP-0334 no-copy hint: every
 * resource that enabled carbons sees the messages its user sends and receives on other resources.
 * XEP-0280 §11: carbons we generate are always from the user's bare JID, so clients can check them.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, cloneElement, findChild, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import type { Session } from "../xmpp/sessions.js";
import { StanzaError } from "../errors.js";

/** Session.flags entry of a session that enabled carbons. */
const CARBONS_FLAG = "carbons";
const FORWARD = "urn:xmpp:forward:0";
const RECEIPTS = "urn:xmpp:receipts";
const MARKERS = "urn:xmpp:chat-markers:0";

/** XEP-0280 §6: which messages are copied. */
function eligible(stanza: Element): boolean {
  if (findChild(stanza, "private", NS.CARBONS) || findChild(stanza, "no-copy", NS.HINTS)) return false;
  if (findChild(stanza, "sent", NS.CARBONS) || findChild(stanza, "received", NS.CARBONS)) return false;
  const type = stanza.attrs.type ?? "normal";
  if (type === "chat") return true;
  if (type !== "normal") return false;
  if (findChild(stanza, "body")) return true;
  return stanza.children.some((c) => typeof c !== "string" && [RECEIPTS, MARKERS, NS.CHATSTATES].includes(c.getNS() ?? ""));
}

export const carbons = defineModule({
  name: "carbons",
  implements: [{ spec: "XEP-0280", version: "1.0.1" }],
  dependsOn: ["message"],
  options: z.strictObject({}),
  start(ctx) {
    ctx.feature("host", NS.CARBONS);
    // A session flag, so that a cluster's other nodes see it too (their copies reach it there).
    const enable = (session: Session, on: boolean) => {
      if (on === session.flags.has(CARBONS_FLAG)) return;
      if (on) session.flags.add(CARBONS_FLAG);
      else session.flags.delete(CARBONS_FLAG);
      void ctx.emit("session/changed", { session });
    };

    // XEP-0386: <enable xmlns='urn:xmpp:carbons:2'/> inside a Bind 2 request; "no response is necessary".
    ctx.bindFeature(NS.CARBONS, (element, session) => {
      if (element.name === "enable") enable(session, true);
      return undefined;
    });

    ctx.iq("account", "set", NS.CARBONS, ({ payload, origin, self }) => {
      if (!origin || !self) throw new StanzaError("forbidden");
      if (payload.name === "enable") enable(origin, true);
      else if (payload.name === "disable") enable(origin, false);
      else throw new StanzaError("bad-request");
      return undefined;
    });

    const copy = (kind: "sent" | "received", stanza: Element, user: string, skip: readonly Session[]) => {
      const targets = ctx.sessions.ofUser(user).filter((s) => s.flags.has(CARBONS_FLAG) && !skip.includes(s));
      if (targets.length === 0) return;
      const forwarded = cloneElement(stanza);
      forwarded.attrs.xmlns = NS.CLIENT;
      for (const session of targets) {
        ctx.router.deliver(session, el("message", { from: user, to: session.jid.full, type: stanza.attrs.type ?? "normal" },
          el(kind, { xmlns: NS.CARBONS }, el("forwarded", { xmlns: FORWARD }, forwarded))));
      }
    };

    // Sent carbons: a message a user's client sends, copied to the user's other resources.
    ctx.filter("stanza/in", (routed) => {
      const { stanza, origin } = routed;
      if (origin && stanza.name === "message") {
        // CVE-2017-5589 class (HARDENING §5): only this server makes carbons; a client's forged
        // <sent/>/<received/> wrapper is removed, so a recipient never sees one from a third party.
        for (const forged of [...stanza.getChildren("sent", NS.CARBONS), ...stanza.getChildren("received", NS.CARBONS)]) stanza.remove(forged);
        // XEP-0280 §7: a <private/> message is not copied, and the marker is removed before it goes on.
        const marker = stanza.getChild("private", NS.CARBONS);
        if (marker) stanza.remove(marker);
        else if (eligible(stanza)) copy("sent", stanza, origin.jid.bare, [origin]);
      }
      return routed;
    });

    // Received carbons: the other resources of the recipient that did not get the message themselves.
    ctx.on("message/delivered", ({ routed, sessions }) => {
      if (eligible(routed.stanza)) copy("received", routed.stanza, routed.to.bare, sessions);
    });
  },
});
