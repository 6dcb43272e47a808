/**
 * The built-in app server (push.<host>) against local servers that speak the APNs (HTTP/2) and
 * FCM HTTP v1 (+ OAuth token endpoint) wire protocols: JWT signatures and claims, headers and
 * payloads checked independently; then end to end from a message to a push.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createSecureServer as createHttp2Server, type Http2SecureServer } from "node:http2";
import { createServer as createHttpServer, type Server } from "node:http";
import { createDecipheriv, createECDH, createPublicKey, generateKeyPairSync, hkdfSync, randomBytes, verify, type KeyObject } from "node:crypto";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import webpush from "web-push";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { loadHostTls } from "../../src/xmpp/tls.js";

const COMMANDS = "http://jabber.org/protocol/commands";
const PUSH = "urn:xmpp:push:0";

/** Decodes a compact JWT and checks its signature with `key`; returns header and claims. */
function checkJwt(jwt: string, key: KeyObject, alg: "ES256" | "RS256") {
  const [h, c, sig] = jwt.split(".");
  const header = JSON.parse(Buffer.from(h!, "base64url").toString()) as Record<string, string>;
  const claims = JSON.parse(Buffer.from(c!, "base64url").toString()) as Record<string, unknown>;
  const ok = verify("sha256", Buffer.from(`${h}.${c}`), alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key, Buffer.from(sig!, "base64url"));
  return { header, claims, ok };
}

interface Seen { path: string; headers: Record<string, string | string[] | undefined>; body: string }

