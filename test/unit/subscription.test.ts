/**
 * RFC 6121 §3 subscription transitions (src/modules/subscription.ts), state by state as RFC 6121
 * Appendix A names the states, and one case through the presence module in the harness.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { NO_SUBSCRIPTION, inbound, outbound, type SubscriptionState } from "../../src/modules/subscription.js";
import { startHarness } from "../../src/module-harness.js";
import { defaultModules } from "../../src/modules/index.js";

const state = (subscription: SubscriptionState["subscription"], extra: Partial<SubscriptionState> = {}): SubscriptionState => ({ ...NO_SUBSCRIPTION, subscription, ...extra });
const name = (s: SubscriptionState) => `${s.subscription}${s.ask ? " +out" : ""}${s.pendingIn ? " +in" : ""}${s.approved ? " +approved" : ""}`;

describe("inbound subscription stanzas (RFC 6121 §3, Appendix A.3)", () => {
  const cases: Array<[SubscriptionState, "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", SubscriptionState, boolean]> = [
    // state before, stanza from the contact, state after, delivered to the user
    [state("none"), "subscribe", state("none", { pendingIn: true }), true],
    [state("none", { ask: true }), "subscribe", state("none", { ask: true, pendingIn: true }), true],
    [state("to"), "subscribe", state("to", { pendingIn: true }), true],
    [state("from"), "subscribe", state("from"), false],
    [state("both"), "subscribe", state("both"), false],
    [state("none"), "subscribed", state("none"), false],
    [state("none", { ask: true }), "subscribed", state("to"), true],
    [state("none", { ask: true, pendingIn: true }), "subscribed", state("to", { pendingIn: true }), true],
    [state("from", { ask: true }), "subscribed", state("both"), true],
    [state("to"), "subscribed", state("to"), false],
    [state("none", { pendingIn: true }), "unsubscribe", state("none"), false],
    [state("from"), "unsubscribe", state("none"), true],
    [state("both"), "unsubscribe", state("to"), true],
    [state("none"), "unsubscribed", state("none"), false],
    [state("none", { ask: true }), "unsubscribed", state("none"), true],
    [state("to"), "unsubscribed", state("none"), true],
    [state("both"), "unsubscribed", state("from"), true],
    // From + Pending Out, denied: the contact's subscription to the user stays.
    [state("from", { ask: true }), "unsubscribed", state("from"), true],
  ];
  for (const [before, type, after, delivered] of cases) {
    it(`${name(before)} + ${type} → ${name(after)}${delivered ? ", delivered" : ""}`, () => {
      const step = inbound(before, type);
      assert.deepEqual(step.next, after);
      assert.equal(step.deliver, delivered);
    });
  }

  it("an existing subscription is confirmed again; a pre-approval is honoured with the user's presence (§3.1.3, §3.4)", () => {
    assert.deepEqual(inbound(state("from"), "subscribe"), { next: state("from"), deliver: false, confirm: true, sharePresence: false });
    assert.deepEqual(inbound(state("none", { approved: true }), "subscribe"), { next: state("from"), deliver: false, confirm: true, sharePresence: true });
  });
});

describe("outbound subscription stanzas (RFC 6121 §3, Appendix A.2)", () => {
  const cases: Array<[SubscriptionState, "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed", SubscriptionState, boolean]> = [
    // state before, stanza from the user, state after, sent on to the contact
    [state("none"), "subscribe", state("none", { ask: true }), true],
    [state("to"), "subscribe", state("to"), true],
    [state("none", { pendingIn: true }), "subscribed", state("from"), true],
    [state("to", { pendingIn: true }), "subscribed", state("both"), true],
    // §3.4: without a pending request, "subscribed" is a pre-approval and is not sent.
    [state("none"), "subscribed", state("none", { approved: true }), false],
    [state("from"), "subscribed", state("from"), false],
    [state("none", { ask: true }), "unsubscribe", state("none"), true],
    [state("both"), "unsubscribe", state("from"), true],
    [state("none", { pendingIn: true }), "unsubscribed", state("none"), true],
    [state("both"), "unsubscribed", state("to"), true],
    [state("none", { approved: true }), "unsubscribed", state("none"), true],
    [state("none"), "unsubscribed", state("none"), false],
  ];
  for (const [before, type, after, sent] of cases) {
    it(`${name(before)} + ${type} → ${name(after)}${sent ? ", sent" : ""}`, () => {
      const step = outbound(before, type);
      assert.deepEqual(step.next, after);
      assert.equal(step.send, sent);
    });
  }
});

it("through the presence module: a denied request leaves the contact's existing subscription alone", async () => {
  const h = await startHarness({ modules: defaultModules, config: { upload: false, push: false, appserver: false, extdisco: false } });
  try {
    const alice = await h.connect("alice@localhost/a");
    const bob = await h.connect("bob@localhost/b");
    // Alice subscribes to Bob: Bob's item for Alice is "from".
    await h.send(alice, "<presence type='subscribe' to='bob@localhost'/>");
    await h.send(bob, "<presence type='subscribed' to='alice@localhost'/>");
    // Bob asks back (From + Pending Out) and Alice says no.
    await h.send(bob, "<presence type='subscribe' to='alice@localhost'/>");
    await h.send(alice, "<presence type='unsubscribed' to='bob@localhost'/>");
    const item = await h.storage.roster.getItem("bob@localhost", "alice@localhost");
    assert.deepEqual({ subscription: item?.subscription, ask: item?.ask }, { subscription: "from", ask: false });
  } finally {
    await h.stop();
  }
});
