/**
 * The web admin at /admin, on the HTTPS listener only: status, users, group chats, uploads, abuse
 * reports (XEP-0377) and the effective configuration, for the config's admins. Server-rendered
 * forms, no scripts. Every state-changing request is a POST carrying the session's CSRF token
 * (and, when the browser sends one, an Origin of this very site); cookies are HttpOnly, Secure,
 * SameSite=Strict and __Host- prefixed. Nothing here logs a password or keeps one.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { TLSSocket } from "node:tls";
import { randomBytes } from "node:crypto";
import { stringify as toYaml } from "yaml";
import { plain, type HttpHandler } from "../http/server.js";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import type { Storage } from "../storage/index.js";
import type { SessionView } from "../xmpp/sessions.js";
import type { Metrics } from "../metrics/index.js";
import { AccountError } from "../accounts.js";
import { AdminError, type AdminActions } from "./actions.js";
import { AdminLogins, LOGIN_COOKIE, SESSION_COOKIE, sameSecret, type AdminSession } from "./auth.js";
import { CONTENT_SECURITY_POLICY, STYLESHEET, button, csrfField, document, html, page, type Html } from "./html.js";
import type { CertificateSource, RoomAdmin, UploadAdmin } from "./sources.js";
import { describeDevice, revokeDevice, sessionsOfDevice } from "../modules/devices.js";

/** What the status page shows of federation: the s2s streams up now and how each authenticated. */
export type FederationSource = () => {
  outgoing: ReadonlyArray<{ local: string; remote: string; state: string; method?: string; queued: number; since: string }>;
  incoming: ReadonlyArray<{ address: string; local: string | undefined; domains: ReadonlyArray<{ domain: string; method: string }>; since: string }>;
};

export interface WebAdminDeps {
  config: Config;
  log: Logger;
  storage: Storage;
  sessions: SessionView;
  actions: AdminActions;
  logins: AdminLogins;
  certificates: CertificateSource;
  rooms: RoomAdmin | undefined;
  uploads: UploadAdmin | undefined;
  metrics: Metrics | undefined;
  federation: FederationSource;
  startedAt: number;
}

const MAX_BODY = 64 * 1024;
const USERS_PER_PAGE = 100;
const REPORTS_SHOWN = 200;

class HttpError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

function cookies(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  return out;
}

const cookie = (name: string, value: string, maxAgeSeconds?: number) =>
  `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=Strict${maxAgeSeconds !== undefined ? `; Max-Age=${maxAgeSeconds}` : ""}`;

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  if (!/^application\/x-www-form-urlencoded\b/i.test(req.headers["content-type"] ?? "")) throw new HttpError(415, "Forms only");
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, "Request too large");
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

