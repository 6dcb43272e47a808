/**
 * XEP-0363 HTTP File Upload 1.2.0 (urn:xmpp:http:upload:0) on upload.<host>, served by the
 * embedded HTTP(S) server under /upload/.
 *
 * - A slot is <slot id>/<file name>; the id is 128 random bits, so GET URLs cannot be guessed.
 * - The PUT URL carries an expiring HMAC token bound to the path, size and content type; the PUT
 *   must match all three. Bytes stream to a temporary file and appear only when complete.
 * - Quotas per user (total and per day) count stored files and outstanding slots (granted, not
 *   yet used, not expired). They are checked when a slot is requested (resource-constraint +
 *   <retry/>) and again when its PUT starts, so neither a burst of slot requests nor a slot the
 *   server has forgotten (a restart) can push a user past them.
 * - Content types are RFC 9110 media types, checked at slot time: the GET echoes them in a header.
 * - Files expire (default 30 days) unless their XEP-0363 §5 purpose is "profile" or "permanent";
 *   a deleted account's files go with it.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { isAbsolute, join } from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import { buildForm } from "../xmpp/forms.js";
import { plain } from "../http/server.js";
import { createLocalFileStore, SizeMismatchError } from "../storage/files/index.js";
import { parseMediaType, formatMediaType, mediaTypesMatch, contentDisposition, type MediaType } from "../http/media-type.js";
import type { UploadRecord } from "../storage/index.js";
import { xmppDateTime } from "../xmpp/datetime.js";
import { checkSharedDirectory } from "./upload-dir.js";

export const UPLOAD = "urn:xmpp:http:upload:0";
const PURPOSE = "urn:xmpp:http:upload:purpose:0";
/**
 * XEP-0363 §5 purposes kept apart: message files expire, profile and permanent ones do not.
 * "ephemeral" is not offered: its expire-before is a MUST this service's retention cannot keep.
 */
const PURPOSES = new Set(["message", "profile", "permanent"]);
const PREFIX = "/upload/";
const DAY_MS = 86_400_000;
/** Essences a browser may show inline; everything else is served as an attachment. */
const INLINE = /^(image\/(png|jpeg|gif|webp|avif|heic|heif)|audio\/[\w.+-]+|video\/[\w.+-]+|text\/plain)$/;
const OCTET_STREAM: MediaType = { essence: "application/octet-stream", parameters: new Map() };
const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Methods": "GET, HEAD, PUT, OPTIONS",
  "Access-Control-Allow-Headers": "Authorization, Content-Type",
  "Access-Control-Expose-Headers": "Content-Length, Content-Range, ETag",
  "Access-Control-Max-Age": "86400",
};

export const uploadOptions = z.strictObject({
  /** The component domain per host; {host} is replaced. */
  domain: z.string().default("upload.{host}"),
  /** Files directory; relative paths are inside dataDir. */
  path: z.string().default("uploads"),
  maxFileSize: z.number().int().min(1).default(100 * 1024 * 1024),
  /** Per user; 0 = no limit. */
  quotaBytes: z.number().int().min(0).default(1024 * 1024 * 1024),
  dailyQuotaBytes: z.number().int().min(0).default(1000 * 1024 * 1024),
  /** 0 keeps files forever. */
  expireDays: z.number().min(0).default(30),
  /** How long a PUT URL stays valid. */
  slotSeconds: z.number().int().min(10).default(600),
  cleanupIntervalMinutes: z.number().positive().default(60),
  /** A PUT whose body stalls this long is cut off (slow-body attacks). */
  bodyIdleSeconds: z.number().positive().default(30),
  /** Outstanding slots per user; bounds what the server holds for slots nobody uses. */
  maxOpenSlots: z.number().int().min(1).default(50),
});

export const uploadDir = (dataDir: string, path: string) => (isAbsolute(path) ? path : join(dataDir, path));

