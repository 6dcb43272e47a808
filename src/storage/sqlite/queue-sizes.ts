/**
 * The size of each owner's undelivered queue, for the limit check that every queued record makes
 * (XEP-0160 §3: over the limit the sender gets an error). Counting is a scan of the owner's queue
 * entries, O(queue): up to 10,000 at the default limit, for every new message to a user who has
 * been offline long. Here an owner is counted once, then kept up by this connection's own inserts.
 *
 * What else changes a queue drops the owner's size (an acknowledgement, an account or its queue
 * leaving), and so does a failed transaction. A commit by any other connection to the database
 * (the CLI on the same file, say) drops them all: SQLite's `data_version` moves only for those.
 */
import { BoundedMap } from "../../bounded-map.js";

/** Owners whose sizes are held at most; past it the oldest is counted again when next needed. */
const MAX_OWNERS = 100_000;

export class QueueSizes {
  private readonly sizes = new BoundedMap<string, number>(MAX_OWNERS);
  private seenVersion: number | undefined;

  constructor(
    private readonly count: (owner: string) => number,
    private readonly dataVersion: () => number,
  ) {}

  /** Before reading sizes in a transaction: forgets them all if another connection committed since. */
  check(): void {
    const version = this.dataVersion();
    if (version !== this.seenVersion) this.sizes.clear();
    this.seenVersion = version;
  }

  of(owner: string): number {
    let size = this.sizes.get(owner);
    if (size === undefined) this.sizes.set(owner, (size = this.count(owner)));
    return size;
  }

  /** One record joined the owner's queue, in the transaction under way (an owner not held is counted when next needed). */
  added(owner: string): void {
    const size = this.sizes.get(owner);
    if (size !== undefined) this.sizes.set(owner, size + 1);
  }

  forget(owner: string): void {
    this.sizes.delete(owner);
  }

  /** A transaction that changed sizes rolled back. */
  forgetAll(): void {
    this.sizes.clear();
  }
}
