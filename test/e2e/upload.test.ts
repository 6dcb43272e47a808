/** XEP-0363 HTTP File Upload end to end: xmpp.js asks for slots, undici PUTs and GETs over real HTTPS. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readdirSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { spawnSync } from "node:child_process";
import { Readable } from "node:stream";
import { Agent, request } from "undici";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const UPLOAD = "urn:xmpp:http:upload:0";
const PURPOSE = "urn:xmpp:http:upload:purpose:0";
const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
const MiB = 1024 * 1024;

/** A body of `size` bytes made on the fly (a 100 MiB upload is never held in memory here). */
function pattern(size: number): Readable {
  let sent = 0;
  const block = Buffer.alloc(64 * 1024, 0x61);
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const n = Math.min(block.length, size - sent);
      sent += n;
      this.push(n === block.length ? block : block.subarray(0, n));
    },
  });
}

describe("HTTP file upload (XEP-0363)", () => {
  let server: TestServer;
  let alice: Connected;
  const slot = async (filename: string, size: number, contentType = "image/jpeg", purpose?: string) => {
    const reply = await alice.iq(xml("iq", { type: "get", to: "upload.localhost" },
      xml("request", { xmlns: UPLOAD, filename, size: String(size), "content-type": contentType }, ...(purpose ? [xml(purpose, { xmlns: PURPOSE })] : []))));
    const s = reply.getChild("slot", UPLOAD)!;
    return { put: s.getChild("put")!.attrs.url as string, get: s.getChild("get")!.attrs.url as string };
  };
  const put = (url: string, body: Buffer | Readable, headers: Record<string, string>) =>
    request(url, { method: "PUT", body, headers, dispatcher }).then(async (r) => ({ status: r.statusCode, headers: r.headers, text: await r.body.text() }));
  const get = (url: string, headers: Record<string, string> = {}, method: "GET" | "HEAD" | "OPTIONS" = "GET") =>
    request(url, { method, headers, dispatcher }).then(async (r) => ({ status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) }));
  const uploadFiles = () => {
    const dir = join(server.dataDir, "uploads");
    if (!existsSync(dir)) return [];
    return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
  };

  before(async () => {
    server = await startTestServer({ modules: { upload: { quotaBytes: 250 * MiB, dailyQuotaBytes: 220 * MiB } } });
    await server.accounts.create("alice@localhost", "pw");
    alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
  });
  after(async () => {
    await alice.stop();
    await server.cleanup();
  });

  it("is discoverable with its size limit", async () => {
    const items = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items" })));
    assert.ok(items.getChild("query")!.getChildren("item").some((i) => i.attrs.jid === "upload.localhost"));
    const info = await alice.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const q = info.getChild("query")!;
    assert.ok(q.getChildren("feature").some((f) => f.attrs.var === UPLOAD));
    const field = q.getChild("x", "jabber:x:data")!.getChildren("field").find((f) => f.attrs.var === "max-file-size")!;
    assert.equal(field.getChildText("value"), String(100 * MiB));
  });

  it("slot → PUT → GET returns the same bytes, with the right headers, ranges and conditional GET", async () => {
    const bytes = randomBytes(300_000);
    const s = await slot("holiday photo.jpg", bytes.length);
    assert.match(s.get, /^https:\/\/localhost:\d+\/upload\/[A-Za-z0-9_-]{22}\/holiday%20photo\.jpg$/);
    const getUrl = s.get.replace("upload.localhost", "127.0.0.1");
    const created = await put(s.put.replace("upload.localhost", "127.0.0.1"), bytes, { "content-type": "image/jpeg", "content-length": String(bytes.length) });
    assert.equal(created.status, 201);
    const got = await get(getUrl);
    assert.equal(got.status, 200);
    assert.deepEqual(createHash("sha256").update(got.body).digest("hex"), createHash("sha256").update(bytes).digest("hex"));
    assert.equal(got.headers["content-type"], "image/jpeg");
    assert.equal(got.headers["content-length"], String(bytes.length));
    assert.equal(got.headers["x-content-type-options"], "nosniff");
    assert.equal(got.headers["content-disposition"], `inline; filename="holiday photo.jpg"; filename*=UTF-8''holiday%20photo.jpg`);
    assert.equal(got.headers["access-control-allow-origin"], "*");
    assert.ok(got.headers.etag && got.headers["last-modified"]);
    const part = await get(getUrl, { range: "bytes=1000-1999" });
    assert.equal(part.status, 206);
    assert.equal(part.headers["content-range"], `bytes 1000-1999/${bytes.length}`);
    assert.deepEqual(part.body, bytes.subarray(1000, 2000));
    const tail = await get(getUrl, { range: "bytes=-10" });
    assert.deepEqual(tail.body, bytes.subarray(bytes.length - 10));
    assert.equal((await get(getUrl, { range: `bytes=${bytes.length}-` })).status, 416);
    assert.equal((await get(getUrl, { "if-none-match": String(got.headers.etag) })).status, 304);
    const head = await get(getUrl, {}, "HEAD");
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    // Same slot again: the stored file is not replaced.
    assert.equal((await put(s.put.replace("upload.localhost", "127.0.0.1"), bytes, { "content-type": "image/jpeg", "content-length": String(bytes.length) })).status, 409);
  });

  it("types a browser should not render are attachments; CORS preflight is answered", async () => {
    const body = Buffer.from("<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>");
    const s = await slot("x.svg", body.length, "image/svg+xml");
    assert.equal((await put(s.put.replace("upload.localhost", "127.0.0.1"), body, { "content-type": "image/svg+xml", "content-length": String(body.length) })).status, 201);
    const got = await get(s.get.replace("upload.localhost", "127.0.0.1"));
    assert.match(String(got.headers["content-disposition"]), /^attachment;/);
    const pre = await get(s.put.replace("upload.localhost", "127.0.0.1"), { origin: "https://compliance.conversations.im", "access-control-request-method": "PUT", "access-control-request-headers": "content-type" }, "OPTIONS");
    assert.equal(pre.status, 204);
    assert.equal(pre.headers["access-control-allow-origin"], "*");
    assert.match(String(pre.headers["access-control-allow-methods"]), /PUT/);
    assert.match(String(pre.headers["access-control-allow-headers"]), /Content-Type/i);
  });

  it("100 MiB is accepted; 100 MiB + 1 is refused at slot time (file-too-large) and at PUT time", async () => {
    const s = await slot("video.mp4", 100 * MiB, "video/mp4");
    const ok = await put(s.put.replace("upload.localhost", "127.0.0.1"), pattern(100 * MiB), { "content-type": "video/mp4", "content-length": String(100 * MiB) });
    assert.equal(ok.status, 201);
    const head = await get(s.get.replace("upload.localhost", "127.0.0.1"), {}, "HEAD");
    assert.equal(head.headers["content-length"], String(100 * MiB));
    await assert.rejects(slot("big.mp4", 100 * MiB + 1, "video/mp4"), (err: { condition?: string; element?: { children: Array<{ name?: string; attrs?: Record<string, string>; getChildText?: (n: string) => string }> } }) => {
      const app = err.element?.children.find((c) => c.name === "file-too-large");
      return err.condition === "not-acceptable" && app?.getChildText?.("max-file-size") === String(100 * MiB);
    });
    // A slot for 10 bytes, and a body of 100 MiB + 1 claimed: refused before anything is stored.
    const small = await slot("small.bin", 10, "application/octet-stream");
    const tooBig = await put(small.put.replace("upload.localhost", "127.0.0.1"), pattern(100 * MiB + 1), { "content-length": String(100 * MiB + 1) });
    assert.equal(tooBig.status, 413);
  });

  it("tampered, expired and mismatched PUTs are refused and leave nothing; path traversal finds nothing", async () => {
    const before = uploadFiles().length;
    const body = Buffer.from("hello");
    const s = await slot("a.txt", body.length, "text/plain");
    const url = s.put.replace("upload.localhost", "127.0.0.1");
    const h = { "content-type": "text/plain", "content-length": "5" };
    assert.equal((await put(url.replace(/size=5/, "size=6"), Buffer.from("hello!"), { ...h, "content-length": "6" })).status, 403, "size changed");
    assert.equal((await put(url.replace(/token=[^&]+/, "token=AAAA"), body, h)).status, 403, "tampered token");
    assert.equal((await put(url.replace(/expires=\d+/, "expires=1"), body, h)).status, 403, "expiry changed (token no longer matches)");
    assert.equal((await put(url, body, { ...h, "content-type": "text/html" })).status, 400, "other content type");
    assert.equal((await put(url, Buffer.from("hell"), { ...h, "content-length": "4" })).status, 400, "fewer bytes than the slot");
    assert.equal((await put(url.replace("/a.txt", "/b.txt"), body, h)).status, 403, "other path");
    assert.equal(uploadFiles().length, before, "nothing stored");
    for (const path of ["/upload/../secret.key", "/upload/%2e%2e/%2e%2e/secret.key", "/upload/AAAAAAAAAAAAAAAAAAAAAA/..%2f..%2fsecret.key", "/upload/x/../../parley.sqlite"]) {
      const r = await get(`https://127.0.0.1:${server.ports.https}${path}`);
      assert.equal(r.status, 404, path);
    }
    // An expired slot (signed, but past its time) is refused.
    const expiredServer = await startTestServer({ modules: { upload: { slotSeconds: 10 } } });
    try {
      await expiredServer.accounts.create("bob@localhost", "pw");
      const bob = await connect({ port: expiredServer.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw" });
      const reply = await bob.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("request", { xmlns: UPLOAD, filename: "late.txt", size: "5", "content-type": "text/plain" })));
      const lateUrl = reply.getChild("slot", UPLOAD)!.getChild("put")!.attrs.url as string;
      await bob.stop();
      const realNow = Date.now;
      Date.now = () => realNow() + 11_000;
      try {
        assert.equal((await put(lateUrl.replace("upload.localhost", "127.0.0.1"), body, h)).status, 403);
      } finally {
        Date.now = realNow;
      }
    } finally {
      await expiredServer.cleanup();
    }
  });

  it("an aborted PUT leaves nothing behind", async () => {
    const before = uploadFiles().length;
    const s = await slot("aborted.bin", 5 * MiB, "application/octet-stream");
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= 1 * MiB) return void this.destroy(new Error("client gave up"));
        sent += 64 * 1024;
        this.push(Buffer.alloc(64 * 1024));
      },
    });
    await assert.rejects(put(s.put.replace("upload.localhost", "127.0.0.1"), body, { "content-length": String(5 * MiB) }));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(uploadFiles().length, before);
    assert.equal((await get(s.get.replace("upload.localhost", "127.0.0.1"))).status, 404);
  });

});