export const upload = defineModule({
  name: "upload",
  implements: [{ spec: "XEP-0363", version: "1.2.0" }],
  dependsOn: ["disco"],
  options: uploadOptions,
  async start(ctx) {
    const o = ctx.options;
    const dir = uploadDir(ctx.dataDir, o.path);
    const files = createLocalFileStore(dir);
    // A node whose directory is not the others' would grant slots whose files no other node can
    // serve: it refuses slots instead, and says why (downloads of what it can see still work).
    const notShared = await checkSharedDirectory(dir, ctx.storage.documents);
    if (notShared) ctx.log.error({ stage: "upload", problem: notShared }, "modules.upload.path is not shared with the other nodes; upload slots are refused on this node");
    const key = ctx.secret("slot tokens");
    const domains = new Map(ctx.hosts.map((h) => [o.domain.replace("{host}", h), h]));
    for (const d of domains.keys()) ctx.addDomain(d);

    // ── XMPP side ────────────────────────────────────────────────────────────────────────────
    ctx.discoItems("host", ({ owner, node }) => {
      if (node !== undefined) return undefined;
      const d = [...domains].find(([, h]) => h === owner)?.[0];
      return d ? [el("item", { jid: d, name: "HTTP File Upload" })] : [];
    });
    const info = () => el("query", { xmlns: NS.DISCO_INFO },
      el("identity", { category: "store", type: "file", name: "HTTP File Upload" }),
      el("feature", { var: UPLOAD }), el("feature", { var: NS.DISCO_INFO }),
      ...[...PURPOSES].map((p) => el("feature", { var: `${PURPOSE}#${p}` })),
      // XEP-0363 §3: the size limit, as an extended disco form.
      buildForm("result", UPLOAD, [{ var: "max-file-size", values: [String(o.maxFileSize)] }]));

    /** The slot, all of it: where, how big, what type, until when, for whom and why. */
    interface Slot { path: string; size: number; type: string; expires: number; owner: string; purpose: string }
    const sign = (slot: Slot) => createHmac("sha256", key)
      .update([slot.path, slot.size, slot.type, slot.expires, slot.owner, slot.purpose].join("\n")).digest("base64url");

    // ── quotas ───────────────────────────────────────────────────────────────────────────────
    /**
     * Granted slots not yet used, per owner (slot id → size and expiry in seconds). They count
     * against the quotas until their PUT is stored or they expire. Held in memory: a restart or
     * another node forgets them, which is why every PUT checks the quota again.
     */
    const outstanding = new Map<string, Map<string, { size: number; expires: number }>>();
    const openSlots = (owner: string) => {
      const slots = outstanding.get(owner);
      if (!slots) return undefined;
      const now = Date.now() / 1000;
      for (const [id, s] of slots) if (now > s.expires) slots.delete(id);
      if (slots.size === 0) outstanding.delete(owner);
      return slots.size ? slots : undefined;
    };
    const reserve = (owner: string, id: string, size: number, expires: number) => {
      const slots = outstanding.get(owner) ?? new Map<string, { size: number; expires: number }>();
      slots.set(id, { size, expires });
      outstanding.set(owner, slots);
    };
    const release = (owner: string, id: string) => {
      outstanding.get(owner)?.delete(id);
      openSlots(owner);
    };
    /**
     * One quota decision per owner at a time: reading the usage and reserving the slot must not
     * interleave with another request's, or two requests could each see room for themselves.
     */
    const queues = new Map<string, Promise<unknown>>();
    const exclusive = <T>(owner: string, fn: () => Promise<T>): Promise<T> => {
      const run = (queues.get(owner) ?? Promise.resolve()).then(fn);
      const tail = run.catch(() => {});
      queues.set(owner, tail);
      void tail.then(() => { if (queues.get(owner) === tail) queues.delete(owner); });
      return run;
    };
    /** Which quota `size` more bytes would break, counting stored files and open slots other than `except`. */
    const overQuota = async (owner: string, size: number, except?: string): Promise<"total" | "daily" | undefined> => {
      const usage = await ctx.storage.uploads.usage(owner, Date.now() - DAY_MS);
      let pending = 0;
      for (const [id, s] of openSlots(owner) ?? []) if (id !== except) pending += s.size;
      if (o.quotaBytes && usage.bytes + pending + size > o.quotaBytes) return "total";
      // Open slots are about to be uploaded, so they belong to today's window.
      if (o.dailyQuotaBytes && usage.bytesSince + pending + size > o.dailyQuotaBytes) return "daily";
      return undefined;
    };

    const requestSlot = async (request: IncomingSlot) => {
      if (notShared) throw new StanzaError("service-unavailable", "Uploads are misconfigured on this server node");
      const { filename, contentType, user, domain, purpose } = request;
      // Control characters too (HARDENING §4.10): the name is echoed in URLs and a response header.
      if (!filename || /[\/\\\0-\x1f\x7f]/.test(filename) || filename === "." || filename === ".." || filename.length > 255) {
        throw new StanzaError("bad-request", "A plain file name is required");
      }
      // Digits only: Number() would also take "1e3", "0x10" or " 5".
      const size = /^[0-9]{1,16}$/.test(request.size) ? Number(request.size) : NaN;
      if (!Number.isSafeInteger(size) || size < 1) throw new StanzaError("bad-request", "size must be a positive integer");
      const media = contentType ? parseMediaType(contentType) : OCTET_STREAM;
      // The type reaches a response header at GET time, so only the RFC 9110 grammar gets through
      // (no CR LF, no non-ASCII); XEP-0363 §6 leaves the condition to the service: bad-request, modify.
      if (!media) throw new StanzaError("bad-request", "content-type must be a media type (RFC 9110 §8.3.1)", "modify");
      if (size > o.maxFileSize) {
        // XEP-0363 §6: not-acceptable with <file-too-large/> and the limit.
        throw new StanzaError("not-acceptable", `File too large; the limit is ${o.maxFileSize} bytes`, "modify",
          el("file-too-large", { xmlns: UPLOAD }, el("max-file-size", {}, String(o.maxFileSize))));
      }
      const now = Date.now();
      const id = randomBytes(16).toString("base64url");
      const expires = Math.floor(now / 1000) + o.slotSeconds;
      await exclusive(user, async () => {
        const open = openSlots(user);
        if (open && open.size >= o.maxOpenSlots) {
          const first = Math.min(...[...open.values()].map((s) => s.expires));
          throw new StanzaError("resource-constraint", "Too many unused upload slots", "wait", el("retry", { xmlns: UPLOAD, stamp: xmppDateTime(first * 1000) }));
        }
        const over = await overQuota(user, size);
        if (over) {
          // XEP-0363 §6: resource-constraint (wait) with <retry stamp/> — when the daily window moves on.
          const retry = over === "total" ? undefined : el("retry", { xmlns: UPLOAD, stamp: xmppDateTime(now + DAY_MS) });
          throw new StanzaError("resource-constraint", over === "total" ? "Upload quota used up" : "Daily upload quota used up", "wait", retry);
        }
        reserve(user, id, size, expires);
      });
      const path = `${PREFIX}${id}/${encodeURIComponent(filename)}`;
      const type = formatMediaType(media);
      const base = ctx.publicHttpUrl(domain);
      const slot: Slot = { path, size, type, expires, owner: user, purpose };
      const query = new URLSearchParams({ size: String(size), type, expires: String(expires), owner: user, purpose, token: sign(slot) });
      return el("slot", { xmlns: UPLOAD },
        el("put", { url: `${base}${path}?${query}` }),
        el("get", { url: `${base}${path}` }));
    };

    ctx.iqEntity("upload-service", (to) => domains.has(to.domain) && !to.local);
    ctx.iq("upload-service", "get", NS.DISCO_INFO, ({ payload }) => {
      if (payload.attrs.node !== undefined) throw new StanzaError("service-unavailable");
      return info();
    });
    ctx.iq("upload-service", "get", NS.DISCO_ITEMS, () => el("query", { xmlns: NS.DISCO_ITEMS }));
    ctx.iq("upload-service", "get", UPLOAD, ({ payload, from, to, origin }) => {
      if (payload.name !== "request") throw new StanzaError("bad-request");
      // Uploads are for this server's users.
      if (!origin || !ctx.hosts.includes(from.domain)) throw new StanzaError("forbidden", "Only local users may upload");
      return requestSlot({
        filename: payload.attrs.filename ?? "", size: payload.attrs.size ?? "", contentType: payload.attrs["content-type"] ?? "",
        user: from.bare, domain: to.domain, purpose: purposeOf(payload),
      });
    });

    // ── HTTP side ────────────────────────────────────────────────────────────────────────────
    const parsePath = (url: URL): { id: string; filename: string; path: string } | undefined => {
      const m = /^\/upload\/([A-Za-z0-9_-]{22})\/([^/]+)$/.exec(url.pathname);
      if (!m) return undefined;
      let filename: string;
      try {
        filename = decodeURIComponent(m[2]!);
      } catch {
        return undefined;
      }
      if (/[\/\\\0]/.test(filename) || filename === "." || filename === "..") return undefined;
      return { id: m[1]!, filename, path: url.pathname };
    };

    /** A PUT refused: the client is told why, and so is the operator — never the URL, which holds the slot id and token. */
    const refuse = (res: ServerResponse, status: number, reason: string, detail: Record<string, string> = {}) => {
      ctx.log.info({ stage: "upload", status, reason, ...detail }, "upload refused");
      plain(res, status, reason, CORS);
    };

    const put = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
      const target = parsePath(url);
      if (!target) return refuse(res, 404, "Not found");
      const q = url.searchParams;
      const slot: Slot = { path: target.path, size: Number(q.get("size")), type: q.get("type") ?? "", expires: Number(q.get("expires")),
        owner: q.get("owner") ?? "", purpose: q.get("purpose") ?? "" };
      const { size, type, owner } = slot;
      const token = Buffer.from(q.get("token") ?? "");
      const expected = Buffer.from(sign(slot));
      if (token.length !== expected.length || !timingSafeEqual(token, expected)) return refuse(res, 403, "Invalid upload token");
      if (Date.now() / 1000 > slot.expires) return refuse(res, 403, "Upload slot expired");
      const length = req.headers["content-length"];
      if (length === undefined) return refuse(res, 411, "Content-Length required");
      if (Number(length) > size) return refuse(res, 413, "Larger than the slot");
      if (Number(length) !== size) return refuse(res, 400, "Content-Length does not match the slot");
      // Signed, but a slot granted before content types were validated may carry anything.
      const slotType = parseMediaType(type);
      if (!slotType) return refuse(res, 400, "The slot's content type is not a media type");
      // XEP-0363 §7: "The service SHOULD reject the file if the Content-Type has been specified
      // beforehand and does not match." A slot without a type (octet-stream) takes any.
      const header = req.headers["content-type"];
      if (header && slotType.essence !== OCTET_STREAM.essence) {
        const sent = parseMediaType(header);
        if (!sent || !mediaTypesMatch(slotType, sent)) {
          return refuse(res, 400, "Content-Type does not match the slot", { expected: type, sent: sent ? formatMediaType(sent) : "(not a media type)" });
        }
      }
      // The quota again, counting every other open slot: the one checked at slot time may be
      // forgotten (restart, another node), and this one counts until its bytes are stored.
      const refusal = await exclusive(owner, async () => {
        if (await ctx.storage.uploads.get(target.id)) return { status: 409, reason: "Already uploaded" };
        // A slot outlives a deleted account by up to slotSeconds; its bytes would be nobody's.
        if (!(await ctx.storage.accounts.exists(owner))) return { status: 403, reason: "The slot's account is gone" };
        // The status WebDAV gives an exceeded quota (RFC 4331).
        if (await overQuota(owner, size, target.id)) return { status: 507, reason: "Upload quota used up" };
        reserve(owner, target.id, size, slot.expires);
        return undefined;
      });
      if (refusal) return refuse(res, refusal.status, refusal.reason);
      // A stalled body is cut off, and nothing is kept.
      req.setTimeout(o.bodyIdleSeconds * 1000, () => req.destroy(new Error("body timeout")));
      try {
        await files.write(target.id, req, size);
      } catch (err) {
        // The slot stays open (and counted) until it expires: the client may try again.
        const code = (err as NodeJS.ErrnoException).code;
        if (err instanceof SizeMismatchError) return refuse(res, err.tooLarge ? 413 : 400, err.message);
        if (code === "EEXIST") return refuse(res, 409, "Already uploaded");
        if (code === "ENOSPC" || code === "EDQUOT") {
          ctx.log.error({ stage: "upload", code }, "upload storage is full");
          return plain(res, 507, "Insufficient storage", CORS);
        }
        if (req.destroyed || req.aborted) {
          ctx.log.debug({ stage: "upload" }, "upload aborted; nothing kept");
          if (!res.headersSent) plain(res, 408, "Upload aborted", CORS);
          return;
        }
        throw err;
      }
      await exclusive(owner, async () => {
        await ctx.storage.uploads.add({ id: target.id, owner, filename: target.filename, size, contentType: type, createdAt: Date.now(),
          expires: slot.purpose !== "profile" && slot.purpose !== "permanent" });
        release(owner, target.id);
      });
      res.writeHead(201, { ...CORS, "Content-Length": 0 });
      res.end();
    };

    const get = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
      const target = parsePath(url);
      const record = target && (await ctx.storage.uploads.get(target.id));
      if (!target || !record || record.filename !== target.filename) return plain(res, 404, "Not found", CORS);
      // Opened before anything is sent: an expiry that deletes the file now cannot cut the download.
      const file = await files.open(record.id);
      if (!file) {
        // Storage has the upload, this node's directory not the file: it expired a moment ago, or
        // the directory is not the one the other nodes write (docs/CLUSTER.md, "Uploads").
        ctx.log.warn({ stage: "upload" }, "a stored upload's file is missing from modules.upload.path");
        return plain(res, 404, "Not found", CORS);
      }
      // Until the body stream owns the file, every way out of here (a throw included) closes it.
      let streaming = false;
      try {
        const size = file.size;
        // Records stored before content types were validated may hold anything, even CR LF; such a
        // value must not reach a header, so it is served as opaque bytes.
        const media = parseMediaType(record.contentType);
        const etag = `"${record.id}"`;
        const headers: Record<string, string | number> = {
          ...CORS,
          "Content-Type": media ? formatMediaType(media) : OCTET_STREAM.essence,
          ETag: etag,
          "Last-Modified": new Date(record.createdAt).toUTCString(),
          "Accept-Ranges": "bytes",
          "Cache-Control": "public, max-age=31536000, immutable",
          "X-Content-Type-Options": "nosniff",
          "Content-Security-Policy": "default-src 'none'; sandbox",
          "Content-Disposition": contentDisposition(media && INLINE.test(media.essence) ? "inline" : "attachment", record.filename),
        };
        if (req.headers["if-none-match"] === etag) {
          res.writeHead(304, headers);
          return void res.end();
        }
        const range = parseRange(req.headers.range, size);
        if (range === "invalid") {
          res.writeHead(416, { ...headers, "Content-Range": `bytes */${size}` });
          return void res.end();
        }
        if (range) {
          res.writeHead(206, { ...headers, "Content-Range": `bytes ${range.start}-${range.end}/${size}`, "Content-Length": range.end - range.start + 1 });
        } else {
          res.writeHead(200, { ...headers, "Content-Length": size });
        }
        if (req.method === "HEAD") return void res.end();
        const body = file.stream(range ?? undefined);
        streaming = true;
        // pipeline, not pipe: a client that goes away destroys the file stream, which closes the file.
        await pipeline(body, res).catch((err: unknown) => {
          ctx.log.debug({ stage: "upload", err }, "download ended early");
        });
      } finally {
        if (!streaming) await file.close();
      }
    };

    ctx.http(PREFIX, (req, res, url) => {
      switch (req.method) {
        case "OPTIONS":
          res.writeHead(204, CORS);
          return void res.end();
        case "PUT":
          return put(req, res, url);
        case "GET": case "HEAD":
          return get(req, res, url);
        default:
          return plain(res, 405, "Method not allowed", { ...CORS, Allow: "GET, HEAD, PUT, OPTIONS" });
      }
    });

    // ── lifecycle ────────────────────────────────────────────────────────────────────────────
    const remove = async (records: readonly UploadRecord[]) => {
      for (const r of records) {
        await files.delete(r.id);
        await ctx.storage.uploads.remove(r.id);
      }
    };
    ctx.on("user/deleting", async ({ jid }) => {
      outstanding.delete(jid.bare);
      await remove(await ctx.storage.uploads.ofOwner(jid.bare));
    });
    let cleaning: Promise<void> | undefined;
    let stopping = false;
    const expire = () => {
      if (cleaning || o.expireDays === 0) return;
      cleaning = (async () => {
        const cutoff = Date.now() - o.expireDays * DAY_MS;
        let removed = 0;
        for (;;) {
          const batch = await ctx.storage.uploads.expired(cutoff, 100);
          if (batch.length === 0 || stopping) break;
          await remove(batch);
          removed += batch.length;
          await new Promise((r) => setImmediate(r));
        }
        if (removed) ctx.log.info({ stage: "upload", removed }, "expired uploads removed");
      })().catch((err) => ctx.log.error({ err, stage: "upload" }, "upload expiry failed")).finally(() => { cleaning = undefined; });
    };
    expire();
    ctx.interval(o.cleanupIntervalMinutes * 60_000, () => {
      // Owners who never come back would otherwise keep their expired slots here.
      for (const owner of outstanding.keys()) openSlots(owner);
      expire();
    });
    ctx.onStop(async () => {
      stopping = true;
      await cleaning;
    });
  },
});

/**
 * XEP-0363 §5: the purpose is an element named after it in the purpose namespace; "If no purpose
 * is specified, the service MUST assume 'message' as the default purpose."
 */
function purposeOf(request: Element): string {
  const named = childElements(request).filter((c) => c.getNS() === PURPOSE);
  if (named.length === 0) return "message";
  if (named.length > 1) throw new StanzaError("bad-request", "At most one purpose");
  const purpose = named[0]!.name;
  if (!PURPOSES.has(purpose)) throw new StanzaError("feature-not-implemented", `Purpose ${purpose} is not supported`);
  return purpose;
}

interface IncomingSlot { filename: string; size: string; contentType: string; user: string; domain: string; purpose: string }

/** RFC 9110 §14.2, one range: "bytes=a-b", "a-" or "-n"; undefined when absent or not a single byte range. */
function parseRange(header: string | undefined, size: number): { start: number; end: number } | "invalid" | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  let start: number;
  let end: number;
  if (m[1] === "") {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start > end || start >= size) return "invalid";
  return { start, end };
}
