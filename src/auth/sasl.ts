/**
 * SASL mechanisms on the server side (RFC 6120 §6; RFC 4616 PLAIN; RFC 5802 / RFC 7677 SCRAM with
 * channel binding per RFC 5929 and RFC 9266, advertised with XEP-0440). Failure conditions are the
 * ones of RFC 6120 §6.5; they are the stable error codes the tests assert on.
 */
import { createHmac, randomBytes } from "node:crypto";
import { H, HMAC, decodeSaslName, missingCredentials, parseAttributes, safeEqual, strongestCredential, verifyPassword, xor, MIN_ITERATIONS } from "./scram.js";
import { prepLocal } from "../xmpp/jid.js";
import type { Account, ScramCredential, ScramCredentials, ScramHash } from "../storage/index.js";

export type SaslFailureCondition =
  | "aborted" | "account-disabled" | "credentials-expired" | "encryption-required" | "incorrect-encoding"
  | "invalid-authzid" | "invalid-mechanism" | "malformed-request" | "mechanism-too-weak" | "not-authorized"
  | "temporary-auth-failure";

export type ChannelBindingType = "tls-exporter" | "tls-server-end-point" | "tls-unique";

export type SaslStep =
  | { kind: "challenge"; data: Buffer }
  | { kind: "success"; data?: Buffer; username: string }
  /**
   * `username`: the bare JID the client tried, when it got that far — whether or not the account
   * exists, so the per-account throttle treats both alike and reveals nothing.
   */
  | { kind: "failure"; condition: SaslFailureCondition; text?: string; username?: string };

export interface SaslEnvironment {
  domain: string;
  /** Channel-binding data the connection can compute; empty when not on TLS. */
  channelBinding(type: ChannelBindingType): Buffer | undefined;
  /** Whether -PLUS mechanisms were offered on this stream (a 'y' flag is then a downgrade). */
  plusOffered: boolean;
  lookup(bareJid: string): Promise<Account | undefined>;
  /** Stores keys PLAIN derived for an account that lacked some (one imported with SCRAM-SHA-1 keys only). */
  storeCredentials(bareJid: string, credentials: ScramCredentials): Promise<void>;
  /** Server secret for deterministic fake salts, so unknown users look like real ones. */
  secret: Buffer;
  iterations: number;
  /**
   * XEP-0474 SCRAM downgrade protection: what this stream advertised, so SCRAM can put the hash
   * of it into its server-first-message for the client to check.
   */
  downgradeProtection?: { mechanisms: readonly string[]; channelBindings: readonly string[] };
}

export interface SaslMechanism {
  step(data: Buffer | undefined): Promise<SaslStep>;
}

const fail = (condition: SaslFailureCondition, text?: string): SaslStep => ({ kind: "failure", condition, ...(text ? { text } : {}) });
/**
 * RFC 6120 §6.5.1: "The account of the initiating entity has been temporarily disabled". Said only
 * after the credentials proved right, so it tells nothing to someone guessing passwords.
 */
const disabled = (): SaslStep => fail("account-disabled", "This account is disabled");

export const MECHANISMS = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] as const;
export type MechanismName = (typeof MECHANISMS)[number];

export function createMechanism(name: MechanismName, env: SaslEnvironment): SaslMechanism {
  switch (name) {
    case "PLAIN": return new Plain(env);
    case "SCRAM-SHA-1": return new Scram(env, "SHA-1", false);
    case "SCRAM-SHA-256": return new Scram(env, "SHA-256", false);
    case "SCRAM-SHA-1-PLUS": return new Scram(env, "SHA-1", true);
    case "SCRAM-SHA-256-PLUS": return new Scram(env, "SHA-256", true);
  }
}

function localToBare(username: string, domain: string): string | undefined {
  try {
    return `${prepLocal(username)}@${domain}`;
  } catch {
    return undefined;
  }
}

/**
 * XEP-0474 §3.1: the sorted mechanisms joined by U+001E, then U+001F and the sorted channel-binding
 * types (when XEP-0440 announced any) joined by U+001E, hashed with the SCRAM hash, base64.
 */
