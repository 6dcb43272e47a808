/**
 * Interop over federation with the real Prosody 0.12 and ejabberd 23.01 of ../shared/peers: a
 * Parley server for parley.test (the kit's certificate and CA, its DNS server for the SRV records)
 * and users on each side exchange chat messages both ways and subscribe to each other's presence
 * (RFC 6121 §3), then see each other's PEP user tune (XEP-0163). Where the kit, root or the servers are missing, the test says SKIPPED and why.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { announceCaps, connect, xml, type Connected } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";
import { freePort } from "../helpers/s2s.js";

const KIT = resolve(process.env.PEERS_KIT_DIR ?? "../shared/peers", "peers");
const NS_ROSTER = "jabber:iq:roster";
const MUC = "http://jabber.org/protocol/muc";
const RECEIPTS = "urn:xmpp:receipts";
const PUBSUB = "http://jabber.org/protocol/pubsub";
const TUNE = "http://jabber.org/protocol/tune";
const PEERS = ["prosody", "ejabberd"] as const;

function readEnv(): Record<string, string> {
  const out = execFileSync(KIT, ["env"], { encoding: "utf8" });
  return Object.fromEntries([...out.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^'|'$/g, "")]));
}

/** Whether this file started the peers (then it stops them when it is done, like the kit's selftest). */
let startedHere = false;

/** Starts the peers with Parley's s2s port in the kit's DNS zone; the reason when it cannot. */
function startPeers(parleyPort: number): string | undefined {
  if (!existsSync(KIT)) return `the peers kit is not at ${KIT}`;
  if (process.getuid?.() !== 0) return "starting the peers needs root";
  if (spawnSync("sh", ["-c", "command -v prosody && command -v ejabberdctl"]).status !== 0) return "Prosody/ejabberd are not installed (../shared/peers/peers install)";
  // `peers status` exits 0 when both servers are up already.
  startedHere = spawnSync(KIT, ["status"]).status !== 0;
  const started = spawnSync(KIT, ["start", "all"], { env: { ...process.env, PARLEY_S2S_PORT: String(parleyPort) }, encoding: "utf8", timeout: 120_000 });
  if (started.status !== 0) return `peers start all failed: ${(started.stderr || started.stdout).trim().split("\n").pop()}`;
  return undefined;
}

const port = await freePort();
const skipped = startPeers(port);
if (skipped) console.log(`# SKIPPED interop/peers-s2s: ${skipped}`);
after(() => { if (startedHere) spawnSync(KIT, ["stop", "all"], { timeout: 60_000 }); });

/**
 * "kit certificate": the peers trust Parley's certificate, so both directions use SASL EXTERNAL.
 * "self-signed certificate": they cannot, so Parley's outgoing streams authenticate with dialback
 * (and the peers call Parley back to verify its keys, as Parley calls them back to verify theirs).
 */
const MODES = [
  { name: "kit certificate (SASL EXTERNAL)", kitCertificate: true, outgoing: ["sasl-external"], incoming: ["sasl-external"] },
  { name: "self-signed certificate (dialback)", kitCertificate: false, outgoing: ["dialback"], incoming: ["dialback", "sasl-external"] },
] as const;

