/** Redis and Postgres for cluster tests: one key prefix and one schema per test, removed afterwards. */
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import pg from "pg";
import { Redis } from "ioredis";
import { PG_URL } from "./postgres.js";

export const REDIS_URL = process.env.PARLEY_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** undefined when Redis answers; otherwise why not. */
export async function redisUnavailable(): Promise<string | undefined> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 2000 });
  try {
    await redis.connect();
    await redis.ping();
    return undefined;
  } catch (err) {
    return `${REDIS_URL}: ${(err as Error).message}`;
  } finally {
    redis.disconnect();
  }
}

export function freshKeyPrefix(): string {
  return `parley-test-${randomBytes(6).toString("hex")}`;
}

/** Deletes every key under the prefix (also the load generator's cleanup of a `--nodes` target). */
export async function dropKeyPrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const redis = new Redis(url);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

/** Polls a condition the system reaches on its own (a directory change reaching another node). */
export async function until(condition: () => boolean | Promise<boolean>, what: string, attempts = 500, everyMs = 20): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`never happened: ${what}`);
}

/** Drops a test's Postgres schema (every node of a test shares one). */
export async function dropSchema(schema: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await c.end();
}

/** A loopback port that was free a moment ago (for programs that cannot listen on port 0 and tell). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
