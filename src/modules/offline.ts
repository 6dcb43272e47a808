/**
 * XEP-0160 Best Practices for Handling Offline Messages 1.0.1, with XEP-0203 delay stamps and the
 * XEP-0334 hints no-store / store. Rows are deleted only once the client has shown it read them
 * (HARDENING §1.3 P2): with stream management, when its <a h/> covers them; without, when it
 * answers a XEP-0199 ping sent after them (the stream is ordered). A session that ends first gets
 * them again at its next login — a duplicate at worst, never a loss.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { HANDLED } from "../hooks.js";
import { StanzaError } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Session } from "../xmpp/sessions.js";

export const offline = defineModule({
  name: "offline",
  implements: [{ spec: "XEP-0160", version: "1.0.1" }, { spec: "XEP-0203", version: "2.0" }],
  dependsOn: ["message"],
  options: z.strictObject({
    /** Per-user queue limit; over it the sender gets service-unavailable (XEP-0160 §3). */
    maxPerUser: z.number().int().min(1).default(10000),
    /** Messages per flush batch. */
    flushBatch: z.number().int().min(1).default(500),
    ackTimeoutSeconds: z.number().positive().default(60),
  }),
  start(ctx) {
    const { storage, router } = ctx;
    ctx.feature("host", NS.OFFLINE);
    const inFlight = new Map<string, Set<number>>();

    ctx.chain("message/offline", async ({ stanza, to, origin }) => {
      const type = stanza.attrs.type ?? "normal";
      if (type !== "chat" && type !== "normal") return undefined;
      const hinted = (name: string) => stanza.getChild(name, NS.HINTS) !== undefined;
      if (hinted("no-store")) return undefined;
      // XEP-0160 §3: a chat message that carries only a chat state is not stored.
      const elements = stanza.children.filter((c) => typeof c !== "string");
      const onlyChatState = elements.length > 0 && elements.every((c) => typeof c !== "string" && c.getNS() === NS.CHATSTATES);
      if (onlyChatState && !hinted("store")) return undefined;
      const now = new Date();
      // XEP-0203 §3: the delay says when and by whom the message was stored.
      stanza.cnode(el("delay", { xmlns: NS.DELAY, from: to.domain, stamp: now.toISOString() }, "Offline Storage"));
      stanza.attrs.to ??= to.bare;
      const id = await storage.offline.append(to.bare, stanza.toString(), now.getTime(), ctx.options.maxPerUser);
      if (id === undefined) {
        await router.bounce(stanza, new StanzaError("service-unavailable", "The recipient's offline queue is full"), origin);
      } else {
        ctx.log.debug({ stage: "offline", tag: "message" }, "stored offline");
      }
      return HANDLED;
    });

    const flush = async (session: Session): Promise<void> => {
      // XEP-0160 §4: deliver on available presence with non-negative priority.
      if (session.priority < 0) return;
      const user = session.jid.bare;
      let taken = inFlight.get(user);
      if (!taken) inFlight.set(user, (taken = new Set()));
      const rows = (await storage.offline.list(user, ctx.options.flushBatch + taken.size)).filter((r) => !taken!.has(r.id)).slice(0, ctx.options.flushBatch);
      if (rows.length === 0) return;
      const ids: number[] = [];
      const confirmations: Array<Promise<boolean> | undefined> = [];
      for (const row of rows) {
        let stanza;
        try {
          stanza = parseElement(row.stanza);
        } catch (err) {
          ctx.log.error({ err, stage: "offline", id: row.id }, "stored stanza does not parse; left in storage");
          continue;
        }
        stanza.attrs.to = session.jid.full;
        taken.add(row.id);
        ids.push(row.id);
        confirmations.push(router.deliverConfirmed(session, stanza));
      }
      const release = () => { for (const id of ids) taken!.delete(id); if (taken!.size === 0) inFlight.delete(user); };
      try {
        await storage.offline.remove(user, await readByClient(session, ids, confirmations));
      } catch (err) {
        ctx.log.error({ err, stage: "offline" }, "removing delivered offline messages failed");
      } finally {
        release();
      }
      if (rows.length === ctx.options.flushBatch && session.presence !== undefined && ctx.sessions.get(session.jid.full) === session) {
        await flush(session);
      }
    };

    /**
     * Which rows the client has shown it read. With stream management, exactly those its <a h/>
     * covered; without, all of them once it answers a ping sent after them (any answer, even an
     * error, proves it read what came before), none if it does not answer.
     */
    const readByClient = async (session: Session, ids: number[], confirmations: Array<Promise<boolean> | undefined>): Promise<number[]> => {
      if (confirmations.every((c) => c !== undefined)) {
        const acked = await Promise.all(confirmations);
        return ids.filter((_, i) => acked[i]);
      }
      const ping = el("iq", { type: "get", from: session.jid.domain, to: session.jid.full }, el("ping", { xmlns: NS.PING }));
      try {
        await router.request(ping, ctx.options.ackTimeoutSeconds * 1000);
        return ids;
      } catch (err) {
        return err instanceof StanzaError && err.condition !== "remote-server-timeout" ? ids : [];
      }
    };
    // Detached: waiting for the client's acknowledgement must not hold up the presence that
    // triggered the flush (the client's answer is routed after it, in order).
    ctx.on("session/available", ({ session }) => {
      flush(session).catch((err) => ctx.log.error({ err, stage: "offline" }, "offline flush failed"));
    });
  },
});