function send(res: ServerResponse, status: number, body: Html, headers: Record<string, string | string[]> = {}): void {
  const text = body.value;
  res.writeHead(status, {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(text);
}

function redirect(res: ServerResponse, location: string, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(303, { Location: location, "Cache-Control": "no-store", "Content-Length": 0, ...headers });
  res.end();
}

const fmtBytes = (n: number) => n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : n < 1024 ** 3 ? `${(n / 1024 ** 2).toFixed(1)} MiB` : `${(n / 1024 ** 3).toFixed(2)} GiB`;
const fmtTime = (ms: number) => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
function fmtDuration(seconds: number): string {
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600), m = Math.floor((seconds % 3600) / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min ${seconds % 60} s`;
}

/** The configuration with secrets replaced: shared secrets, tokens, passwords (also inside URLs). */
export function redactConfig(value: unknown, key = ""): unknown {
  if (typeof value === "string") {
    if (/(secret|password|token|passphrase|privatekey)$/i.test(key)) return "(hidden)";
    if (/^postgres(ql)?:\/\//.test(value)) {
      try {
        const u = new URL(value);
        if (u.password) u.password = "hidden";
        return u.toString();
      } catch {
        return "(hidden)";
      }
    }
    return value;
  }
  if (Array.isArray(value)) return value.map((v) => redactConfig(v, key));
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactConfig(v, k)]));
  return value;
}

export function webAdminHandler(deps: WebAdminDeps): HttpHandler {
  const { storage, sessions, actions, logins, log } = deps;

  // ── pages ──────────────────────────────────────────────────────────────────────────────────
  const statusPage = async () => {
    const all = [...sessions.all()];
    const hibernating = all.filter((x) => x.hibernating).length;
    const rates = deps.metrics?.stanzaRates();
    const uptime = Math.floor((Date.now() - deps.startedAt) / 1000);
    const now = Date.now();
    const card = (label: string, value: string | number) => html`<div class="card"><div class="label">${label}</div><div class="value">${value}</div></div>`;
    return html`
<section class="cards">
  ${card("Uptime", fmtDuration(uptime))}
  ${card("Sessions", all.length)}
  ${card("Hibernating (XEP-0198)", hibernating)}
  ${card("Users online", new Set(all.map((x) => x.jid.bare)).size)}
  ${card("Stanzas in / s", rates ? rates.in.toFixed(1) : "metrics off")}
  ${card("Stanzas out / s", rates ? rates.out.toFixed(1) : "metrics off")}
  ${card("Accounts", (await storage.accounts.list()).length)}
  ${card("Offline messages", await storage.offline.total())}
</section>
<h2>Federation</h2>
${(() => {
  const { outgoing, incoming } = deps.federation();
  return html`<table><thead><tr><th>Direction</th><th>Local</th><th>Remote</th><th>State</th><th>Authenticated with</th><th class="num">Queued</th><th>Since</th></tr></thead><tbody>
${outgoing.map((o) => html`<tr><td>outgoing</td><td>${o.local}</td><td>${o.remote}</td><td>${o.state}</td><td>${o.method ?? ""}</td><td class="num">${o.queued}</td><td>${fmtTime(Date.parse(o.since))}</td></tr>`)}
${incoming.flatMap((i) => i.domains.map((d) => html`<tr><td>incoming</td><td>${i.local ?? ""}</td><td>${d.domain} (${i.address})</td><td>ready</td><td>${d.method}</td><td class="num"></td><td>${fmtTime(Date.parse(i.since))}</td></tr>`))}
</tbody></table>`;
})()}
<h2>Storage</h2>
<p>Driver: <strong>${storage.driver}</strong>${deps.config.storage.driver === "sqlite" ? html` — file <code>${deps.config.storage.path}</code> in the data directory` : ""}</p>
<h2>Certificates</h2>
<table><thead><tr><th>Host</th><th>Subject</th><th>Issuer</th><th>Names</th><th>Expires</th></tr></thead><tbody>
${deps.certificates.certificates().map((c) => {
  const days = Math.floor((c.notAfter.getTime() - now) / 86_400_000);
  return html`<tr><td>${c.host}</td><td>${c.subject}</td><td>${c.issuer}</td><td>${c.names.join(", ")}</td>
  <td${days < 30 ? html` class="warn"` : ""}>${fmtTime(c.notAfter.getTime())} (${days < 0 ? "expired" : `${days} days`})</td></tr>`;
})}
</tbody></table>`;
  };

  const usersPage = async (s: AdminSession, url: URL) => {
    const q = (url.searchParams.get("q") ?? "").trim().toLowerCase();
    const pageNo = Math.max(0, Number(url.searchParams.get("page") ?? 0) | 0);
    const matching = (await storage.accounts.list()).filter((j) => j.includes(q));
    const shown = matching.slice(pageNo * USERS_PER_PAGE, (pageNo + 1) * USERS_PER_PAGE);
    const rows = await Promise.all(shown.map(async (j) => ({ jid: j, account: await storage.accounts.get(j), sessions: sessions.ofUser(j).length })));
    const more = matching.length > (pageNo + 1) * USERS_PER_PAGE;
    return html`
<form method="get" action="/admin/users"><label>Search <input type="search" name="q" value="${q}"></label><button type="submit">Search</button></form>
<p class="muted">${matching.length} account${matching.length === 1 ? "" : "s"}${q ? html` matching “${q}”` : ""}.</p>
<table><thead><tr><th>Account</th><th class="num">Sessions</th><th>State</th><th>Created</th></tr></thead><tbody>
${rows.map((r) => html`<tr><td><a href="/admin/users/view?jid=${encodeURIComponent(r.jid)}">${r.jid}</a></td><td class="num">${r.sessions}</td>
<td>${r.account?.disabled ? html`<span class="warn">disabled</span>` : "active"}</td><td>${r.account ? fmtTime(r.account.createdAt) : ""}</td></tr>`)}
</tbody></table>
${more ? html`<p><a href="/admin/users?q=${encodeURIComponent(q)}&amp;page=${pageNo + 1}">Next page</a></p>` : ""}
<h2>Create an account</h2>
<form method="post" action="/admin/users/create"><fieldset>${csrfField(s.csrf)}
<label>JID <input type="text" name="jid" placeholder="user@${deps.config.hosts[0]}" required></label>
<label>Password <input type="password" name="password" autocomplete="new-password" required></label>
<button type="submit">Create</button></fieldset></form>`;
  };

  const userPage = async (s: AdminSession, url: URL) => {
    const jid = (await actions.existingAccount(url.searchParams.get("jid") ?? "")).bare;
    const account = (await storage.accounts.get(jid))!;
    const list = sessions.ofUser(jid);
    const devices = await storage.devices.list(jid);
    const now = Date.now();
    return html`
<p>Created ${fmtTime(account.createdAt)}. ${account.disabled ? html`<span class="warn">Disabled:</span> cannot log in.` : "Active."}
${deps.config.admins.includes(jid) ? html` <strong>Administrator.</strong>` : ""}</p>
<h2>Sessions</h2>
${list.length === 0 ? html`<p class="muted">No sessions.</p>` : html`
<table><thead><tr><th>Resource</th><th>Address</th><th>State</th><th>Presence</th><th></th></tr></thead><tbody>
${list.map((x) => html`<tr><td>${x.jid.resource}</td><td>${x.remoteAddress}</td><td>${x.hibernating ? "hibernating" : "connected"}</td>
<td>${x.presence ? (x.presence.getChildText("show") ?? "available") : "not available"}</td>
<td>${button("/admin/users/kick", s.csrf, "End session", { jid: x.jid.full, back: jid })}</td></tr>`)}
</tbody></table>
<p>${button("/admin/users/kick", s.csrf, "End all sessions", { jid, back: jid }, true)}</p>`}
<h2>Devices</h2>
${devices.length === 0 ? html`<p class="muted">No device has logged in with a user-agent id (XEP-0388).</p>` : html`
<table><thead><tr><th>Device</th><th></th></tr></thead><tbody>
${devices.map((d) => html`<tr><td>${describeDevice(d, sessionsOfDevice(sessions, jid, d.id).length > 0, now)}</td>
<td>${button("/admin/users/revoke-device", s.csrf, "Log out", { jid, id: d.id })}</td></tr>`)}
</tbody></table>`}
<h2>Reset the password</h2>
<form method="post" action="/admin/users/password"><fieldset>${csrfField(s.csrf)}<input type="hidden" name="jid" value="${jid}">
<label>New password <input type="password" name="password" autocomplete="new-password" required></label><button type="submit">Set password</button></fieldset></form>
<h2>Account</h2>
<p>${button("/admin/users/disable", s.csrf, account.disabled ? "Re-enable" : "Disable", { jid, disabled: account.disabled ? "0" : "1" }, !account.disabled)}
${button("/admin/users/delete", s.csrf, "Delete the account and all its data", { jid }, true)}</p>`;
  };

  const roomsPage = async () => {
    if (!deps.rooms) return html`<p class="muted">The group chat module is not loaded.</p>`;
    const rooms = await deps.rooms.list();
    return html`<p class="muted">Persistent rooms on ${deps.rooms.services.join(", ")}. Temporary rooms live only while occupied and are not listed.</p>
<table><thead><tr><th>Room</th><th>Name</th><th>Access</th><th>Created</th></tr></thead><tbody>
${rooms.map((r) => html`<tr><td><a href="/admin/rooms/view?jid=${encodeURIComponent(r.jid)}">${r.jid}</a></td><td>${r.name}</td>
<td>${[r.public ? "public" : "hidden", r.membersOnly ? "members only" : "open", r.password ? "password" : ""].filter(Boolean).join(", ")}</td><td>${fmtTime(r.createdAt)}</td></tr>`)}
</tbody></table>${rooms.length === 0 ? html`<p class="muted">No rooms.</p>` : ""}`;
  };

  const roomPage = async (s: AdminSession, url: URL) => {
    const jid = url.searchParams.get("jid") ?? "";
    const room = await deps.rooms?.inspect(jid);
    if (!room) throw new HttpError(404, "No such room");
    return html`
<table><tbody>
<tr><th>Name</th><td>${room.name}</td></tr><tr><th>Description</th><td>${room.description}</td></tr>
<tr><th>Subject</th><td>${room.subject}</td></tr>
<tr><th>Occupants now</th><td>${room.occupants ?? "unknown"}</td></tr>
<tr><th>Access</th><td>${[room.public ? "public" : "hidden", room.membersOnly ? "members only" : "open", room.password ? "password protected" : "no password"].join(", ")}</td></tr>
<tr><th>Created</th><td>${fmtTime(room.createdAt)}</td></tr>
</tbody></table>
<h2>Affiliations</h2>
<table><thead><tr><th>JID</th><th>Affiliation</th><th>Nick</th><th>Reason</th></tr></thead><tbody>
${room.affiliations.map((a) => html`<tr><td>${a.jid}</td><td>${a.affiliation}</td><td>${a.nick}</td><td>${a.reason}</td></tr>`)}
</tbody></table>
<h2>Destroy</h2>
<form method="post" action="/admin/rooms/destroy"><fieldset>${csrfField(s.csrf)}<input type="hidden" name="jid" value="${room.jid}">
<label>Reason told to occupants <input type="text" name="reason" value="Closed by the server administrator"></label>
<button type="submit" class="danger">Destroy the room</button></fieldset></form>`;
  };

  const uploadsPage = async (s: AdminSession) => {
    if (!deps.uploads) return html`<p class="muted">The upload module is not loaded.</p>`;
    const usage = await deps.uploads.usage();
    const total = usage.reduce((a, u) => ({ files: a.files + u.files, bytes: a.bytes + u.bytes }), { files: 0, bytes: 0 });
    return html`
<p>${total.files} file${total.files === 1 ? "" : "s"}, ${fmtBytes(total.bytes)} in total.</p>
<table><thead><tr><th>User</th><th class="num">Files</th><th class="num">Size</th></tr></thead><tbody>
${usage.map((u) => html`<tr><td>${u.owner}</td><td class="num">${u.files}</td><td class="num">${fmtBytes(u.bytes)}</td></tr>`)}
</tbody></table>
<h2>Prune</h2>
<form method="post" action="/admin/uploads/prune"><fieldset>${csrfField(s.csrf)}
<label>Delete uploads older than <input type="number" name="days" min="0" value="30" required> days (any purpose)</label>
<button type="submit" class="danger">Prune</button></fieldset></form>`;
  };

  const reportsPage = async (s: AdminSession) => {
    const reports = await storage.reports.list(REPORTS_SHOWN);
    const local = (jid: string) => deps.config.hosts.includes(jid.slice(jid.indexOf("@") + 1)) && jid.includes("@");
    return html`<p class="muted">Reports users filed while blocking someone (XEP-0377), newest first.</p>
<table><thead><tr><th>When</th><th>Reporter</th><th>Reported</th><th>Reason</th><th>Text</th><th>Messages</th><th></th></tr></thead><tbody>
${reports.map((r) => html`<tr><td>${fmtTime(r.at)}</td><td>${r.reporter}</td><td>${r.reported}</td><td>${r.reason}</td><td>${r.text}</td><td>${r.stanzaIds.join(", ")}</td>
<td>${local(r.reported) ? button("/admin/reports/block", s.csrf, "Disable the account", { id: String(r.id) }, true) : html`<span class="muted">remote</span>`}
${button("/admin/reports/delete", s.csrf, "Delete report", { id: String(r.id) })}</td></tr>`)}
</tbody></table>${reports.length === 0 ? html`<p class="muted">No reports.</p>` : ""}`;
  };

  const configPage = async () => html`<p class="muted">The configuration in effect, defaults included; secrets are hidden.</p>
<pre>${toYaml(redactConfig(deps.config))}</pre>`;

  const PAGES: Record<string, { title: string; nav: string; render(s: AdminSession, url: URL): Promise<Html> }> = {
    "/admin": { title: "Status", nav: "/admin", render: statusPage },
    "/admin/users": { title: "Users", nav: "/admin/users", render: usersPage },
    "/admin/users/view": { title: "User", nav: "/admin/users", render: userPage },
    "/admin/rooms": { title: "Group chats", nav: "/admin/rooms", render: roomsPage },
    "/admin/rooms/view": { title: "Group chat", nav: "/admin/rooms", render: roomPage },
    "/admin/uploads": { title: "Uploads", nav: "/admin/uploads", render: uploadsPage },
    "/admin/reports": { title: "Abuse reports", nav: "/admin/reports", render: reportsPage },
    "/admin/config": { title: "Configuration", nav: "/admin/config", render: configPage },
  };

  // ── actions (POST) ─────────────────────────────────────────────────────────────────────────
  const userBack = (jid: string) => `/admin/users/view?jid=${encodeURIComponent(jid)}`;
  const ACTIONS: Record<string, (s: AdminSession, f: URLSearchParams) => Promise<{ to: string; ok: string }>> = {
    "/admin/users/create": async (_s, f) => {
      const jid = await actions.createUser(f.get("jid") ?? "", f.get("password") ?? "");
      return { to: userBack(jid.bare), ok: `Created ${jid.bare}.` };
    },
    "/admin/users/password": async (_s, f) => {
      const jid = (await actions.existingAccount(f.get("jid") ?? "")).bare;
      await actions.setPassword(jid, f.get("password") ?? "");
      return { to: userBack(jid), ok: `Password changed for ${jid}.` };
    },
    "/admin/users/disable": async (_s, f) => {
      const jid = (await actions.existingAccount(f.get("jid") ?? "")).bare;
      const disabled = f.get("disabled") === "1";
      await actions.setDisabled(jid, disabled);
      if (disabled) logins.endFor(jid);
      return { to: userBack(jid), ok: disabled ? `${jid} is disabled; its sessions ended.` : `${jid} is enabled again.` };
    },
    "/admin/users/delete": async (_s, f) => {
      const jid = (await actions.existingAccount(f.get("jid") ?? "")).bare;
      await actions.deleteUser(jid);
      logins.endFor(jid);
      return { to: "/admin/users", ok: `Deleted ${jid} and all its data.` };
    },
    "/admin/users/revoke-device": async (_s, f) => {
      const jid = (await actions.existingAccount(f.get("jid") ?? "")).bare;
      if (!(await revokeDevice(storage, sessions, jid, f.get("id") ?? ""))) throw new HttpError(404, "No such device");
      log.info({ stage: "admin", action: "revoke-device" }, "device logged out by an administrator");
      return { to: userBack(jid), ok: "Logged the device out: its tokens no longer work and its sessions ended." };
    },
    "/admin/users/kick": async (_s, f) => {
      const n = actions.endSessions(f.get("jid") ?? "", "Session ended by an administrator");
      const back = f.get("back");
      return { to: back ? userBack(back) : "/admin/users", ok: `Ended ${n} session${n === 1 ? "" : "s"}.` };
    },
    "/admin/rooms/destroy": async (_s, f) => {
      const jid = f.get("jid") ?? "";
      if (!deps.rooms) throw new HttpError(404, "No group chat module");
      await deps.rooms.destroy(jid, (f.get("reason") ?? "").slice(0, 500));
      return { to: "/admin/rooms", ok: `Destroyed ${jid}.` };
    },
    "/admin/uploads/prune": async (_s, f) => {
      const days = Number(f.get("days"));
      if (!deps.uploads || !Number.isFinite(days) || days < 0) throw new HttpError(400, "Days must be a number of 0 or more");
      const n = await deps.uploads.prune(Date.now() - days * 86_400_000);
      return { to: "/admin/uploads", ok: `Removed ${n} upload${n === 1 ? "" : "s"}.` };
    },
    "/admin/reports/delete": async (_s, f) => {
      if (!(await storage.reports.remove(Number(f.get("id"))))) throw new HttpError(404, "No such report");
      return { to: "/admin/reports", ok: "Report deleted." };
    },
    "/admin/reports/block": async (_s, f) => {
      const report = (await storage.reports.list(REPORTS_SHOWN)).find((r) => r.id === Number(f.get("id")));
      if (!report) throw new HttpError(404, "No such report");
      await actions.setDisabled(report.reported, true);
      logins.endFor(report.reported);
      return { to: "/admin/reports", ok: `${report.reported} is disabled; its sessions ended.` };
    },
  };

  /** Where a failed action returns to: the page its form is on. */
  const errorBack = (path: string, f: URLSearchParams): string => {
    if (path.startsWith("/admin/users/")) {
      const jid = f.get("back") ?? (path === "/admin/users/create" ? null : f.get("jid"));
      return jid ? userBack(jid) : "/admin/users";
    }
    return path.replace(/\/[^/]+$/, "");
  };

  // ── login ──────────────────────────────────────────────────────────────────────────────────
  const loginPage = (token: string, error?: string) => document("Log in", html`
<form class="login" method="post" action="/admin/login">
<h1>Parley admin</h1>
${error ? html`<p class="flash error" role="alert">${error}</p>` : ""}
<input type="hidden" name="token" value="${token}">
<label>Administrator JID <input type="text" name="jid" autocomplete="username" required autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button>
</form>`);
  const freshLogin = (res: ServerResponse, status: number, error?: string) => {
    const nonce = randomBytes(24).toString("base64url");
    send(res, status, loginPage(logins.loginToken(nonce), error), { "Set-Cookie": cookie(LOGIN_COOKIE, nonce, 1800) });
  };

  /**
   * A state-changing request must come from a page of this site (CSRF defence in depth besides the
   * token). Referrer-Policy same-origin keeps browsers sending the Origin (no-referrer makes it "null").
   */
  const sameOrigin = (req: IncomingMessage) => {
    const origin = req.headers.origin;
    return origin === undefined || origin === `https://${req.headers.host}`;
  };

  return async (req, res, url) => {
    // Secure cookies and passwords: never over plain HTTP.
    if (!(req.socket as TLSSocket).encrypted) return plain(res, 403, "The web admin is served over HTTPS only");
    const path = url.pathname.replace(/\/+$/, "") || "/admin";
    if (path === "/admin/admin.css") {
      res.writeHead(200, { "Content-Type": "text/css; charset=utf-8", "Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff" });
      return void res.end(STYLESHEET);
    }
    const jar = cookies(req);
    const address = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    try {
      if (path === "/admin/login") {
        if (req.method === "GET") return freshLogin(res, 200);
        if (req.method !== "POST") throw new HttpError(405, "Method not allowed");
        const f = await readForm(req);
        const nonce = jar.get(LOGIN_COOKIE);
        if (!sameOrigin(req) || !nonce || !sameSecret(f.get("token") ?? "", logins.loginToken(nonce))) {
          return freshLogin(res, 403, "The login form expired. Please try again.");
        }
        const result = await logins.login(f.get("jid") ?? "", f.get("password") ?? "", address);
        if (!result.ok) {
          log.warn({ stage: "webadmin", address, reason: result.reason }, "admin login refused");
          return result.reason === "throttled"
            ? freshLogin(res, 429, "Too many failed logins. Try again later.")
            : freshLogin(res, 401, "Wrong JID or password, or not an administrator.");
        }
        log.info({ stage: "webadmin", admin: result.session.admin, address }, "admin logged in");
        return redirect(res, "/admin", { "Set-Cookie": [cookie(SESSION_COOKIE, result.session.id), cookie(LOGIN_COOKIE, "", 0)] });
      }

      const session = logins.session(jar.get(SESSION_COOKIE));
      const account = session ? await storage.accounts.get(session.admin) : undefined;
      if (!session || !account || account.disabled) {
        if (session) logins.logout(session.id);
        if (req.method === "GET") return redirect(res, "/admin/login");
        throw new HttpError(401, "Not logged in");
      }

      if (req.method === "POST") {
        const f = await readForm(req);
        if (!sameOrigin(req) || !sameSecret(f.get("csrf") ?? "", session.csrf)) {
          log.warn({ stage: "webadmin", admin: session.admin, path, address }, "request without a valid CSRF token refused");
          throw new HttpError(403, "Invalid or missing CSRF token");
        }
        if (path === "/admin/logout") {
          logins.logout(session.id);
          return redirect(res, "/admin/login", { "Set-Cookie": cookie(SESSION_COOKIE, "", 0) });
        }
        const act = ACTIONS[path];
        if (!act) throw new HttpError(404, "Not found");
        try {
          const { to, ok } = await act(session, f);
          log.info({ stage: "webadmin", admin: session.admin, action: path }, "admin action");
          session.flash = { kind: "ok", text: ok };
          return redirect(res, to);
        } catch (err) {
          if (!(err instanceof AccountError) && !(err instanceof AdminError) && !(err instanceof HttpError && err.status < 500)) throw err;
          session.flash = { kind: "error", text: err.message };
          return redirect(res, errorBack(path, f));
        }
      }
      if (req.method !== "GET" && req.method !== "HEAD") throw new HttpError(405, "Method not allowed");
      const view = PAGES[path];
      if (!view) throw new HttpError(404, "Not found");
      let body: Html;
      try {
        body = await view.render(session, url);
      } catch (err) {
        if (err instanceof AccountError) throw new HttpError(404, err.message);
        throw err;
      }
      const flash = session.flash;
      delete session.flash;
      return send(res, 200, page({ title: view.title, path: view.nav, admin: session.admin, csrf: session.csrf, flash, body }));
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      return send(res, err.status, document("Error", html`<main><h1>${err.status}</h1><p>${err.message}</p><p><a href="/admin">Back</a></p></main>`));
    }
  };
}