/** RFC 8291 §3–4: the user agent's side — decrypts an aes128gcm Web Push message body. */
function decryptWebPush(body: Buffer, ua: ReturnType<typeof createECDH>, authSecret: Buffer): string {
  const salt = body.subarray(0, 16);
  const idlen = body[20]!;
  const asPublic = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const ecdhSecret = ua.computeSecret(asPublic);
  const keyInfo = Buffer.concat([Buffer.from("WebPush: info\0"), ua.getPublicKey(), asPublic]);
  const ikm = Buffer.from(hkdfSync("sha256", ecdhSecret, authSecret, keyInfo, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  // The last record ends with the 0x02 delimiter, then zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  assert.equal(padded[end], 2, "last-record delimiter");
  return padded.subarray(0, end).toString("utf8");
}

describe("push app server: APNs, FCM and Web Push", () => {
  let server: TestServer;
  let dir: string;
  let apnsServer: Http2SecureServer;
  let fcmServer: Server;
  const apnsSeen: Seen[] = [];
  const fcmSeen: Seen[] = [];
  const tokenRequests: string[] = [];
  const goneTokens = new Set<string>();
  const apnsKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const fcmKey = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const clients: Connected[] = [];
  let pushService: HttpsServer;
  const webSeen: Array<{ path: string; headers: Record<string, string | string[] | undefined>; body: Buffer }> = [];
  const vapid = webpush.generateVAPIDKeys();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "parley-push-"));
    const tls = (await loadHostTls(["localhost"], {}, dir)).get("localhost")!;
    apnsServer = createHttp2Server({ cert: tls.cert, key: tls.key }, (req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (d: string) => { body += d; });
      req.on("end", () => {
        apnsSeen.push({ path: req.url, headers: req.headers, body });
        const token = decodeURIComponent(req.url.split("/").pop()!);
        if (goneTokens.has(token)) {
          res.writeHead(410, { "content-type": "application/json" });
          return res.end(JSON.stringify({ reason: "Unregistered", timestamp: Date.now() }));
        }
        res.writeHead(200, { "apns-id": "00000000-0000-0000-0000-000000000001" });
        res.end();
      });
    });
    await new Promise<void>((r) => apnsServer.listen(0, "127.0.0.1", r));
    fcmServer = createHttpServer((req, res) => {
      let body = "";
      req.on("data", (d) => { body += d; });
      req.on("end", () => {
        if (req.url === "/token") {
          tokenRequests.push(body);
          res.writeHead(200, { "content-type": "application/json" });
          return res.end(JSON.stringify({ access_token: "ya29.test-access", expires_in: 3599, token_type: "Bearer" }));
        }
        fcmSeen.push({ path: req.url!, headers: req.headers, body });
        const token = (JSON.parse(body) as { message: { token: string } }).message.token;
        if (goneTokens.has(token)) {
          res.writeHead(404, { "content-type": "application/json" });
          return res.end(JSON.stringify({ error: { code: 404, status: "NOT_FOUND", details: [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode: "UNREGISTERED" }] } }));
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ name: "projects/parley-test/messages/1" }));
      });
    });
    await new Promise<void>((r) => fcmServer.listen(0, "127.0.0.1", r));
    pushService = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (d: Buffer) => chunks.push(d));
      req.on("end", () => {
        webSeen.push({ path: req.url!, headers: req.headers, body: Buffer.concat(chunks) });
        res.writeHead(goneTokens.has(req.url!) ? 410 : 201);
        res.end();
      });
    });
    await new Promise<void>((r) => pushService.listen(0, "127.0.0.1", r));
    writeFileSync(join(dir, "vapid.key"), vapid.privateKey);
    const fcmBase = `http://127.0.0.1:${(fcmServer.address() as AddressInfo).port}`;
    const apnsBase = `https://127.0.0.1:${(apnsServer.address() as AddressInfo).port}`;
    writeFileSync(join(dir, "AuthKey_TESTKEY123.p8"), apnsKey.privateKey.export({ type: "pkcs8", format: "pem" }));
    writeFileSync(join(dir, "service-account.json"), JSON.stringify({
      type: "service_account", project_id: "parley-test", private_key_id: "key-1",
      private_key: fcmKey.privateKey.export({ type: "pkcs8", format: "pem" }),
      client_email: "push@parley-test.iam.gserviceaccount.com", token_uri: `${fcmBase}/token`,
    }));
    server = await startTestServer({ modules: {
      push: { coalesceSeconds: 0.2 },
      appserver: {
        apns: { keyFile: join(dir, "AuthKey_TESTKEY123.p8"), keyId: "TESTKEY123", teamId: "TEAM123456", topic: "chat.parley.app",
          production: apnsBase, sandbox: apnsBase, insecureTls: true },
        fcm: { serviceAccountFile: join(dir, "service-account.json"), endpoint: fcmBase },
        // The local push service is on loopback: only this test may allow that.
        webpush: { publicKey: vapid.publicKey, privateKeyFile: join(dir, "vapid.key"), subject: "mailto:ops@parley.test", insecureTls: true,
          allowedHosts: ["127.0.0.1"], allowPrivateAddresses: true },
      },
    } });
    for (const u of ["alice", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
    apnsServer.close();
    pushService.close();
    fcmServer.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const login = async (user: string, resource: string) => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource });
    clients.push(c);
    return c;
  };
  /** Registers a device in one step, as Conversations does, and enables push with what comes back. */
  const registerAndEnable = async (c: Connected, command: string, fields: Record<string, string>) => {
    const reply = await c.iq(xml("iq", { type: "set", to: "push.localhost" }, xml("command", { xmlns: COMMANDS, node: command, action: "execute" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" }, ...Object.entries(fields).map(([k, v]) => xml("field", { var: k }, xml("value", {}, v)))))));
    const cmd = reply.getChild("command", COMMANDS)!;
    assert.equal(cmd.attrs.status, "completed");
    const values = Object.fromEntries(cmd.getChild("x", "jabber:x:data")!.getChildren("field").map((f) => [f.attrs.var, f.getChildText("value")]));
    await c.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: PUSH, jid: values.jid!, node: values.node! },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE" }, xml("value", {}, "http://jabber.org/protocol/pubsub#publish-options")),
        xml("field", { var: "secret" }, xml("value", {}, values.secret!))))));
    return values as { jid: string; node: string; secret: string };
  };
  const waitFor = async (cond: () => boolean, ms = 5000) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error("condition not met");
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it("offers its registration commands", async () => {
    const alice = await login("alice", "disco");
    const items = await alice.iq(xml("iq", { type: "get", to: "push.localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items", node: COMMANDS })));
    assert.deepEqual(items.getChild("query")!.getChildren("item").map((i) => i.attrs.node), ["register-push-apns", "register-push-fcm", "register-push-webpush"]);
    await alice.stop();
  });

  it("APNs: a message for an offline iPhone becomes one HTTP/2 push with a valid ES256 provider token and the right headers", async () => {
    const phone = await login("alice", "iphone");
    const reg = await registerAndEnable(phone, "register-push-apns", { token: "a1b2c3d4e5", sandbox: "true" });
    await phone.stop();
    const bob = await login("bob", "b");
    const before = apnsSeen.length;
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat", id: "apns1" }, xml("body", {}, "secret plans")));
    await waitFor(() => apnsSeen.length > before);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(apnsSeen.length - before, 1, "exactly one push");
    const seen = apnsSeen[before]!;
    assert.equal(seen.path, "/3/device/a1b2c3d4e5");
    assert.equal(seen.headers["apns-topic"], "chat.parley.app");
    assert.equal(seen.headers["apns-push-type"], "alert");
    assert.equal(seen.headers["apns-priority"], "10");
    assert.ok(seen.headers["apns-collapse-id"]);
    const jwt = checkJwt(String(seen.headers.authorization).replace(/^bearer /, ""), apnsKey.publicKey, "ES256");
    assert.ok(jwt.ok, "ES256 signature verifies with the .p8 key's public half");
    assert.equal(jwt.header.alg, "ES256");
    assert.equal(jwt.header.kid, "TESTKEY123");
    assert.equal(jwt.claims.iss, "TEAM123456");
    assert.ok(Math.abs(Number(jwt.claims.iat) - Date.now() / 1000) < 60);
    const payload = JSON.parse(seen.body) as { aps: { alert: { body: string }; badge: number }; "last-message-sender": string };
    assert.equal(payload.aps.alert.body, "You have a new message", "the body stays on the server unless the operator allows it");
    assert.equal(payload.aps.badge, 1);
    assert.equal(payload["last-message-sender"], "bob@localhost/b");

    // The device is gone: APNs answers 410, the registration is removed on both sides.
    goneTokens.add("a1b2c3d4e5");
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat", id: "apns2" }, xml("body", {}, "still there?")));
    await waitFor(() => apnsSeen.length > before + 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await server.storage.documents.get("push.localhost", `push-device:${reg.node}`), undefined, "the app server dropped the device");
  });

  it("FCM: an OAuth token from the service account (RS256 JWT grant), cached; the message sent to the v1 endpoint; UNREGISTERED removes the device", async () => {
    const phone = await login("bob", "android");
    const reg = await registerAndEnable(phone, "register-push-fcm", { token: "fcm-token-1", "android-id": "abc" });
    await phone.stop();
    const alice = await login("alice", "a");
    const before = fcmSeen.length;
    for (const id of ["f1", "f2"]) {
      await alice.xmpp.send(xml("message", { to: "bob@localhost", type: "chat", id }, xml("body", {}, "hi")));
      await new Promise((r) => setTimeout(r, 400)); // past the coalescing window
    }
    await waitFor(() => fcmSeen.length >= before + 2);
    assert.equal(tokenRequests.length, 1, "the access token is reused");
    const grant = new URLSearchParams(tokenRequests[0]!);
    assert.equal(grant.get("grant_type"), "urn:ietf:params:oauth:grant-type:jwt-bearer");
    const jwt = checkJwt(grant.get("assertion")!, fcmKey.publicKey, "RS256");
    assert.ok(jwt.ok, "RS256 signature verifies with the service account's public key");
    assert.equal(jwt.claims.iss, "push@parley-test.iam.gserviceaccount.com");
    assert.equal(jwt.claims.scope, "https://www.googleapis.com/auth/firebase.messaging");
    assert.equal(Number(jwt.claims.exp) - Number(jwt.claims.iat), 3600);
    const seen = fcmSeen[before]!;
    assert.equal(seen.path, "/v1/projects/parley-test/messages:send");
    assert.equal(seen.headers.authorization, "Bearer ya29.test-access");
    const message = (JSON.parse(seen.body) as { message: { token: string; data: Record<string, string>; android: { priority: string } } }).message;
    assert.equal(message.token, "fcm-token-1");
    assert.equal(message.android.priority, "HIGH");
    assert.equal(message.data["last-message-sender"], "alice@localhost/a");

    goneTokens.add("fcm-token-1");
    await alice.xmpp.send(xml("message", { to: "bob@localhost", type: "chat", id: "f3" }, xml("body", {}, "gone?")));
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(await server.storage.documents.get("push.localhost", `push-device:${reg.node}`), undefined, "the app server dropped the device");
    assert.ok(!(await server.storage.pubsub.items("push.localhost", "bob@localhost")).some((i) => i.id === reg.node), "and its place in the account's devices");
  });

  it("a publish with the wrong secret, or from another user, is refused and pushes nothing", async () => {
    const carol = await login("bob", "spoof");
    const reg = await registerAndEnable(carol, "register-push-fcm", { token: "fcm-token-2" });
    const alice = await login("alice", "spoof");
    const before = fcmSeen.length;
    const publish = (secret: string) => xml("iq", { type: "set", to: "push.localhost" }, xml("pubsub", { xmlns: "http://jabber.org/protocol/pubsub" },
      xml("publish", { node: reg.node }, xml("item", {}, xml("notification", { xmlns: PUSH }))),
      xml("publish-options", {}, xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE" }, xml("value", {}, "http://jabber.org/protocol/pubsub#publish-options")),
        xml("field", { var: "secret" }, xml("value", {}, secret))))));
    await assert.rejects(alice.iq(publish(reg.secret)), (err: { condition?: string }) => err.condition === "forbidden");
    await assert.rejects(carol.iq(publish("wrong")), (err: { condition?: string }) => err.condition === "forbidden");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(fcmSeen.length, before);
  });

  it("Web Push: VAPID (RFC 8292) signed for the push service's origin; the payload decrypts with the subscription's keys (RFC 8291); 410 removes it", async () => {
    const ua = createECDH("prime256v1");
    ua.generateKeys();
    const authSecret = randomBytes(16);
    const endpoint = `https://127.0.0.1:${(pushService.address() as AddressInfo).port}/push/sub-1`;
    const browser = await login("alice", "browser");
    const reg = await registerAndEnable(browser, "register-push-webpush", {
      endpoint, p256dh: ua.getPublicKey().toString("base64url"), auth: authSecret.toString("base64url"),
    });
    await browser.stop();
    const bob = await login("bob", "web");
    const before = webSeen.length;
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat", id: "w1" }, xml("body", {}, "hello browser")));
    await waitFor(() => webSeen.length > before);
    const seen = webSeen[before]!;
    assert.equal(seen.path, "/push/sub-1");
    assert.equal(seen.headers["content-encoding"], "aes128gcm");
    assert.ok(Number(seen.headers.ttl) > 0);
    const auth = /^vapid t=([^,]+), k=(.+)$/.exec(String(seen.headers.authorization));
    assert.ok(auth, `VAPID authorization: ${seen.headers.authorization}`);
    const k = Buffer.from(auth[2]!, "base64url");
    const key = createPublicKey({ key: { kty: "EC", crv: "P-256", x: k.subarray(1, 33).toString("base64url"), y: k.subarray(33).toString("base64url") }, format: "jwk" });
    const jwt = checkJwt(auth[1]!, key, "ES256");
    assert.ok(jwt.ok, "VAPID JWT verifies with k");
    assert.equal(jwt.claims.aud, new URL(endpoint).origin);
    assert.equal(jwt.claims.sub, "mailto:ops@parley.test");
    assert.ok(Number(jwt.claims.exp) <= Date.now() / 1000 + 24 * 3600);
    const payload = JSON.parse(decryptWebPush(seen.body, ua, authSecret)) as Record<string, string>;
    assert.equal(payload.type, "message");
    assert.equal(payload["message-count"], "1");
    assert.equal(payload["last-message-sender"], "bob@localhost/web");

    goneTokens.add("/push/sub-1");
    await new Promise((r) => setTimeout(r, 300));
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat", id: "w2" }, xml("body", {}, "gone?")));
    await waitFor(() => webSeen.length > before + 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await server.storage.documents.get("push.localhost", `push-device:${reg.node}`), undefined);
  });
});