describe("HTTP file upload lifecycle", () => {
  it("expired files are removed in the background; a deleted account's files go with it", async () => {
    // 0.00002 days ≈ 1.7 s; cleanup every 0.01 minutes.
    const server = await startTestServer({ modules: { upload: { expireDays: 0.00002, cleanupIntervalMinutes: 0.01 } } });
    try {
      for (const u of ["ann", "ben"]) await server.accounts.create(`${u}@localhost`, "pw");
      const upload = async (user: string, purpose?: string) => {
        const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw" });
        const reply = await c.iq(xml("iq", { type: "get", to: "upload.localhost" },
          xml("request", { xmlns: UPLOAD, filename: "f.txt", size: "3", "content-type": "text/plain" }, ...(purpose ? [xml(purpose, { xmlns: PURPOSE })] : []))));
        await c.stop();
        const s = reply.getChild("slot", UPLOAD)!;
        const r = await request((s.getChild("put")!.attrs.url as string).replace("upload.localhost", "127.0.0.1"),
          { method: "PUT", body: "abc", headers: { "content-type": "text/plain", "content-length": "3" }, dispatcher });
        await r.body.text();
        assert.equal(r.statusCode, 201);
        return (s.getChild("get")!.attrs.url as string).replace("upload.localhost", "127.0.0.1");
      };
      const status = async (url: string) => { const r = await request(url, { dispatcher }); await r.body.text(); return r.statusCode; };
      const ephemeral = await upload("ann");
      const profile = await upload("ann", "profile");
      const bens = await upload("ben", "permanent");
      const idOf = (url: string) => new URL(url).pathname.split("/")[2]!;
      assert.equal((await server.storage.uploads.get(idOf(profile)))?.expires, false, "a profile upload is kept");
      assert.equal((await server.storage.uploads.get(idOf(bens)))?.expires, false, "a permanent upload is kept");
      let gone = false;
      for (let i = 0; i < 50 && !gone; i++) {
        await new Promise((r) => setTimeout(r, 200));
        gone = (await status(ephemeral)) === 404;
      }
      assert.ok(gone, "expired within 10 s");
      assert.equal(await status(profile), 200, "profile uploads do not expire");
      assert.equal(await status(bens), 200);
      await server.accounts.remove("ben@localhost");
      assert.equal(await status(bens), 404, "deleted with the account");
      assert.deepEqual(await server.storage.uploads.ofOwner("ben@localhost"), []);
    } finally {
      await server.cleanup();
    }
  });

  it("quotas: over the daily quota → resource-constraint with <retry/> at the end of the window; over the total → without", async () => {
    const server = await startTestServer({ modules: { upload: { quotaBytes: 20, dailyQuotaBytes: 10 } } });
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const ask = (size: number) => c.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("request", { xmlns: UPLOAD, filename: "q.bin", size: String(size) })));
      const s = (await ask(8)).getChild("slot", UPLOAD)!;
      const r = await request((s.getChild("put")!.attrs.url as string).replace("upload.localhost", "127.0.0.1"),
        { method: "PUT", body: "12345678", headers: { "content-length": "8" }, dispatcher });
      await r.body.text();
      assert.equal(r.statusCode, 201);
      type Err = { condition?: string; element?: { children: Array<{ name?: string; attrs?: Record<string, string> }> } };
      await assert.rejects(ask(5), (err: Err) => {
        const retry = err.element?.children.find((x) => x.name === "retry");
        const stamp = Date.parse(retry?.attrs?.stamp ?? "");
        return err.condition === "resource-constraint" && stamp > Date.now() + 23 * 3600_000;
      });
      await server.storage.uploads.add({ id: "x".repeat(22), owner: "ann@localhost", filename: "old", size: 10, contentType: "a/b", createdAt: Date.now() - 2 * 86_400_000, expires: true });
      await assert.rejects(ask(3), (err: Err) => err.condition === "resource-constraint" && !err.element?.children.some((x) => x.name === "retry"));
      await c.stop();
    } finally {
      await server.cleanup();
    }
  });
});

