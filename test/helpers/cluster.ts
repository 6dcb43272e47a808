/** Redis for cluster tests: one key prefix per test, removed afterwards. */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

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

/** Deletes every key under the prefix. */
export async function dropKeyPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
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
