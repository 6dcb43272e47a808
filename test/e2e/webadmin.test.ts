/**
 * The web admin end to end. In real Chromium (playwright-core driving Debian's chromium): an admin
 * logs in with the XMPP password and uses every page — status, users (search, create, reset
 * password, kick, disable, delete), group chats (inspect, destroy), uploads (usage, prune), abuse
 * reports (block, delete), configuration (secrets hidden) — with screenshots kept in
 * test-artifacts/webadmin/. Over plain HTTPS requests (undici): forged cookies, missing and wrong
 * CSRF tokens, a foreign Origin, a non-admin, throttled logins, plain HTTP, the security headers.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { Agent, request } from "undici";
import type { BrowserContext, Page } from "playwright-core";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(process.cwd(), "test-artifacts", "webadmin");
const MUC = "http://jabber.org/protocol/muc";
const ROOM = "team@conference.localhost";
const HOSTILE = `<script>alert("x")</script><b>bold</b> & co`;
const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: string }
const http = (url: string, opts: { method?: "GET" | "POST"; cookie?: string; form?: Record<string, string>; origin?: string } = {}): Promise<Reply> =>
  request(url, {
    method: opts.method ?? (opts.form ? "POST" : "GET"), dispatcher,
    headers: {
      ...(opts.cookie ? { cookie: opts.cookie } : {}), ...(opts.origin ? { origin: opts.origin } : {}),
      ...(opts.form ? { "content-type": "application/x-www-form-urlencoded" } : {}),
    },
    ...(opts.form ? { body: new URLSearchParams(opts.form).toString() } : {}),
  }).then(async (r) => ({ status: r.statusCode, headers: r.headers, body: await r.body.text() }));

const setCookies = (r: Reply) => ([] as string[]).concat(r.headers["set-cookie"] ?? []);
const cookiePair = (r: Reply, name: string) => setCookies(r).find((c) => c.startsWith(`${name}=`))?.split(";")[0];
/** The value of a hidden input in a page (the pages are ours and regular; this is test plumbing). */
const hidden = (body: string, name: string) => new RegExp(`name="${name}" value="([^"]*)"`).exec(body)?.[1];

