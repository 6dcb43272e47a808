/**
 * Postgres for tests: the server at PARLEY_TEST_PG_URL (default 127.0.0.1:5432, database test,
 * trust auth). Each storage gets a fresh schema, dropped when it closes.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createPostgresStorage } from "../../src/storage/postgres/index.js";
import type { Storage } from "../../src/storage/index.js";

export const PG_URL = process.env.PARLEY_TEST_PG_URL ?? "postgres://root@127.0.0.1:5432/test";

/** undefined when Postgres answers; otherwise why not. */
export async function postgresUnavailable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return undefined;
  } catch (err) {
    return `${PG_URL}: ${(err as Error).message}`;
  } finally {
    await client.end().catch(() => {});
  }
}

export async function freshPostgresStorage(): Promise<Storage> {
  return (await freshPostgresSchema()).storage;
}

/** A storage on a fresh schema, and the schema's name, for a test that also queries it directly. */
export async function freshPostgresSchema(poolSize = 4): Promise<{ storage: Storage; schema: string }> {
  const schema = `parley_test_${randomBytes(6).toString("hex")}`;
  const storage = await createPostgresStorage({ url: PG_URL, schema, poolSize });
  const close = storage.close.bind(storage);
  return { schema, storage: Object.assign(storage, {
    async close() {
      await close();
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await c.end();
    },
  }) };
}
