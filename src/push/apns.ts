/**
 * Apple Push Notification service over HTTP/2 with token-based authentication (ES256 provider
 * token from a .p8 key, key id and team id). One HTTP/2 connection per endpoint, reused; the
 * provider token is refreshed every 50 minutes (Apple: valid for an hour, not more often than
 * every 20 minutes). Node's http2 is used directly rather than @parse/node-apn: the protocol is
 * one POST per push, and this keeps connection reuse and error mapping in our hands.
 */
import { connect, constants, type ClientHttp2Session } from "node:http2";
import type { SecureContextOptions } from "node:tls";
import { signJwt } from "./jwt.js";

export const APNS_PRODUCTION = "https://api.push.apple.com";
export const APNS_SANDBOX = "https://api.sandbox.push.apple.com";

export interface ApnsOptions {
  /** PEM of the .p8 signing key. */
  key: string;
  keyId: string;
  teamId: string;
  /** The app's bundle id (apns-topic). */
  topic: string;
  production?: string;
  sandbox?: string;
  /** For tests against a local HTTP/2 server. */
  tls?: SecureContextOptions & { rejectUnauthorized?: boolean };
}

export interface ApnsNotification {
  deviceToken: string;
  sandbox: boolean;
  payload: unknown;
  pushType: "alert" | "background" | "voip";
  priority: 5 | 10;
  collapseId?: string;
}

/** What became of one push: delivered, the device is gone for good, or something else went wrong. */
export type PushOutcome = { status: "sent" } | { status: "unregistered"; reason: string } | { status: "failed"; reason: string };

export class ApnsClient {
  private readonly sessions = new Map<string, ClientHttp2Session>();
  private token: { value: string; at: number } | undefined;

  constructor(private readonly options: ApnsOptions) {}

  private bearer(): string {
    const now = Date.now();
    if (!this.token || now - this.token.at > 50 * 60_000) {
      this.token = { value: signJwt("ES256", { kid: this.options.keyId }, { iss: this.options.teamId, iat: Math.floor(now / 1000) }, this.options.key), at: now };
    }
    return this.token.value;
  }

  private session(origin: string): ClientHttp2Session {
    let s = this.sessions.get(origin);
    if (!s || s.closed || s.destroyed) {
      s = connect(origin, this.options.tls ?? {});
      s.on("error", () => this.sessions.delete(origin));
      s.on("close", () => this.sessions.delete(origin));
      s.unref();
      this.sessions.set(origin, s);
    }
    return s;
  }

  send(n: ApnsNotification): Promise<PushOutcome> {
    const origin = n.sandbox ? (this.options.sandbox ?? APNS_SANDBOX) : (this.options.production ?? APNS_PRODUCTION);
    const body = Buffer.from(JSON.stringify(n.payload));
    return new Promise((resolve) => {
      let req;
      try {
        req = this.session(origin).request({
          [constants.HTTP2_HEADER_METHOD]: "POST",
          [constants.HTTP2_HEADER_PATH]: `/3/device/${encodeURIComponent(n.deviceToken)}`,
          authorization: `bearer ${this.bearer()}`,
          "apns-topic": n.pushType === "voip" ? `${this.options.topic}.voip` : this.options.topic,
          "apns-push-type": n.pushType,
          "apns-priority": String(n.priority),
          ...(n.collapseId ? { "apns-collapse-id": n.collapseId } : {}),
          "content-type": "application/json",
          "content-length": body.length,
        });
      } catch (err) {
        return resolve({ status: "failed", reason: (err as Error).message });
      }
      let status = 0;
      let text = "";
      req.setEncoding("utf8");
      req.on("response", (headers) => { status = Number(headers[constants.HTTP2_HEADER_STATUS]); });
      req.on("data", (d: string) => { text += d; });
      req.on("error", (err) => resolve({ status: "failed", reason: err.message }));
      req.on("end", () => {
        if (status === 200) return resolve({ status: "sent" });
        const reason = (() => { try { return String((JSON.parse(text) as { reason?: string }).reason); } catch { return `HTTP ${status}`; } })();
        // 410 Unregistered, 400 BadDeviceToken / DeviceTokenNotForTopic: this token will never work again.
        if (status === 410 || (status === 400 && (reason === "BadDeviceToken" || reason === "DeviceTokenNotForTopic"))) return resolve({ status: "unregistered", reason });
        resolve({ status: "failed", reason });
      });
      req.end(body);
    });
  }

  close(): void {
    for (const s of this.sessions.values()) s.close();
    this.sessions.clear();
  }
}
