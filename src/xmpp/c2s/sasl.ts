/**
 * The SASL step of client negotiation (RFC 6120 §6): mechanisms and channel-binding types offered
 * (XEP-0440), the exchange of <auth/>, <challenge/>, <response/>, <abort/>, failures slowed per
 * address, and the stream closed after too many failures. The mechanisms themselves live in
 * src/auth/sasl.ts.
 */
import { NS } from "../ns.js";
import { StreamError } from "../../errors.js";
import { createMechanism, MECHANISMS, type ChannelBindingType, type MechanismName, type SaslMechanism } from "../../auth/sasl.js";
import type { Account, ScramCredentials } from "../../storage/index.js";
import type { TlsFacts } from "../stream/transport.js";
import { serverEndPoint } from "../tls.js";
import type { AuthThrottle } from "./throttle.js";
import type { Logger } from "../../log.js";

/** Failures of any kind on one stream before it is closed. */
const MAX_SASL_FAILURES = 10;

export interface SaslStepDeps {
  host: string;
  remoteAddress: string;
  /** The channel is encrypted (TLS, or HTTPS in front of a web transport). */
  secure: boolean;
  tls: TlsFacts | undefined;
  lookup(bareJid: string): Promise<Account | undefined>;
  storeCredentials(bareJid: string, credentials: ScramCredentials): Promise<void>;
  secret: Buffer;
  iterations: number;
  throttle: AuthThrottle;
  /** Wrong credentials on one stream before it is closed (RFC 6120 §6.4.5 "a reasonable number"). */
  maxAuthFailures: number;
  log: Logger;
}

/**
 * SASL data as XMPP carries it (RFC 6120 §6.4.2, XEP-0388 §2.2): base64 without whitespace; "="
 * is an empty response in RFC 6120 framing. undefined for no data, "invalid" for bad encoding.
 */
export function decodeSaslData(text: string, equalsIsEmpty: boolean): Buffer | undefined | "invalid" {
  const trimmed = text.trim();
  if (trimmed === "") return undefined;
  if (equalsIsEmpty && trimmed === "=") return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) return "invalid";
  return Buffer.from(trimmed, "base64");
}

/** What one SASL message leads to; the framing (RFC 6120 SASL or XEP-0388 SASL2) writes it. */
export type SaslOutcome =
  | { kind: "challenge"; data: Buffer }
  /** With `thenClose`, the stream ends after the failure (RFC 6120 §6.4.5: too many retries). */
  | { kind: "failure"; condition: string; text?: string; thenClose?: StreamError; username?: string }
  /** Too many failures, or a protocol violation: the stream ends with this error. */
  | { kind: "stream-error"; error: StreamError }
  | { kind: "success"; username: string; additionalData?: Buffer };

/** The exchange of one stream, whatever its framing: mechanisms offered, steps, failures counted and slowed. */
export class SaslStep {
  private mechanism: SaslMechanism | undefined;
  /** The mechanism of the exchange under way, for the log. */
  private mechanismName = "";
  private busy = false;
  private authFailures = 0;
  private failures = 0;

  constructor(private readonly deps: SaslStepDeps) {}

  /**
   * RFC 9266 §3: tls-exporter is defined for TLS 1.3 (TLS 1.2 only with extended master secret,
   * which we cannot verify), and tls-unique only below TLS 1.3 (RFC 5929; old clients such as
   * slixmpp 1.8 ask for nothing else).
   */
  channelBindingTypes(): ChannelBindingType[] {
    const tls = this.deps.tls;
    if (!tls) return [];
    return tls.version === "TLSv1.3" ? ["tls-exporter", "tls-server-end-point"] : ["tls-server-end-point", "tls-unique"];
  }

  /**
   * RFC 4616 §6: "By default, implementations SHOULD advertise and make use of the PLAIN mechanism
   * only when adequate data security services are in place." TCP streams are encrypted before SASL
   * (STARTTLS is required); a WebSocket over plain HTTP that no trusted proxy vouches for is not.
   */
  offeredMechanisms(): MechanismName[] {
    const plus = this.channelBindingTypes().length > 0;
    return MECHANISMS.filter((m) => (plus || !m.endsWith("-PLUS")) && (this.deps.secure || m !== "PLAIN"));
  }

  /** XEP-0440: the channel-binding types, as a stream feature. */
  channelBindingFeature(): string {
    const cb = this.channelBindingTypes().map((t) => `<channel-binding type='${t}'/>`).join("");
    return cb ? `<sasl-channel-binding xmlns='${NS.SASL_CB}'>${cb}</sasl-channel-binding>` : "";
  }

  /** RFC 6120 §6.4.2: the mechanisms as a stream feature. */
  features(): string {
    const mechs = this.offeredMechanisms().map((m) => `<mechanism>${m}</mechanism>`).join("");
    return `<mechanisms xmlns='${NS.SASL}'>${mechs}</mechanisms>` + this.channelBindingFeature();
  }

