/** XEP-0215 External Service Discovery with TURN REST credentials, checked with an independent HMAC. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const NS = "urn:xmpp:extdisco:2";

describe("external services (XEP-0215)", () => {
  let server: TestServer;
  let alice: Connected;
  before(async () => {
    server = await startTestServer({ modules: { extdisco: { stun: false, services: [
      { type: "stun", host: "stun.example.net", port: 3478, transport: "udp" },
      { type: "turn", host: "turn.example.net", port: 3478, transport: "udp", secret: "s3cret", ttlSeconds: 3600 },
      { type: "turns", host: "turn.example.net", port: 5349, transport: "tcp", secret: "s3cret" },
    ] } } });
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
  });
  after(async () => {
    await alice.stop();
    await server.cleanup();
  });

  it("lists STUN and TURN with time-limited credentials coturn's use-auth-secret accepts", async () => {
    const info = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    assert.ok(info.getChild("query")!.getChildren("feature").some((f) => f.attrs.var === NS));
    const reply = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("services", { xmlns: NS })));
    const services = reply.getChild("services", NS)!.getChildren("service");
    assert.deepEqual(services.map((s) => `${s.attrs.type} ${s.attrs.host}:${s.attrs.port}/${s.attrs.transport}`),
      ["stun stun.example.net:3478/udp", "turn turn.example.net:3478/udp", "turns turn.example.net:5349/tcp"]);
    assert.equal(services[0]!.attrs.username, undefined, "STUN needs no credentials");
    const turn = services[1]!;
    assert.equal(turn.attrs.restricted, "1");
    const [expiry, user] = (turn.attrs.username as string).split(":");
    assert.equal(user, "alice@localhost");
    const lifetime = Number(expiry) - Date.now() / 1000;
    assert.ok(lifetime > 3500 && lifetime <= 3600, `expires in ${lifetime} s`);
    assert.equal(turn.attrs.password, createHmac("sha1", "s3cret").update(turn.attrs.username as string).digest("base64"));
    assert.equal(Date.parse(turn.attrs.expires as string), Number(expiry) * 1000);

    const onlyTurn = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("services", { xmlns: NS, type: "turn" })));
    assert.equal(onlyTurn.getChild("services", NS)!.getChildren("service").length, 1);
    const creds = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("credentials", { xmlns: NS }, xml("service", { type: "turns", host: "turn.example.net" }))));
    assert.equal(creds.getChild("credentials", NS)!.getChild("service")!.attrs.port, "5349");
    await assert.rejects(alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("credentials", { xmlns: NS }, xml("service", { type: "turn", host: "other.example" })))),
      (err: { condition?: string }) => err.condition === "item-not-found");
  });
});
