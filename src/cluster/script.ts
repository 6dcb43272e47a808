/**
 * A Lua script run by its SHA1 (EVALSHA), so that its text crosses the connection once per
 * Redis server instead of with every call; loaded again when the server does not know it
 * (NOSCRIPT: a restart, a failover).
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

export type Script = (redis: Redis, keys: readonly string[], args: ReadonlyArray<string | number>) => Promise<unknown>;

export function script(lua: string): Script {
  const sha = createHash("sha1").update(lua).digest("hex");
  return async (redis, keys, args) => {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error).message).startsWith("NOSCRIPT")) throw err;
      return redis.eval(lua, keys.length, ...keys, ...args);
    }
  };
}