  /** Ends the exchange under way; the answer is `aborted`, or `condition` when the framing found the message unusable. */
  abort(condition = "aborted"): SaslOutcome {
    this.mechanism = undefined;
    return { kind: "failure", condition };
  }

  /** <auth/> or <authenticate/>: a new exchange with `mechanism` (one of `offeredMechanisms`). */
  start(name: string, initialResponse: Buffer | undefined, ssdpMechanisms: readonly string[]): Promise<SaslOutcome> {
    this.mechanismName = name;
    // RFC 6120 §6.5.4: <encryption-required/> when the mechanism needs a protected stream.
    if (name === "PLAIN" && !this.deps.secure) return Promise.resolve({ kind: "failure", condition: "encryption-required" });
    if (!(this.offeredMechanisms() as string[]).includes(name)) return Promise.resolve({ kind: "failure", condition: "invalid-mechanism" });
    this.mechanism = createMechanism(name as MechanismName, {
      domain: this.deps.host,
      channelBinding: (t) => this.channelBinding(t),
      plusOffered: this.channelBindingTypes().length > 0,
      lookup: this.deps.lookup,
      storeCredentials: this.deps.storeCredentials,
      secret: this.deps.secret,
      iterations: this.deps.iterations,
      downgradeProtection: { mechanisms: ssdpMechanisms, channelBindings: this.channelBindingTypes() },
    });
    return this.step(initialResponse);
  }

  /** <response/>: the next message of the exchange under way. */
  respond(data: Buffer | undefined): Promise<SaslOutcome> {
    if (!this.mechanism) return Promise.resolve({ kind: "failure", condition: "not-authorized", text: "Out of order SASL element" });
    return this.step(data);
  }

  /** A mechanism that authenticates by other means (XEP-0484 tokens): its outcome is counted and slowed like the rest. */
  async settle(outcome: Promise<SaslOutcome>, mechanism = this.mechanismName): Promise<SaslOutcome> {
    this.mechanismName = mechanism;
    if (this.busy) return { kind: "stream-error", error: new StreamError("policy-violation", "SASL messages must wait for the server's answer") };
    this.busy = true;
    try {
      return await this.conclude(await outcome);
    } finally {
      this.busy = false;
    }
  }

  private async step(data: Buffer | undefined): Promise<SaslOutcome> {
    const mechanism = this.mechanism!;
    return this.settle(mechanism.step(data).then((step): SaslOutcome => {
      if (step.kind === "challenge") return { kind: "challenge", data: step.data };
      this.mechanism = undefined;
      // The account tried rides along (existing or not) for the per-account slow-down.
      if (step.kind === "failure") return { kind: "failure", condition: step.condition, ...(step.text ? { text: step.text } : {}), ...(step.username ? { username: step.username } : {}) };
      return { kind: "success", username: step.username, ...(step.data ? { additionalData: step.data } : {}) };
    }));
  }

  private async conclude(outcome: SaslOutcome): Promise<SaslOutcome> {
    const { remoteAddress, throttle, log } = this.deps;
    if (outcome.kind === "success") {
      throttle.succeed(remoteAddress, outcome.username);
      log.info({ stage: "sasl", user: outcome.username, mechanism: this.mechanismName }, "authenticated");
      return outcome;
    }
    if (outcome.kind !== "failure") return outcome;
    const delay = outcome.condition === "not-authorized" ? throttle.fail(remoteAddress, outcome.username) : 0;
    if (delay) await new Promise((r) => setTimeout(r, delay));
    log.info({ stage: "sasl", condition: outcome.condition, mechanism: this.mechanismName, text: outcome.text, address: remoteAddress }, "authentication failed");
    // RFC 6120 §6.4.5: after a reasonable number of retries the server closes the stream.
    // Only wrong credentials count as retries: clients walk down their mechanism list and
    // may fail several times on channel binding first (slixmpp 1.8 tries tls-unique, which
    // TLS 1.3 does not have, then 'y'-flagged SCRAM, which we must refuse), before PLAIN.
    if (outcome.condition === "not-authorized") this.authFailures++;
    if (this.authFailures >= this.deps.maxAuthFailures || ++this.failures >= MAX_SASL_FAILURES) {
      return { ...outcome, thenClose: new StreamError("policy-violation", "Too many failed authentication attempts") };
    }
    return outcome;
  }

  /** The channel-binding data of this stream for `type`, when it is one we offer. */
  channelBinding(type: ChannelBindingType): Buffer | undefined {
    const tls = this.deps.tls;
    if (!tls || !this.channelBindingTypes().includes(type)) return undefined;
    // RFC 9266 §2: label "EXPORTER-Channel-Binding", no context value, 32 bytes.
    if (type === "tls-exporter") return tls.exportKeyingMaterial(32, "EXPORTER-Channel-Binding");
    if (type === "tls-unique") return tls.tlsUnique();
    const served = tls.serverCertificate();
    return served && serverEndPoint(served);
  }
}
