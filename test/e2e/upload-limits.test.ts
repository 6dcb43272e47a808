/**
 * XEP-0363 upload limits and validated inputs, end to end (issues 21 and 22): outstanding slots
 * count against the quota, and the PUT checks it again.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Agent, request } from "undici";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const UPLOAD = "urn:xmpp:http:upload:0";
const STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";
const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
const MiB = 1024 * 1024;

interface Granted { put: string; get: string }
/** What a slot request got: the slot, or the parsed <error/> (condition, type, <retry/>). */
type Answer = Granted | { condition: string; type: string; retry?: string };

const ask = async (c: Connected, filename: string, size: number | string, contentType?: string): Promise<Answer> => {
  const attrs: Record<string, string> = { xmlns: UPLOAD, filename, size: String(size) };
  if (contentType !== undefined) attrs["content-type"] = contentType;
  try {
    const reply = await c.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("request", attrs)));
    const s = reply.getChild("slot", UPLOAD)!;
    return { put: s.getChild("put")!.attrs.url as string, get: s.getChild("get")!.attrs.url as string };
  } catch (err) {
    const e = (err as { element?: Element }).element;
    if (!e) throw err;
    const condition = e.children.find((x): x is Element => typeof x !== "string" && x.attrs.xmlns === STANZAS && x.name !== "text")!.name;
    return { condition, type: e.attrs.type as string, retry: e.getChild("retry", UPLOAD)?.attrs.stamp as string | undefined };
  }
};
const granted = (a: Answer): Granted => {
  assert.ok("put" in a, `expected a slot, got ${JSON.stringify(a)}`);
  return a;
};
/** The URL on this test server's own address (slots name upload.localhost). */
const local = (url: string, server: TestServer) => {
  const u = new URL(url);
  u.hostname = "127.0.0.1";
  u.port = String(server.ports.https);
  return u.toString();
};
const put = (url: string, body: Buffer, headers: Record<string, string>) =>
  request(url, { method: "PUT", body, headers: { "content-length": String(body.length), ...headers }, dispatcher })
    .then(async (r) => ({ status: r.statusCode, text: await r.body.text() }));
const get = (url: string) =>
  request(url, { dispatcher }).then(async (r) => ({ status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }));
describe("upload quota counts outstanding slots (issue 21 item 2)", () => {
  const slotSize = 528_384;

  it("with a 1 MiB quota, a second unused slot of 528,384 bytes is refused (resource-constraint, wait); stored bytes stay within the quota", async () => {
    const server = await startTestServer({ modules: { upload: { quotaBytes: MiB, dailyQuotaBytes: 0 } } });
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const answers = [await ask(c, "1.bin", slotSize), await ask(c, "2.bin", slotSize), await ask(c, "3.bin", slotSize)];
      const first = granted(answers[0]!);
      assert.deepEqual(answers.slice(1), [
        { condition: "resource-constraint", type: "wait", retry: undefined },
        { condition: "resource-constraint", type: "wait", retry: undefined },
      ]);
      assert.equal((await put(local(first.put, server), Buffer.alloc(slotSize), {})).status, 201);
      // The used slot is now a stored file: still counted, once.
      assert.deepEqual(await ask(c, "4.bin", slotSize), { condition: "resource-constraint", type: "wait", retry: undefined });
      granted(await ask(c, "5.bin", MiB - slotSize));
      assert.ok((await server.storage.uploads.usage("ann@localhost", 0)).bytes <= MiB);
      await c.stop();
    } finally {
      await server.cleanup();
    }
  });

  it("the daily quota counts outstanding slots too, and says when to retry", async () => {
    const server = await startTestServer({ modules: { upload: { quotaBytes: 0, dailyQuotaBytes: MiB } } });
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      granted(await ask(c, "1.bin", slotSize));
      const refused = await ask(c, "2.bin", slotSize);
      assert.ok("condition" in refused && refused.condition === "resource-constraint" && refused.type === "wait", JSON.stringify(refused));
      assert.ok(Date.parse(refused.retry ?? "") > Date.now() + 23 * 3600_000, "retry when the daily window moves on");
      await c.stop();
    } finally {
      await server.cleanup();
    }
  });

  it("an expired, unused slot stops counting", async () => {
    const server = await startTestServer({ modules: { upload: { quotaBytes: MiB, slotSeconds: 10 } } });
    const realNow = Date.now;
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const stale = granted(await ask(c, "1.bin", slotSize));
      assert.equal((await ask(c, "2.bin", slotSize) as { condition?: string }).condition, "resource-constraint");
      Date.now = () => realNow() + 11_000;
      const fresh = granted(await ask(c, "2.bin", slotSize));
      assert.equal((await put(local(fresh.put, server), Buffer.alloc(slotSize), {})).status, 201);
      assert.equal((await put(local(stale.put, server), Buffer.alloc(slotSize), {})).status, 403, "the expired slot is refused");
      await c.stop();
    } finally {
      Date.now = realNow;
      await server.cleanup();
    }
  });

  it("open slots per user are bounded: one more waits until the oldest expires", async () => {
    const server = await startTestServer({ modules: { upload: { maxOpenSlots: 2 } } });
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const first = granted(await ask(c, "1.bin", 1));
      granted(await ask(c, "2.bin", 1));
      const refused = await ask(c, "3.bin", 1);
      assert.ok("condition" in refused && refused.condition === "resource-constraint" && refused.type === "wait", JSON.stringify(refused));
      const expires = Number(new URL(first.put).searchParams.get("expires")) * 1000;
      assert.equal(Date.parse(refused.retry ?? ""), expires);
      // A used slot is no longer open.
      assert.equal((await put(local(first.put, server), Buffer.from("x"), {})).status, 201);
      granted(await ask(c, "3.bin", 1));
      await c.stop();
    } finally {
      await server.cleanup();
    }
  });

  it("the PUT checks the quota again: a slot the server no longer knows of (restart) cannot push the stored bytes over it", async () => {
    const options = { modules: { upload: { quotaBytes: MiB } } };
    const first = await startTestServer(options);
    let server = first;
    try {
      await first.accounts.create("ann@localhost", "pw");
      let c = await connect({ port: first.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const early = granted(await ask(c, "early.bin", slotSize));
      await c.stop();
      await first.stop();
      // Same data directory, so the same account, secret and signed slots; outstanding slots are forgotten.
      server = await startTestServer({ ...options, dataDir: first.dataDir });
      c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const late = granted(await ask(c, "late.bin", slotSize));
      assert.equal((await put(local(late.put, server), Buffer.alloc(slotSize), {})).status, 201);
      const over = await put(local(early.put, server), Buffer.alloc(slotSize), {});
      assert.equal(over.status, 507, over.text);
      assert.equal((await get(local(early.get, server))).status, 404, "nothing stored");
      assert.equal((await server.storage.uploads.usage("ann@localhost", 0)).bytes, slotSize);
      await c.stop();
    } finally {
      await server.cleanup();
    }
  });
});
