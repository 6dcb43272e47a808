/**
 * XEP-0363 upload limits and validated inputs, end to end (issues 21 and 22): outstanding slots
 * count against the quota, and the PUT checks it again; content types follow RFC 9110 from the
 * slot request to the GET response; file handles are closed on every path.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readlinkSync, realpathSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, request } from "undici";
import type { Element } from "@xmpp/xml";
import { startTestServer, capturingLogger, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { rawSession } from "../helpers/raw.js";

const UPLOAD = "urn:xmpp:http:upload:0";
const PURPOSE = "urn:xmpp:http:upload:purpose:0";
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
/** File descriptors of this process (the server runs in it) open on something under `dir`. */
const openFdsUnder = (dir: string) => {
  const root = realpathSync(dir);
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(root);
    } catch {
      return false;
    }
  }).length;
};
const eventually = async (check: () => boolean, ms = 3000) => {
  for (const end = Date.now() + ms; Date.now() < end && !check();) await new Promise((r) => setTimeout(r, 50));
  return check();
};

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

  it("a slot whose account was deleted cannot store anything", async () => {
    const server = await startTestServer();
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const s = granted(await ask(c, "late.bin", 3));
      await c.stop();
      await server.accounts.remove("ann@localhost");
      assert.equal((await put(local(s.put, server), Buffer.from("abc"), {})).status, 403);
      assert.deepEqual(await server.storage.uploads.ofOwner("ann@localhost"), []);
      assert.equal((await get(local(s.get, server))).status, 404);
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

describe("upload slot inputs and downloads (issue 21 item 11, issue 22 item 2)", () => {
  let server: TestServer;
  let alice: Connected;
  const capture = capturingLogger("info");

  before(async () => {
    server = await startTestServer({}, { log: capture.log });
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
  });
  after(async () => {
    await alice.stop();
    await server.cleanup();
  });

  it("a content type with CRLF, a control character or a non-Latin-1 character is bad-request (modify)", async () => {
    // Character references: a literal CR LF in an attribute would be normalised to spaces by any XML parser.
    const raw = await rawSession(server.ports.c2sDirectTls!, "alice", "pw");
    try {
      const cases = ["text/plain&#13;&#10;X-Injected: yes", "text/plain&#9;x", "text/pl&#x101;in", "text/plain; charset=&#x20AC;", "text", "text/plain; x"];
      for (const [i, ct] of cases.entries()) {
        raw.send(`<iq type='get' id='ct${i}' to='upload.localhost'><request xmlns='${UPLOAD}' filename='a.txt' size='5' content-type='${ct}'/></iq>`);
        const reply = await raw.waitForElement((e) => e.attrs.id === `ct${i}`);
        assert.equal(reply.attrs.type, "error", ct);
        const error = reply.getChild("error")!;
        assert.equal(error.attrs.type, "modify", ct);
        assert.ok(error.getChild("bad-request", STANZAS), ct);
      }
    } finally {
      raw.socket.destroy();
    }
  });

  it("a content type with parameters is accepted, and a PUT with exactly that header succeeds; GET serves it", async () => {
    const body = Buffer.from("<p>hi</p>");
    const s = granted(await ask(alice, "page.html", body.length, "text/html; charset=utf-8"));
    const created = await put(local(s.put, server), body, { "content-type": "text/html; charset=utf-8" });
    assert.equal(created.status, 201, created.text);
    const got = await get(local(s.get, server));
    assert.equal(got.status, 200);
    assert.equal(got.headers["content-type"], "text/html; charset=utf-8");
    assert.match(String(got.headers["content-disposition"]), /^attachment;/);
    assert.deepEqual(got.body, body);
  });

  it("PUT Content-Type is compared as a media type: case-insensitive essence and charset, bare essence accepted, a conflicting charset refused and logged", async () => {
    const body = Buffer.from("hello");
    for (const sent of ["text/plain; charset=utf-8", "TEXT/Plain;Charset=\"UTF-8\"", "text/plain"]) {
      const s = granted(await ask(alice, "a.txt", body.length, "text/plain; charset=utf-8"));
      const r = await put(local(s.put, server), body, { "content-type": sent });
      assert.equal(r.status, 201, `${sent}: ${r.text}`);
      // text/plain is shown inline whatever its parameters.
      assert.match(String((await get(local(s.get, server))).headers["content-disposition"]), /^inline;/);
    }
    const s = granted(await ask(alice, "b.txt", body.length, "text/plain; charset=utf-8"));
    const before = capture.records.length;
    const refused = await put(local(s.put, server), body, { "content-type": "text/plain; charset=iso-8859-1" });
    assert.equal(refused.status, 400);
    assert.equal(refused.text, "Content-Type does not match the slot");
    const logged = capture.records.slice(before).filter((r) => r.stage === "upload" && r.level === 30);
    assert.equal(logged.length, 1, JSON.stringify(capture.records.slice(before)));
    assert.equal(logged[0]!.reason, "Content-Type does not match the slot");
    const id = new URL(s.get).pathname.split("/")[2]!;
    const token = new URL(s.put).searchParams.get("token")!;
    assert.ok(!JSON.stringify(logged[0]).includes(id) && !JSON.stringify(logged[0]).includes(token), "no slot id or token in the log");
  });

  it("a stored record whose content type is not a valid header value (from before validation) is served as an octet-stream attachment, and its file is closed", async () => {
    const id = "Zq".repeat(11);
    const dir = join(server.dataDir, "uploads", id.slice(0, 2));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, id), "hello");
    await server.storage.uploads.add({ id, owner: "alice@localhost", filename: "old.txt", size: 5, contentType: "text/plain\r\nX-Injected: yes", createdAt: Date.now(), expires: true });
    const got = await get(`https://127.0.0.1:${server.ports.https}/upload/${id}/old.txt`);
    assert.equal(got.status, 200);
    assert.equal(got.headers["content-type"], "application/octet-stream");
    assert.equal(got.headers["x-injected"], undefined);
    assert.match(String(got.headers["content-disposition"]), /^attachment;/);
    assert.deepEqual(got.body, Buffer.from("hello"));
    assert.ok(await eventually(() => openFdsUnder(join(server.dataDir, "uploads")) === 0), "no file handle left open");
  });

  it("a download the client abandons halfway closes the file", async () => {
    const size = 32 * MiB;
    const s = granted(await ask(alice, "big.bin", size, "application/octet-stream"));
    assert.equal((await put(local(s.put, server), Buffer.alloc(size), {})).status, 201);
    const r = await request(local(s.get, server), { dispatcher });
    for await (const _ of r.body) break; // one chunk, then the client goes away
    assert.ok(await eventually(() => openFdsUnder(join(server.dataDir, "uploads")) === 0), "no file handle left open");
  });

  it("a file name is echoed only as a well-formed RFC 6266 Content-Disposition; control characters are refused at slot time", async () => {
    const name = `it's "x" (1).txt`;
    const s = granted(await ask(alice, name, 2, "text/plain"));
    assert.equal((await put(local(s.put, server), Buffer.from("hi"), { "content-type": "text/plain" })).status, 201);
    const got = await get(local(s.get, server));
    assert.equal(got.headers["content-disposition"], `inline; filename="it's _x_ (1).txt"; filename*=UTF-8''it%27s%20%22x%22%20%281%29.txt`);
    const raw = await rawSession(server.ports.c2sDirectTls!, "alice", "pw");
    try {
      raw.send(`<iq type='get' id='fn' to='upload.localhost'><request xmlns='${UPLOAD}' filename='a&#13;&#10;b.txt' size='5'/></iq>`);
      const reply = await raw.waitForElement((e) => e.attrs.id === "fn");
      assert.ok(reply.getChild("error")?.getChild("bad-request", STANZAS), reply.toString());
    } finally {
      raw.socket.destroy();
    }
  });

  it("XEP-0363 §5 purposes: advertised, one at most, ephemeral (an expiry this service cannot promise) refused", async () => {
    const info = await alice.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const features = info.getChild("query")!.getChildren("feature").map((f) => f.attrs.var as string);
    for (const p of ["message", "profile", "permanent"]) assert.ok(features.includes(`${PURPOSE}#${p}`), p);
    assert.ok(!features.includes(`${PURPOSE}#ephemeral`));
    const request = (...purposes: Element[]) => alice.iq(xml("iq", { type: "get", to: "upload.localhost" },
      xml("request", { xmlns: UPLOAD, filename: "p.jpg", size: "5", "content-type": "image/jpeg" }, ...purposes)));
    const condition = (err: unknown) => (err as { condition?: string }).condition;
    await assert.rejects(request(xml("ephemeral", { xmlns: PURPOSE, "expire-before": "2030-01-01T00:00:00Z" })), (err) => condition(err) === "feature-not-implemented");
    await assert.rejects(request(xml("profile", { xmlns: PURPOSE }), xml("permanent", { xmlns: PURPOSE })), (err) => condition(err) === "bad-request");
    const slot = (await request(xml("profile", { xmlns: PURPOSE }))).getChild("slot", UPLOAD)!;
    assert.equal(new URL(slot.getChild("put")!.attrs.url as string).searchParams.get("purpose"), "profile");
  });

  it("size must be a plain decimal integer", async () => {
    for (const size of ["1e3", "0x10", " 5", "5.0", "+5"]) {
      assert.deepEqual(await ask(alice, "s.bin", size), { condition: "bad-request", type: "modify", retry: undefined }, size);
    }
  });
});
