/**
 * A built-in XEP-0357 app server on push.<host>: it turns push notifications published by a user's
 * server into real pushes through APNs, FCM or Web Push.
 *
 * Devices register with a XEP-0050 command on the service — register-push-apns (token, sandbox),
 * register-push-fcm (token; Conversations' command name and fields) or register-push-webpush
 * (endpoint, p256dh, auth) — and get back a node and a secret, which the client passes to its
 * server's <enable/>. A publish to that node carrying that secret, from the JID that registered,
 * becomes one push. A provider that reports the device gone (APNs 410/BadDeviceToken, FCM
 * UNREGISTERED/INVALID_ARGUMENT, Web Push 404/410) removes the registration and the publish is
 * answered item-not-found, so the user's server disables it too. Credentials come from files named
 * in the config; none of them is logged.
 *
 * Registrations are bounded: a device registered again (same account, service and token) keeps
 * its node and secret; an account has at most maxDevicesPerAccount, and registering one more
 * replaces the least recently active (registered, or pushed to with the provider's acceptance);
 * devices inactive for deviceExpiryDays are removed, as are those of a deleted account.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import { buildForm, readForm, singleValue, parseBoolean } from "../xmpp/forms.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { ApnsClient, type PushOutcome } from "../push/apns.js";
import { FcmClient, type ServiceAccount } from "../push/fcm.js";
import { WebPushClient } from "../push/webpush.js";
import { DEFAULT_PUSH_SERVICE_HOSTS, OutboundRefused } from "../push/outbound.js";

const COMMANDS = "http://jabber.org/protocol/commands";
const PUBSUB = "http://jabber.org/protocol/pubsub";
const PUSH = "urn:xmpp:push:0";

type DeviceType = "apns" | "fcm" | "webpush";
interface Device { type: DeviceType; owner: string; secret: string; token: string; sandbox: boolean; p256dh?: string; auth?: string }

export const appserver = defineModule({
  name: "appserver",
  implements: [{ spec: "XEP-0357", version: "0.4.1", note: "app server side, with APNs, FCM HTTP v1 and Web Push" }],
  dependsOn: ["disco"],
  options: z.strictObject({
    domain: z.string().default("push.{host}"),
    apns: z.strictObject({
      keyFile: z.string(), keyId: z.string(), teamId: z.string(), topic: z.string(),
      /** Endpoints (tests point these at local servers). */
      production: z.url().optional(), sandbox: z.url().optional(),
      /** Only for tests with a self-signed local endpoint. */
      insecureTls: z.boolean().default(false),
    }).optional(),
    fcm: z.strictObject({ serviceAccountFile: z.string(), endpoint: z.url().optional() }).optional(),
    /** VAPID keys (base64url) and contact; the private key may instead be read from privateKeyFile. */
    webpush: z.strictObject({
      publicKey: z.string(), privateKeyFile: z.string(), subject: z.string().regex(/^(mailto:|https:)/),
      /** Push services a subscription endpoint may point at: exact host names or "*.suffix". */
      allowedHosts: z.array(z.string().min(1)).min(1).default([...DEFAULT_PUSH_SERVICE_HOSTS]),
      /** Only for tests with a local push service: let endpoints resolve to loopback and private addresses. */
      allowPrivateAddresses: z.boolean().default(false),
      insecureTls: z.boolean().default(false),
    }).optional(),
    /** Put the message text into pushes when the user's server sends it (it then passes through Apple/Google). */
    includeBody: z.boolean().default(true),
    /** Devices one account may have registered; one more replaces the least recently active. */
    maxDevicesPerAccount: z.number().int().min(1).default(10),
    /** A device neither registered again nor successfully pushed to for this long is removed. */
    deviceExpiryDays: z.number().positive().default(90),
    expiryCheckMinutes: z.number().positive().default(60),
  }),
  start(ctx) {
    const o = ctx.options;
    const apns = o.apns && new ApnsClient({
      key: readFileSync(o.apns.keyFile, "utf8"), keyId: o.apns.keyId, teamId: o.apns.teamId, topic: o.apns.topic,
      ...(o.apns.production ? { production: o.apns.production } : {}), ...(o.apns.sandbox ? { sandbox: o.apns.sandbox } : {}),
      ...(o.apns.insecureTls ? { tls: { rejectUnauthorized: false } } : {}),
    });
    const fcm = o.fcm && new FcmClient({
      account: JSON.parse(readFileSync(o.fcm.serviceAccountFile, "utf8")) as ServiceAccount,
      ...(o.fcm.endpoint ? { endpoint: o.fcm.endpoint } : {}),
    });
    const web = o.webpush && new WebPushClient({
      publicKey: o.webpush.publicKey, privateKey: readFileSync(o.webpush.privateKeyFile, "utf8").trim(), subject: o.webpush.subject,
      insecureTls: o.webpush.insecureTls,
      policy: { allowedHosts: o.webpush.allowedHosts, allowPrivateAddresses: o.webpush.allowPrivateAddresses },
    });
    ctx.onStop(() => { apns?.close(); web?.close(); });
    if (!apns && !fcm && !web) return; // nothing to push through: no service
    const domains = new Set(ctx.hosts.map((h) => o.domain.replace("{host}", h)));
    for (const d of domains) ctx.addDomain(d);
    const commands: Array<{ node: string; name: string; type: DeviceType; fields: string[] }> = [
      ...(apns ? [{ node: "register-push-apns", name: "Register an iOS device (APNs)", type: "apns" as const, fields: ["token", "sandbox"] }] : []),
      ...(fcm ? [{ node: "register-push-fcm", name: "Register an Android device (FCM)", type: "fcm" as const, fields: ["token", "android-id"] }] : []),
      ...(web ? [{ node: "register-push-webpush", name: "Register a browser (Web Push)", type: "webpush" as const, fields: ["endpoint", "p256dh", "auth"] }] : []),
    ];

    ctx.discoItems("host", ({ owner, node }) => {
      if (node !== undefined) return undefined;
      const d = o.domain.replace("{host}", owner);
      return domains.has(d) ? [el("item", { jid: d, name: "Push notifications" })] : [];
    });

    const keyOf = (node: string) => `push-device:${node}`;
    const load = async (service: string, node: string): Promise<Device | undefined> => {
      const xml = await ctx.storage.documents.get(service, keyOf(node));
      if (!xml) return undefined;
      const d = parseElement(xml).attrs;
      return { type: d.type as DeviceType, owner: d.owner!, secret: d.secret!, token: d.token!, sandbox: d.sandbox === "true", p256dh: d.p256dh, auth: d.auth };
    };
    const store = (service: string, node: string, d: Device) => ctx.storage.documents.set(service, keyOf(node),
      el("device", { xmlns: PUSH, type: d.type, owner: d.owner, secret: d.secret, token: d.token, sandbox: String(d.sandbox), p256dh: d.p256dh, auth: d.auth }).toString());

    // Each device is a document of the service, found by the node a publish names. Per account the
    // service also keeps a pubsub node named after the account, whose items are the account's
    // device nodes in order of last activity (the store moves a republished item to the newest):
    // publishing with maxItems keeps the limit, and nodes() lists the accounts for the expiry sweep.
    const INDEX_CONFIG = JSON.stringify({ appserver: "devices of an account" });
    const devicesOf = (service: string, owner: string) => ctx.storage.pubsub.items(service, owner);
    const forget = async (service: string, owner: string, node: string) => {
      await ctx.storage.documents.delete(service, keyOf(node));
      await ctx.storage.pubsub.retract(service, owner, node);
    };
    /** Marks a device active now; the least recently active beyond the limit are removed. */
    const touch = async (service: string, owner: string, node: string) => {
      await ctx.storage.pubsub.createNode(service, owner, INDEX_CONFIG);
      const evicted = await ctx.storage.pubsub.publish(service, owner, { id: node, publisher: service, payload: "", publishedAt: Date.now() }, o.maxDevicesPerAccount);
      for (const old of evicted) await ctx.storage.documents.delete(service, keyOf(old));
      if (evicted.length) ctx.log.info({ stage: "appserver", replaced: evicted.length }, "device limit reached; least recently active registration removed");
    };

    const register = async (service: string, owner: string, command: (typeof commands)[number], form: Element) => {
      const values = readForm(form);
      // A Web Push subscription's endpoint plays the part of the token.
      const token = singleValue(values, command.type === "webpush" ? "endpoint" : "token");
      if (!token) throw new StanzaError("bad-request", command.type === "webpush" ? "The subscription endpoint is required" : "A device token is required");
      const sandboxValue = singleValue(values, "sandbox");
      const device: Device = { type: command.type, owner, secret: randomBytes(18).toString("base64url"), token,
        sandbox: sandboxValue !== undefined && parseBoolean(sandboxValue, "sandbox") };
      if (command.type === "webpush") {
        device.p256dh = singleValue(values, "p256dh");
        device.auth = singleValue(values, "auth");
        if (!device.p256dh || !device.auth) throw new StanzaError("bad-request", "The subscription's p256dh and auth are required");
        try {
          await web!.checkEndpoint(token);
        } catch (err) {
          if (!(err instanceof OutboundRefused)) throw err;
          ctx.log.info({ stage: "appserver", type: command.type, reason: err.message }, "push endpoint refused");
          throw new StanzaError("not-acceptable", `The endpoint is not usable: ${err.message}`);
        }
      }
      // The same device registering again (Conversations does on every connect) keeps its node and
      // secret, so the registration the user's server holds stays valid.
      let node: string | undefined;
      for (const item of await devicesOf(service, owner)) {
        const known = await load(service, item.id);
        if (known && known.type === device.type && known.token === device.token) {
          node = item.id;
          device.secret = known.secret;
          break;
        }
      }
      const fresh = node === undefined;
      node ??= randomBytes(18).toString("base64url");
      await store(service, node, device);
      await touch(service, owner, node);
      ctx.log.info({ stage: "appserver", type: command.type, fresh }, "device registered");
      return buildForm("result", PUSH, [{ var: "jid", values: [service] }, { var: "node", values: [node] }, { var: "secret", values: [device.secret] }]);
    };

    const deliver = async (device: Device, node: string, summary: Record<string, string>): Promise<PushOutcome> => {
      const body = o.includeBody ? summary["last-message-body"] : undefined;
      const count = summary["message-count"] ?? "1";
      const sender = summary["last-message-sender"] ?? "";
      if (device.type === "apns" && apns) {
        return apns.send({
          deviceToken: device.token, sandbox: device.sandbox, pushType: "alert", priority: 10, collapseId: node.slice(0, 64),
          payload: { aps: { alert: { title: "New message", body: body ?? "You have a new message" }, sound: "default", "mutable-content": 1, badge: Number(count) || 1 },
            "message-count": count, ...(sender ? { "last-message-sender": sender } : {}) },
        });
      }
      if (device.type === "fcm" && fcm) {
        return fcm.send(device.token, { type: "message", "message-count": count, ...(sender ? { "last-message-sender": sender } : {}), ...(body ? { body } : {}) });
      }
      if (device.type === "webpush" && web) {
        return web.send({ endpoint: device.token, p256dh: device.p256dh ?? "", auth: device.auth ?? "" },
          { type: "message", "message-count": count, ...(sender ? { "last-message-sender": sender } : {}), ...(body ? { body } : {}) });
      }
      return { status: "failed", reason: `${device.type} is not configured` };
    };

    const publish = async (service: string, from: string, payload: Element) => {
      const action = payload.getChild("publish");
      const node = action?.attrs.node;
      if (!node) throw new StanzaError("bad-request", "nodeid-required");
      const device = await load(service, node);
      if (!device) throw new StanzaError("item-not-found", "No such device registration");
      const options = payload.getChild("publish-options")?.getChild("x", NS.DATA_FORMS);
      const secret = options ? singleValue(readForm(options), "secret") ?? "" : "";
      const a = Buffer.from(secret);
      const b = Buffer.from(device.secret);
      // The node and secret are bearer credentials, bound to the JID that registered them.
      if (a.length !== b.length || !timingSafeEqual(a, b) || from !== device.owner) throw new StanzaError("forbidden", "Wrong secret or publisher");
      const form = action!.getChild("item")?.getChild("notification", PUSH)?.getChild("x", NS.DATA_FORMS);
      // XEP-0357 §5 examples carry the summary form without a 'type', so fields are read directly.
      const summary: Record<string, string> = {};
      for (const f of form?.getChildren("field") ?? []) if (f.attrs.var) summary[f.attrs.var] = f.getChildText("value") ?? "";
      const outcome = await deliver(device, node, summary);
      if (outcome.status === "sent") await touch(service, device.owner, node);
      if (outcome.status === "unregistered") {
        await forget(service, device.owner, node);
        ctx.log.info({ stage: "appserver", type: device.type, reason: outcome.reason }, "device unregistered by the provider; registration removed");
        throw new StanzaError("item-not-found", "The device is no longer registered");
      }
      if (outcome.status === "failed") {
        ctx.log.warn({ stage: "appserver", type: device.type, reason: outcome.reason }, "push failed");
        throw new StanzaError("resource-constraint", "The push provider did not take it", "wait");
      }
      return undefined;
    };

    const info = () => el("query", { xmlns: NS.DISCO_INFO },
      el("identity", { category: "pubsub", type: "push", name: "Push notifications" }),
      el("feature", { var: PUSH }), el("feature", { var: COMMANDS }), el("feature", { var: NS.DISCO_INFO }));

    ctx.iqEntity("push-service", (to) => domains.has(to.domain) && !to.local);
    ctx.iq("push-service", "get", NS.DISCO_INFO, ({ payload }) => {
      if (payload.attrs.node !== undefined) throw new StanzaError("service-unavailable");
      return info();
    });
    ctx.iq("push-service", "get", NS.DISCO_ITEMS, ({ payload, to }) => {
      const list = payload.attrs.node === COMMANDS ? commands.map((c) => el("item", { jid: to.domain, node: c.node, name: c.name })) : [];
      return el("query", { xmlns: NS.DISCO_ITEMS, node: payload.attrs.node }, ...list);
    });
    ctx.iq("push-service", "set", PUBSUB, ({ payload, from, to }) => publish(to.domain, from.bare, payload));
    ctx.iq("push-service", "set", COMMANDS, async ({ payload, from, to, origin }) => {
      const service = to.domain;
      if (payload.name !== "command") throw new StanzaError("bad-request");
      const command = commands.find((c) => c.node === payload.attrs.node);
      if (!command) throw new StanzaError("item-not-found", "No such command");
      if (!origin) throw new StanzaError("forbidden", "Devices register through their own account on this server");
      const form = payload.getChild("x", NS.DATA_FORMS);
      if (payload.attrs.action === "cancel") {
        return el("command", { xmlns: COMMANDS, node: command.node, sessionid: payload.attrs.sessionid, status: "canceled" });
      }
      if (!form) {
        // Two steps: the form first.
        return el("command", { xmlns: COMMANDS, node: command.node, sessionid: randomBytes(9).toString("base64url"), status: "executing" },
          el("actions", { execute: "complete" }, el("complete")),
          buildForm("form", PUSH, command.fields.map((f) => ({ var: f, type: f === "sandbox" ? "boolean" as const : "text-single" as const }))));
      }
      // One step (Conversations sends the filled form with execute), or the submitted form.
      return el("command", { xmlns: COMMANDS, node: command.node, sessionid: payload.attrs.sessionid ?? randomBytes(9).toString("base64url"), status: "completed" },
        await register(service, from.bare, command, form));
    });

    ctx.on("user/deleted", async ({ jid }) => {
      for (const service of domains) {
        for (const item of await devicesOf(service, jid.bare)) await ctx.storage.documents.delete(service, keyOf(item.id));
        await ctx.storage.pubsub.deleteNode(service, jid.bare);
      }
    });

    let sweeping: Promise<void> | undefined;
    let stopping = false;
    const expire = () => {
      if (sweeping) return;
      sweeping = (async () => {
        const cutoff = Date.now() - o.deviceExpiryDays * 86_400_000;
        let removed = 0;
        for (const service of domains) {
          for (const owner of await ctx.storage.pubsub.nodes(service)) {
            if (stopping) return;
            const devices = await devicesOf(service, owner);
            const stale = devices.filter((d) => d.publishedAt < cutoff);
            for (const d of stale) await forget(service, owner, d.id);
            if (stale.length === devices.length) await ctx.storage.pubsub.deleteNode(service, owner);
            removed += stale.length;
            await new Promise((r) => setImmediate(r));
          }
        }
        if (removed) ctx.log.info({ stage: "appserver", removed }, "inactive device registrations removed");
      })().catch((err) => ctx.log.error({ err, stage: "appserver" }, "device expiry failed")).finally(() => { sweeping = undefined; });
    };
    expire();
    ctx.interval(o.expiryCheckMinutes * 60_000, expire);
    ctx.onStop(async () => {
      stopping = true;
      await sweeping;
    });
  },
});
