/**
 * `parley start --nodes N` (docs/CLUSTER.md, "Running it"): N nodes on this machine, one per core,
 * as node:cluster workers. They share the listening ports (the primary accepts and hands each
 * connection to a worker in turn); each is a cluster node named `<nodeId>-<i>`. Workers start one
 * after the other, so the first one alone creates what the data directory lacks (secret, generated
 * certificates) and runs the database migrations. A worker that dies is started again.
 */
import cluster, { type Worker } from "node:cluster";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";

const INDEX_VARIABLE = "PARLEY_NODE_INDEX";
const READY = "parley:ready";
const RESTART_DELAY_MS = 1000;

export const isNodeWorker = (): boolean => cluster.isWorker && process.env[INDEX_VARIABLE] !== undefined;

/** In a worker: the configuration with this worker's node id. */
export function workerConfig(config: Config): Config {
  const index = process.env[INDEX_VARIABLE];
  if (!config.cluster || index === undefined) return config;
  return { ...config, cluster: { ...config.cluster, nodeId: `${config.cluster.nodeId}-${index}` } };
}

/** In a worker: tells the primary this node listens, so the next one may start. */
export function reportReady(): void {
  process.send?.(READY);
}

/** In a worker whose node stopped: lets go of the primary's channel, so that the process can end. */
export function leaveWorker(): void {
  if (isNodeWorker()) cluster.worker?.disconnect();
}

/**
 * The primary: runs `count` workers until SIGTERM or SIGINT, then stops them and resolves. A
 * worker that ends before it listened, while the nodes are first started (bad configuration,
 * Redis or Postgres out of reach), stops the others and rejects; later, a node that ends is
 * started again, after a pause, however it ended (an outage of Redis or Postgres passes).
 */
export async function runNodes(count: number, log: Logger): Promise<void> {
  let stopping = false;
  let started = false;
  const workers = new Map<number, Worker>();
  const stopAll = (): Promise<void> => {
    stopping = true;
    const running = [...workers.values()];
    return Promise.all(running.map((worker) => new Promise<void>((resolve) => {
      worker.once("exit", () => resolve());
      worker.process.kill("SIGTERM");
    }))).then(() => undefined);
  };
  const fork = (index: number): Promise<void> => new Promise((resolve, reject) => {
    const worker = cluster.fork({ [INDEX_VARIABLE]: String(index) });
    let ready = false;
    workers.set(index, worker);
    worker.on("message", (message) => {
      if (message !== READY) return;
      ready = true;
      resolve();
    });
    worker.once("exit", (code, signal) => {
      if (workers.get(index) === worker) workers.delete(index);
      if (stopping) return resolve();
      if (!ready && !started) {
        log.error({ stage: "cluster", node: index, code, signal }, "node ended before it started; stopping the others");
        void stopAll().then(() => reject(new Error(`node ${index} ended before it started (exit code ${code ?? signal})`)));
        return;
      }
      log.error({ stage: "cluster", node: index, code, signal }, "node exited; starting it again");
      setTimeout(() => {
        if (!stopping) void fork(index);
      }, RESTART_DELAY_MS);
    });
  });
  for (let i = 1; i <= count; i++) await fork(i);
  started = true;
  log.info({ stage: "cluster", nodes: count }, "all local nodes started");
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      log.info({ signal }, "signal received: stopping the local nodes");
      void stopAll().then(resolve);
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", () => { for (const worker of workers.values()) worker.process.kill("SIGHUP"); });
  });
}
