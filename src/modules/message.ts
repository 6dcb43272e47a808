/**
 * RFC 6121 §5 and §8.5: delivery of messages to local users. Bare-JID chat/normal messages go to
 * the highest-priority available resource(s); when there is none, the "message/offline" chain
 * (offline storage) gets the message; if nobody takes it the sender gets service-unavailable.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { HANDLED, type HeldStanza, type Routed } from "../hooks.js";
import { el, findChild, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { MAM } from "./mam.js";
import { StanzaError } from "../errors.js";
import type { Session } from "../xmpp/sessions.js";
import { BoundedMap } from "../bounded-map.js";

const KNOWN_ACCOUNTS_LIMIT = 100_000;

/**
 * P4: the XEP-0160 storage set is re-sent. Carbon copies and archive results are not (XEP-0280
 * forbids bouncing carbons; the original is in custody elsewhere, and an archive query can simply
 * be repeated); error replies need no second delivery.
 */
export function reroutable(stanza: Element): boolean {
  const type = stanza.attrs.type ?? "normal";
  if (type !== "chat" && type !== "normal") return false;
  return !findChild(stanza, "sent", NS.CARBONS) && !findChild(stanza, "received", NS.CARBONS) && !findChild(stanza, "result", MAM);
}

declare module "../hooks.js" {
  interface Chains {
    /**
     * A chat/normal message about to be written to these live sessions. A handler that takes it
     * (offline, to keep a durable copy until the client acknowledges it) delivers it itself.
     */
    "message/live": Routed & { sessions: readonly Session[] };
  }
  interface Events {
    /** A chat/normal message was written to these sessions of a local user (carbons copy it to the others). */
    "message/delivered": { routed: Routed; sessions: readonly Session[] };
  }
}

export const message = defineModule({
  name: "message",
  implements: [{ spec: "RFC 6121", version: "§5 exchanging messages, §8.5 server rules" }],
  options: z.strictObject({
    /** RFC 6121 §8.5.2.1.1: deliver to every resource that shares the top priority (true) or to the newest one. */
    deliverToAllTopPriority: z.boolean().default(true),
  }),
  start(ctx) {
    const { sessions, router, storage } = ctx;
    // Accounts known to exist: every message to an offline user asked storage (on Postgres a round
    // trip per message, bench S4). Only deletion makes an entry wrong, and it removes it; on a
    // cluster the deletion reaches the other nodes' caches as cache/changed → cache/stale there.
    const existing = new BoundedMap<string, true>(KNOWN_ACCOUNTS_LIMIT);
    ctx.on("user/deleted", ({ jid }) => {
      existing.delete(jid.bare);
      void ctx.emit("cache/changed", { cache: "account", user: jid.bare });
    });
    ctx.on("cache/stale", ({ cache, user }) => {
      if (cache !== "account") return;
      if (user === undefined) existing.clear();
      else existing.delete(user);
    });
    const accountExists = async (bare: string): Promise<boolean> => {
      if (existing.has(bare)) return true;
      if (!(await storage.accounts.exists(bare))) return false;
      existing.set(bare, true);
      return true;
    };

    // One pass, no intermediate arrays: this runs for every 1:1 message.
    const topPriority = (bare: string): Session[] => {
      let best: Session[] = [];
      let top = 0;
      for (const s of sessions.available(bare)) {
        if (s.priority < 0 || s.priority < top) continue;
        if (s.priority > top || best.length === 0) { best = [s]; top = s.priority; }
        else best.push(s);
      }
      return ctx.options.deliverToAllTopPriority || best.length < 2 ? best : [best[best.length - 1]!];
    };

    const deliverLive = (routed: Routed, targets: readonly Session[]): typeof HANDLED | Promise<typeof HANDLED> => {
      const delivered = () => {
        void ctx.emit("message/delivered", { routed, sessions: targets });
        return HANDLED;
      };
      return ctx.runChain("message/live", { ...routed, sessions: targets }, {
        handled: delivered,
        unhandled: () => {
          for (const s of targets) router.deliver(s, routed.stanza);
          return delivered();
        },
        failed: (err) => { throw err; },
      });
    };

    const toBare = (routed: Routed): typeof HANDLED | Promise<typeof HANDLED> => {
      const { stanza, to } = routed;
      const type = stanza.attrs.type ?? "normal";
      if (type === "error") return HANDLED; // RFC 6121 §8.5.2.1.1: silently ignored
      if (type === "groupchat") {
        void router.bounce(stanza, new StanzaError("service-unavailable"), routed.origin);
        return HANDLED;
      }
      if (type === "headline") {
        for (const s of sessions.available(to.bare)) if (s.priority >= 0) router.deliver(s, stanza);
        return HANDLED;
      }
      const targets = topPriority(to.bare);
      if (targets.length > 0) return deliverLive(routed, targets);
      return (async () => {
        if (await accountExists(to.bare)) {
          const handled = await ctx.runChain("message/offline", { ...routed, to: routed.to.toBare() });
          if (handled) return HANDLED;
        }
        // RFC 6121 §8.5.2.2.1: no such user, or nowhere to keep it.
        await router.bounce(stanza, new StanzaError("service-unavailable"), routed.origin);
        return HANDLED;
      })();
    };

    ctx.on("session/unacknowledged", ({ session, stanzas }) => rerouteUnacknowledged(session, stanzas));

    /**
     * HARDENING §1.3 P3/P4: what a session's client never acknowledged is treated like a stanza for
     * an unavailable resource (XEP-0198 §4): chat and normal messages go to another resource or to
     * offline storage, with a XEP-0203 delay of when they were first sent; IQ requests get an error;
     * presence is state and is not re-sent.
     */
    const rerouteUnacknowledged = async (session: Session, held: readonly HeldStanza[]): Promise<void> => {
      // All routed in one tick, in order, so they reach storage before anything that arrives later.
      const routed = held.map(({ name, type, xml, at }) => {
        const request = name === "iq" && (type === "get" || type === "set");
        if (name !== "message" && !request) return undefined;
        try {
          const stanza = parseElement(xml);
          if (request) return router.bounce(stanza, new StanzaError("service-unavailable", "Recipient's session ended"));
          if (!reroutable(stanza)) return undefined;
          if (!stanza.getChild("delay", NS.DELAY)) stanza.cnode(el("delay", { xmlns: NS.DELAY, from: session.jid.domain, stamp: new Date(at).toISOString() }));
          stanza.attrs.to = session.jid.bare;
          // RFC 6120 §8.1.2.1: a stanza the server generated may leave 'from' out; it is from the server.
          stanza.attrs.from ??= session.jid.domain;
          return router.route(stanza);
        } catch (err) {
          ctx.log.error({ err, stage: "sm" }, "re-routing an unacknowledged stanza failed");
          return undefined;
        }
      });
      await Promise.all(routed.map((r) => r?.catch((err) => ctx.log.error({ err, stage: "sm" }, "re-routing an unacknowledged stanza failed"))));
    };

    ctx.chain("message/bare", toBare);
    ctx.chain("message/full", (routed) => {
      const session = sessions.get(routed.to.full);
      if (session) return deliverLive(routed, [session]);
      // RFC 6121 §8.5.3.2.1: chat and normal fall back to the bare JID; the rest is not delivered.
      const type = routed.stanza.attrs.type ?? "normal";
      if (type === "chat" || type === "normal") return toBare({ ...routed, to: routed.to.toBare() });
      if (type === "groupchat") void router.bounce(routed.stanza, new StanzaError("service-unavailable"), routed.origin);
      return HANDLED;
    });
  },
});
