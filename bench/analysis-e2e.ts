/**
 * END-TO-END ENTRY POINT of `npm run bench:analysis -- --e2e` (to be completed with the rollout
 * driver): real gateways sharing one Redis, backends that inject error rates and latency, a
 * rollout started through the admin API, timing from the first bad response to the rollback the
 * driver performs. The analysis half (src/rollout/analysis) and the fleet figures are in place;
 * what is missing is the driver that calls them (`graygate rollout start` and its /v1 endpoints).
 */
export async function runEndToEnd(): Promise<void> {
  throw new Error('the end-to-end run needs the rollout driver (graygate rollout start): not merged in this branch yet; run without --e2e for the simulation');
}
