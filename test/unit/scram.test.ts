/** SCRAM test vectors (RFC 5802 §5, RFC 7677 §3) and the server mechanism's failure conditions. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { H, HMAC, deriveCredential, deriveCredentials, verifyPassword, xor } from "../../src/auth/scram.js";
import { createMechanism, type MechanismName, type SaslEnvironment } from "../../src/auth/sasl.js";
import type { Account, ScramCredentials, ScramHash } from "../../src/storage/index.js";

const VECTORS = [
  { hash: "SHA-1" as ScramHash, salt: "QSXCR+Q6sek8bf92", cnonce: "fyko+d2lbbFgONRv9qkxdawL", snonce: "3rfcNHYJY1ZVvWVs7j", proof: "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", server: "rmF9pqV8S7suAoZWja4dJRkFsKQ=" },
  { hash: "SHA-256" as ScramHash, salt: "W22ZaJ0SNY7soEsUEjb6gQ==", cnonce: "rOprNGfwEbeRWgbNEkqO", snonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", proof: "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", server: "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" },
];

describe("SCRAM key derivation matches the RFC test vectors", () => {
  for (const v of VECTORS) {
    it(`SCRAM-${v.hash}`, async () => {
      const cred = await deriveCredential(v.hash, "pencil", 4096, Buffer.from(v.salt, "base64"));
      const nonce = v.cnonce + v.snonce;
      const authMessage = `n=user,r=${v.cnonce},r=${nonce},s=${v.salt},i=4096,c=biws,r=${nonce}`;
      const storedKey = Buffer.from(cred.storedKey, "base64");
      const clientSignature = HMAC(v.hash, storedKey, authMessage);
      // Recover ClientKey from the RFC's proof and check it hashes to our StoredKey.
      const clientKey = xor(Buffer.from(v.proof, "base64"), clientSignature);
      assert.deepEqual(H(v.hash, clientKey), storedKey);
      assert.equal(HMAC(v.hash, Buffer.from(cred.serverKey, "base64"), authMessage).toString("base64"), v.server);
    });
  }
  it("PLAIN verification uses the stored keys; SASLprep maps the password", async () => {
    const cred = await deriveCredential("SHA-256", "I\u00ADX", 4096);
    assert.equal(await verifyPassword(cred, "SHA-256", "IX"), true);
    assert.equal(await verifyPassword(cred, "SHA-256", "ix"), false);
  });
  it("refuses fewer than 4096 iterations", async () => {
    await assert.rejects(deriveCredential("SHA-256", "x", 1000));
  });
});

/** A minimal independent SCRAM client for driving the server mechanism. */
export async function scramClient(name: MechanismName, env: SaslEnvironment, user: string, password: string, opts: { flag?: string; cb?: Buffer; tamper?: "nonce" | "cb" | "proof" } = {}) {
  const hash: ScramHash = name.includes("256") ? "SHA-256" : "SHA-1";
  const mech = createMechanism(name, env);
  const gs2 = `${opts.flag ?? (name.endsWith("-PLUS") ? "p=tls-exporter" : "n")},,`;
  const cnonce = randomBytes(12).toString("base64");
  const first = await mech.step(Buffer.from(`${gs2}n=${user},r=${cnonce}`));
  if (first.kind !== "challenge") return first;
  const serverFirst = first.data.toString();
  const attrs = Object.fromEntries(serverFirst.split(",").map((p) => [p[0], p.slice(2)]));
  const salted = (await import("../../src/auth/scram.js")).saltedPassword(hash, password, Buffer.from(attrs.s!, "base64"), Number(attrs.i));
  const key = await salted;
  const cbData = Buffer.concat([Buffer.from(gs2), opts.tamper === "cb" ? randomBytes(32) : gs2.startsWith("p=") ? opts.cb ?? Buffer.alloc(0) : Buffer.alloc(0)]);
  const withoutProof = `c=${cbData.toString("base64")},r=${opts.tamper === "nonce" ? attrs.r + "x" : attrs.r}`;
  const authMessage = `n=${user},r=${cnonce},${serverFirst},${withoutProof}`;
  const clientKey = HMAC(hash, key, "Client Key");
  let proof = xor(clientKey, HMAC(hash, H(hash, clientKey), authMessage));
  if (opts.tamper === "proof") proof = randomBytes(proof.length);
  const final = await mech.step(Buffer.from(`${withoutProof},p=${proof.toString("base64")}`));
  if (final.kind === "success") {
    const expected = HMAC(hash, HMAC(hash, key, "Server Key"), authMessage).toString("base64");
    assert.equal(final.data!.toString(), `v=${expected}`, "server signature verifies");
  }
  return final;
}

