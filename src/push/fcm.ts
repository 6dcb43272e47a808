/**
 * Firebase Cloud Messaging HTTP v1 (projects/<id>/messages:send) over undici, authenticated with
 * an OAuth2 access token from a service account (RFC 7523 JWT bearer grant, RS256), cached until
 * a minute before it expires.
 */
import { request, type Dispatcher } from "undici";
import { signJwt } from "./jwt.js";
import type { PushOutcome } from "./apns.js";

export interface ServiceAccount {
  project_id: string;
  client_email: string;
  private_key: string;
  private_key_id?: string;
  token_uri?: string;
}

export interface FcmOptions {
  account: ServiceAccount;
  /** Default https://fcm.googleapis.com; a local server in tests. */
  endpoint?: string;
  dispatcher?: Dispatcher;
}

const SCOPE = "https://www.googleapis.com/auth/firebase.messaging";

export class FcmClient {
  private access: { token: string; until: number } | undefined;
  private pending: Promise<string> | undefined;

  constructor(private readonly options: FcmOptions) {}

  private async accessToken(): Promise<string> {
    if (this.access && Date.now() < this.access.until) return this.access.token;
    this.pending ??= (async () => {
      const { account } = this.options;
      const tokenUri = account.token_uri ?? "https://oauth2.googleapis.com/token";
      const iat = Math.floor(Date.now() / 1000);
      const assertion = signJwt("RS256", account.private_key_id ? { kid: account.private_key_id } : {},
        { iss: account.client_email, scope: SCOPE, aud: tokenUri, iat, exp: iat + 3600 }, account.private_key);
      const res = await request(tokenUri, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "urn:ietf:params:oauth:grant-type:jwt-bearer", assertion }).toString(),
        ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
      });
      const json = await res.body.json() as { access_token?: string; expires_in?: number };
      if (res.statusCode !== 200 || !json.access_token) throw new Error(`FCM token endpoint answered ${res.statusCode}`);
      this.access = { token: json.access_token, until: Date.now() + ((json.expires_in ?? 3600) - 60) * 1000 };
      return json.access_token;
    })().finally(() => { this.pending = undefined; });
    return this.pending;
  }

  async send(token: string, data: Record<string, string>): Promise<PushOutcome> {
    let bearer: string;
    try {
      bearer = await this.accessToken();
    } catch (err) {
      return { status: "failed", reason: (err as Error).message };
    }
    const url = `${this.options.endpoint ?? "https://fcm.googleapis.com"}/v1/projects/${encodeURIComponent(this.options.account.project_id)}/messages:send`;
    const res = await request(url, {
      method: "POST",
      headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
      body: JSON.stringify({ message: { token, data, android: { priority: "HIGH" } } }),
      ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
    });
    const text = await res.body.text();
    if (res.statusCode === 200) return { status: "sent" };
    let code = `HTTP ${res.statusCode}`;
    try {
      const err = (JSON.parse(text) as { error?: { status?: string; details?: Array<{ errorCode?: string }> } }).error;
      code = err?.details?.find((d) => d.errorCode)?.errorCode ?? err?.status ?? code;
    } catch { /* not JSON */ }
    if (res.statusCode === 401) this.access = undefined;
    // The token will never work again: remove the registration.
    if (code === "UNREGISTERED" || code === "INVALID_ARGUMENT" || res.statusCode === 404) return { status: "unregistered", reason: code };
    return { status: "failed", reason: code };
  }
}
