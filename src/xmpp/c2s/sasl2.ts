/**
 * XEP-0388 Extensible SASL Profile 1.0.4 (urn:xmpp:sasl:2) with its inline features: XEP-0386
 * Bind 2 0.4.0 (urn:xmpp:bind:0), XEP-0198 inline resumption and XEP-0484 FAST 0.1.0
 * (urn:xmpp:fast:0). This file reads a client's <authenticate/> and writes the server's elements;
 * the negotiation runs the exchange.
 */
import { createHmac } from "node:crypto";
import { escapeXML, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { prepResource } from "../jid.js";
import { decodeSaslData } from "./sasl.js";
import { NS_SM, parseH } from "./sm.js";
import type { UserAgent } from "../../auth/fast.js";
import { NS_SASL_UPGRADE, NS_SCRAM_UPGRADE } from "../../auth/upgrade.js";

export const NS_SASL2 = "urn:xmpp:sasl:2";
export const NS_BIND2 = "urn:xmpp:bind:0";
export const NS_FAST = "urn:xmpp:fast:0";

/** XEP-0388 §2.3: "The contents of the 'id' attribute MUST be a UUID v4." */
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
/** Descriptions and tags are for people; keep them short. */
const MAX_TEXT = 128;

export interface Sasl2Request {
  mechanism: string;
  initialResponse: Buffer | undefined;
  userAgent: UserAgent | undefined;
  /** XEP-0386: bind a resource, with the features to enable inline. */
  bind: { tag: string | undefined; features: Element[] } | undefined;
  /** XEP-0198 inline resumption. */
  resume: { previd: string; h: number } | undefined;
  /** XEP-0484 §4.4: authentication with a token. */
  fast: { count: number | undefined; invalidate: boolean } | undefined;
  /** XEP-0484 §4.2: a token for this mechanism, please. */
  requestToken: string | undefined;
  /** XEP-0480 §2.2: the upgrade tasks the client is ready to perform. */
  upgrades: string[];
}

export type Sasl2Parsed = { ok: true; request: Sasl2Request } | { ok: false; condition: string; text: string };

const bad = (condition: string, text: string): Sasl2Parsed => ({ ok: false, condition, text });

export function parseAuthenticate(element: Element): Sasl2Parsed {
  const mechanism = element.attrs.mechanism as string | undefined;
  if (!mechanism) return bad("invalid-mechanism", "No mechanism");
  const initial = element.getChild("initial-response", NS_SASL2);
  const initialResponse = initial ? decodeSaslData(initial.getText(), false) : undefined;
  if (initialResponse === "invalid") return bad("incorrect-encoding", "The initial response is not base64");
  let userAgent: UserAgent | undefined;
  const ua = element.getChild("user-agent", NS_SASL2);
  if (ua) {
    const id = ua.attrs.id as string | undefined;
    if (id !== undefined && !UUID_V4.test(id)) return bad("malformed-request", "The user-agent id must be a UUID v4");
    if (id !== undefined) {
      userAgent = { id: id.toLowerCase(), software: short(ua.getChildText("software", NS_SASL2)), name: short(ua.getChildText("device", NS_SASL2)) };
    }
  }
  const bindElement = element.getChild("bind", NS_BIND2);
  const bind = bindElement && {
    tag: bindElement.getChildText("tag", NS_BIND2)?.trim().slice(0, MAX_TEXT) || undefined,
    features: bindElement.children.filter((c): c is Element => typeof c !== "string" && c.getNS() !== NS_BIND2),
  };
  let resume: Sasl2Request["resume"];
  const resumeElement = element.getChild("resume", NS_SM);
  if (resumeElement) {
    const h = parseH(resumeElement.attrs.h);
    const previd = resumeElement.attrs.previd as string | undefined;
    if (h === undefined || !previd) return bad("malformed-request", "Invalid resumption request");
    resume = { previd, h };
  }
  let fast: Sasl2Request["fast"];
  const fastElement = element.getChild("fast", NS_FAST);
  if (fastElement) {
    const rawCount = fastElement.attrs.count as string | undefined;
    // XEP-0484 §4.4: "a positive integer, which is incremented by the client on every authentication attempt".
    if (rawCount !== undefined && !/^[1-9]\d{0,15}$/.test(rawCount)) return bad("malformed-request", "The FAST count must be a positive integer");
    fast = { count: rawCount === undefined ? undefined : Number(rawCount), invalidate: fastElement.attrs.invalidate === "true" || fastElement.attrs.invalidate === "1" };
  }
  const requestToken = element.getChild("request-token", NS_FAST)?.attrs.mechanism as string | undefined;
  const upgrades = element.getChildren("upgrade", NS_SASL_UPGRADE).map((u) => u.getText().trim()).filter(Boolean);
  return { ok: true, request: { mechanism, initialResponse, userAgent, bind, resume, fast, requestToken, upgrades } };
}

function short(text: string | null | undefined): string {
  return (text ?? "").trim().slice(0, MAX_TEXT);
}

export interface Sasl2Offer {
  mechanisms: readonly string[];
  /** XEP-0386 inline features a bind request may enable. */
  bindFeatures: readonly string[];
  /** XEP-0484: the token mechanisms usable on this stream. */
  fastMechanisms: readonly string[];
  /** XEP-0480 §2.1: upgrade tasks, listed in <authentication/>. */
  upgrades: readonly string[];
}

/** XEP-0388 §2.1 stream feature, with XEP-0386, XEP-0484 and XEP-0198 as inline features and XEP-0480 upgrade tasks. */
export function authenticationFeature(offer: Sasl2Offer): string {
  const mechanisms = offer.mechanisms.map((m) => `<mechanism>${m}</mechanism>`).join("");
  const bindFeatures = offer.bindFeatures.map((ns) => `<feature var='${escapeXML(ns)}'/>`).join("");
  const fast = offer.fastMechanisms.length
    ? `<fast xmlns='${NS_FAST}'>${offer.fastMechanisms.map((m) => `<mechanism>${m}</mechanism>`).join("")}</fast>` : "";
  const upgrades = offer.upgrades.map((task) => `<upgrade xmlns='${NS_SASL_UPGRADE}'>${task}</upgrade>`).join("");
  return `<authentication xmlns='${NS_SASL2}'>${mechanisms}<inline><bind xmlns='${NS_BIND2}'><inline>${bindFeatures}</inline></bind>${fast}<sm xmlns='${NS_SM}'/></inline>${upgrades}</authentication>`;
}

/** XEP-0480 §2.2: after the exchange succeeded, before <success/>: one task for the client to start. */
export function continueWith(task: string, additionalData: Buffer | undefined): string {
  const data = additionalData ? `<additional-data>${additionalData.toString("base64")}</additional-data>` : "";
  return `<continue xmlns='${NS_SASL2}'>${data}<tasks><task>${escapeXML(task)}</task></tasks></continue>`;
}

/** XEP-0480 §3: the salt and iteration count the client derives its SaltedPassword with. */
export function scramUpgradeSalt(salt: Buffer, iterations: number): string {
  return `<task-data xmlns='${NS_SASL2}'><salt xmlns='${NS_SCRAM_UPGRADE}' iterations='${iterations}'>${salt.toString("base64")}</salt></task-data>`;
}

export function challenge(data: Buffer): string {
  return `<challenge xmlns='${NS_SASL2}'>${data.toString("base64")}</challenge>`;
}

/** XEP-0388 §2.6.2: a failure carries an RFC 6120 §6.5 condition. */
export function failure(condition: string, text?: string): string {
  return `<failure xmlns='${NS_SASL2}'><${condition} xmlns='${NS.SASL}'/>${text ? `<text>${escapeXML(text)}</text>` : ""}</failure>`;
}

/** XEP-0388 §2.6.1: the success, naming the identity (a full JID once bound or resumed), and what inline features answered. */
export function success(identity: string, additionalData: Buffer | undefined, inline: readonly string[]): string {
  const data = additionalData ? `<additional-data>${additionalData.toString("base64")}</additional-data>` : "";
  return `<success xmlns='${NS_SASL2}'>${data}<authorization-identifier>${escapeXML(identity)}</authorization-identifier>${inline.join("")}</success>`;
}

export function fastToken(token: string, expiresAt: number): string {
  // XEP-0484 §4.3: the expiry in the XEP-0082 DateTime profile.
  return `<token xmlns='${NS_FAST}' token='${token}' expiry='${new Date(expiresAt).toISOString().replace(/\.\d{3}Z$/, "Z")}'/>`;
}

/**
 * XEP-0386 §3.1: "[client tag]/[server generated identifier]". The identifier is derived from the
 * user-agent id, so a device gets the same resource each time — its new session replaces its old
 * one instead of piling up resources — and the id itself is not exposed.
 */
export function bind2Resource(tag: string | undefined, owner: string, userAgentId: string | undefined, secret: Buffer, random: () => string): string {
  const suffix = userAgentId
    ? createHmac("sha256", secret).update(`bind2\0${owner}\0${userAgentId}`).digest("base64url").slice(0, 12)
    : random();
  let prefix = "";
  if (tag) {
    try {
      prefix = `${prepResource(tag)}/`;
    } catch {
      prefix = "";
    }
  }
  return prepResource(prefix + suffix);
}