describe("web admin", () => {
  let server: TestServer;
  let base: string;
  const clients: Connected[] = [];
  const login = async (user: string, password = "pw", resource = "r") => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password, resource });
    clients.push(c);
    return c;
  };
  /** Logs in over plain HTTPS requests; returns the session cookie and the CSRF token of the status page. */
  const httpLogin = async (jid: string, password: string): Promise<{ status: number; cookie?: string; csrf?: string }> => {
    const form = await http(`${base}/admin/login`);
    const nonce = cookiePair(form, "__Host-parley-login")!;
    const r = await http(`${base}/admin/login`, { cookie: nonce, form: { token: hidden(form.body, "token")!, jid, password } });
    const cookie = cookiePair(r, "__Host-parley-admin");
    if (!cookie) return { status: r.status };
    const status = await http(`${base}/admin`, { cookie });
    return { status: r.status, cookie, csrf: hidden(status.body, "csrf")! };
  };

  before(async () => {
    server = await startTestServer({
      admins: ["boss@localhost"],
      components: { "bridge.localhost": { secret: "component-shared-secret" } },
      metrics: { token: "metrics-bearer-token-value" },
      webAdmin: { maxFailuresPerAccount: 3 },
    });
    base = `https://127.0.0.1:${server.ports.https}`;
    for (const u of ["boss", "mallory", "alice", "bob", "victim"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  describe("over HTTPS requests", () => {
    it("sets HttpOnly, Secure, SameSite=Strict __Host- cookies and strict security headers", async () => {
      const form = await http(`${base}/admin/login`);
      assert.equal(form.status, 200);
      assert.match(String(form.headers["content-security-policy"]), /default-src 'none'/);
      assert.match(String(form.headers["content-security-policy"]), /frame-ancestors 'none'/);
      assert.equal(form.headers["x-frame-options"], "DENY");
      assert.equal(form.headers["x-content-type-options"], "nosniff");
      const loginCookie = setCookies(form).find((c) => c.startsWith("__Host-parley-login="))!;
      for (const attr of ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"]) assert.ok(loginCookie.split("; ").includes(attr), attr);
      const nonce = loginCookie.split(";")[0]!;
      const r = await http(`${base}/admin/login`, { cookie: nonce, form: { token: hidden(form.body, "token")!, jid: "boss@localhost", password: "pw" } });
      assert.equal(r.status, 303);
      const session = setCookies(r).find((c) => c.startsWith("__Host-parley-admin="))!;
      for (const attr of ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"]) assert.ok(session.split("; ").includes(attr), attr);
    });

    it("refuses forged and missing session cookies", async () => {
      for (const cookie of [undefined, "__Host-parley-admin=forged", `__Host-parley-admin=${"A".repeat(43)}`]) {
        const r = await http(`${base}/admin/users`, cookie ? { cookie } : {});
        assert.equal(r.status, 303);
        assert.equal(r.headers.location, "/admin/login");
        const post = await http(`${base}/admin/users/create`, { ...(cookie ? { cookie } : {}), form: { csrf: "x", jid: "forged@localhost", password: "pw" } });
        assert.equal(post.status, 401);
      }
      assert.equal(await server.storage.accounts.exists("forged@localhost"), false);
    });

    it("refuses a POST without the CSRF token, with a wrong one, or from another origin; accepts the right one", async () => {
      const { cookie, csrf } = await httpLogin("boss@localhost", "pw");
      assert.ok(cookie && csrf);
      const create = (form: Record<string, string>, origin?: string) => http(`${base}/admin/users/create`, { cookie, form, ...(origin ? { origin } : {}) });
      assert.equal((await create({ jid: "csrf1@localhost", password: "pw" })).status, 403, "no token");
      assert.equal((await create({ jid: "csrf1@localhost", password: "pw", csrf: `${csrf}x` })).status, 403, "wrong token");
      assert.equal((await create({ jid: "csrf1@localhost", password: "pw", csrf: "" })).status, 403, "empty token");
      assert.equal((await create({ jid: "csrf1@localhost", password: "pw", csrf }, "https://evil.example")).status, 403, "foreign origin");
      assert.equal(await server.storage.accounts.exists("csrf1@localhost"), false);
      const other = await httpLogin("boss@localhost", "pw");
      assert.equal((await create({ jid: "csrf1@localhost", password: "pw", csrf: other.csrf! })).status, 403, "another session's token");
      const ok = await create({ jid: "csrf1@localhost", password: "pw", csrf }, base);
      assert.equal(ok.status, 303);
      assert.equal(await server.storage.accounts.exists("csrf1@localhost"), true);
      // Logging out needs the token too, and ends the session.
      assert.equal((await http(`${base}/admin/logout`, { cookie, form: {} })).status, 403);
      assert.equal((await http(`${base}/admin/logout`, { cookie, form: { csrf } })).status, 303);
      assert.equal((await http(`${base}/admin`, { cookie })).headers.location, "/admin/login");
    });

    it("refuses a login without the form token, a non-admin, a wrong password; throttles an account", async () => {
      const noToken = await http(`${base}/admin/login`, { form: { jid: "boss@localhost", password: "pw" } });
      assert.equal(noToken.status, 403);
      assert.equal(cookiePair(noToken, "__Host-parley-admin"), undefined);
      const nonAdmin = await httpLogin("mallory@localhost", "pw");
      assert.equal(nonAdmin.status, 401);
      assert.equal(nonAdmin.cookie, undefined, "no session for a non-admin, even with the right password");
      // Wrong passwords for one account: after 3 (webAdmin.maxFailuresPerAccount) even the right one is refused for now.
      for (let i = 0; i < 3; i++) assert.equal((await httpLogin("victim@localhost", "nope")).status, 401);
      assert.equal((await httpLogin("victim@localhost", "pw")).status, 429);
    });

    it("is not served over plain HTTP", async () => {
      const s2 = await startTestServer({ admins: ["boss@localhost"], listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: 0, https: 0, http: 0, httpAddress: "127.0.0.1" } });
      try {
        const r = await request(`http://127.0.0.1:${s2.ports.http}/admin/login`);
        assert.equal(r.statusCode, 403);
        await r.body.dump();
      } finally {
        await s2.cleanup();
      }
    });
  });

  describe("in Chromium", () => {
    let context: BrowserContext | undefined;
    let pageOf: Page;
    let skip: string | undefined;
    let alice: Connected;

    before(async () => {
      if (!existsSync(CHROMIUM)) {
        skip = `no browser: ${CHROMIUM} is missing (Debian package chromium; .ci/run installs it when it can)`;
        return;
      }
      const { chromium } = await import("playwright-core");
      try {
        context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "parley-chromium-")), {
          executablePath: CHROMIUM, headless: true, ignoreHTTPSErrors: true,
          args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
      } catch (err) {
        skip = `Chromium does not start here: ${(err as Error).message.split("\n")[0]}`;
        return;
      }
      pageOf = context.pages()[0] ?? await context.newPage();
      if (existsSync(ARTIFACTS)) rmSync(ARTIFACTS, { recursive: true, force: true });
      mkdirSync(ARTIFACTS, { recursive: true });
      // Things to administer: alice online in a persistent room with a hostile name, an upload, a report.
      alice = await login("alice");
      await alice.xmpp.send(xml("presence", { to: `${ROOM}/alice` }, xml("x", { xmlns: MUC })));
      await alice.waitFor((s) => s.name === "presence" && s.attrs.from === `${ROOM}/alice`);
      await alice.iq(xml("iq", { type: "set", to: ROOM }, xml("query", { xmlns: `${MUC}#owner` }, xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE" }, xml("value", {}, `${MUC}#roomconfig`)),
        xml("field", { var: "muc#roomconfig_roomname" }, xml("value", {}, HOSTILE)),
        xml("field", { var: "muc#roomconfig_persistentroom" }, xml("value", {}, "1"))))));
      const slot = await alice.iq(xml("iq", { type: "get", to: "upload.localhost" },
        xml("request", { xmlns: "urn:xmpp:http:upload:0", filename: "cat.jpg", size: "2048", "content-type": "image/jpeg" })));
      const put = await request(slot.getChild("slot", "urn:xmpp:http:upload:0")!.getChild("put")!.attrs.url.replace("upload.localhost", "127.0.0.1"),
        { method: "PUT", body: Buffer.alloc(2048, 1), headers: { "content-type": "image/jpeg" }, dispatcher });
      await put.body.dump();
      assert.equal(put.statusCode, 201);
      await alice.iq(xml("iq", { type: "set" }, xml("block", { xmlns: "urn:xmpp:blocking" }, xml("item", { jid: "bob@localhost" },
        xml("report", { xmlns: "urn:xmpp:reporting:1", reason: "urn:xmpp:reporting:spam" }, xml("text", {}, HOSTILE))))));
    });
    after(async () => { await context?.close(); });

    const shot = (name: string) => pageOf.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
    const flash = () => pageOf.locator(".flash").innerText();
    const submitLogin = async (jid: string, password: string) => {
      await pageOf.goto(`${base}/admin/login`);
      await pageOf.fill("input[name=jid]", jid);
      await pageOf.fill("input[name=password]", password);
      await pageOf.click("button[type=submit]");
    };

    it("a non-admin and a wrong password get the login page back, with no session", async (t) => {
      if (skip) return t.skip(skip);
      await submitLogin("mallory@localhost", "pw");
      assert.match(await pageOf.locator("[role=alert]").innerText(), /not an administrator/);
      await submitLogin("boss@localhost", "wrong");
      assert.match(await pageOf.locator("[role=alert]").innerText(), /Wrong JID or password/);
      assert.equal((await context!.cookies()).some((c) => c.name === "__Host-parley-admin"), false);
      await shot("login-refused");
    });

    it("the admin logs in and sees the status page: uptime, sessions, rates, storage, certificates", async (t) => {
      if (skip) return t.skip(skip);
      await submitLogin("boss@localhost", "pw");
      assert.equal(new URL(pageOf.url()).pathname, "/admin");
      assert.equal(await pageOf.locator("h1").innerText(), "Status");
      const cards = await pageOf.locator(".card").allInnerTexts();
      assert.ok(cards.some((c) => /^Uptime\n/.test(c)));
      assert.ok(cards.some((c) => c === "Sessions\n1"), cards.join(" | "));
      assert.ok(cards.some((c) => /^Stanzas in \/ s\n\d+\.\d$/.test(c)), cards.join(" | "));
      const cert = await pageOf.locator("table tbody tr").first().innerText();
      assert.match(cert, /^localhost\tCN=localhost/);
      assert.match(cert, /\d+ days\)$/);
      assert.match(await pageOf.locator("main").innerText(), /Driver: sqlite/);
      const cookie = (await context!.cookies()).find((c) => c.name === "__Host-parley-admin")!;
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.secure, true);
      assert.equal(cookie.sameSite, "Strict");
      await shot("status");
    });

    it("users: search, create, reset a password, end a session, disable, delete", async (t) => {
      if (skip) return t.skip(skip);
      await pageOf.goto(`${base}/admin/users`);
      await pageOf.fill("input[name=q]", "ali");
      await pageOf.click("form[method=get] button");
      assert.deepEqual(await pageOf.locator("tbody td:first-child").allInnerTexts(), ["alice@localhost"]);
      await shot("users-search");

      await pageOf.goto(`${base}/admin/users`);
      await pageOf.fill("form[action='/admin/users/create'] input[name=jid]", "newbie@localhost");
      await pageOf.fill("form[action='/admin/users/create'] input[name=password]", "newbie-pw");
      await pageOf.click("form[action='/admin/users/create'] button");
      assert.equal(await flash(), "Created newbie@localhost.");
      await (await login("newbie", "newbie-pw")).stop();
      // An existing JID is refused with the reason.
      await pageOf.goto(`${base}/admin/users`);
      await pageOf.fill("form[action='/admin/users/create'] input[name=jid]", "newbie@localhost");
      await pageOf.fill("form[action='/admin/users/create'] input[name=password]", "x");
      await pageOf.click("form[action='/admin/users/create'] button");
      assert.match(await flash(), /already exists/);

      // Alice's page lists her session; ending it ends her stream.
      await pageOf.goto(`${base}/admin/users/view?jid=alice@localhost`);
      assert.match(await pageOf.locator("table").first().innerText(), /^Resource\tAddress\tState\tPresence\t?\s*\nr\t127\.0\.0\.1\tconnected/);
      await shot("user");
      const ended = new Promise<string>((resolve) => alice.xmpp.on("error", (e: { condition?: string; name?: string }) => { if (e.name === "StreamError") resolve(e.condition!); }));
      await pageOf.locator("form[action='/admin/users/kick']").first().locator("button").click();
      assert.equal(await flash(), "Ended 1 session.");
      assert.equal(await ended, "policy-violation");
      assert.match(await pageOf.locator("main").innerText(), /No sessions\./);

      await pageOf.fill("form[action='/admin/users/password'] input[name=password]", "alice-new");
      await pageOf.click("form[action='/admin/users/password'] button");
      assert.equal(await flash(), "Password changed for alice@localhost.");
      alice = await login("alice", "alice-new");

      await pageOf.goto(`${base}/admin/users/view?jid=newbie@localhost`);
      await pageOf.click("form[action='/admin/users/disable'] button");
      assert.match(await flash(), /newbie@localhost is disabled/);
      assert.equal((await server.storage.accounts.get("newbie@localhost"))!.disabled, true);
      await pageOf.click("form[action='/admin/users/disable'] button");
      assert.equal((await server.storage.accounts.get("newbie@localhost"))!.disabled, false);
      await pageOf.click("form[action='/admin/users/delete'] button");
      assert.equal(await flash(), "Deleted newbie@localhost and all its data.");
      assert.equal(await server.storage.accounts.exists("newbie@localhost"), false);
    });

    it("devices (XEP-0388 user agents): listed on the user's page with their tokens, logged out by the admin", async (t) => {
      if (skip) return t.skip(skip);
      const id = "2f0b1a6e-6c1f-4d3a-9b1e-5a7c9d0e1f23";
      const now = Date.now();
      await server.storage.devices.put({ owner: "alice@localhost", id, software: HOSTILE, name: "Phone", firstSeen: now, lastSeen: now,
        current: { mechanism: "HT-SHA-256-NONE", hash: "x".repeat(43), expiresAt: now + 86_400_000, count: 0 } });
      await pageOf.goto(`${base}/admin/users/view?jid=alice@localhost`);
      const row = pageOf.locator("form[action='/admin/users/revoke-device']").locator("xpath=ancestor::tr");
      // The device's self-chosen name is shown as text, never as markup.
      assert.match(await row.innerText(), /on Phone — last seen .*, fast login until/);
      assert.ok((await row.innerText()).includes(HOSTILE));
      await shot("user-devices");
      await row.locator("button").click();
      assert.match(await flash(), /^Logged the device out/);
      assert.equal(await server.storage.devices.get("alice@localhost", id), undefined);
      assert.match(await pageOf.locator("main").innerText(), /No device has logged in/);
    });

    it("group chats: listed with the name escaped, inspected, destroyed with the occupants told", async (t) => {
      if (skip) return t.skip(skip);
      await alice.xmpp.send(xml("presence", { to: `${ROOM}/alice` }, xml("x", { xmlns: MUC })));
      await alice.waitFor((s) => s.name === "presence" && s.attrs.from === `${ROOM}/alice` && !s.attrs.type);
      await pageOf.goto(`${base}/admin/rooms`);
      assert.equal(await pageOf.locator("tbody td:nth-child(2)").first().innerText(), HOSTILE, "shown as text");
      assert.equal(await pageOf.locator("main script, main b").count(), 0, "no markup from the room's name");
      await shot("rooms");
      await pageOf.click(`a[href*='${encodeURIComponent(ROOM)}']`);
      const details = await pageOf.locator("main").innerText();
      assert.match(details, /Occupants now\t1/);
      assert.match(details, /alice@localhost\towner/);
      await shot("room");
      const mark = alice.inbox.length;
      await pageOf.fill("input[name=reason]", "Spring cleaning");
      await pageOf.click("form[action='/admin/rooms/destroy'] button");
      assert.equal(await flash(), `Destroyed ${ROOM}.`);
      const gone = await alice.waitFor((s) => alice.inbox.indexOf(s) >= mark && s.name === "presence" && s.attrs.type === "unavailable"
        && s.getChild("x", `${MUC}#user`)?.getChild("destroy") !== undefined);
      assert.equal(gone.getChild("x", `${MUC}#user`)!.getChild("destroy")!.getChildText("reason"), "Spring cleaning");
      assert.equal(await server.storage.rooms.get(ROOM), undefined);
    });

    it("uploads: usage per user, prune", async (t) => {
      if (skip) return t.skip(skip);
      await pageOf.goto(`${base}/admin/uploads`);
      assert.match(await pageOf.locator("tbody").innerText(), /^alice@localhost\t1\t2\.0 KiB$/);
      await shot("uploads");
      await pageOf.fill("input[name=days]", "0");
      await pageOf.click("form[action='/admin/uploads/prune'] button");
      assert.equal(await flash(), "Removed 1 upload.");
      assert.deepEqual(await server.storage.uploads.totals(), []);
    });

    it("abuse reports: shown escaped, the reported account disabled, the report deleted", async (t) => {
      if (skip) return t.skip(skip);
      await pageOf.goto(`${base}/admin/reports`);
      const row = await pageOf.locator("tbody tr").first().innerText();
      assert.ok(row.includes(`alice@localhost\tbob@localhost\tspam\t${HOSTILE}`), row);
      assert.equal(await pageOf.locator("main script, main b").count(), 0);
      await shot("reports");
      await pageOf.click("form[action='/admin/reports/block'] button");
      assert.equal(await flash(), "bob@localhost is disabled; its sessions ended.");
      assert.equal((await server.storage.accounts.get("bob@localhost"))!.disabled, true);
      await pageOf.click("form[action='/admin/reports/delete'] button");
      assert.equal(await flash(), "Report deleted.");
      assert.deepEqual(await server.storage.reports.list(10), []);
    });

    it("configuration: the effective config with secrets hidden", async (t) => {
      if (skip) return t.skip(skip);
      await pageOf.goto(`${base}/admin/config`);
      const text = await pageOf.locator("pre").innerText();
      assert.match(text, /admins:\n {2}- boss@localhost/);
      assert.match(text, /secret: \(hidden\)/);
      assert.match(text, /token: \(hidden\)/);
      assert.doesNotMatch(text, /component-shared-secret|metrics-bearer-token-value/);
      await shot("config");
      // The page loads nothing from elsewhere: every request it made was to this server.
      const requests: string[] = [];
      pageOf.on("request", (r) => requests.push(r.url()));
      await pageOf.reload();
      assert.ok(requests.length > 0 && requests.every((u) => u.startsWith(base)), requests.join());
    });

    it("logging out ends the session", async (t) => {
      if (skip) return t.skip(skip);
      await pageOf.click("header form button");
      assert.equal(new URL(pageOf.url()).pathname, "/admin/login");
      await pageOf.goto(`${base}/admin/users`);
      assert.equal(new URL(pageOf.url()).pathname, "/admin/login");
    });
  });
});