describe("HTTP file upload behind a reverse proxy, and slow bodies", () => {
  it("plain HTTP with a configured public URL; a stalled body is cut off and nothing is kept; the CLI sees and prunes usage", async () => {
    const server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: null, http: 0 },
      http: { publicUrl: "https://files.example.org/" },
      modules: { upload: { bodyIdleSeconds: 1 } },
    });
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const ask = async (name: string, size: number) => {
        const reply = await c.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("request", { xmlns: UPLOAD, filename: name, size: String(size), "content-type": "text/plain" })));
        const s = reply.getChild("slot", UPLOAD)!;
        return { put: s.getChild("put")!.attrs.url as string, get: s.getChild("get")!.attrs.url as string };
      };
      const s = await ask("via-proxy.txt", 3);
      assert.match(s.get, /^https:\/\/files\.example\.org\/upload\/[A-Za-z0-9_-]{22}\/via-proxy\.txt$/);
      const local = (url: string) => url.replace("https://files.example.org", `http://127.0.0.1:${server.ports.http}`);
      const r = await request(local(s.put), { method: "PUT", body: "abc", headers: { "content-type": "text/plain", "content-length": "3" } });
      await r.body.text();
      assert.equal(r.statusCode, 201);

      const slow = await ask("slow.txt", 1000);
      const stalled = new Readable({ read() {} });
      stalled.push(Buffer.alloc(100));
      const started = Date.now();
      await assert.rejects(request(local(slow.put), { method: "PUT", body: stalled, headers: { "content-type": "text/plain", "content-length": "1000" } })
        .then(async (res) => { await res.body.text(); if (res.statusCode >= 400) throw new Error(String(res.statusCode)); }));
      assert.ok(Date.now() - started < 10_000, "cut off after the idle limit");
      const gone = await request(local(slow.get));
      await gone.body.text();
      assert.equal(gone.statusCode, 404);
      await c.stop();

      const cfg = join(server.dataDir, "cli.yaml");
      writeFileSync(cfg, `hosts: [localhost]\ndataDir: ${server.dataDir}\n`);
      const usage = spawnSync("bin/parley", ["uploads", "usage", "--config", cfg], { encoding: "utf8" });
      assert.equal(usage.status, 0, usage.stderr);
      assert.match(usage.stdout, /^ann@localhost\t1 files\t3 bytes$/m);
      const prune = spawnSync("bin/parley", ["uploads", "prune", "--older-than", "0", "--config", cfg], { encoding: "utf8" });
      assert.equal(prune.status, 0, prune.stderr);
      assert.match(prune.stdout, /removed 1 uploads/);
      const after = await request(local(s.get));
      await after.body.text();
      assert.equal(after.statusCode, 404);
    } finally {
      await server.cleanup();
    }
  });
});

