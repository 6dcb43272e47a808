/**
 * The SASL step of client negotiation (RFC 6120 §6): mechanisms and channel-binding types offered
 * (XEP-0440), the exchange of <auth/>, <challenge/>, <response/>, <abort/>, failures slowed per
 * address, and the stream closed after too many failures. The mechanisms themselves live in
 * src/auth/sasl.ts.
 */
import { escapeXML, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { StreamError } from "../../errors.js";
import { createMechanism, MECHANISMS, type ChannelBindingType, type MechanismName, type SaslMechanism } from "../../auth/sasl.js";
import type { Account } from "../../storage/index.js";
import type { TlsFacts } from "../stream/transport.js";
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
  /** RFC 5929 tls-server-end-point data of the certificate this stream was served with. */
  serverEndPoint(servername: string | undefined): Buffer | undefined;
  lookup(bareJid: string): Promise<Account | undefined>;
  secret: Buffer;
  iterations: number;
  throttle: AuthThrottle;
  /** Wrong credentials on one stream before it is closed (RFC 6120 §6.4.5 "a reasonable number"). */
  maxAuthFailures: number;
  log: Logger;
}

export interface SaslOutput {
  send(xml: string): void;
  streamError(error: StreamError): void;
  /** Whether the stream is still waiting for authentication (it may have ended during a wait). */
  stillNegotiating(): boolean;
}

export class SaslStep {
  private mechanism: SaslMechanism | undefined;
  private busy = false;
  private authFailures = 0;
  private failures = 0;

  constructor(private readonly deps: SaslStepDeps, private readonly out: SaslOutput) {}

  /** RFC 9266 §3: tls-exporter is defined for TLS 1.3 (TLS 1.2 only with extended master secret, which we cannot verify). */
  channelBindingTypes(): ChannelBindingType[] {
    const tls = this.deps.tls;
    if (!tls) return [];
    return tls.version === "TLSv1.3" ? ["tls-exporter", "tls-server-end-point"] : ["tls-server-end-point"];
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

  features(): string {
    const mechs = this.offeredMechanisms().map((m) => `<mechanism>${m}</mechanism>`).join("");
    const cb = this.channelBindingTypes().map((t) => `<channel-binding type='${t}'/>`).join("");
    return `<mechanisms xmlns='${NS.SASL}'>${mechs}</mechanisms>`
      + (cb ? `<sasl-channel-binding xmlns='${NS.SASL_CB}'>${cb}</sasl-channel-binding>` : "");
  }

  /** Handles one SASL element; resolves to the authenticated bare JID once <success/> was sent. */
  async handle(element: Element): Promise<string | undefined> {
    if (this.busy) {
      this.out.streamError(new StreamError("policy-violation", "SASL messages must wait for the server's answer"));
      return undefined;
    }
    if (element.name === "abort") {
      this.mechanism = undefined;
      this.failure("aborted");
      return undefined;
    }
    if (element.name === "auth") {
      const name = element.attrs.mechanism as MechanismName;
      // RFC 6120 §6.5.4: <encryption-required/> when the mechanism needs a protected stream.
      if (name === "PLAIN" && !this.deps.secure) {
        this.failure("encryption-required");
        return undefined;
      }
      if (!this.offeredMechanisms().includes(name)) {
        this.failure("invalid-mechanism");
        return undefined;
      }
      this.mechanism = createMechanism(name, {
        domain: this.deps.host,
        channelBinding: (t) => this.channelBinding(t),
        plusOffered: this.channelBindingTypes().length > 0,
        lookup: this.deps.lookup,
        secret: this.deps.secret,
        iterations: this.deps.iterations,
      });
    } else if (!this.mechanism) {
      this.failure("not-authorized", "Out of order SASL element");
      return undefined;
    }
    const mechanism = this.mechanism;
    const text = element.getText().trim();
    let data: Buffer | undefined;
    if (text === "=") data = Buffer.alloc(0);
    else if (text !== "") {
      // RFC 6120 §6.4.2: base64 without whitespace; anything else is incorrect-encoding.
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
        this.mechanism = undefined;
        this.failure("incorrect-encoding");
        return undefined;
      }
      data = Buffer.from(text, "base64");
    }
    this.busy = true;
    let step;
    try {
      step = await mechanism.step(data);
    } finally {
      this.busy = false;
    }
    if (!this.out.stillNegotiating()) return undefined;
    if (step.kind === "challenge") {
      this.out.send(`<challenge xmlns='${NS.SASL}'>${step.data.toString("base64") || "="}</challenge>`);
      return undefined;
    }
    this.mechanism = undefined;
    if (step.kind === "failure") {
      const { remoteAddress, throttle, log } = this.deps;
      const delay = step.condition === "not-authorized" ? throttle.fail(remoteAddress) : 0;
      if (delay) await new Promise((r) => setTimeout(r, delay));
      if (!this.out.stillNegotiating()) return undefined;
      this.failure(step.condition, step.text);
      log.info({ stage: "sasl", condition: step.condition, address: remoteAddress }, "authentication failed");
      // RFC 6120 §6.4.5: after a reasonable number of retries the server closes the stream.
      // Only wrong credentials count as retries: clients walk down their mechanism list and
      // may fail several times on channel binding first (slixmpp 1.8 tries tls-unique, which
      // TLS 1.3 does not have, then 'y'-flagged SCRAM, which we must refuse), before PLAIN.
      if (step.condition === "not-authorized") this.authFailures++;
      if (this.authFailures >= this.deps.maxAuthFailures || ++this.failures >= MAX_SASL_FAILURES) {
        this.out.streamError(new StreamError("policy-violation", "Too many failed authentication attempts"));
      }
      return undefined;
    }
    this.deps.throttle.succeed(this.deps.remoteAddress);
    this.out.send(`<success xmlns='${NS.SASL}'>${step.data ? step.data.toString("base64") : ""}</success>`);
    this.deps.log.info({ stage: "sasl", user: step.username }, "authenticated");
    return step.username;
  }

  private failure(condition: string, text?: string): void {
    this.out.send(`<failure xmlns='${NS.SASL}'><${condition}/>${text ? `<text>${escapeXML(text)}</text>` : ""}</failure>`);
  }

  private channelBinding(type: ChannelBindingType): Buffer | undefined {
    const tls = this.deps.tls;
    if (!tls || !this.channelBindingTypes().includes(type)) return undefined;
    // RFC 9266 §2: label "EXPORTER-Channel-Binding", no context value, 32 bytes.
    if (type === "tls-exporter") return tls.exportKeyingMaterial(32, "EXPORTER-Channel-Binding");
    return this.deps.serverEndPoint(tls.servername);
  }
}