describe("push app server: Web Push endpoints cannot point the server at itself or the LAN (SSRF)", () => {
  let dir: string;
  let victim: HttpsServer;
  let victimPort: number;
  let connections = 0;
  const servers: TestServer[] = [];
  const clients: Connected[] = [];
  const vapid = webpush.generateVAPIDKeys();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "parley-ssrf-"));
    writeFileSync(join(dir, "vapid.key"), vapid.privateKey);
    const tls = (await loadHostTls(["localhost"], {}, dir)).get("localhost")!;
    // Stands for anything on the server's own machine or network: it must never see a connection.
    victim = createHttpsServer({ cert: tls.cert, key: tls.key }, (_req, res) => { res.writeHead(201); res.end(); });
    victim.on("connection", () => { connections++; });
    await new Promise<void>((r) => victim.listen(0, "127.0.0.1", r));
    victimPort = (victim.address() as AddressInfo).port;
  });
  after(async () => {
    for (const c of clients) await c.stop();
    for (const s of servers) await s.cleanup();
    victim.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const start = async (webpushOptions: Record<string, unknown> = {}) => {
    const server = await startTestServer({ modules: { appserver: {
      webpush: { publicKey: vapid.publicKey, privateKeyFile: join(dir, "vapid.key"), subject: "mailto:ops@parley.test", insecureTls: true, ...webpushOptions },
    } } });
    servers.push(server);
    await server.accounts.create("mallory@localhost", "pw");
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "mallory", password: "pw", resource: "r" });
    clients.push(c);
    return c;
  };
  const register = (c: Connected, endpoint: string) => c.iq(xml("iq", { type: "set", to: "push.localhost" },
    xml("command", { xmlns: COMMANDS, node: "register-push-webpush", action: "execute" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        ...Object.entries({ endpoint, p256dh: createECDH("prime256v1").generateKeys().toString("base64url"), auth: randomBytes(16).toString("base64url") })
          .map(([k, v]) => xml("field", { var: k }, xml("value", {}, v)))))));
  const refused = async (c: Connected, endpoint: string) => {
    await assert.rejects(register(c, endpoint), (err: { condition?: string }) => err.condition === "not-acceptable", endpoint);
  };

  it("with the default allowlist, loopback, metadata and private endpoints (any spelling), plain http and credentials are refused at registration, and nothing is contacted", async () => {
    const mallory = await start();
    for (const endpoint of [
      `https://127.0.0.1:${victimPort}/push/x`, `https://localhost:${victimPort}/push/x`, `https://[::1]:${victimPort}/x`,
      `https://[::ffff:127.0.0.1]:${victimPort}/x`, `https://2130706433:${victimPort}/x`, `https://0x7f.1:${victimPort}/x`,
      "https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/latest/meta-data/", "https://10.0.0.1/x",
      "https://example.com/push", "http://fcm.googleapis.com/fcm/send/x", "https://user:pw@fcm.googleapis.com/fcm/send/x", "not a url",
    ]) await refused(mallory, endpoint);
    assert.equal(connections, 0);
  });

  it("a stored registration that points at loopback (made before the policy) is never contacted when a push is due, and is dropped", async () => {
    const mallory = await start();
    const server = servers.at(-1)!;
    await server.accounts.create("victor@localhost", "pw");
    const node = "legacy-node";
    await server.storage.documents.set("push.localhost", `push-device:${node}`, xml("device", { xmlns: PUSH, type: "webpush", owner: "mallory@localhost",
      secret: "s3cret", token: `https://127.0.0.1:${victimPort}/push/x`, sandbox: "false",
      p256dh: createECDH("prime256v1").generateKeys().toString("base64url"), auth: randomBytes(16).toString("base64url") }).toString());
    await mallory.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: PUSH, jid: "push.localhost", node },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE" }, xml("value", {}, "http://jabber.org/protocol/pubsub#publish-options")),
        xml("field", { var: "secret" }, xml("value", {}, "s3cret"))))));
    await mallory.stop();
    const victor = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "victor", password: "pw", resource: "v" });
    clients.push(victor);
    await victor.xmpp.send(xml("message", { to: "mallory@localhost", type: "chat", id: "ssrf" }, xml("body", {}, "wake up")));
    for (let i = 0; i < 100 && await server.storage.documents.get("push.localhost", `push-device:${node}`); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(connections, 0, "the endpoint was not contacted");
    assert.equal(await server.storage.documents.get("push.localhost", `push-device:${node}`), undefined, "the registration is dropped");
  });

  it("redirects are not followed: a push service answering 307 to a local address does not make the server go there", async () => {
    const tls = (await loadHostTls(["localhost"], {}, dir)).get("localhost")!;
    let redirected = 0;
    const redirector = createHttpsServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      req.resume();
      redirected++;
      res.writeHead(307, { location: `https://127.0.0.1:${victimPort}/stolen` });
      res.end();
    });
    await new Promise<void>((r) => redirector.listen(0, "127.0.0.1", r));
    try {
      const mallory = await start({ allowedHosts: ["127.0.0.1"], allowPrivateAddresses: true });
      const server = servers.at(-1)!;
      const endpoint = `https://127.0.0.1:${(redirector.address() as AddressInfo).port}/push/r`;
      const reply = await register(mallory, endpoint);
      const values = Object.fromEntries(reply.getChild("command", COMMANDS)!.getChild("x", "jabber:x:data")!.getChildren("field").map((f) => [f.attrs.var, f.getChildText("value")]));
      await mallory.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: PUSH, jid: values.jid!, node: values.node! },
        xml("x", { xmlns: "jabber:x:data", type: "submit" },
          xml("field", { var: "FORM_TYPE" }, xml("value", {}, "http://jabber.org/protocol/pubsub#publish-options")),
          xml("field", { var: "secret" }, xml("value", {}, values.secret!))))));
      await mallory.stop();
      await server.accounts.create("rita@localhost", "pw");
      const rita = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "rita", password: "pw", resource: "r" });
      clients.push(rita);
      await rita.xmpp.send(xml("message", { to: "mallory@localhost", type: "chat", id: "redir" }, xml("body", {}, "hi")));
      for (let i = 0; i < 100 && redirected === 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(redirected, 1, "the push went to the push service");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(connections, 0, "and not on to where it redirected");
    } finally {
      redirector.close();
    }
  });

  it("an allowed host name is still refused when it resolves to a non-public address; an allowed IP literal likewise", async () => {
    const mallory = await start({ allowedHosts: ["localhost", "127.0.0.1", "fcm.googleapis.com"] });
    await refused(mallory, `https://localhost:${victimPort}/push/x`);
    await refused(mallory, `https://127.0.0.1:${victimPort}/push/x`);
    await refused(mallory, `https://LOCALHOST.:${victimPort}/push/x`);
    assert.equal(connections, 0);
  });
});