export function downgradeProtectionHash(hash: ScramHash, mechanisms: readonly string[], channelBindings: readonly string[]): string {
  const octetOrder = (a: string, b: string) => (Buffer.compare(Buffer.from(a), Buffer.from(b)));
  let s = [...mechanisms].sort(octetOrder).join("\x1e");
  if (channelBindings.length > 0) s += "\x1f" + [...channelBindings].sort(octetOrder).join("\x1e");
  return H(hash, Buffer.from(s)).toString("base64");
}

function fakeCredential(env: SaslEnvironment, hash: ScramHash, username: string): ScramCredential {
  const salt = createHmac("sha256", env.secret).update(`${hash}\0${username}`).digest().subarray(0, 16);
  return { iterations: env.iterations, salt: salt.toString("base64"), storedKey: randomBytes(32).toString("base64"), serverKey: randomBytes(32).toString("base64") };
}

/**
 * RFC 4616: [authzid] NUL authcid NUL passwd. Verified against the strongest stored keys —
 * SCRAM-SHA-256, or SCRAM-SHA-1 for an account imported with only those — and an account that
 * lacks keys for a hash gets them from the password it just proved (XEP-0227 imports).
 */
class Plain implements SaslMechanism {
  constructor(private readonly env: SaslEnvironment) {}

  async step(data: Buffer | undefined): Promise<SaslStep> {
    if (!data || data.length === 0) return { kind: "challenge", data: Buffer.alloc(0) };
    const parts = data.toString("utf8").split("\0");
    if (parts.length !== 3) return fail("malformed-request");
    const [authzid, authcid, password] = parts as [string, string, string];
    const bare = localToBare(authcid, this.env.domain);
    const account = bare ? await this.env.lookup(bare) : undefined;
    const stored = account && strongestCredential(account.credentials);
    const { hash, credential } = stored ?? { hash: "SHA-256" as const, credential: fakeCredential(this.env, "SHA-256", authcid) };
    const ok = await verifyPassword(credential, hash, password);
    if (!account || !stored || !ok) return { ...fail("not-authorized"), ...(bare ? { username: bare } : {}) };
    if (authzid !== "" && authzid !== bare) return fail("invalid-authzid");
    if (account.disabled) return disabled();
    const completed = await missingCredentials(account.credentials, password, this.env.iterations);
    if (completed) await this.env.storeCredentials(bare!, completed);
    return { kind: "success", username: bare! };
  }
}

class Scram implements SaslMechanism {
  private state: "initial" | "final" | "done" = "initial";
  private gs2Header = "";
  private cbData: Buffer = Buffer.alloc(0);
  private clientFirstBare = "";
  private serverFirst = "";
  private nonce = "";
  private credential: ScramCredential | undefined;
  private bare: string | undefined;
  /** The account tried, existing or not. */
  private attempted: string | undefined;
  private authzid: string | undefined;
  private disabled = false;

  constructor(private readonly env: SaslEnvironment, private readonly hash: ScramHash, private readonly plus: boolean) {}

  async step(data: Buffer | undefined): Promise<SaslStep> {
    if (this.state === "initial") return this.clientFirst(data);
    if (this.state === "final") return this.clientFinal(data);
    return fail("malformed-request", "Unexpected SCRAM message");
  }

