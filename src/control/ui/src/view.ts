/** What the shell asks of the view it shows (one service, or the history). */
export interface View {
  readonly element: HTMLElement;
  /** The services were reread (the store's version moved): redraw what depends on them. */
  update(): void;
  /** A metrics poll landed at `atMs`. */
  metrics?(atMs: number): void;
  /** The gateway has no metrics endpoint. */
  metricsUnavailable?(message: string): void;
  /** The status poll ran (every two seconds). */
  tick?(): void;
  destroy(): void;
}
