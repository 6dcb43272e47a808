/**
 * How MAM's retention deletes an expired backlog without stalling the server. On SQLite a delete
 * batch runs on the event loop, and deleting a record costs about as much as writing one (its
 * table row and six index entries, the owners' entries on pages spread over the whole index):
 * about 160 µs of CPU a record on a 2-million-record archive. With 1,000-record batches back to
 * back, 1.07 million expired records held every session's stanzas up by 144–167 ms at the median
 * (p99 343–400 ms), for 172–198 s (`npm run bench:prune`, docs/PERFORMANCE.md). An hourly prune at
 * 1,000 messages/s has 3.6 million to delete.
 *
 * So each batch is sized by the time the last one took, to about `targetMs`, and the pause after
 * it gives traffic three times as much (`share`, a quarter of the time, at most goes to pruning; a
 * pause is at most `maxPauseMs`, so that a shutdown does not wait on it). A batch's time includes
 * its wait for the SQLite checkpointer's hold, so a checkpointer that falls behind slows pruning
 * down. At half the time the WAL still outgrew the checkpointer (1.5–4.7 GB; the event loop
 * stalled for 0.6–2 s now and then, we suspect when a restart truncated it); at a quarter it
 * stayed at 132 MB, the event loop's p99 wait was 7 ms and its longest 170 ms, for 2,800 records
 * deleted a second. Batch sizes move by at most ×2 a step, so one slow batch (a checkpoint's
 * fsync, a cold page) does not swing the next.
 */
export interface PrunePacing {
  /** What a delete batch should take: about the event loop's longest wait because of pruning. */
  targetMs: number;
  /** The largest share of wall time pruning takes while it has a backlog. */
  share: number;
  minBatch: number;
  maxBatch: number;
  maxPauseMs: number;
}

const DEFAULT_PRUNE_PACING: PrunePacing = { targetMs: 5, share: 0.25, minBatch: 10, maxBatch: 5000, maxPauseMs: 1000 };

export class PrunePacer {
  private size: number;

  constructor(private readonly pacing: PrunePacing = DEFAULT_PRUNE_PACING) {
    this.size = pacing.minBatch;
  }

  /** Records to ask for in the next delete. */
  get batch(): number {
    return this.size;
  }

  /** After a batch that took `ms`: the milliseconds to wait before the next. */
  took(ms: number): number {
    const { targetMs, share, minBatch, maxBatch, maxPauseMs } = this.pacing;
    const scale = ms > 0 ? Math.min(2, Math.max(0.5, targetMs / ms)) : 2;
    this.size = Math.min(maxBatch, Math.max(minBatch, Math.round(this.size * scale)));
    return Math.min(maxPauseMs, (ms * (1 - share)) / share);
  }
}
