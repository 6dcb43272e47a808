/**
 * RFC 6121 §3 presence subscriptions as pure state transitions: for the state the user's roster
 * holds about a contact and a subscription stanza, the next state and what the server does with
 * the stanza. The presence module reads the state, asks here, and applies the answer (roster
 * update and push, the stored request, delivery). The states are those of RFC 6121 Appendix A:
 * a subscription (none/to/from/both) with "Pending Out" (ask), "Pending In" (a stored request)
 * and a pre-approval (§3.4).
 */
import type { Subscription } from "../storage/index.js";

export type SubscriptionType = "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed";

export interface SubscriptionState {
  subscription: Subscription;
  /** Pending Out: the user asked the contact for a subscription. */
  ask: boolean;
  /** Pending In: the contact asked the user, and the request is stored until answered. */
  pendingIn: boolean;
  /** The user approved the contact's request before it came (§3.4). */
  approved: boolean;
}

export const NO_SUBSCRIPTION: SubscriptionState = { subscription: "none", ask: false, pendingIn: false, approved: false };

const hasFrom = (s: Subscription) => s === "from" || s === "both";
const hasTo = (s: Subscription) => s === "to" || s === "both";
const withFrom = (s: Subscription): Subscription => (hasTo(s) ? "both" : "from");
const withTo = (s: Subscription): Subscription => (hasFrom(s) ? "both" : "to");
const withoutFrom = (s: Subscription): Subscription => (s === "both" ? "to" : s === "from" ? "none" : s);
const withoutTo = (s: Subscription): Subscription => (s === "both" ? "from" : s === "to" ? "none" : s);

export interface OutboundStep {
  next: SubscriptionState;
  /** The stanza goes on to the contact. */
  send: boolean;
}

/** A subscription stanza the user sent to the contact (§3.1.2, §3.1.5, §3.2.2, §3.3.2, §3.4). */
export function outbound(state: SubscriptionState, type: SubscriptionType): OutboundStep {
  switch (type) {
    case "subscribe":
      // §3.1.2: the request is sent on; the item is "Pending Out" unless the subscription exists.
      return { next: hasTo(state.subscription) ? state : { ...state, ask: true }, send: true };
    case "subscribed":
      if (!state.pendingIn) {
        // §3.4: no request is pending, so this is a pre-approval; nothing is sent. With a
        // subscription from the contact already, there is nothing to approve.
        if (hasFrom(state.subscription)) return { next: state, send: false };
        return { next: { ...state, approved: true }, send: false };
      }
      // §3.1.5: the user approves the contact's pending request.
      return { next: { ...state, subscription: withFrom(state.subscription), pendingIn: false, approved: false }, send: true };
    case "unsubscribe":
      // §3.3.2: the user cancels its subscription to the contact (or its pending request).
      return { next: { ...state, subscription: withoutTo(state.subscription), ask: false }, send: true };
    case "unsubscribed": {
      // §3.2.2: the user cancels the contact's subscription, denies its request, or withdraws a pre-approval.
      if (!state.pendingIn && !hasFrom(state.subscription) && !state.approved) return { next: state, send: false };
      return { next: { ...state, subscription: withoutFrom(state.subscription), pendingIn: false, approved: false }, send: true };
    }
  }
}

export interface InboundStep {
  next: SubscriptionState;
  /** The stanza is delivered to the user's interested resources. */
  deliver: boolean;
  /** The server answers the contact on the user's behalf with subscribed. */
  confirm: boolean;
  /** The contact now has a subscription it did not have: it gets the user's current presence. */
  sharePresence: boolean;
}

/** A subscription stanza from the contact to the user (§3.1.3, §3.1.6, §3.2.3, §3.3.3). */
export function inbound(state: SubscriptionState, type: SubscriptionType): InboundStep {
  const ignore = { next: state, deliver: false, confirm: false, sharePresence: false };
  switch (type) {
    case "subscribe":
      // §3.1.3: an existing subscription is confirmed again, a pre-approval is honoured, anything
      // else waits for the user as a pending request.
      if (hasFrom(state.subscription)) return { ...ignore, confirm: true };
      if (state.approved) return { next: { ...state, subscription: withFrom(state.subscription), approved: false }, deliver: false, confirm: true, sharePresence: true };
      return { ...ignore, next: { ...state, pendingIn: true }, deliver: true };
    case "subscribed":
      // §3.1.6: without a pending outbound request the stanza is ignored.
      if (!state.ask) return ignore;
      return { ...ignore, next: { ...state, subscription: withTo(state.subscription), ask: false }, deliver: true };
    case "unsubscribe":
      // §3.3.3: the contact cancels its subscription to the user; a pending request is withdrawn.
      if (!hasFrom(state.subscription)) return { ...ignore, next: { ...state, pendingIn: false } };
      return { ...ignore, next: { ...state, subscription: withoutFrom(state.subscription), pendingIn: false }, deliver: true };
    case "unsubscribed":
      // §3.2.3: the contact cancels the user's subscription or denies the user's request.
      if (!hasTo(state.subscription) && !state.ask) return ignore;
      return { ...ignore, next: { ...state, subscription: withoutTo(state.subscription), ask: false }, deliver: true };
  }
}
