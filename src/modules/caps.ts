/**
 * XEP-0115 Entity Capabilities 1.6.0, the server as a consumer: what each client session supports,
 * learned from the <c/> in its presence. An unknown ver is looked up once with disco#info on
 * "node#ver" and, when the answer hashes to that ver (§5.4), cached for every client that shows
 * it; an answer that does not match is used for that session only. Other modules get the result
 * through the "session/caps" event — PEP uses it for "+notify" filtering (XEP-0163 §4).
 *
 * Contacts on other servers are learned the same way from the presence they broadcast to local
 * users (XEP-0163 §2.4 relies on it), asked from the domain it was sent to, and reported through
 * "contact/caps".
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { CAPS, capsVerification, readDiscoInfo } from "../xmpp/caps.js";
import type { Session } from "../xmpp/sessions.js";
import type { Jid } from "../xmpp/jid.js";
import type { Element } from "../xmpp/xml.js";
import { BoundedMap } from "../bounded-map.js";
import { Priority } from "../hooks.js";

declare module "../hooks.js" {
  interface Events {
    /** A session's features are known, or changed (XEP-0115). */
    "session/caps": { session: Session; features: ReadonlySet<string> };
    /** An entity on another server (a full JID) showed caps in presence to a local user, and its features are known. */
    "contact/caps": { contact: Jid; features: ReadonlySet<string> };
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
    const lookups = new Map<string, Promise<{ features: ReadonlySet<string>; verified: boolean; askedOf: string } | undefined>>();
    /** What a local session or a remote full JID last showed ("hash ver"). */
    const shownBySession = new WeakMap<Session, string>();
    const shownByContact = new BoundedMap<string, string>(ctx.options.cacheSize);

    /** disco#info on node#ver of `entity`, asked by the server domain `asker`. */
    const lookup = (entity: string, asker: string, node: string, ver: string, hash: string) => {
      const iq = el("iq", { type: "get", to: entity, from: asker },
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
          ctx.log.debug({ stage: "caps", hash }, "disco#info does not hash to the advertised ver; used for this entity only");
        }
        return { features, verified: ok, askedOf: entity };
      }, () => undefined);
    };

    /**
     * The features behind the <c/> that `entity` shows in `presence`, handed to `learned` once
     * known — unless the entity showed another ver meanwhile (`shown` keeps what it last showed).
     */
    const observe = (presence: Element, entity: string, asker: string, shown: { get(): string | undefined; set(key: string): void },
      learned: (features: ReadonlySet<string>) => void) => {
      const c = presence.getChild("c", CAPS);
      const { hash, ver, node } = c?.attrs ?? {};
      if (!c || !hash || !ver || !node || !HASHES[hash]) return;
      const key = `${hash} ${ver}`;
      if (shown.get() === key) return;
      shown.set(key);
      const known = verified.get(key);
      if (known) return learned(known);
      // One lookup per ver at a time; entities showing the same ver meanwhile wait for it.
      let pending = lookups.get(key);
      if (!pending) {
        pending = lookup(entity, asker, node, ver, hash);
        lookups.set(key, pending);
        void pending.finally(() => lookups.delete(key));
      }
      void pending.then(async (result) => {
        let features = result?.features;
        // An answer that did not verify speaks only for the entity that gave it.
        if (result && !result.verified && result.askedOf !== entity) features = (await lookup(entity, asker, node, ver, hash))?.features;
        if (features && shown.get() === key) learned(features);
      });
    };

    ctx.chain("presence/broadcast", ({ stanza, origin }) => {
      if (!origin || stanza.attrs.type !== undefined) return undefined;
      observe(stanza, origin.jid.full, origin.jid.domain, { get: () => shownBySession.get(origin), set: (key) => shownBySession.set(origin, key) },
        (features) => void ctx.emit("session/caps", { session: origin, features }));
      return undefined;
    }, Priority.AMEND);

    // Presence from a resource on another server to a local user's bare JID: a contact's broadcast.
    // Presence to full JIDs is left alone: there, remote rooms relay their occupants' presence.
    ctx.chain("presence/bare", ({ stanza, from, to, origin }) => {
      if (origin || !from.resource || ctx.router.isLocalDomain(from.domain)) return undefined;
      const type = stanza.attrs.type;
      if (type === "unavailable") shownByContact.delete(from.full);
      if (type !== undefined) return undefined;
      observe(stanza, from.full, to.domain, { get: () => shownByContact.get(from.full), set: (key) => shownByContact.set(from.full, key) },
        (features) => void ctx.emit("contact/caps", { contact: from, features }));
      return undefined;
    }, Priority.AMEND);
  },
});
