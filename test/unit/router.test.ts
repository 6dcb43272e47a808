/** The router against docs/routing.md, row by row (row numbers in the test names). */
import { describe, it, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { Router } from "../../src/xmpp/router.js";
import { HookBus, HANDLED, Priority } from "../../src/hooks.js";
import { SessionTable } from "../../src/xmpp/sessions.js";
import { harnessSession, type HarnessSession } from "../../src/module-harness.js";
import { Element, el } from "../../src/xmpp/xml.js";
import { createMemoryStorage } from "../../src/storage/memory/index.js";
import { silentLogger } from "../../src/log.js";
import { StanzaError } from "../../src/errors.js";


describe("router (docs/routing.md)", () => {
  let hooks: HookBus;
  let sessions: SessionTable;
  let router: Router;
  let alice: HarnessSession;
  const storage = createMemoryStorage();
  const conditionOf = (s: Element | undefined) => s?.getChild("error")?.children.find((c) => typeof c !== "string" && c.name !== "text") as Element | undefined;
  const tick = () => new Promise((r) => setImmediate(r));

  beforeEach(async () => {
    hooks = new HookBus(silentLogger());
    sessions = new SessionTable();
    router = new Router(["localhost"], hooks, sessions, storage.accounts, silentLogger());
    alice = harnessSession("alice@localhost/a");
    sessions.add(alice);
    await storage.accounts.create({ jid: "bob@localhost", createdAt: 0, credentials: {} as never });
  });

  it("1: a client's 'from' is overwritten with its full JID", () => {
    let seen: Element | undefined;
    hooks.chain("message/bare", ({ stanza }) => { seen = stanza; return HANDLED; });
    router.fromClient(alice, el("message", { to: "bob@localhost", from: "mallory@evil" }));
    assert.equal(seen!.attrs.from, "alice@localhost/a");
  });

  it("2: an invalid 'to' → jid-malformed", () => {
    router.fromClient(alice, el("message", { to: "a@b@c", id: "x" }));
    assert.equal(conditionOf(alice.received[0])?.name, "jid-malformed");
  });

  it("3: no 'to' → the sender's bare JID; presence without 'to' is a broadcast", () => {
    const chains: string[] = [];
    hooks.chain("message/bare", ({ to }) => { chains.push(`message/bare ${to.full}`); return HANDLED; });
    hooks.chain("presence/broadcast", () => { chains.push("presence/broadcast"); return HANDLED; });
    router.fromClient(alice, el("message"));
    router.fromClient(alice, el("presence"));
    assert.deepEqual(chains, ["message/bare alice@localhost", "presence/broadcast"]);
  });

  for (const [name, iq] of [
    ["no id", el("iq", { type: "get", to: "localhost" }, el("ping", { xmlns: "urn:xmpp:ping" }))],
    ["bad type", el("iq", { type: "bogus", id: "1", to: "localhost" }, el("ping", { xmlns: "urn:xmpp:ping" }))],
    ["no child", el("iq", { type: "get", id: "1", to: "localhost" })],
    ["two children", el("iq", { type: "set", id: "1", to: "localhost" }, el("a"), el("b"))],
  ] as const) {
    it(`4: iq with ${name} → bad-request`, () => {
      router.fromClient(alice, iq);
      assert.equal(conditionOf(alice.received[0])?.name, "bad-request");
    });
  }

  it("5: presence with an unknown type → bad-request; 6: message with an unknown type becomes normal", () => {
    router.fromClient(alice, el("presence", { type: "weird", to: "bob@localhost" }));
    assert.equal(conditionOf(alice.received[0])?.name, "bad-request");
    let type: string | undefined = "unset";
    hooks.chain("message/bare", ({ stanza }) => { type = stanza.attrs.type; return HANDLED; });
    router.fromClient(alice, el("message", { type: "weird", to: "bob@localhost" }));
    assert.equal(type, undefined);
  });

  it("7: a remote domain → remote-server-not-found", () => {
    router.fromClient(alice, el("message", { to: "x@remote.example", id: "r" }));
    assert.equal(conditionOf(alice.received[0])?.name, "remote-server-not-found");
  });

  it("7: with federation attached, stanzas from our hosts and from attached components go out; a remote 'from' is not relayed", async () => {
    const sent: string[] = [];
    router.attachRemote((stanza) => { sent.push(`${stanza.attrs.from} ${stanza.attrs.to}`); });
    router.attachComponent("push.localhost", () => {});
    router.fromClient(alice, el("message", { to: "x@remote.example", id: "user" }));
    await router.route(el("iq", { type: "result", id: "component", from: "push.localhost", to: "alice@remote.example/r" }));
    await router.route(el("message", { id: "relay", from: "eve@elsewhere.example", to: "x@remote.example" }));
    await tick();
    assert.deepEqual(sent, ["alice@localhost/a x@remote.example", "push.localhost alice@remote.example/r"]);
  });

  it("8: iq to the server: registered handler answers; unknown namespace → service-unavailable; handler errors are central", async () => {
    router.registerIq("host", "get", "urn:xmpp:ping", () => undefined);
    router.registerIq("host", "get", "urn:throws", () => { throw new StanzaError("forbidden"); });
    router.registerIq("host", "get", "urn:crash", () => { throw new Error("boom"); });
    router.fromClient(alice, el("iq", { type: "get", id: "1", to: "localhost" }, el("ping", { xmlns: "urn:xmpp:ping" })));
    router.fromClient(alice, el("iq", { type: "get", id: "2", to: "localhost" }, el("q", { xmlns: "urn:none" })));
    router.fromClient(alice, el("iq", { type: "get", id: "3", to: "localhost" }, el("q", { xmlns: "urn:throws" })));
    router.fromClient(alice, el("iq", { type: "get", id: "4", to: "localhost" }, el("q", { xmlns: "urn:crash" })));
    await tick();
    const byId = Object.fromEntries(alice.received.map((s) => [s.attrs.id, s]));
    assert.equal(byId["1"]!.attrs.type, "result");
    assert.equal(byId["1"]!.attrs.from, "localhost");
    assert.equal(conditionOf(byId["2"])?.name, "service-unavailable");
    assert.equal(conditionOf(byId["3"])?.name, "forbidden");
    assert.equal(conditionOf(byId["4"])?.name, "internal-server-error");
  });

  it("9: a server request resolves only with a reply from the entity asked", async () => {
    const pending = router.request(el("iq", { type: "get", from: "localhost", to: "alice@localhost/a" }, el("ping", { xmlns: "urn:xmpp:ping" })), 1000);
    const id = alice.received[0]!.attrs.id;
    const mallory = harnessSession("mallory@localhost/m");
    sessions.add(mallory);
    router.fromClient(mallory, el("iq", { type: "result", id, to: "localhost" }));
    let settled = false;
    void pending.then(() => { settled = true; });
    await tick();
    assert.equal(settled, false, "a reply from someone else is ignored");
    router.fromClient(alice, el("iq", { type: "result", id, to: "localhost" }));
    await pending;
  });

  it("10: a chat message to the server → service-unavailable", () => {
    router.fromClient(alice, el("message", { to: "localhost", type: "chat", id: "m" }));
    assert.equal(conditionOf(alice.received[0])?.name, "service-unavailable");
  });

  it("17: iq to another user's bare JID that does not exist → service-unavailable, even with a handler", async () => {
    router.registerIq("account", "get", "vcard-temp", () => el("vCard", { xmlns: "vcard-temp" }));
    router.fromClient(alice, el("iq", { type: "get", id: "v1", to: "ghost@localhost" }, el("vCard", { xmlns: "vcard-temp" })));
    router.fromClient(alice, el("iq", { type: "get", id: "v2", to: "bob@localhost" }, el("vCard", { xmlns: "vcard-temp" })));
    await tick(); await tick();
    const byId = Object.fromEntries(alice.received.map((s) => [s.attrs.id, s]));
    assert.equal(conditionOf(byId.v1)?.name, "service-unavailable");
    assert.equal(byId.v2!.attrs.type, "result");
  });

  it("22: iq to a connected full JID is delivered; to a missing resource → service-unavailable (get/set) or dropped (result/error)", () => {
    const bob = harnessSession("bob@localhost/b");
    sessions.add(bob);
    router.fromClient(alice, el("iq", { type: "get", id: "f1", to: "bob@localhost/b" }, el("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(bob.received[0]!.attrs.id, "f1");
    router.fromClient(alice, el("iq", { type: "get", id: "f2", to: "bob@localhost/gone" }, el("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(conditionOf(alice.received[0])?.name, "service-unavailable");
    // The answer to another entity's request reaches the requester; to a missing resource, it is dropped.
    router.fromClient(bob, el("iq", { type: "result", id: "f1", to: "alice@localhost/a" }));
    assert.equal(alice.received[1]?.attrs.id, "f1");
    assert.equal(alice.received[1]?.attrs.type, "result");
    router.fromClient(bob, el("iq", { type: "error", id: "f3", to: "alice@localhost/gone" }, el("error", { type: "cancel" })));
    assert.equal(alice.received.length, 2);
    assert.equal(bob.received.length, 1, "an iq result/error is never answered");
  });

  it("error replies are never answered; a dropping stanza/in filter stops routing", () => {
    router.fromClient(alice, el("message", { to: "x@remote.example", type: "error" }));
    assert.equal(alice.received.length, 0);
    hooks.filter("stanza/in", () => null);
    router.fromClient(alice, el("message", { to: "localhost", type: "chat" }));
    assert.equal(alice.received.length, 0);
  });
});

describe("hooks", () => {
  it("chains run by priority and stop at HANDLED; async handlers keep the order", async () => {
    const bus = new HookBus(silentLogger());
    const order: number[] = [];
    bus.chain("message/bare", () => { order.push(Priority.RECORD); return undefined; }, Priority.RECORD);
    bus.chain("message/bare", async () => { order.push(Priority.POLICY); return undefined; }, Priority.POLICY);
    bus.chain("message/bare", () => { order.push(Priority.DELIVERY); return HANDLED; });
    bus.chain("message/bare", () => { order.push(Priority.HOLD); return HANDLED; }, Priority.HOLD);
    const r = await bus.decide("message/bare", {} as never);
    assert.equal(r, true);
    assert.deepEqual(order, [Priority.POLICY, Priority.RECORD, Priority.DELIVERY]);
  });
  const outcome = { handled: () => "handled", unhandled: () => "unhandled", failed: (err: unknown) => `failed: ${(err as Error).message}` };
  it("a synchronous chain stays synchronous", () => {
    const bus = new HookBus(silentLogger());
    bus.chain("message/full", () => HANDLED);
    assert.equal(bus.runChain("message/full", {} as never, outcome), "handled");
    assert.equal(bus.runChain("message/host", {} as never, outcome), "unhandled");
  });
  it("a handler that throws or rejects reaches the continuation's failed, on either path, and stops the chain", async () => {
    const bus = new HookBus(silentLogger());
    let later = 0;
    bus.chain("message/full", () => { throw new Error("sync"); }, Priority.POLICY);
    bus.chain("message/full", () => { later++; return HANDLED; });
    assert.equal(bus.runChain("message/full", {} as never, outcome), "failed: sync");
    bus.chain("message/bare", () => Promise.reject(new Error("async")), Priority.POLICY);
    bus.chain("message/bare", () => { later++; return HANDLED; });
    assert.equal(await bus.runChain("message/bare", {} as never, outcome), "failed: async");
    assert.equal(later, 0);
    await assert.rejects(bus.decide("message/bare", {} as never), /async/);
  });
  it("events run every handler even when one fails; filters fold and can drop", async () => {
    const bus = new HookBus(silentLogger());
    const seen: string[] = [];
    bus.on("server/stopping", () => { throw new Error("x"); });
    bus.on("server/stopping", () => { seen.push("second"); });
    await bus.emit("server/stopping", {});
    assert.deepEqual(seen, ["second"]);
    const unregister = bus.filter("stanza/out", (v) => ({ ...v, stanza: el("changed") }));
    assert.equal(bus.runFilter("stanza/out", { stanza: el("x"), session: {} as never })!.stanza.name, "changed");
    unregister();
    bus.filter("stanza/out", () => null);
    assert.equal(bus.runFilter("stanza/out", { stanza: el("x"), session: {} as never }), null);
  });
  it("events run in priority order, each after the async ones before it has settled, past a rejection", async () => {
    const bus = new HookBus(silentLogger());
    const seen: string[] = [];
    let release!: () => void;
    bus.on("server/stopping", () => new Promise<void>((r) => { release = () => { seen.push("slow settled"); r(); }; }), Priority.FIRST);
    bus.on("server/stopping", () => Promise.reject(new Error("x")), Priority.POLICY);
    bus.on("server/stopping", () => { seen.push("sync"); });
    const done = bus.emit("server/stopping", {});
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, [], "the later handlers wait for the first one's promise");
    release();
    await done;
    assert.deepEqual(seen, ["slow settled", "sync"]);
  });
  it("a handler unregistered while its hook runs does not shift the run; it is gone from the next", async () => {
    const bus = new HookBus(silentLogger());
    const seen: string[] = [];
    let unregisterB = () => {};
    bus.on("server/stopping", () => { seen.push("a"); unregisterB(); }, Priority.POLICY);
    unregisterB = bus.on("server/stopping", () => { seen.push("b"); });
    bus.on("server/stopping", () => { seen.push("c"); }, Priority.HOLD);
    await bus.emit("server/stopping", {});
    await bus.emit("server/stopping", {});
    assert.deepEqual(seen, ["a", "b", "c", "a", "c"]);
    const order: string[] = [];
    let unregisterFirst = () => {};
    unregisterFirst = bus.chain("message/full", () => { order.push("first"); unregisterFirst(); return undefined; }, Priority.POLICY);
    bus.chain("message/full", () => { order.push("second"); return HANDLED; });
    bus.runChain("message/full", {} as never, outcome);
    bus.runChain("message/full", {} as never, outcome);
    assert.deepEqual(order, ["first", "second", "second"]);
    assert.deepEqual(bus.table().filter((r) => r.hook === "server/stopping").map((r) => r.priority), [Priority.POLICY, Priority.HOLD]);
  });
});
