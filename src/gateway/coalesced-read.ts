/**
 * Serializes and coalesces rereads of a store: one read in flight, at most one queued after it,
 * so a burst of change notices costs at most two reads. A call while a read runs queues one more
 * (that read may have begun before the change being announced), shared by everyone who arrives
 * meanwhile; the promise a call gets resolves once a read that began after the call has
 * finished. `read` must not reject (its failures are the caller's to record).
 */
export class CoalescedRead {
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;

  constructor(private readonly read: () => Promise<void>) {}

  run(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.running) return this.start();
    const next = () => {
      this.queued = undefined;
      return this.start();
    };
    this.queued = this.running.then(next, next);
    return this.queued;
  }

  /** Resolves when the reads in flight or queued now have finished (at once when there are none). */
  settled(): Promise<void> {
    return this.queued ?? this.running ?? Promise.resolve();
  }

  private start(): Promise<void> {
    const run: Promise<void> = this.read().finally(() => {
      if (this.running === run) this.running = undefined;
    });
    this.running = run;
    return run;
  }
}
