/**
 * The built-in web chat in a real browser (Debian's chromium, driven by playwright-core): one user
 * registers on the page, another logs in; they chat both ways, one shares an image through HTTP
 * upload (XEP-0363) and the other sees it, and both talk in a group chat (XEP-0045). No request
 * may leave this machine, and the page's Content-Security-Policy must not get in Converse's way.
 * Screenshots go to test-artifacts/. Without chromium the test says SKIPPED and why.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { startTestServer, type TestServer } from "../helpers/server.js";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(import.meta.dirname, "../../test-artifacts");
const LOCAL_HOSTS = /^(localhost|[a-z0-9-]+\.localhost|127\.0\.0\.1|\[::1\])$/;

/** A small real PNG (a 32×32 gradient), so the receiving browser has an image to render. */
function png(): Buffer {
  const crc = (buf: Buffer) => {
    let c = ~0;
    for (const b of buf) { c ^= b; for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1)); }
    return ~c >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type), data]);
    const out = Buffer.alloc(8 + data.length + 4);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc(body), 8 + data.length);
    return out;
  };
  const size = 32;
  const rows = Buffer.alloc(size * (1 + size * 3));
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) rows.set([x * 8, y * 8, 160], y * (1 + size * 3) + 1 + x * 3);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

interface Watched { page: Page; outside: string[]; cspViolations: string[]; pageErrors: string[] }

