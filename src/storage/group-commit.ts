/**
 * Group commit: writes that arrive while a commit is pending or in flight are committed together
 * in the next one — one transaction (one fsync / WAL flush) for many rows. Each write's promise
 * resolves only after the commit that holds it.
 *
 * The same batching serves point reads (the Postgres driver's batched reads): the reads queued
 * while one query is pending or in flight go out as the next query. A read added after a write
 * resolved is in a later batch than that write, so it sees it.
 */
export class GroupCommit<T, R> {
  private queue: Array<{ item: T; resolve(r: R): void; reject(e: unknown): void }> = [];
  private running: Promise<void> | undefined;

  /** `commit` gets a batch and returns one result per item, in order. */
  constructor(private readonly commit: (items: T[]) => R[] | Promise<R[]>) {}

  add(item: T): Promise<R> {
    return new Promise((resolve, reject) => {
      if (this.queue.push({ item, resolve, reject }) === 1 && !this.running) this.running = this.next();
    });
  }

  /** Commits whatever is queued (at shutdown). */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  private async next(): Promise<void> {
    // Let the rest of this event-loop turn queue its writes first.
    await new Promise((r) => setImmediate(r));
    while (this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      try {
        const results = await this.commit(batch.map((b) => b.item));
        batch.forEach((b, i) => b.resolve(results[i]!));
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.running = undefined;
  }
}
