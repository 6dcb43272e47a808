/**
 * RFC 6121 §3 (subscriptions) and §4 (exchanging presence): the subscription state machine with
 * pre-approval, presence broadcast to subscribers only, probes, directed presence, and an
 * unavailable broadcast when a session ends.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { Element, el, cloneElement } from "../xmpp/xml.js";
import { HANDLED, type Routed } from "../hooks.js";
import type { Session } from "../xmpp/sessions.js";
import type { RosterItem, Subscription } from "../storage/index.js";
import { updateRosterItem } from "./roster.js";

const SUBSCRIPTION_TYPES = new Set(["subscribe", "subscribed", "unsubscribe", "unsubscribed"]);
const hasFrom = (s: Subscription | undefined) => s === "from" || s === "both";
const hasTo = (s: Subscription | undefined) => s === "to" || s === "both";

/** A copy of a presence stanza readdressed for one recipient. */
function readdress(stanza: Element, from: string, to: string): Element {
  const copy = cloneElement(stanza);
  copy.attrs.from = from;
  copy.attrs.to = to;
  return copy;
}

export const presence = defineModule({
  name: "presence",
  implements: [{ spec: "RFC 6121", version: "§3 subscriptions with pre-approval, §4 presence" }],
  dependsOn: ["roster"],
  options: z.strictObject({}),
  start(ctx) {
    const { storage, sessions, router } = ctx;
    const isAccount = (bare: string) => storage.accounts.exists(bare);

    const availableAndInterested = (bare: string) => sessions.available(bare).filter((s) => s.interested);

    const deliverToAvailable = (bare: string, stanza: Element, onlyInterested = false) => {
      for (const s of onlyInterested ? availableAndInterested(bare) : sessions.available(bare)) {
        router.deliver(s, readdress(stanza, stanza.attrs.from, s.jid.full));
      }
    };

    /** Sends the presence of every available resource of `owner` to `to` (RFC 6121 §3.1.5, §4.3.2). */
    const sendCurrentPresence = (owner: string, to: string) => {
      for (const s of sessions.available(owner)) void router.route(readdress(s.presence!, s.jid.full, to));
    };

    const sendUnavailableFromAll = (owner: string, to: string) => {
      for (const s of sessions.available(owner)) void router.route(el("presence", { type: "unavailable", from: s.jid.full, to }));
    };

    // ── outbound subscription stanzas from a local user (RFC 6121 §3.1.2, §3.1.5, §3.2.2, §3.3.2) ──
    const outboundSubscription = async (user: string, contact: string, type: string): Promise<boolean> => {
      switch (type) {
        case "subscribe":
          await updateRosterItem(ctx, user, contact, (item) =>
            hasTo(item?.subscription) ? undefined : { ...(item ?? blankItem(contact)), ask: true });
          return true;
        case "subscribed": {
          const pending = await storage.subscriptionRequests.has(user, contact);
          if (!pending) {
            const item = await storage.roster.getItem(user, contact);
            if (hasFrom(item?.subscription)) return false;
            // RFC 6121 §3.4: no request is pending, so this is a pre-approval; nothing is sent.
            await updateRosterItem(ctx, user, contact, (i) => ({ ...(i ?? blankItem(contact)), approved: true }));
            return false;
          }
          await storage.subscriptionRequests.remove(user, contact);
          await updateRosterItem(ctx, user, contact, (item) => {
            const base = item ?? blankItem(contact);
            return { ...base, subscription: base.subscription === "to" ? "both" : "from", approved: false };
          });
          return true;
        }
        case "unsubscribe":
          await updateRosterItem(ctx, user, contact, (item) => {
            if (!item || (!hasTo(item.subscription) && !item.ask)) return undefined;
            return { ...item, subscription: item.subscription === "both" ? "from" : item.subscription === "to" ? "none" : item.subscription, ask: false };
          });
          return true;
        case "unsubscribed": {
          const pending = await storage.subscriptionRequests.has(user, contact);
          if (pending) await storage.subscriptionRequests.remove(user, contact);
          const item = await storage.roster.getItem(user, contact);
          if (!pending && !hasFrom(item?.subscription) && !item?.approved) return false;
          await updateRosterItem(ctx, user, contact, (i) => {
            if (!i) return undefined;
            return { ...i, subscription: i.subscription === "both" ? "to" : i.subscription === "from" ? "none" : i.subscription, approved: false };
          });
          return true;
        }
      }
      return false;
    };

    // ── inbound subscription stanzas for a local user (RFC 6121 §3.1.3, §3.1.6, §3.2.3, §3.3.3) ──
    const inboundSubscription = async (stanza: Element, user: string, contact: string, type: string): Promise<void> => {
      if (!(await isAccount(user))) {
        // RFC 6121 §3.1.3: a request to a user that does not exist is answered with 'unsubscribed'.
        if (type === "subscribe") await router.route(el("presence", { type: "unsubscribed", from: user, to: contact }));
        return;
      }
      const item = await storage.roster.getItem(user, contact);
      switch (type) {
        case "subscribe":
          if (hasFrom(item?.subscription)) {
            await router.route(el("presence", { type: "subscribed", from: user, to: contact }));
            return;
          }
          if (item?.approved) {
            await updateRosterItem(ctx, user, contact, (i) => ({ ...i!, subscription: i!.subscription === "to" ? "both" : "from", approved: false }));
            await router.route(el("presence", { type: "subscribed", from: user, to: contact }));
            sendCurrentPresence(user, contact);
            return;
          }
          await storage.subscriptionRequests.put(user, contact, stanza.toString());
          deliverToAvailable(user, stanza, true);
          return;
        case "subscribed":
          // RFC 6121 §3.1.6: without a pending outbound request the stanza is ignored.
          if (!item?.ask) return;
          await updateRosterItem(ctx, user, contact, (i) => ({ ...i!, subscription: i!.subscription === "from" ? "both" : "to", ask: false }));
          deliverToAvailable(user, stanza, true);
          return;
        case "unsubscribe":
          await storage.subscriptionRequests.remove(user, contact);
          if (!hasFrom(item?.subscription)) return;
          await updateRosterItem(ctx, user, contact, (i) => ({ ...i!, subscription: i!.subscription === "both" ? "to" : "none" }));
          deliverToAvailable(user, stanza, true);
          return;
        case "unsubscribed":
          if (!hasTo(item?.subscription) && !item?.ask) return;
          await updateRosterItem(ctx, user, contact, (i) => ({ ...i!, subscription: i!.subscription === "both" ? "from" : "none", ask: false }));
          deliverToAvailable(user, stanza, true);
          return;
      }
    };

    const answerProbe = async (user: string, prober: string) => {
      const item = await storage.roster.getItem(user, prober);
      // RFC 6121 §4.3.2: presence goes only to entities with a subscription from the user.
      if (!hasFrom(item?.subscription)) return;
      if (sessions.available(user).length) sendCurrentPresence(user, prober);
      else await router.route(el("presence", { type: "unavailable", from: user, to: prober }));
    };

    /** Presence addressed to a local user or resource (any origin). */
    const handleAddressed = async (routed: Routed): Promise<typeof HANDLED> => {
      const { stanza, from, to, origin } = routed;
      const type = stanza.attrs.type as string | undefined;
      if (SUBSCRIPTION_TYPES.has(type!)) {
        // RFC 6121 §3.1.2: subscription stanzas travel from and to bare JIDs.
        const user = from.bare;
        const contact = to.bare;
        stanza.attrs.from = user;
        stanza.attrs.to = contact;
        if (origin && !(await outboundSubscription(user, contact, type!))) return HANDLED;
        if (ctx.router.isLocalDomain(to.domain)) await inboundSubscription(stanza, contact, user, type!);
        // RFC 6121 §3.1.5 / §3.2.2: after approving, the contact gets the user's presence;
        // after cancelling, an unavailable presence from each resource.
        if (origin && type === "subscribed") sendCurrentPresence(user, contact);
        if (origin && type === "unsubscribed") sendUnavailableFromAll(user, contact);
        return HANDLED;
      }
      if (type === "probe") {
        await answerProbe(to.bare, from.bare);
        return HANDLED;
      }
      if (type === "error") {
        if (!to.isBare) { const s = sessions.get(to.full); if (s) router.deliver(s, stanza); }
        return HANDLED;
      }
      // Available/unavailable: directed presence (RFC 6121 §4.6) when a client sent it.
      if (origin) {
        if (type === "unavailable") origin.directedPresence.delete(to.full);
        else {
          const item = await storage.roster.getItem(from.bare, to.bare);
          if (!hasFrom(item?.subscription)) origin.directedPresence.add(to.full);
        }
      }
      if (to.isBare) deliverToAvailable(to.bare, stanza);
      else {
        const s = sessions.get(to.full);
        if (s) router.deliver(s, stanza);
      }
      return HANDLED;
    };

    /**
     * A local user's subscription stanza for a contact on another server: the user's side of the
     * state machine here (RFC 6121 §3.1.2: stamped with the user's bare JID, roster updated and
     * pushed), then the router sends it on (chain unhandled).
     */
    ctx.chain("presence/remote", async ({ stanza, from, to, origin }) => {
      const type = stanza.attrs.type as string | undefined;
      if (!origin) return undefined;
      if (type === undefined || type === "unavailable") {
        // RFC 6121 §4.6: directed presence to a remote entity (a room elsewhere, a contact without a
        // subscription) is remembered, so that it gets unavailable when the session ends.
        if (type === "unavailable") origin.directedPresence.delete(to.full);
        else if (!hasFrom((await storage.roster.getItem(from.bare, to.bare))?.subscription)) origin.directedPresence.add(to.full);
        return undefined;
      }
      if (!SUBSCRIPTION_TYPES.has(type)) return undefined;
      stanza.attrs.from = from.bare;
      stanza.attrs.to = to.bare;
      if (!(await outboundSubscription(from.bare, to.bare, type!))) return HANDLED;
      // After the subscription stanza has gone on (it goes when this chain finishes): presence
      // after approval, unavailable after cancelling (RFC 6121 §3.1.5, §3.2.2).
      if (type === "subscribed") setImmediate(() => sendCurrentPresence(from.bare, to.bare));
      if (type === "unsubscribed") setImmediate(() => sendUnavailableFromAll(from.bare, to.bare));
      return undefined;
    });
    ctx.chain("presence/bare", handleAddressed);
    ctx.chain("presence/full", handleAddressed);
    // Presence to the server itself: nothing to do (probes of the server are not answered).
    ctx.chain("presence/host", () => HANDLED);

    /** RFC 6121 §4.2 / §4.4 / §4.5: presence a client sends without 'to'. */
    ctx.chain("presence/broadcast", async ({ stanza, origin }) => {
      if (!origin) return HANDLED;
      const type = stanza.attrs.type as string | undefined;
      if (type === "unavailable") {
        await goUnavailable(origin, stanza);
        return HANDLED;
      }
      if (type !== undefined) return HANDLED; // subscription types need a 'to'; errors are dropped
      const initial = origin.presence === undefined;
      const priority = Number.parseInt(stanza.getChildText("priority") ?? "0", 10);
      origin.priority = Number.isFinite(priority) && priority >= -128 && priority <= 127 ? priority : 0;
      origin.presence = stanza;
      delete stanza.attrs.to;
      const user = origin.jid.bare;
      const roster = await storage.roster.get(user);
      if (initial) {
        // RFC 6121 §4.2.2: probe the contacts the user is subscribed to.
        for (const item of roster.items) if (hasTo(item.subscription)) void router.route(el("presence", { type: "probe", from: user, to: item.jid }));
      }
      for (const item of roster.items) if (hasFrom(item.subscription)) void router.route(readdress(stanza, origin.jid.full, item.jid));
      // The user's own resources get it too, the sender included (as Prosody and ejabberd do).
      for (const s of sessions.available(user)) router.deliver(s, readdress(stanza, origin.jid.full, s.jid.full));
      if (initial) {
        for (const s of sessions.available(user)) {
          if (s !== origin) router.deliver(origin, readdress(s.presence!, s.jid.full, origin.jid.full));
        }
        // RFC 6121 §3.1.3: stored subscription requests are delivered when the user comes online.
        if (origin.interested) {
          for (const req of await storage.subscriptionRequests.list(user)) {
            router.deliver(origin, el("presence", { type: "subscribe", from: req.contact, to: origin.jid.full }));
          }
        }
        await ctx.emit("session/available", { session: origin });
      }
      return HANDLED;
    });

    const goUnavailable = async (session: Session, stanza: Element) => {
      const wasAvailable = session.presence !== undefined;
      session.presence = undefined;
      const user = session.jid.bare;
      const unavailable = el("presence", { type: "unavailable", from: session.jid.full });
      const status = stanza.getChildText("status");
      if (status) unavailable.cnode(el("status", {}, status));
      const sentTo = new Set<string>();
      if (wasAvailable) {
        const roster = await storage.roster.get(user);
        for (const item of roster.items) if (hasFrom(item.subscription)) sentTo.add(item.jid);
        for (const s of sessions.available(user)) router.deliver(s, readdress(unavailable, session.jid.full, s.jid.full));
        router.deliver(session, readdress(unavailable, session.jid.full, session.jid.full));
      }
      // RFC 6121 §4.6.3: entities that got directed presence learn that it ended.
      for (const jid of session.directedPresence) sentTo.add(jid);
      session.directedPresence.clear();
      for (const to of sentTo) void router.route(readdress(unavailable, session.jid.full, to));
      if (wasAvailable && sessions.available(user).length === 0) {
        await storage.lastActivity.set(user, { at: Date.now(), status: status ?? "" });
      }
    };

    ctx.on("session/closed", async ({ session }) => {
      if (session.presence !== undefined || session.directedPresence.size) await goUnavailable(session, el("presence"));
    });

    ctx.on("user/deleting", async ({ jid }) => {
      const roster = await storage.roster.get(jid.bare);
      for (const item of roster.items) {
        if (hasTo(item.subscription) || item.ask) await router.route(el("presence", { type: "unsubscribe", from: jid.bare, to: item.jid }));
        if (hasFrom(item.subscription)) await router.route(el("presence", { type: "unsubscribed", from: jid.bare, to: item.jid }));
      }
    });
  },
});

function blankItem(jid: string): RosterItem {
  return { jid, groups: [], subscription: "none", ask: false, approved: false };
}
