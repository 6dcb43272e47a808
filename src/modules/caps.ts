/**
 * XEP-0115 Entity Capabilities 1.6.0, the server as a consumer: what each client session supports,
 * learned from the <c/> in its presence. An unknown ver is looked up once with disco#info on
 * "node#ver" and, when the answer hashes to that ver (§5.4), cached for every client that shows
 * it; an answer that does not match is used for that session only. Other modules get the result
 * through the "session/caps" event — PEP uses it for "+notify" filtering (XEP-0163 §4).
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { CAPS, capsVerification, readDiscoInfo } from "../xmpp/caps.js";
import type { Session } from "../xmpp/sessions.js";
import { BoundedMap } from "../bounded-map.js";
import { Priority } from "../hooks.js";

declare module "../hooks.js" {
  interface Events {
    /** A session's features are known, or changed (XEP-0115). */
    "session/caps": { session: Session; features: ReadonlySet<string> };
  }
}

const HASHES: Record<string, string> = { "sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512" };

export const caps = defineModule({
  name: "caps",
  implements: [{ spec: "XEP-0115", version: "1.6.0", note: "legacy caps without 'hash' are ignored" }],
  dependsOn: ["presence", "disco"],
  options: z.strictObject({
    /** Verified vers kept in memory. */
    cacheSize: z.number().int().min(1).default(10_000),
    lookupTimeoutSeconds: z.number().positive().default(10),
  }),
  start(ctx) {
    const verified = new BoundedMap<string, ReadonlySet<string>>(ctx.options.cacheSize);
    const lookups = new Map<string, Promise<{ features: ReadonlySet<string>; verified: boolean; askedOf: Session } | undefined>>();
    const shown = new WeakMap<Session, string>();

    const lookup = (session: Session, node: string, ver: string, hash: string) => {
      const iq = el("iq", { type: "get", to: session.jid.full, from: session.jid.domain },
        el("query", { xmlns: NS.DISCO_INFO, node: `${node}#${ver}` }));
      return ctx.router.request(iq, ctx.options.lookupTimeoutSeconds * 1000).then((reply) => {
        const query = reply.attrs.type === "result" ? reply.getChild("query", NS.DISCO_INFO) : undefined;
        if (!query) return undefined;
        const info = readDiscoInfo(query);
        const features = new Set(info.features);
        const ok = capsVerification(info.identities, info.features, info.forms, HASHES[hash]) === ver;
        if (ok) {
          verified.set(`${hash} ${ver}`, features);
        } else {
          ctx.log.debug({ stage: "caps", hash }, "disco#info does not hash to the advertised ver; used for this session only");
        }
        return { features, verified: ok, askedOf: session };
      }, () => undefined);
    };

    ctx.chain("presence/broadcast", ({ stanza, origin }) => {
      if (!origin || stanza.attrs.type !== undefined) return undefined;
      const c = stanza.getChild("c", CAPS);
      const { hash, ver, node } = c?.attrs ?? {};
      if (!c || !hash || !ver || !node || !HASHES[hash]) return undefined;
      const key = `${hash} ${ver}`;
      if (shown.get(origin) === key) return undefined;
      shown.set(origin, key);
      const known = verified.get(key);
      if (known) {
        void ctx.emit("session/caps", { session: origin, features: known });
        return undefined;
      }
      // One lookup per ver at a time; clients showing the same ver meanwhile wait for it.
      let pending = lookups.get(key);
      if (!pending) {
        pending = lookup(origin, node, ver, hash);
        lookups.set(key, pending);
        void pending.finally(() => lookups.delete(key));
      }
      void pending.then(async (result) => {
        let features = result?.features;
        // An answer that did not verify speaks only for the client that gave it.
        if (result && !result.verified && result.askedOf !== origin) features = (await lookup(origin, node, ver, hash))?.features;
        if (features && shown.get(origin) === key) await ctx.emit("session/caps", { session: origin, features });
      });
      return undefined;
    }, Priority.AMEND);
  },
});
