/**
 * Web Push (RFC 8030) with message encryption (RFC 8291, aes128gcm) and VAPID (RFC 8292), through
 * the web-push package — it implements exactly those three RFCs; we map its outcomes.
 */
import webpush from "web-push";
import { Agent } from "node:https";
import type { PushOutcome } from "./apns.js";

export interface WebPushOptions {
  /** VAPID key pair, base64url (as `npx web-push generate-vapid-keys` prints them). */
  publicKey: string;
  privateKey: string;
  /** mailto: or https: contact for the push service's operators (RFC 8292 §2.1). */
  subject: string;
  /** Only for tests with a self-signed local push service. */
  insecureTls?: boolean;
}

export interface WebPushSubscription { endpoint: string; p256dh: string; auth: string }

export class WebPushClient {
  private readonly agent: Agent;

  constructor(private readonly options: WebPushOptions) {
    this.agent = new Agent({ keepAlive: true, ...(options.insecureTls ? { rejectUnauthorized: false } : {}) });
  }

  async send(subscription: WebPushSubscription, payload: Record<string, string>): Promise<PushOutcome> {
    try {
      await webpush.sendNotification(
        { endpoint: subscription.endpoint, keys: { p256dh: subscription.p256dh, auth: subscription.auth } },
        JSON.stringify(payload),
        {
          vapidDetails: { subject: this.options.subject, publicKey: this.options.publicKey, privateKey: this.options.privateKey },
          TTL: 86_400, urgency: "high", agent: this.agent, contentEncoding: "aes128gcm",
        });
      return { status: "sent" };
    } catch (err) {
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
