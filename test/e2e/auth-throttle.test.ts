/**
 * The per-account slow-down of password guessing (issue 21, "also noted"): failures on one
 * account from many addresses make further failures on it slow, while the right password still
 * logs in at once from anywhere, and other accounts are not affected. Clients on other loopback
 * addresses (127.0.0.x) stand for other machines.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { openStream, type RawClient } from "../helpers/raw.js";

const plain = (user: string, password: string) =>
  `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`;

describe("authentication throttle per account", () => {
  let server: TestServer;
  const streams: RawClient[] = [];
  before(async () => {
    server = await startTestServer();
    for (const u of ["target", "bystander"]) await server.accounts.create(`${u}@localhost`, "right");
  });
  after(async () => {
    for (const s of streams) s.close();
    await server.cleanup();
  });
  let host = 1;
  /** A fresh stream from a loopback address no other stream used: a new machine each time. */
  const fromNewAddress = async () => {
    const s = await openStream(server.ports.c2sDirectTls!, true, `127.0.0.${++host}`);
    streams.push(s);
    return s;
  };
  const attempt = async (s: RawClient, user: string, password: string) => {
    const mark = s.elements.length;
    s.send(plain(user, password));
    const outcome = await s.waitForElement((e) => (e.is("success") || e.is("failure")) && e.getNS() === "urn:ietf:params:xml:ns:xmpp-sasl", 40_000, mark);
    return outcome.getName();
  };

  it("after guesses on an account from several addresses, a wrong password for it is answered after one for another account sent later; the right one succeeds at once", async () => {
    // Six failures on 'target', two per address: under the per-address limits, past the account's five free ones.
    for (let i = 0; i < 3; i++) {
      const s = await fromNewAddress();
      assert.equal(await attempt(s, "target", `guess-${i}-a`), "failure");
      assert.equal(await attempt(s, "target", `guess-${i}-b`), "failure");
    }
    const onTarget = await fromNewAddress();
    const onBystander = await fromNewAddress();
    const order: string[] = [];
    const targetDone = attempt(onTarget, "target", "guess-7").then((r) => order.push(`target:${r}`));
    // Sent after the guess on 'target' has reached the server.
    await new Promise((r) => setTimeout(r, 100));
    const bystanderDone = attempt(onBystander, "bystander", "typo").then((r) => order.push(`bystander:${r}`));
    await Promise.all([targetDone, bystanderDone]);
    assert.deepEqual(order, ["bystander:failure", "target:failure"], "the guess on the attacked account waits; the other account's failure does not");

    const owner = await fromNewAddress();
    assert.equal(await attempt(owner, "target", "right"), "success", "no lockout: the right password logs in");
  });
});
