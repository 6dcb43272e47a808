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
import { NO_SUBSCRIPTION, inbound, outbound, type SubscriptionState, type SubscriptionType } from "./subscription.js";

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

    // ── subscriptions (RFC 6121 §3): the transitions are in subscription.ts ──────────────────
    const stateOf = async (user: string, contact: string): Promise<SubscriptionState> => {
      const [item, pendingIn] = await Promise.all([storage.roster.getItem(user, contact), storage.subscriptionRequests.has(user, contact)]);
      return item ? { subscription: item.subscription, ask: item.ask, approved: item.approved, pendingIn } : { ...NO_SUBSCRIPTION, pendingIn };
    };
    /** Stores a step's next state: the roster item (pushed when it changed; none made for nothing) and the pending request. */
    const apply = async (user: string, contact: string, before: SubscriptionState, next: SubscriptionState, request?: Element) => {
      if (next.pendingIn && request) await storage.subscriptionRequests.put(user, contact, request.toString());
      else if (before.pendingIn && !next.pendingIn) await storage.subscriptionRequests.remove(user, contact);
      await updateRosterItem(ctx, user, contact, (item) => {
        const changed = { ...(item ?? blankItem(contact)), subscription: next.subscription, ask: next.ask, approved: next.approved };
        return !item && changed.subscription === "none" && !changed.ask && !changed.approved ? undefined : changed;
      });
    };

    /** A subscription stanza a local user sent; true when it goes on to the contact. */
    const outboundSubscription = async (user: string, contact: string, type: SubscriptionType): Promise<boolean> => {
      const before = await stateOf(user, contact);
      const step = outbound(before, type);
      await apply(user, contact, before, step.next);
      return step.send;
    };

    /** A subscription stanza for a local user. */
    const inboundSubscription = async (stanza: Element, user: string, contact: string, type: SubscriptionType): Promise<void> => {
      if (!(await isAccount(user))) {
        // RFC 6121 §3.1.3: a request to a user that does not exist is answered with 'unsubscribed'.
        if (type === "subscribe") await router.route(el("presence", { type: "unsubscribed", from: user, to: contact }));
        return;
      }
      const before = await stateOf(user, contact);
      const step = inbound(before, type);
      await apply(user, contact, before, step.next, type === "subscribe" ? stanza : undefined);
      if (step.confirm) await router.route(el("presence", { type: "subscribed", from: user, to: contact }));
      if (step.sharePresence) sendCurrentPresence(user, contact);
      if (step.deliver) deliverToAvailable(user, stanza, true);
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
        const subscriptionType = type as SubscriptionType;
        if (origin && !(await outboundSubscription(user, contact, subscriptionType))) return HANDLED;
        if (ctx.router.isLocalDomain(to.domain)) await inboundSubscription(stanza, contact, user, subscriptionType);
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
      if (!(await outboundSubscription(from.bare, to.bare, type as SubscriptionType))) return HANDLED;
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
      void ctx.emit("session/changed", { session: origin });
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
      if (wasAvailable) void ctx.emit("session/changed", { session });
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
