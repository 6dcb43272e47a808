/**
 * Web Push (RFC 8030) with message encryption (RFC 8291, aes128gcm) and VAPID (RFC 8292), through
 * the web-push package — it implements exactly those three RFCs; we map its outcomes. The endpoint
 * comes from a user, so every connection goes through the outbound policy (./outbound.ts): allowed
 * push services at public addresses only, checked on the address connected to, no redirects.
 */
import webpush from "web-push";
import type { PushOutcome } from "./apns.js";
import { GuardedAgent, OutboundRefused, checkPushEndpoint, parsePushEndpoint, systemResolver, type OutboundPolicy, type Resolver } from "./outbound.js";

export interface WebPushOptions {
  /** VAPID key pair, base64url (as `npx web-push generate-vapid-keys` prints them). */
  publicKey: string;
  privateKey: string;
  /** mailto: or https: contact for the push service's operators (RFC 8292 §2.1). */
  subject: string;
  /** Only for tests with a self-signed local push service. */
  insecureTls?: boolean;
  /** Where endpoints may point. */
  policy: OutboundPolicy;
  resolve?: Resolver;
}

export interface WebPushSubscription { endpoint: string; p256dh: string; auth: string }

export class WebPushClient {
  private readonly agent: GuardedAgent;

  constructor(private readonly options: WebPushOptions) {
    this.agent = new GuardedAgent(options.policy, { keepAlive: true, ...(options.insecureTls ? { rejectUnauthorized: false } : {}) }, options.resolve);
  }

  /** Refuses (OutboundRefused) an endpoint the policy does not allow, before anything is stored or sent. */
  checkEndpoint(endpoint: string): Promise<URL> {
    return checkPushEndpoint(endpoint, this.options.policy, this.options.resolve ?? systemResolver);
  }

  async send(subscription: WebPushSubscription, payload: Record<string, string>): Promise<PushOutcome> {
    try {
      // Checked again (the policy may have changed since the registration); the addresses are
      // checked by the agent on the connection itself, whatever URL parser the library uses.
      const endpoint = parsePushEndpoint(subscription.endpoint, this.options.policy).href;
      await webpush.sendNotification(
        { endpoint, keys: { p256dh: subscription.p256dh, auth: subscription.auth } },
        JSON.stringify(payload),
        {
          vapidDetails: { subject: this.options.subject, publicKey: this.options.publicKey, privateKey: this.options.privateKey },
          TTL: 86_400, urgency: "high", agent: this.agent, contentEncoding: "aes128gcm",
        });
      return { status: "sent" };
    } catch (err) {
      // An endpoint the policy refuses will never be sent to: the registration goes.
      if (err instanceof OutboundRefused) return { status: err.permanent ? "unregistered" : "failed", reason: `refused: ${err.message}` };
      const status = (err as { statusCode?: number }).statusCode;
      // RFC 8030 §7.3: 404/410 — the subscription has expired or been removed.
      if (status === 404 || status === 410) return { status: "unregistered", reason: `HTTP ${status}` };
      return { status: "failed", reason: status ? `HTTP ${status}` : (err as Error).message };
    }
  }

  close(): void {
    this.agent.destroy();
  }
}
