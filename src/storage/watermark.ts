/**
 * The undelivered queue's watermark (docs/STORAGE.md): a user's queue is their queued records above
 * `mark`, except the entries acknowledged out of order (`held`). One rule for every driver.
 */
export interface QueueMark {
  /** Every entry up to here is acknowledged. */
  mark: number;
  /** Acknowledged entries above the first unacknowledged one, ascending. */
  held: number[];
}

/**
 * Moves the watermark over every contiguous run of acknowledged entries. `queued` are the owner's
 * queued entries above `mark`, ascending, at least up to the largest acknowledged one; acknowledged
 * ids that are not among them (another owner's, or already passed) are ignored.
 */
export function advanceMark(mark: number, queued: readonly number[], acknowledged: Iterable<number>): QueueMark {
  const acked = new Set(acknowledged);
  let i = 0;
  while (i < queued.length && acked.has(queued[i]!)) mark = queued[i++]!;
  const held: number[] = [];
  for (; i < queued.length; i++) if (acked.has(queued[i]!)) held.push(queued[i]!);
  return { mark, held };
}

/** A group commit's acknowledgements, one list per owner: each owner's watermark moves once per commit. */
export function byOwner(batch: ReadonlyArray<{ owner: string; ids: readonly number[] }>): Map<string, number[]> {
  const owners = new Map<string, number[]>();
  for (const { owner, ids } of batch) {
    if (ids.length === 0) continue;
    const list = owners.get(owner);
    if (list) list.push(...ids);
    else owners.set(owner, [...ids]);
  }
  return owners;
}
