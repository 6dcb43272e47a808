/**
 * RFC 6125 server identities between two Parleys: certificates from a trusted test CA that name
 * their server only by an XmppAddr (RFC 6120 §13.7.1.4) or only by an SRV-ID (RFC 4985) still
 * authenticate with SASL EXTERNAL; an SRV-ID for the client service names no server, and as it
 * rules out the CN (RFC 6125 §6.4.4), the streams fall back to dialback (XEP-0220).
 * Each certificate's CN is set so that it cannot be what matched.
 */
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { makePki, startParleyPair, type LeafIdentity, type ParleyPair } from "../helpers/s2s.js";

const openssl = spawnSync("openssl", ["version"]).status === 0;
if (!openssl) console.log("# SKIPPED e2e/s2s-identity: the openssl command (for the test CA) is not installed");

const XMPP_ADDR = "1.3.6.1.5.5.7.8.5";
const SRV_NAME = "1.3.6.1.5.5.7.8.7";

/** Both servers' certificates built by `identity`, a message from alice to bob, and how each stream authenticated. */
async function federate(identity: (domain: string) => LeafIdentity): Promise<{ pair: ParleyPair; outgoing: string[][]; incoming: unknown[] }> {
  // Without XEP-0288: each server authenticates its own stream, so each judges the other's certificate as a client's too.
  const noBidi = { s2s: { bidi: false } };
  const pair = await startParleyPair({ pki: makePki(["a.test", "b.test"], { "a.test": identity("a.test"), "b.test": identity("b.test") }), a: noBidi, b: noBidi });
  const clients: Connected[] = [];
  try {
    const alice = await connect({ port: pair.a.ports.c2s!, domain: "a.test", username: "alice", password: "pw", resource: "r" });
    clients.push(alice);
    const bob = await connect({ port: pair.b.ports.c2s!, domain: "b.test", username: "bob", password: "pw", resource: "r" });
    clients.push(bob);
    await bob.xmpp.send(xml("presence"));
    await alice.xmpp.send(xml("message", { to: "bob@b.test/r", type: "chat", id: "id-1" }, xml("body", {}, "who are you?")));
    const got = await bob.waitFor((s) => s.is("message") && s.attrs.id === "id-1", 10_000);
    assert.equal(got.attrs.from, "alice@a.test/r");
    await bob.xmpp.send(xml("message", { to: "alice@a.test/r", type: "chat", id: "id-2" }, xml("body", {}, "b.test")));
    await alice.waitFor((s) => s.is("message") && s.attrs.id === "id-2", 10_000);
    return {
      pair,
      outgoing: [...pair.a.s2s().outgoing, ...pair.b.s2s().outgoing].map((o) => [o.remote, o.state, o.method ?? ""]),
      incoming: [...pair.a.s2s().incoming, ...pair.b.s2s().incoming].flatMap((i) => i.domains),
    };
  } finally {
    for (const c of clients) await c.stop();
  }
}

describe("s2s server identities (RFC 6125)", { skip: openssl ? false : "openssl is not installed" }, () => {
  const pairs: ParleyPair[] = [];
  after(async () => {
    for (const p of pairs) { await p.a.cleanup(); await p.b.cleanup(); }
  });

  it("certificates naming their server only by an XmppAddr: SASL EXTERNAL both ways", async () => {
    const r = await federate((domain) => ({ commonName: "Parley test server", subjectAltName: `otherName:${XMPP_ADDR};UTF8:${domain}` }));
    pairs.push(r.pair);
    assert.deepEqual(r.outgoing, [["b.test", "ready", "sasl-external"], ["a.test", "ready", "sasl-external"]]);
    assert.deepEqual(r.incoming, [{ domain: "b.test", method: "sasl-external" }, { domain: "a.test", method: "sasl-external" }]);
  });

  it("certificates naming their server only by an _xmpp-server SRV-ID: SASL EXTERNAL both ways", async () => {
    const r = await federate((domain) => ({ commonName: "Parley test server", subjectAltName: `otherName:${SRV_NAME};IA5STRING:_xmpp-server.${domain}` }));
    pairs.push(r.pair);
    assert.deepEqual(r.outgoing, [["b.test", "ready", "sasl-external"], ["a.test", "ready", "sasl-external"]]);
    assert.deepEqual(r.incoming, [{ domain: "b.test", method: "sasl-external" }, { domain: "a.test", method: "sasl-external" }]);
  });

  it("an SRV-ID for _xmpp-client (with the domain as CN): the certificate does not verify, dialback both ways", async () => {
    const r = await federate((domain) => ({ commonName: domain, subjectAltName: `otherName:${SRV_NAME};IA5STRING:_xmpp-client.${domain}` }));
    pairs.push(r.pair);
    assert.deepEqual(r.outgoing, [["b.test", "ready", "dialback"], ["a.test", "ready", "dialback"]]);
    assert.deepEqual(r.incoming, [{ domain: "b.test", method: "dialback" }, { domain: "a.test", method: "dialback" }]);
  });
});
