import { request } from 'undici';
import type { RolloutEvidence, RolloutRecord, RolloutRun } from '../config/schema.js';
import type { Logger } from '../observe/log.js';

/** What a notification carries: the event, the run, the reason and the evidence; `text` for Slack. */
export interface RolloutNotification {
  readonly event: RolloutRecord['event'];
  readonly service: string;
  readonly rollout: string;
  readonly candidate: string;
  readonly status: RolloutRun['status'];
  /** 1-based, as people count steps. */
  readonly step: number;
  readonly steps: number;
  readonly by: string;
  readonly reason: string;
  readonly evidence: readonly RolloutEvidence[];
  readonly text: string;
}

const verbs: Record<RolloutRecord['event'], string> = {
  start: 'started',
  step: 'moved to the next step',
  passed: 'passed a step',
  promote: 'promoted',
  pause: 'paused',
  resume: 'resumed',
  rollback: 'ROLLED BACK',
  abort: 'aborted',
  done: 'done',
};

/** A figure as a person reads it: the error rate in %, latencies in ms, counts as they are; `n/a` when not measured. */
function figure(metric: string, value: number | null): string {
  if (value === null) return 'n/a';
  if (metric === 'errors') return `${Math.round(value * 10_000) / 100} %`;
  if (metric.startsWith('latency')) return `${Math.round(value * 10) / 10} ms`;
  return String(value);
}

/** The notification of `event` for `run`, with a one-message summary in `text`. */
export function notificationOf(service: string, run: RolloutRun, event: RolloutRecord['event'], by: string, reason: string, evidence: readonly RolloutEvidence[]): RolloutNotification {
  const failing = evidence.filter((e) => e.outcome === 'fail');
  const why = failing.length > 0 ? ` Evidence: ${failing.map((e) => `${e.metric}: candidate ${figure(e.metric, e.candidate)} against stable ${figure(e.metric, e.stable)}, bound ${figure(e.metric, e.bound)} (${e.samples.candidate}/${e.samples.stable} requests): ${e.detail}`).join('; ')}.` : '';
  return {
    event,
    service,
    rollout: run.id,
    candidate: run.candidate,
    status: run.status,
    step: run.step + 1,
    steps: run.plan.steps.length,
    by,
    reason,
    evidence,
    text: `graygate: rollout of ${run.candidate} on ${service} ${verbs[event]} at step ${run.step + 1}/${run.plan.steps.length} (by ${by}): ${reason}.${why}`,
  };
}

/**
 * Posts the notification to the run's webhook, if its plan has one. Never throws and never holds
 * the rollout up: a webhook that fails or is slow is logged, and the rollout goes on.
 */
export async function sendNotification(run: RolloutRun, notification: RolloutNotification, logger: Logger): Promise<void> {
  const notify = run.plan.notify;
  if (!notify) return;
  try {
    const response = await request(notify.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(notification),
      signal: AbortSignal.timeout(notify.timeoutMs),
    });
    await response.body.dump();
    if (response.statusCode >= 300) logger.warn({ event: 'rollout-notify-failed', status: response.statusCode, service: notification.service }, `the rollout notification webhook answered ${response.statusCode}`);
  } catch (error) {
    logger.warn({ event: 'rollout-notify-failed', err: (error as Error).message, service: notification.service }, `the rollout notification webhook could not be reached: ${(error as Error).message}`);
  }
}