describe("SCRAM server mechanism", async () => {
  const cb = randomBytes(32);
  const account: Account = { jid: "user@localhost", createdAt: 0, credentials: await deriveCredentials("pencil", 4096) };
  const env = (plusOffered = true): SaslEnvironment => ({
    domain: "localhost",
    channelBinding: (t) => (t === "tls-exporter" ? cb : undefined),
    plusOffered,
    lookup: async (jid) => (jid === account.jid ? account : undefined),
    storeCredentials: async () => { throw new Error("an account made here has every key"); },
    secret: Buffer.alloc(32, 7),
    iterations: 4096,
  });

  for (const name of ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"] as const) {
    it(`${name}: success with the right password`, async () => {
      const r = await scramClient(name, env(), "user", "pencil", { cb });
      assert.equal(r.kind, "success");
    });
  }
  const failures: Array<[string, () => Promise<unknown>, string]> = [
    ["wrong password", () => scramClient("SCRAM-SHA-256", env(), "user", "wrong"), "not-authorized"],
    ["unknown user fails only at the proof", () => scramClient("SCRAM-SHA-256", env(), "nobody", "pencil"), "not-authorized"],
    ["tampered proof", () => scramClient("SCRAM-SHA-256", env(), "user", "pencil", { tamper: "proof" }), "not-authorized"],
    ["wrong nonce in client-final", () => scramClient("SCRAM-SHA-256", env(), "user", "pencil", { tamper: "nonce" }), "malformed-request"],
    ["channel-binding mismatch", () => scramClient("SCRAM-SHA-256-PLUS", env(), "user", "pencil", { tamper: "cb" }), "malformed-request"],
    ["unsupported channel-binding type", () => scramClient("SCRAM-SHA-256-PLUS", env(), "user", "pencil", { flag: "p=tls-unique" }), "malformed-request"],
    ["'y' flag while -PLUS was offered (downgrade)", () => scramClient("SCRAM-SHA-256", env(true), "user", "pencil", { flag: "y" }), "malformed-request"],
    ["p= with a non-PLUS mechanism", () => scramClient("SCRAM-SHA-256", env(), "user", "pencil", { flag: "p=tls-exporter" }), "malformed-request"],
  ];
  for (const [name, run, condition] of failures) {
    it(`${name} → ${condition}`, async () => {
      const r = (await run()) as { kind: string; condition?: string };
      assert.equal(r.kind, "failure");
      assert.equal(r.condition, condition);
    });
  }
  it("'y' flag is fine when -PLUS was not offered", async () => {
    assert.equal((await scramClient("SCRAM-SHA-256", env(false), "user", "pencil", { flag: "y" })).kind, "success");
  });
  it("an empty initial response and a mandatory extension are malformed", async () => {
    assert.deepEqual(await createMechanism("SCRAM-SHA-1", env()).step(undefined), { kind: "failure", condition: "malformed-request", text: "SCRAM needs an initial response" });
    const r = await createMechanism("SCRAM-SHA-1", env()).step(Buffer.from("n,,m=x,n=user,r=abc"));
    assert.equal(r.kind === "failure" && r.condition, "malformed-request");
  });
  it("unknown users get a stable salt, like real users", async () => {
    const salt = async () => ((await createMechanism("SCRAM-SHA-256", env()).step(Buffer.from("n,,n=ghost,r=abc"))) as { data: Buffer }).data.toString().split(",")[1];
    assert.equal(await salt(), await salt());
  });
  it("PLAIN: right and wrong password, authzid of another user", async () => {
    const plain = (s: string) => createMechanism("PLAIN", env()).step(Buffer.from(s));
    assert.equal((await plain("\0user\0pencil")).kind, "success");
    assert.equal(((await plain("\0user\0nope")) as { condition: string }).condition, "not-authorized");
    assert.equal(((await plain("\0ghost\0pencil")) as { condition: string }).condition, "not-authorized");
    assert.equal(((await plain("other@localhost\0user\0pencil")) as { condition: string }).condition, "invalid-authzid");
    assert.equal(((await plain("garbage")) as { condition: string }).condition, "malformed-request");
  });
});

describe("an account imported with SCRAM-SHA-1 keys only (XEP-0227)", async () => {
  const sha1 = await deriveCredential("SHA-1", "pencil", 4096);
  const stored: Array<{ jid: string; credentials: ScramCredentials }> = [];
  const account = (): Account => ({ jid: "old@localhost", createdAt: 0, credentials: { "SHA-1": sha1 } });
  const env = (): SaslEnvironment => ({
    domain: "localhost", channelBinding: () => undefined, plusOffered: false,
    lookup: async (jid) => (jid === "old@localhost" ? account() : undefined),
    storeCredentials: async (jid, credentials) => { stored.push({ jid, credentials }); },
    secret: Buffer.alloc(32, 7), iterations: 4096,
  });

  it("logs in with SCRAM-SHA-1", async () => {
    assert.equal((await scramClient("SCRAM-SHA-1", env(), "old", "pencil")).kind, "success");
    assert.equal(stored.length, 0);
  });
  it("SCRAM-SHA-256 fails like a wrong password: there are no keys to do it with, and no oracle", async () => {
    const r = await scramClient("SCRAM-SHA-256", env(), "old", "pencil");
    assert.equal((r as { condition: string }).condition, "not-authorized");
  });
  it("PLAIN checks the SHA-1 keys, then stores SHA-256 keys derived from the proven password", async () => {
    assert.equal(((await createMechanism("PLAIN", env()).step(Buffer.from("\0old\0wrong"))) as { condition: string }).condition, "not-authorized");
    assert.equal(stored.length, 0);
    assert.equal((await createMechanism("PLAIN", env()).step(Buffer.from("\0old\0pencil"))).kind, "success");
    assert.equal(stored.length, 1);
    const upgraded = stored[0]!.credentials;
    assert.deepEqual(upgraded["SHA-1"], sha1);
    assert.equal(await verifyPassword(upgraded["SHA-256"]!, "SHA-256", "pencil"), true);
  });
});
