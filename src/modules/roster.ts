/**
 * RFC 6121 §2 roster management, with roster versioning (§2.6) and pre-approval support (§3.4).
 * Other modules (presence) change items through updateRosterItem so every change is pushed.
 */
import { z } from "zod";
import { randomBytes } from "node:crypto";
import { defineModule, type ModuleContext } from "../module.js";
import { Element, el, childElements } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { tryParseJid } from "../xmpp/jid.js";
import { StanzaError } from "../errors.js";
import type { RosterItem } from "../storage/index.js";

export function rosterItemElement(item: RosterItem): Element {
  return el("item", {
    jid: item.jid,
    name: item.name,
    subscription: item.subscription,
    ask: item.ask ? "subscribe" : undefined,
    approved: item.approved ? "true" : undefined,
  }, ...item.groups.map((g) => el("group", {}, g)));
}

/** RFC 6121 §2.1.6: a roster push to every interested resource of the user. */
/** What roster changes need from a module context; any module's context fits. */
export type RosterDeps = Pick<ModuleContext<unknown>, "storage" | "sessions" | "router">;

export function pushRoster(ctx: RosterDeps, owner: string, version: number, item: Element): void {
  for (const session of ctx.sessions.ofUser(owner)) {
    if (!session.interested) continue;
    ctx.router.deliver(session, el("iq", { type: "set", id: `push-${randomBytes(6).toString("base64url")}`, to: session.jid.full },
      el("query", { xmlns: NS.ROSTER, ver: String(version) }, item)));
  }
}

/**
 * Reads, changes and stores one item, then pushes it. `change` returns the new item, "remove",
 * or undefined to leave it as it is (no push).
 */
export async function updateRosterItem(
  ctx: RosterDeps,
  owner: string,
  contact: string,
  change: (item: RosterItem | undefined) => RosterItem | "remove" | undefined,
): Promise<RosterItem | undefined> {
  const before = await ctx.storage.roster.getItem(owner, contact);
  const after = change(before ? { ...before, groups: [...before.groups] } : undefined);
  if (after === undefined) return before;
  if (after === "remove") {
    const version = await ctx.storage.roster.remove(owner, contact);
    if (version !== undefined) pushRoster(ctx, owner, version, el("item", { jid: contact, subscription: "remove" }));
    return undefined;
  }
  if (before && sameItem(before, after)) return before;
  const version = await ctx.storage.roster.put(owner, after);
  pushRoster(ctx, owner, version, rosterItemElement(after));
  return after;
}

function sameItem(a: RosterItem, b: RosterItem): boolean {
  return a.name === b.name && a.subscription === b.subscription && a.ask === b.ask && a.approved === b.approved
    && a.groups.length === b.groups.length && a.groups.every((g, i) => g === b.groups[i]);
}

export const roster = defineModule({
  name: "roster",
  implements: [{ spec: "RFC 6121", version: "§2 roster management, §2.6 versioning" }],
  options: z.strictObject({
    maxItems: z.number().int().min(1).default(2000),
  }),
  start(ctx) {
    // RFC 6120 §10.3.3: an IQ without 'to' is handled on behalf of the sender's account, and
    // §8.1.2.1 (rule 3): a stanza the server generates on behalf of the account "MUST either (a)
    // not include a 'from' attribute or (b) include a 'from' attribute whose value is the
    // account's bare JID". Making the implicit address explicit before any handler runs gives
    // every answer — result or error, from whichever module or from the router's own rules — the
    // bare JID as sender (errors came from the domain). The router is where this belongs; it is
    // here, with the account's most basic service, until the router's rewrite takes it.
    ctx.filter("stanza/in", (routed) => {
      const { stanza, origin, to } = routed;
      if (origin && stanza.name === "iq" && stanza.attrs.to === undefined && (stanza.attrs.type === "get" || stanza.attrs.type === "set")) stanza.attrs.to = to.bare;
      return routed;
    });
    ctx.streamFeature("post-auth", () => el("ver", { xmlns: NS.ROSTER_VER_FEATURE }));
    ctx.streamFeature("post-auth", () => el("sub", { xmlns: "urn:xmpp:features:pre-approval" }));

    ctx.iq("account", "get", NS.ROSTER, async ({ origin, self, payload, from }) => {
      // RFC 6121 §2.1.3: only the user's own resources may read the roster.
      if (!self || !origin) throw new StanzaError("forbidden");
      // RFC 6121 §2.2: an "interested resource"; on a cluster the directory carries it to the other nodes.
      if (!origin.interested) {
        origin.interested = true;
        void ctx.emit("session/changed", { session: origin });
      }
      const current = await ctx.storage.roster.get(from.bare);
      // RFC 6121 §2.6.3: an unchanged roster is answered with an empty result.
      if (payload.attrs.ver !== undefined && payload.attrs.ver === String(current.version)) return undefined;
      return el("query", { xmlns: NS.ROSTER, ver: String(current.version) }, ...current.items.map(rosterItemElement));
    });

    ctx.iq("account", "set", NS.ROSTER, async ({ origin, self, payload, from }) => {
      if (!self || !origin) throw new StanzaError("forbidden");
      const items = childElements(payload);
      // RFC 6121 §2.3.3: a roster set MUST contain exactly one <item/>.
      if (items.length !== 1 || items[0]!.name !== "item") throw new StanzaError("bad-request", "Exactly one item is required");
      const item = items[0]!;
      const contact = tryParseJid(item.attrs.jid);
      if (!contact) throw new StanzaError("jid-malformed");
      const contactJid = contact.full;
      if (item.attrs.subscription === "remove") {
        const existing = await ctx.storage.roster.getItem(from.bare, contactJid);
        if (!existing) throw new StanzaError("item-not-found");
        // RFC 6121 §2.5.2: removing an item cancels subscriptions both ways.
        if (existing.subscription === "to" || existing.subscription === "both" || existing.ask) {
          await ctx.router.route(el("presence", { type: "unsubscribe", from: from.bare, to: contactJid }));
        }
        if (existing.subscription === "from" || existing.subscription === "both") {
          await ctx.router.route(el("presence", { type: "unsubscribed", from: from.bare, to: contactJid }));
        }
        await ctx.storage.subscriptionRequests.remove(from.bare, contactJid);
        await updateRosterItem(ctx, from.bare, contactJid, () => "remove");
        return undefined;
      }
      const groups = item.getChildren("group").map((g) => g.getText());
      // RFC 6121 §2.3.3: duplicate groups → bad-request; an empty group name → not-acceptable.
      if (new Set(groups).size !== groups.length) throw new StanzaError("bad-request", "Duplicate group");
      if (groups.some((g) => g.length === 0)) throw new StanzaError("not-acceptable", "Empty group name");
      const name = item.attrs.name as string | undefined;
      const current = await ctx.storage.roster.get(from.bare);
      if (!current.items.some((i) => i.jid === contactJid) && current.items.length >= ctx.options.maxItems) {
        throw new StanzaError("not-allowed", "The roster is full", "cancel");
      }
      await updateRosterItem(ctx, from.bare, contactJid, (existing) => ({
        jid: contactJid,
        ...(name ? { name } : {}),
        groups,
        // RFC 6121 §2.1.2.5: the client cannot set 'subscription' or 'ask'; the server keeps its own.
        subscription: existing?.subscription ?? "none",
        ask: existing?.ask ?? false,
        approved: existing?.approved ?? false,
      }));
      return undefined;
    });
  },
});
