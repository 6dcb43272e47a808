/**
 * A decorator around a Storage that times every operation of every store for the metrics, in one
 * place instead of at each call site. Semantics are untouched: each method is called on the
 * original store with the same arguments, and its result or failure is passed through.
 */
import type { Storage } from "../storage/index.js";
import type { StorageMetrics } from "./index.js";

type Store = Record<string, unknown>;

/** Method names of a store, its own and its prototypes' (drivers may be object literals or classes). */
function methodsOf(store: object): string[] {
  const names = new Set<string>();
  for (let o: object | null = store; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const name of Object.getOwnPropertyNames(o)) {
      if (name !== "constructor" && typeof (store as Store)[name] === "function") names.add(name);
    }
  }
  return [...names];
}

function instrumentStore(storeName: string, store: Store, metrics: StorageMetrics): Store {
  const wrapped: Store = {};
  for (const name of methodsOf(store)) {
    const method = store[name] as (...args: unknown[]) => unknown;
    const isUploadRecord = storeName === "uploads" && name === "add";
    const record = metrics.operation(storeName, name);
    wrapped[name] = (...args: unknown[]) => {
      // performance.now(), not hrtime.bigint(): no BigInt allocated per operation.
      const start = performance.now();
      const done = (failed: boolean) => record((performance.now() - start) / 1000, failed);
      let result: unknown;
      try {
        result = method.apply(store, args);
      } catch (err) {
        done(true);
        throw err;
      }
      if (!(result instanceof Promise)) {
        done(false);
        return result;
      }
      return result.then((value) => {
        done(false);
        // The upload module writes the record once the file is complete: that is an upload.
        if (isUploadRecord) metrics.uploaded((args[0] as { size: number }).size);
        return value;
      }, (err) => {
        done(true);
        throw err;
      });
    };
  }
  return wrapped;
}

export function instrumentStorage(storage: Storage, metrics: StorageMetrics): Storage {
  const out: Record<string, unknown> = { driver: storage.driver, close: () => storage.close() };
  for (const [name, value] of Object.entries(storage)) {
    if (name === "driver" || name === "close") continue;
    out[name] = typeof value === "object" && value !== null ? instrumentStore(name, value as Store, metrics) : value;
  }
  return out as unknown as Storage;
}
