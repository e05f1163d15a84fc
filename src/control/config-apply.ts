import type { Release, RoutingDocument, Service } from '../config/schema.js';
import { diffValues } from './diff.js';
import { stateOf, transitions, type LifecycleAction, type LifecycleState } from './lifecycle.js';

/**
 * What `config apply FILE` does with each service's release. A config file is written once and
 * applied many times, while the release it describes moves on through the lifecycle (`release
 * full`, `finish`, …) in the store. Applying the file as written would put every release back to
 * what the file said, so a file applied only to change an upstream would move a release from
 * full back to canary. So a release is taken from the file only when the file's release section
 * was itself edited:
 *
 * - unedited: the file's release section equals this service's release in an earlier stored
 *   version (the version the file was seeded or applied as, or one a lifecycle action wrote):
 *   the live release is kept;
 * - edited: it equals no stored version: the file's release is applied, provided the change of
 *   lifecycle state it makes (if any) is a move the lifecycle allows; otherwise the apply is
 *   refused, saying what to do.
 *
 * `releaseFromFile` applies every file release as written (the old behaviour, on request).
 */

export type ReleaseOutcome =
  /** The file's release section matches an earlier stored version: the live release stays. */
  | 'kept'
  /** The file's release section was edited: it is applied. */
  | 'file'
  /** The file's release section was edited and would make a move the lifecycle forbids. */
  | 'refused';

export interface ReleaseDecision {
  readonly service: string;
  readonly outcome: ReleaseOutcome;
  readonly liveState: LifecycleState;
  readonly fileState: LifecycleState;
  /** kept: the stored version whose release of this service the file's section equals. */
  readonly sameAsVersion?: number;
  /** file: the lifecycle move the file's release makes, when it changes the state. */
  readonly move?: LifecycleAction;
  /** One line for the operator: what happens to this release and why. */
  readonly message: string;
}

export interface ApplyPlan {
  /** The document to write: the file's, with every kept release replaced by the live one. */
  readonly document: RoutingDocument;
  /** One entry per service whose release differs between the file and the live document. */
  readonly releases: readonly ReleaseDecision[];
}

/** The store's history, read only when needed: the versions kept (newest first) and one version's document (undefined when no longer kept). */
export interface HistoryReader {
  versions(): Promise<readonly number[]>;
  read(version: number): Promise<RoutingDocument | undefined>;
}

const sameRelease = (a: Release | undefined, b: Release | undefined): boolean =>
  a === undefined || b === undefined ? a === b : diffValues(a, b).length === 0;

const stateOfRelease = (release: Release | undefined): LifecycleState => stateOf({ release } as Service);

/** The lifecycle action that moves a release from `from` to `to` in one step, if there is one. */
export function moveBetween(from: LifecycleState, to: LifecycleState): LifecycleAction | undefined {
  if (from === to) return undefined;
  const actions = Object.keys(transitions) as LifecycleAction[];
  return actions.find((action) => action !== 'set' && transitions[action].from.includes(from) && transitions[action].to === to);
}

/**
 * Plans `config apply`: `live` is the current document and its version, `file` the file's routing
 * document (validated). The history is read only when some release differs, newest first, and
 * only until every such release is decided. Pure apart from `history`.
 */
export async function planConfigApply(
  live: { version: number; document: RoutingDocument },
  file: RoutingDocument,
  history: HistoryReader,
  options: { releaseFromFile?: boolean } = {},
): Promise<ApplyPlan> {
  const document = structuredClone(file) as RoutingDocument;
  const liveByName = new Map(live.document.services.map((service) => [service.name, service]));
  const differing = document.services.filter((service) => liveByName.has(service.name) && !sameRelease(service.release, liveByName.get(service.name)!.release));
  // Each differing service: the newest older version whose release of it equals the file's.
  const matched = new Map<string, number>();
  if (!options.releaseFromFile && differing.length > 0) {
    for (const version of await history.versions()) {
      if (version >= live.version) continue;
      const older = await history.read(version);
      if (older === undefined) continue;
      for (const service of differing) {
        if (matched.has(service.name)) continue;
        const then = older.services.find((candidate) => candidate.name === service.name);
        if (then !== undefined && sameRelease(then.release, service.release)) matched.set(service.name, version);
      }
      if (matched.size === differing.length) break;
    }
  }
  const releases: ReleaseDecision[] = [];
  for (const service of differing) {
    const liveRelease = liveByName.get(service.name)!.release;
    const liveState = stateOfRelease(liveRelease);
    const fileState = stateOfRelease(service.release);
    const name = JSON.stringify(service.name);
    const sameAsVersion = matched.get(service.name);
    if (sameAsVersion !== undefined) {
      if (liveRelease === undefined) delete service.release;
      else service.release = structuredClone(liveRelease);
      releases.push({
        service: service.name,
        outcome: 'kept',
        liveState,
        fileState,
        sameAsVersion,
        message:
          `release of service ${name}: kept as it is live (${liveState}); the file's release section is unchanged since version ${sameAsVersion}` +
          ' (edit it, or use `graygate release`, to change the release)',
      });
      continue;
    }
    const move = moveBetween(liveState, fileState);
    const why = options.releaseFromFile ? 'applied as written (--release-from-file)' : 'from the file (its release section was edited)';
    if (liveState === fileState || move !== undefined || options.releaseFromFile) {
      releases.push({
        service: service.name,
        outcome: 'file',
        liveState,
        fileState,
        ...(move !== undefined ? { move } : {}),
        message: `release of service ${name}: ${why}; ${liveState === fileState ? `state stays ${liveState}` : `state ${liveState} → ${fileState}${move ? ` (${move})` : ''}`}`,
      });
      continue;
    }
    releases.push({
      service: service.name,
      outcome: 'refused',
      liveState,
      fileState,
      message:
        `release of service ${name}: the file's release section was edited and says state ${fileState}, but the live release is ${liveState}, ` +
        `and the lifecycle has no move from ${liveState} to ${fileState}. Write \`state: ${liveState}\` in the file to keep the live state and apply the rest, ` +
        'change the state with `graygate release …`, or pass --release-from-file to apply the file\'s release as written',
    });
  }
  return { document, releases };
}
