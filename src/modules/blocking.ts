/**
 * XEP-0191 Blocking Command 1.3 (urn:xmpp:blocking). Blocked entities get nothing from the user:
 * their messages and IQs are answered with service-unavailable (XEP-0191 §3.6, as if the user did
 * not exist), their presence is dropped; what the user sends to them is refused with not-acceptable
 * and <blocked xmlns='urn:xmpp:blocking:errors'/> (§3.7). Items match as in XEP-0016 §2.1: full JID,
 * bare JID, domain/resource or domain.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, type Element } from "../xmpp/xml.js";
import { tryParseJid, type Jid } from "../xmpp/jid.js";
import { Priority, HANDLED, type Routed } from "../hooks.js";
import { StanzaError } from "../errors.js";
import type { Session } from "../xmpp/sessions.js";
import { BoundedMap } from "../bounded-map.js";
import { andThen, both } from "../maybe-async.js";

const BLOCKING = "urn:xmpp:blocking";
const BLOCKING_ERRORS = "urn:xmpp:blocking:errors";
const CACHE_LIMIT = 50_000;
const REPORTING = "urn:xmpp:reporting:1";
const REPORT_REASONS: Record<string, string> = { "urn:xmpp:reporting:spam": "spam", "urn:xmpp:reporting:abuse": "abuse" };

function matchKeys(jid: Jid): string[] {
  const keys = [jid.full, jid.bare, jid.domain];
  if (jid.resource) keys.push(`${jid.domain}/${jid.resource}`);
  return keys;
}

export const blocking = defineModule({
  name: "blocking",
  implements: [{ spec: "XEP-0191", version: "1.3" }, { spec: "XEP-0377", version: "0.3.1" }],
  dependsOn: ["presence"],
  options: z.strictObject({ maxItems: z.number().int().min(1).default(1000) }),
  start(ctx) {
    const { storage, router, sessions } = ctx;
    ctx.feature("host", BLOCKING);
    ctx.feature("account", BLOCKING);
    ctx.feature("account", REPORTING);
    // Blocklists of users seen recently, so the common path (nothing blocked) stays synchronous.
    const cache = new BoundedMap<string, Set<string>>(CACHE_LIMIT);
    const requested = new WeakSet<Session>();

    // The lists of users with a session stay loaded, so the output check below never waits.
    const online = new Map<string, Set<string>>();

    const load = (user: string): Set<string> | Promise<Set<string>> => {
      const hit = online.get(user) ?? cache.get(user);
      if (hit) return hit;
      return storage.blocklist.list(user).then((jids) => {
        const set = new Set(jids);
        cache.set(user, set);
        return set;
      });
    };
    const refresh = async (user: string) => {
      const set = new Set(await storage.blocklist.list(user));
      cache.set(user, set);
      if (online.has(user)) online.set(user, set);
    };
    /** This node changed the list: the other nodes of a cluster drop their copies. */
    const changed = async (user: string) => {
      await refresh(user);
      void ctx.emit("cache/changed", { cache: "blocklist", user });
    };
    ctx.on("cache/stale", async ({ cache: name, user }) => {
      if (name !== "blocklist") return;
      const users = user === undefined ? [...new Set([...online.keys(), ...cache.keys()])] : [user];
      for (const u of users) if (online.has(u) || cache.has(u)) await refresh(u);
    });
    const blocks = (list: Set<string>, jid: Jid) => list.size > 0 && matchKeys(jid).some((k) => list.has(k));

    const enforce = (routed: Routed): typeof HANDLED | undefined | Promise<typeof HANDLED | undefined> => {
      const { stanza, from, to, origin } = routed;
      const decide = (senderList: Set<string> | undefined, recipientList: Set<string> | undefined) => {
        if (senderList && blocks(senderList, to)) {
          void router.bounce(stanza, new StanzaError("not-acceptable", undefined, "cancel", el("blocked", { xmlns: BLOCKING_ERRORS })), origin);
          return HANDLED;
        }
        if (recipientList && blocks(recipientList, from)) {
          if (stanza.name !== "presence") void router.bounce(stanza, new StanzaError("service-unavailable"), origin);
          return HANDLED;
        }
        return undefined;
      };
      const sender = origin ? load(from.bare) : undefined;
      const recipient = router.isLocalDomain(to.domain) && to.local ? load(to.bare) : undefined;
      return andThen(both(sender, recipient), ([s, r]) => decide(s, r));
    };
    for (const chain of ["message/bare", "message/full", "presence/bare", "presence/full", "iq/bare", "iq/full", "message/remote", "presence/remote", "iq/remote"] as const) {
      // Before delivery and before subscription handling.
      ctx.chain(chain, enforce, Priority.POLICY);
    }

    ctx.on("session/bound", async ({ session }) => {
      const user = session.jid.bare;
      if (!online.has(user)) online.set(user, new Set(await storage.blocklist.list(user)));
    });
    ctx.on("session/closed", ({ session }) => {
      if (sessions.ofUser(session.jid.bare).length === 0) online.delete(session.jid.bare);
    });
    // §3.4: "the user's server MUST NOT deliver any stanzas from the blocked entity to the user".
    // The chains above see what is routed; modules also write to sessions themselves (MUC traffic,
    // offline messages flushed at login), so the rule is enforced again where every stanza leaves.
    ctx.filter("stanza/out", (out) => {
      const { stanza, session } = out;
      const list = online.get(session.jid.bare);
      // Errors reaching the user answer the user's own stanzas (a blocked entity's are refused
      // on the way in); the user's own account and server are never blocked from the user.
      if (!list || list.size === 0 || stanza.attrs.type === "error") return out;
      const from = tryParseJid(stanza.attrs.from);
      if (!from || from.bare === session.jid.bare || from.full === session.jid.domain) return out;
      return blocks(list, from) ? null : out;
    }, Priority.POLICY);

    const push = (user: string, payload: Element) => {
      for (const s of sessions.ofUser(user)) {
        if (requested.has(s)) router.deliver(s, el("iq", { type: "set", id: `block-${Date.now().toString(36)}`, to: s.jid.full }, payload));
      }
    };
    const items = (payload: Element): string[] => childElements(payload).filter((c) => c.name === "item").map((item) => {
      const jid = tryParseJid(item.attrs.jid);
      if (!jid) throw new StanzaError("jid-malformed");
      return jid.full;
    });

    ctx.iq("account", "get", BLOCKING, async ({ payload, origin, self, from }) => {
      if (!self || !origin) throw new StanzaError("forbidden");
      if (payload.name !== "blocklist") throw new StanzaError("bad-request");
      requested.add(origin);
      const list = await storage.blocklist.list(from.bare);
      return el("blocklist", { xmlns: BLOCKING }, ...list.map((jid) => el("item", { jid })));
    });

    ctx.iq("account", "set", BLOCKING, async ({ payload, origin, self, from }) => {
      if (!self || !origin) throw new StanzaError("forbidden");
      const user = from.bare;
      if (payload.name === "block") {
        const jids = items(payload);
        // XEP-0191 §3.3: a block without items is a bad request.
        if (jids.length === 0) throw new StanzaError("bad-request");
        const current = await storage.blocklist.list(user);
        if (new Set([...current, ...jids]).size > ctx.options.maxItems) throw new StanzaError("not-allowed", "Blocklist full", "cancel");
        // XEP-0377: a report rides on the block; it is kept for the admins (`parley reports`).
        const reports = childElements(payload).flatMap((item) => {
          const report = item.getChild("report", REPORTING);
          if (!report) return [];
          const reason = REPORT_REASONS[report.attrs.reason ?? ""];
          if (!reason) throw new StanzaError("bad-request", "Report reason must be urn:xmpp:reporting:spam or urn:xmpp:reporting:abuse");
          return [{ at: Date.now(), reporter: user, reported: tryParseJid(item.attrs.jid)!.full, reason, text: report.getChildText("text") ?? "",
            stanzaIds: report.getChildren("stanza-id", "urn:xmpp:sid:0").map((s) => s.attrs.id).filter((id): id is string => !!id) }];
        });
        await storage.blocklist.add(user, jids);
        for (const report of reports) {
          await storage.reports.add(report);
          ctx.log.warn({ stage: "blocking", reason: report.reason }, "abuse report filed (XEP-0377)");
        }
        await changed(user);
        // XEP-0191 §3.3: contacts that are now blocked see the user go offline.
        for (const jid of jids) {
          const target = tryParseJid(jid)!;
          const item = await storage.roster.getItem(user, target.bare);
          if (item?.subscription === "from" || item?.subscription === "both") {
            for (const s of sessions.available(user)) void router.route(el("presence", { type: "unavailable", from: s.jid.full, to: jid }));
          }
        }
        push(user, el("block", { xmlns: BLOCKING }, ...jids.map((jid) => el("item", { jid }))));
        return undefined;
      }
      if (payload.name === "unblock") {
        const jids = items(payload);
        // XEP-0191 §3.5: an unblock without items unblocks everyone.
        await storage.blocklist.remove(user, jids.length ? jids : undefined);
        await changed(user);
        push(user, el("unblock", { xmlns: BLOCKING }, ...jids.map((jid) => el("item", { jid }))));
        return undefined;
      }
      throw new StanzaError("bad-request");
    });

    ctx.on("user/deleted", ({ jid }) => { cache.delete(jid.bare); online.delete(jid.bare); });
  },
});
