/**
 * XEP-0480 SASL upgrade tasks (issue 18): an account with only SCRAM-SHA-1 keys (as imported from
 * ejabberd or Prosody, XEP-0227) gets SCRAM-SHA-256 keys during a SASL2 login with SCRAM-SHA-1,
 * from the client's SaltedPassword; the password never crosses the wire. Raw sockets: no client
 * library here speaks XEP-0480.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { openStream, type RawClient } from "../helpers/raw.js";
import { H, HMAC, deriveCredential, saltedPassword, xor } from "../../src/auth/scram.js";
import type { ScramHash } from "../../src/storage/index.js";
import type { Element } from "@xmpp/xml";

const SASL2 = "urn:xmpp:sasl:2";
const UPGRADE = "urn:xmpp:sasl:upgrade:0";
const SCRAM_UPGRADE = "urn:xmpp:scram-upgrade:0";
const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");
const sasl2 = (...names: string[]) => (e: Element) => e.getNS() === SASL2 && names.includes(e.name);

/** A SASL2 SCRAM exchange without channel binding; returns the stream and the element after the client's final message. */
async function scramSasl2(server: TestServer, mechanism: string, user: string, password: string, extra = ""): Promise<{ c: RawClient; after: Element }> {
  const hash: ScramHash = mechanism.includes("256") ? "SHA-256" : "SHA-1";
  const c = await openStream(server.ports.c2sDirectTls!);
  const cnonce = randomBytes(12).toString("base64");
  let mark = c.elements.length;
  c.send(`<authenticate xmlns='${SASL2}' mechanism='${mechanism}'><initial-response>${b64(`n,,n=${user},r=${cnonce}`)}</initial-response>${extra}</authenticate>`);
  const challenge = await c.waitForElement(sasl2("challenge", "failure"), 5000, mark);
  if (challenge.name === "failure") return { c, after: challenge };
  const serverFirst = Buffer.from(challenge.getText(), "base64").toString();
  const attrs = Object.fromEntries(serverFirst.split(",").map((p) => [p[0], p.slice(2)]));
  const salted = await saltedPassword(hash, password, Buffer.from(attrs.s!, "base64"), Number(attrs.i));
  const withoutProof = `c=${b64("n,,")},r=${attrs.r}`;
  const authMessage = `n=${user},r=${cnonce},${serverFirst},${withoutProof}`;
  const clientKey = HMAC(hash, salted, "Client Key");
  const proof = xor(clientKey, HMAC(hash, H(hash, clientKey), authMessage));
  mark = c.elements.length;
  c.send(`<response xmlns='${SASL2}'>${b64(`${withoutProof},p=${proof.toString("base64")}`)}</response>`);
  return { c, after: await c.waitForElement(sasl2("success", "failure", "continue"), 5000, mark) };
}

describe("SASL upgrade tasks (XEP-0480)", () => {
  let server: TestServer;
  const sha1Only = async (user: string, password: string) => {
    await server.storage.accounts.create({ jid: `${user}@localhost`, createdAt: Date.now(), credentials: { "SHA-1": await deriveCredential("SHA-1", password, 4096) } });
  };
  before(async () => { server = await startTestServer(); });
  after(() => server.cleanup());

  it("the SASL2 feature lists UPGR-SCRAM-SHA-256", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    const features = c.elements.find((e) => e.is("features", "http://etherx.jabber.org/streams"))!;
    const tasks = features.getChild("authentication", SASL2)!.getChildren("upgrade", UPGRADE).map((u) => u.text());
    assert.ok(tasks.includes("UPGR-SCRAM-SHA-256"), tasks.join(" "));
    c.close();
  });

  it("an account with only SCRAM-SHA-1 keys gets SCRAM-SHA-256 keys from its client's SaltedPassword, then logs in with SCRAM-SHA-256", async () => {
    await sha1Only("imported", "old-secret");
    assert.equal((await scramSasl2(server, "SCRAM-SHA-256", "imported", "old-secret")).after.name, "failure", "no SHA-256 keys yet");

    const { c, after: cont } = await scramSasl2(server, "SCRAM-SHA-1", "imported", "old-secret", `<upgrade xmlns='${UPGRADE}'>UPGR-SCRAM-SHA-256</upgrade>`);
    assert.equal(cont.name, "continue");
    assert.deepEqual(cont.getChild("tasks", SASL2)!.getChildren("task", SASL2).map((t) => t.text()), ["UPGR-SCRAM-SHA-256"]);
    let mark = c.elements.length;
    c.send(`<next xmlns='${SASL2}' task='UPGR-SCRAM-SHA-256'/>`);
    const data = await c.waitForElement(sasl2("task-data", "failure"), 5000, mark);
    const salt = data.getChild("salt", SCRAM_UPGRADE)!;
    const salted = await saltedPassword("SHA-256", "old-secret", Buffer.from(salt.text(), "base64"), Number(salt.attrs.iterations));
    mark = c.elements.length;
    c.send(`<task-data xmlns='${SASL2}'><hash xmlns='${SCRAM_UPGRADE}'>${salted.toString("base64")}</hash></task-data>`);
    const success = await c.waitForElement(sasl2("success", "failure"), 5000, mark);
    assert.equal(success.name, "success");
    assert.equal(success.getChildText("authorization-identifier", SASL2), "imported@localhost");
    c.close();

    const stored = await server.storage.accounts.get("imported@localhost");
    assert.ok(stored?.credentials["SHA-1"] && stored.credentials["SHA-256"], "both keys kept (§4: keep the older data)");
    const again = await scramSasl2(server, "SCRAM-SHA-256", "imported", "old-secret");
    assert.equal(again.after.name, "success");
    again.c.close();
  });

  it("no task for an account that has the keys; a SaltedPassword of the wrong size is refused and nothing is stored", async () => {
    await server.accounts.create("modern@localhost", "pw");
    const full = await scramSasl2(server, "SCRAM-SHA-1", "modern", "pw", `<upgrade xmlns='${UPGRADE}'>UPGR-SCRAM-SHA-256</upgrade>`);
    assert.equal(full.after.name, "success");
    full.c.close();

    await sha1Only("partial", "pw2");
    const { c, after: cont } = await scramSasl2(server, "SCRAM-SHA-1", "partial", "pw2", `<upgrade xmlns='${UPGRADE}'>UPGR-SCRAM-SHA-256</upgrade>`);
    assert.equal(cont.name, "continue");
    let mark = c.elements.length;
    c.send(`<next xmlns='${SASL2}' task='UPGR-SCRAM-SHA-256'/>`);
    await c.waitForElement(sasl2("task-data"), 5000, mark);
    mark = c.elements.length;
    c.send(`<task-data xmlns='${SASL2}'><hash xmlns='${SCRAM_UPGRADE}'>${b64("too short")}</hash></task-data>`);
    const failure = await c.waitForElement(sasl2("failure"), 5000, mark);
    assert.ok(failure.getChild("malformed-request", "urn:ietf:params:xml:ns:xmpp-sasl"));
    c.close();
    assert.equal((await server.storage.accounts.get("partial@localhost"))?.credentials["SHA-256"], undefined);
  });
});
