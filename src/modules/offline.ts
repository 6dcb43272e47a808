/**
 * XEP-0160 Best Practices for Handling Offline Messages 1.0.1, with XEP-0203 delay stamps and the
 * XEP-0334 hints no-store / store. Rows are deleted only once the client has shown it read them:
 * after the flush the server pings the session (XEP-0199); the stream is ordered, so the answer
 * proves every message before it arrived. A session that dies first gets them again next time.
 * (Stream management acks take over this role in the stream-management issue.)
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
        router.deliver(session, stanza);
      }
      const release = () => { for (const id of ids) taken!.delete(id); if (taken!.size === 0) inFlight.delete(user); };
      router.request(el("iq", { type: "get", from: session.jid.domain, to: session.jid.full }, el("ping", { xmlns: NS.PING })), ctx.options.ackTimeoutSeconds * 1000)
        .then(() => storage.offline.remove(user, ids), (err) => {
          // Any answer, even an error, proves the client read what came before it.
          if (err instanceof StanzaError && err.condition !== "remote-server-timeout") return storage.offline.remove(user, ids);
          return undefined;
        })
        .then(async () => {
          release();
          if (rows.length === ctx.options.flushBatch && session.presence !== undefined && ctx.sessions.get(session.jid.full) === session) {
            await flush(session);
          }
        }, (err) => { release(); ctx.log.error({ err, stage: "offline" }, "removing delivered offline messages failed"); });
    };
    ctx.on("session/available", ({ session }) => flush(session));
  },
});