  private async clientFirst(data: Buffer | undefined): Promise<SaslStep> {
    if (!data || data.length === 0) return fail("malformed-request", "SCRAM needs an initial response");
    const message = data.toString("utf8");
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    const m = /^(n|y|p=[A-Za-z0-9.-]+),(a=[^,]*)?,(.*)$/s.exec(message);
    if (!m) return fail("malformed-request", "Invalid GS2 header");
    const [, flag, authz, bareMessage] = m as unknown as [string, string, string | undefined, string];
    if (this.plus) {
      if (!flag.startsWith("p=")) return fail("malformed-request", "A -PLUS mechanism needs channel binding");
      const type = flag.slice(2) as ChannelBindingType;
      const cb = type === "tls-exporter" || type === "tls-server-end-point" || type === "tls-unique" ? this.env.channelBinding(type) : undefined;
      if (!cb) return fail("malformed-request", "Proposed channel binding type isn't supported.");
      this.cbData = cb;
    } else if (flag.startsWith("p=")) {
      return fail("malformed-request", "Channel binding requires a -PLUS mechanism");
    } else if (flag === "y" && this.env.plusOffered) {
      // RFC 5802 §6: 'y' means the client believes the server lacks channel binding — we offered it,
      // so someone stripped it: a downgrade attack.
      return fail("malformed-request", "Channel binding downgrade detected");
    }
    this.gs2Header = message.slice(0, message.length - bareMessage.length);
    if (authz !== undefined) {
      const z = decodeSaslName(authz.slice(2));
      if (z === undefined || z === "") return fail("malformed-request", "Invalid authzid");
      this.authzid = z;
    }
    if (bareMessage.startsWith("m=")) return fail("malformed-request", "Mandatory extensions are not supported");
    const attrs = parseAttributes(bareMessage);
    const rawUser = attrs?.get("n");
    const clientNonce = attrs?.get("r");
    if (!attrs || rawUser === undefined || !clientNonce || !/^[\x21-\x2b\x2d-\x7e]+$/.test(clientNonce)) {
      return fail("malformed-request", "Invalid client-first-message");
    }
    const username = decodeSaslName(rawUser);
    if (username === undefined || username === "") return fail("malformed-request", "Invalid username encoding");
    this.clientFirstBare = bareMessage;
    this.bare = this.attempted = localToBare(username, this.env.domain);
    const account = this.bare ? await this.env.lookup(this.bare) : undefined;
    if (!account) this.bare = undefined;
    this.disabled = account?.disabled === true;
    // Unknown users get a deterministic fake salt and fail only at the proof, like real users
    // with a wrong password: no username oracle (HARDENING §4.7). An account without keys for
    // this hash (imported with SCRAM-SHA-1 keys only, not yet upgraded by a PLAIN login) fails
    // the same way: SCRAM cannot be done without them, and saying why would tell who exists.
    this.credential = account?.credentials[this.hash] ?? fakeCredential(this.env, this.hash, username);
    if (this.credential.iterations < MIN_ITERATIONS) return fail("temporary-auth-failure");
    this.nonce = clientNonce + randomBytes(18).toString("base64");
    this.serverFirst = `r=${this.nonce},s=${this.credential.salt},i=${this.credential.iterations}`;
    const advertised = this.env.downgradeProtection;
    if (advertised) this.serverFirst += `,h=${downgradeProtectionHash(this.hash, advertised.mechanisms, advertised.channelBindings)}`;
    this.state = "final";
    return { kind: "challenge", data: Buffer.from(this.serverFirst) };
  }

  private async clientFinal(data: Buffer | undefined): Promise<SaslStep> {
    this.state = "done";
    if (!data) return fail("malformed-request");
    const message = data.toString("utf8");
    const proofAt = message.lastIndexOf(",p=");
    if (proofAt === -1) return fail("malformed-request", "Missing proof");
    const withoutProof = message.slice(0, proofAt);
    const attrs = parseAttributes(withoutProof);
    if (!attrs) return fail("malformed-request");
    const expectedCb = Buffer.concat([Buffer.from(this.gs2Header), this.cbData]).toString("base64");
    if (attrs.get("c") !== expectedCb) return fail("malformed-request", "Invalid channel binding value.");
    if (attrs.get("r") !== this.nonce) return fail("malformed-request", "Wrong nonce in client-final-message");
    const proof = Buffer.from(message.slice(proofAt + 3), "base64");
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const credential = this.credential!;
    const storedKey = Buffer.from(credential.storedKey, "base64");
    const clientSignature = HMAC(this.hash, storedKey, authMessage);
    const wrong = (): SaslStep => ({ ...fail("not-authorized"), ...(this.attempted ? { username: this.attempted } : {}) });
    if (proof.length !== clientSignature.length) return wrong();
    const clientKey = xor(proof, clientSignature);
    if (!safeEqual(H(this.hash, clientKey), storedKey) || !this.bare) return wrong();
    if (this.authzid !== undefined && this.authzid !== this.bare) return fail("invalid-authzid");
    if (this.disabled) return disabled();
    const serverSignature = HMAC(this.hash, Buffer.from(credential.serverKey, "base64"), authMessage);
    return { kind: "success", username: this.bare, data: Buffer.from(`v=${serverSignature.toString("base64")}`) };
  }
}