describe("push app server: registrations per account are bounded and expire", () => {
  let dir: string;
  let server: TestServer;
  const clients: Connected[] = [];
  const fcmKey = generateKeyPairSync("rsa", { modulusLength: 2048 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "parley-devices-"));
    writeFileSync(join(dir, "service-account.json"), JSON.stringify({
      type: "service_account", project_id: "parley-test", private_key: fcmKey.privateKey.export({ type: "pkcs8", format: "pem" }),
      client_email: "push@parley-test.iam.gserviceaccount.com", token_uri: "http://127.0.0.1:9/token",
    }));
    server = await startTestServer({ modules: { appserver: {
      fcm: { serviceAccountFile: join(dir, "service-account.json"), endpoint: "http://127.0.0.1:9" },
      maxDevicesPerAccount: 10, deviceExpiryDays: 30, expiryCheckMinutes: 0.005,
    } } });
    for (const u of ["carol", "dora", "ed"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const login = async (user: string) => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource: "r" });
    clients.push(c);
    return c;
  };
  const register = async (c: Connected, token: string) => {
    const reply = await c.iq(xml("iq", { type: "set", to: "push.localhost" }, xml("command", { xmlns: COMMANDS, node: "register-push-fcm", action: "execute" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" }, xml("field", { var: "token" }, xml("value", {}, token))))));
    const fields = reply.getChild("command", COMMANDS)!.getChild("x", "jabber:x:data")!.getChildren("field");
    return Object.fromEntries(fields.map((f) => [f.attrs.var, f.getChildText("value")])) as { node: string; secret: string };
  };
  const stored = (node: string) => server.storage.documents.get("push.localhost", `push-device:${node}`);
  const devices = async (user: string) => (await server.storage.pubsub.items("push.localhost", `${user}@localhost`)).map((i) => i.id);

  it("60 registrations from one account leave the 10 most recent; the same device registering again keeps its node and secret", async () => {
    const carol = await login("carol");
    const regs = [];
    for (let i = 0; i < 60; i++) regs.push(await register(carol, `fcm-token-${i}`));
    for (const r of regs.slice(0, 50)) assert.equal(await stored(r.node), undefined, "replaced registrations are gone");
    for (const r of regs.slice(50)) assert.ok(await stored(r.node));
    assert.deepEqual(new Set(await devices("carol")), new Set(regs.slice(50).map((r) => r.node)));
    // A publish to a replaced node is item-not-found: the user's server then disables it (XEP-0357 §7).
    await assert.rejects(carol.iq(xml("iq", { type: "set", to: "push.localhost" }, xml("pubsub", { xmlns: "http://jabber.org/protocol/pubsub" },
      xml("publish", { node: regs[0]!.node }, xml("item", {}, xml("notification", { xmlns: PUSH })))))), (err: { condition?: string }) => err.condition === "item-not-found");
    const again = await register(carol, "fcm-token-55");
    assert.deepEqual(again, regs[55]);
    assert.equal((await devices("carol")).length, 10);
  });

  it("a device inactive for longer than deviceExpiryDays is removed; an active one stays; a deleted account's devices go", async () => {
    const dora = await login("dora");
    const old = await register(dora, "dora-old-phone");
    const current = await register(dora, "dora-phone");
    // Last active 31 days ago, as a device that stopped registering and was never pushed to since.
    await server.storage.pubsub.publish("push.localhost", "dora@localhost", { id: old.node, publisher: "push.localhost", payload: "", publishedAt: Date.now() - 31 * 86_400_000 }, 10);
    for (let i = 0; i < 200 && await stored(old.node); i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(await stored(old.node), undefined, "expired");
    assert.ok(await stored(current.node), "still registered");
    assert.deepEqual(await devices("dora"), [current.node]);

    const ed = await login("ed");
    const reg = await register(ed, "ed-phone");
    await ed.stop();
    await server.accounts.remove("ed@localhost");
    for (let i = 0; i < 100 && await stored(reg.node); i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(await stored(reg.node), undefined);
    assert.deepEqual(await devices("ed"), []);
  });
});