for (const mode of MODES) describe(`interop: federation with Prosody and ejabberd (peers kit), ${mode.name}`, { skip: skipped ?? false }, () => {
  let env: Record<string, string>;
  let server: TestServer;
  let alice: Connected;
  before(async () => {
    env = readEnv();
    server = await startTestServer({
      hosts: ["parley.test"],
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: port },
      ...(mode.kitCertificate ? { tls: { certificates: { "parley.test": { cert: env.PEERS_PARLEY_FULLCHAIN, key: env.PEERS_PARLEY_KEY } } } } : {}),
      s2s: { caFiles: [env.PEERS_CA_FILE], dnsServer: `127.0.0.1:${env.PEERS_DNS_PORT}`, queueTimeoutSeconds: 20 },
    });
    await server.accounts.create("alice@parley.test", "pw");
    alice = await connect({ port: server.ports.c2s!, domain: "parley.test", username: "alice", password: "pw", resource: "r" });
    await alice.iq(xml("iq", { type: "get" }, xml("query", { xmlns: NS_ROSTER })));
    await alice.xmpp.send(xml("presence"));
  });
  after(async () => {
    await alice?.stop();
    await server?.cleanup();
  });

  for (const peer of PEERS) {
    describe(peer, () => {
      let friend: Connected;
      let domain: string;
      before(async () => {
        domain = env[`PEERS_${peer.toUpperCase()}_DOMAIN`]!;
        execFileSync(KIT, ["adduser", peer, "s2sfriend", "friend-pw"], { stdio: "ignore" });
        friend = await connect({ port: Number(env[`PEERS_${peer.toUpperCase()}_C2S_PORT`]), domain, username: "s2sfriend", password: "friend-pw", resource: "r" });
        // A clean start on the peer's side: no subscription left from an earlier run.
        await friend.iq(xml("iq", { type: "set" }, xml("query", { xmlns: NS_ROSTER }, xml("item", { jid: "alice@parley.test", subscription: "remove" }))))
          // Prosody answers item-not-found when there was nothing to remove.
          .catch((err: { condition?: string }) => { if (err.condition !== "item-not-found") throw err; });
        await friend.iq(xml("iq", { type: "get" }, xml("query", { xmlns: NS_ROSTER })));
        await friend.xmpp.send(xml("presence"));
      });
      after(async () => {
        await friend?.stop();
      });

      it("chat both ways, with a receipt (XEP-0184)", async () => {
        const friendJid = `s2sfriend@${domain}`;
        // Ids of this run only: a message an earlier run left in the peer's offline store must not pass for this one.
        const tag = `${peer}-${Date.now().toString(36)}`;
        await alice.xmpp.send(xml("message", { to: friendJid, type: "chat", id: `${tag}-out` }, xml("body", {}, `to ${peer}`), xml("request", { xmlns: RECEIPTS })));
        const got = await friend.waitFor((s) => s.is("message") && s.attrs.id === `${tag}-out`, 20_000);
        assert.equal(got.attrs.from, "alice@parley.test/r");
        assert.equal(got.getChildText("body"), `to ${peer}`);
        await friend.xmpp.send(xml("message", { to: got.attrs.from, id: `${tag}-rcpt` }, xml("received", { xmlns: RECEIPTS, id: `${tag}-out` })));
        const receipt = await alice.waitFor((s) => s.is("message") && s.getChild("received", RECEIPTS)?.attrs.id === `${tag}-out`, 20_000);
        assert.equal(receipt.attrs.from, `${friendJid}/r`);
        await friend.xmpp.send(xml("message", { to: "alice@parley.test", type: "chat", id: `${tag}-in` }, xml("body", {}, `from ${peer}`)));
        const back = await alice.waitFor((s) => s.is("message") && s.attrs.id === `${tag}-in`, 20_000);
        assert.equal(back.attrs.from, `${friendJid}/r`);
        assert.equal(back.getChildText("body"), `from ${peer}`);
        const out = server.s2s().outgoing.find((o) => o.remote === domain);
        assert.ok((mode.outgoing as readonly string[]).includes(out?.method ?? ""), `Parley authenticated to the peer with ${out?.method}`);
        const incoming = server.s2s().incoming.flatMap((i) => i.domains).find((d) => d.domain === domain);
        assert.ok((mode.incoming as readonly string[]).includes(incoming?.method ?? ""), `the peer authenticated to Parley with ${incoming?.method}`);
        // What alice sent leaves the durable outbox once the peer confirmed it: by XEP-0198 acks
        // where it does stream management on s2s, else by answering a ping sent after it.
        const pending = async () => (await server.storage.s2sOutbox.list("")).filter((e) => e.remote === domain).length;
        for (const end = Date.now() + 20_000; (await pending()) > 0;) {
          assert.ok(Date.now() < end, `the peer confirmed what it was sent (${await pending()} left in the outbox)`);
          await new Promise((r) => setTimeout(r, 50));
        }
        console.log(`# ${peer}, ${mode.name}: outgoing ${out?.method} (confirmed by ${out?.confirmation}), incoming ${incoming?.method}`);
      });

      it("disco#info on the other server, and a vCard across servers both ways", async () => {
        const info = await alice.iq(xml("iq", { type: "get", to: domain }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
        assert.equal(info.attrs.from, domain);
        assert.ok(info.getChild("query")!.getChildren("identity").some((i) => i.attrs.category === "server"));
        await friend.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, `Friend on ${peer}`))));
        const card = await alice.iq(xml("iq", { type: "get", to: `s2sfriend@${domain}` }, xml("vCard", { xmlns: "vcard-temp" })));
        assert.equal(card.getChild("vCard", "vcard-temp")?.getChildText("FN"), `Friend on ${peer}`);
        await alice.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, "Alice of Parley"))));
        const mine = await friend.iq(xml("iq", { type: "get", to: "alice@parley.test" }, xml("vCard", { xmlns: "vcard-temp" })));
        assert.equal(mine.getChild("vCard", "vcard-temp")?.getChildText("FN"), "Alice of Parley");
      });

      /** `owner` creates `room` (an instant room, XEP-0045 §10.1.2), `guest` joins, both talk. */
      const roomTalk = async (owner: Connected, ownerNick: string, guest: Connected, guestNick: string, room: string) => {
        await owner.xmpp.send(xml("presence", { to: `${room}/${ownerNick}` }, xml("x", { xmlns: MUC })));
        await owner.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/${ownerNick}`, 20_000);
        await owner.iq(xml("iq", { type: "set", to: room }, xml("query", { xmlns: `${MUC}#owner` }, xml("x", { xmlns: "jabber:x:data", type: "submit" }))));
        await guest.xmpp.send(xml("presence", { to: `${room}/${guestNick}` }, xml("x", { xmlns: MUC })));
        const self = await guest.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/${guestNick}` && s.attrs.type === undefined, 20_000);
        assert.ok(self.getChild("x", `${MUC}#user`)?.getChildren("status").some((st) => st.attrs.code === "110"), "the guest's self-presence");
        await owner.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/${guestNick}`, 20_000);
        await guest.xmpp.send(xml("message", { to: room, type: "groupchat" }, xml("body", {}, `hello from ${guestNick}`)));
        await owner.waitFor((s) => s.is("message") && s.attrs.from === `${room}/${guestNick}` && s.getChildText("body") === `hello from ${guestNick}`, 20_000);
        await owner.xmpp.send(xml("message", { to: room, type: "groupchat" }, xml("body", {}, `hello from ${ownerNick}`)));
        await guest.waitFor((s) => s.is("message") && s.attrs.from === `${room}/${ownerNick}` && s.getChildText("body") === `hello from ${ownerNick}`, 20_000);
        await guest.xmpp.send(xml("presence", { to: `${room}/${guestNick}`, type: "unavailable" }));
        await owner.xmpp.send(xml("presence", { to: `${room}/${ownerNick}`, type: "unavailable" }));
      };

      it("the other server's user joins a room on Parley and talks", async () => {
        await roomTalk(alice, "alice", friend, "friend", `from-${peer}-${mode.kitCertificate ? "ext" : "db"}-${Date.now()}@conference.parley.test`);
      });

      it("the Parley user joins a room on the other server and talks", async () => {
        await roomTalk(friend, "friend", alice, "alice", `parley-${mode.kitCertificate ? "ext" : "db"}-${Date.now()}@${env[`PEERS_${peer.toUpperCase()}_MUC_DOMAIN`]}`);
      });

      it("presence subscription from the Parley user, approved on the other server", async () => {
        const friendJid = `s2sfriend@${domain}`;
        const pushed = alice.waitFor((s) => s.is("iq") && s.attrs.type === "set" && s.getChild("query", NS_ROSTER)?.getChild("item")?.attrs.jid === friendJid
          && ["to", "both"].includes(s.getChild("query", NS_ROSTER)!.getChild("item")!.attrs.subscription), 20_000);
        await alice.xmpp.send(xml("presence", { to: friendJid, type: "subscribe" }));
        const request = await friend.waitFor((s) => s.is("presence") && s.attrs.type === "subscribe" && s.attrs.from === "alice@parley.test", 20_000);
        assert.ok(request);
        await friend.xmpp.send(xml("presence", { to: "alice@parley.test", type: "subscribed" }));
        await pushed;
        // RFC 6121 §3.1.5: the contact's server sends its presence once it approved.
        await alice.waitFor((s) => s.is("presence") && s.attrs.from === `${friendJid}/r` && s.attrs.type === undefined, 20_000);
      });

      it("presence subscription from the other server's user, approved on Parley", async () => {
        const friendJid = `s2sfriend@${domain}`;
        const request = alice.waitFor((s) => s.is("presence") && s.attrs.type === "subscribe" && s.attrs.from === friendJid, 20_000);
        await friend.xmpp.send(xml("presence", { to: "alice@parley.test", type: "subscribe" }));
        await request;
        const pushed = friend.waitFor((s) => s.is("iq") && s.attrs.type === "set" && s.getChild("query", NS_ROSTER)?.getChild("item")?.attrs.jid === "alice@parley.test"
          && ["to", "both"].includes(s.getChild("query", NS_ROSTER)!.getChild("item")!.attrs.subscription), 20_000);
        await alice.xmpp.send(xml("presence", { to: friendJid, type: "subscribed" }));
        await pushed;
        await friend.waitFor((s) => s.is("presence") && s.attrs.from === "alice@parley.test/r" && s.attrs.type === undefined, 20_000);
        const item = await server.storage.roster.getItem("alice@parley.test", friendJid);
        assert.equal(item?.subscription, "both");
      });

      it("PEP both ways between mutual contacts: each one's user tune reaches the other, who shows tune+notify (XEP-0163)", async () => {
        const friendJid = `s2sfriend@${domain}`;
        const title = `${peer} ${mode.kitCertificate ? "ext" : "db"} ${Date.now()}`;
        const publishTune = (c: Connected, text: string) => c.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB },
          xml("publish", { node: TUNE }, xml("item", { id: "current" }, xml("tune", { xmlns: TUNE }, xml("title", {}, text)))))));
        /** A tune notification from `owner` with `text`: the last item when interest became known, or a live one. */
        const tuneFrom = (owner: string, text: string) => (s: Element) => s.is("message") && s.attrs.from === owner
          && s.getChild("event", `${PUBSUB}#event`)?.getChild("items")?.getChild("item")?.getChild("tune", TUNE)?.getChildText("title") === text;
        // Parley's user publishes, then the peer's user shows interest: Parley learns it from the caps
        // in the contact's presence (disco#info over s2s) and sends the last item.
        await publishTune(alice, `from parley, ${title}`);
        await announceCaps(friend, [`${TUNE}+notify`]);
        const toPeer = await friend.waitFor(tuneFrom("alice@parley.test", `from parley, ${title}`), 20_000);
        assert.equal(toPeer.attrs.to, `${friendJid}/r`);
        // And the other way: the peer's PEP service learns alice's interest through Parley.
        await publishTune(friend, `from ${peer}, ${title}`);
        await announceCaps(alice, [`${TUNE}+notify`]);
        const toParley = await alice.waitFor(tuneFrom(friendJid, `from ${peer}, ${title}`), 20_000);
        assert.equal(toParley.attrs.to, "alice@parley.test/r");
      });
    });
  }
});