describe("the web chat in Chromium", () => {
  const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is not installed (apt-get install chromium)`;
  let server: TestServer;
  let browser: Browser;
  let profile: string;
  const contexts: BrowserContext[] = [];
  let base: string;

  before(async () => {
    if (missing) return;
    mkdirSync(ARTIFACTS, { recursive: true });
    server = await startTestServer({ listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: null } });
    await server.accounts.create("bob@localhost", "bob-secret");
    base = `https://localhost:${server.ports.https}`;
    const { chromium } = await import("playwright-core");
    // Playwright gives the browser a fresh, empty profile (--user-data-dir) of its own; this
    // directory holds it, so nothing of a previous run is reused.
    profile = mkdtempSync(join(tmpdir(), "parley-chromium-"));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      env: { ...process.env, TMPDIR: profile },
    });
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    await server?.cleanup();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  /** A fresh browser context (its own storage) whose every request is checked to stay on this machine. */
  async function visitor(): Promise<Watched> {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    contexts.push(context);
    const outside: string[] = [];
    await context.route("**/*", (route) => {
      const url = new URL(route.request().url());
      if (url.protocol === "data:" || url.protocol === "blob:" || LOCAL_HOSTS.test(url.hostname)) return route.continue();
      outside.push(url.href);
      return route.abort();
    });
    const page = await context.newPage();
    page.on("websocket", (ws) => { if (!LOCAL_HOSTS.test(new URL(ws.url()).hostname)) outside.push(ws.url()); });
    const cspViolations: string[] = [];
    const pageErrors: string[] = [];
    page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
    page.on("pageerror", (e) => pageErrors.push(e.message));
    return { page, outside, cspViolations, pageErrors };
  }

  async function openChatWith(page: Page, jid: string): Promise<void> {
    await page.evaluate((hash) => { location.hash = hash; }, `#converse/chat?jid=${jid}`);
    await page.locator(`converse-chat[jid="${jid}"] .chat-textarea`).waitFor();
  }

  async function say(page: Page, scope: string, text: string): Promise<void> {
    const box = page.locator(`${scope} .chat-textarea`);
    await box.fill(text);
    await box.press("Enter");
  }

  const shot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `chat-${name}.png`) });

  it("two people register or log in, chat both ways, share an image and talk in a group chat", async (t) => {
    if (missing) return t.skip(missing);
    const alice = await visitor();
    const bob = await visitor();

    // Alice is new: she registers on the page (XEP-0077, offered to loopback) and is logged in.
    await alice.page.goto(`${base}/chat/#converse/register`);
    const form = alice.page.locator("converse-registration-form");
    await form.locator("input[name=username]").fill("alice");
    await form.locator("input[name=password]").fill("alice-secret");
    await shot(alice.page, "1-register");
    await form.locator("input[type=submit]").click();
    await alice.page.locator("converse-user-profile, .controlbox-heading--profile, a.show-profile").first().waitFor({ timeout: 20_000 });
    assert.ok(await server.storage.accounts.get("alice@localhost"), "the account exists");

    // Bob has an account: he logs in with the login form.
    await bob.page.goto(`${base}/chat/`);
    await bob.page.fill("#converse-login-jid", "bob");
    await bob.page.fill("#converse-login-password", "bob-secret");
    await shot(bob.page, "2-login");
    await bob.page.click("#converse-login [type=submit]");
    await bob.page.locator("a.show-profile").waitFor({ timeout: 20_000 });

    // 1:1 chat, both ways.
    await openChatWith(alice.page, "bob@localhost");
    await say(alice.page, 'converse-chat[jid="bob@localhost"]', "Hello Bob, from the web page");
    await openChatWith(bob.page, "alice@localhost");
    const bobChat = bob.page.locator('converse-chat[jid="alice@localhost"]');
    await bobChat.locator(".chat-msg__text", { hasText: "Hello Bob, from the web page" }).waitFor({ timeout: 20_000 });
    await say(bob.page, 'converse-chat[jid="alice@localhost"]', "Hi Alice, got it");
    const aliceChat = alice.page.locator('converse-chat[jid="bob@localhost"]');
    await aliceChat.locator(".chat-msg__text", { hasText: "Hi Alice, got it" }).waitFor({ timeout: 20_000 });
    await shot(alice.page, "3-chat-alice");
    await shot(bob.page, "4-chat-bob");

    // Alice shares an image through HTTP upload; Bob's browser shows it.
    await aliceChat.locator("input.fileupload").setInputFiles({ name: "gradient.png", mimeType: "image/png", buffer: png() });
    const image = bobChat.locator("img[src*='/upload/']").first();
    await image.waitFor({ timeout: 30_000 });
    const src = await image.getAttribute("src");
    // Upload links point at the host's own HTTPS listener (the upload service's domain is only its JID).
    const link = new URL(src!);
    assert.equal(link.protocol, "https:");
    assert.equal(link.hostname, "localhost");
    assert.ok(link.pathname.startsWith("/upload/"), link.pathname);
    await bob.page.waitForFunction((el) => el instanceof HTMLImageElement && el.complete && el.naturalWidth === 32, await image.elementHandle(), { timeout: 20_000 });
    await shot(bob.page, "5-image-bob");

    // A group chat on conference.localhost: both join and talk.
    const room = "lobby@conference.localhost";
    for (const v of [alice, bob]) {
      await v.page.evaluate((hash) => { location.hash = hash; }, `#converse/room?jid=${room}`);
      await v.page.locator(`converse-muc[jid="${room}"] .chat-textarea`).waitFor({ timeout: 20_000 });
    }
    const scope = `converse-muc[jid="${room}"]`;
    await say(alice.page, scope, "Welcome to the lobby");
    await bob.page.locator(`${scope} .chat-msg__text`, { hasText: "Welcome to the lobby" }).waitFor({ timeout: 20_000 });
    await say(bob.page, scope, "Thanks, glad to be here");
    // Converse asks the room for Alice's vCard through her occupant JID; the MUC module forwards it
    // to her client, which does not answer, and Bob's later stanzas wait behind that IQ until the
    // module gives up on it (30 s) — see the report of issue 14.
    await alice.page.locator(`${scope} .chat-msg__text`, { hasText: "Thanks, glad to be here" }).waitFor({ timeout: 60_000 });
    await shot(alice.page, "6-groupchat-alice");
    await shot(bob.page, "7-groupchat-bob");

    for (const v of [alice, bob]) {
      assert.deepEqual(v.outside, [], "no request leaves this machine");
      assert.deepEqual(v.cspViolations, [], "the Content-Security-Policy blocks nothing Converse needs");
      assert.deepEqual(v.pageErrors, [], "no uncaught errors in the page");
    }
  });
});