describe("HTTP file upload on a full disk", () => {
  // A real full file system: a 256 KiB tmpfs. Mounting needs root; elsewhere this says it skipped.
  const mountPoint = join(tmpdir(), `parley-full-${process.pid}`);
  mkdirSync(mountPoint, { recursive: true });
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint]).status === 0;
  if (!mounted) console.log("# SKIPPED upload full-disk test: cannot mount a tmpfs here (needs root)");
  it("a full disk answers 507, keeps nothing, and the server goes on", { skip: mounted ? false : "cannot mount a tmpfs" }, async () => {
    const server = await startTestServer({ modules: { upload: { path: mountPoint } } });
    try {
      await server.accounts.create("ann@localhost", "pw");
      const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const reply = await c.iq(xml("iq", { type: "get", to: "upload.localhost" }, xml("request", { xmlns: UPLOAD, filename: "big.bin", size: String(MiB) })));
      const putUrl = (reply.getChild("slot", UPLOAD)!.getChild("put")!.attrs.url as string).replace("upload.localhost", "127.0.0.1");
      const r = await request(putUrl, { method: "PUT", body: pattern(MiB), headers: { "content-length": String(MiB) }, dispatcher });
      await r.body.text();
      assert.equal(r.statusCode, 507);
      // The probe of the shared-directory check (src/modules/upload-dir.ts) is written at start and stays.
      const left = readdirSync(mountPoint, { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && !e.name.startsWith(".probe-"));
      assert.deepEqual(left.map((e) => e.name), [], "the partial file is gone");
      const pong = await c.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
      assert.equal(pong.attrs.type, "result");
      await c.stop();
    } finally {
      await server.cleanup();
      spawnSync("umount", [mountPoint]);
      rmSync(mountPoint, { recursive: true, force: true });
    }
  });
});
