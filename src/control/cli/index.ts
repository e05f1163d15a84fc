import type { Command } from 'commander';
import { registerConfigCommand } from './config.js';
import { registerDiffCommand } from './diff.js';
import { registerExplainCommand } from './explain.js';
import { registerHistoryCommand } from './history.js';
import { registerReleaseCommand } from './release.js';
import { registerRestoreCommand } from './restore.js';
import { registerRolloutCommand } from './rollout.js';
import { registerStatusCommand } from './status.js';

/** The admin commands: each one a call (or a few) to a running gateway's admin API. */
export function registerControlCommands(program: Command): void {
  registerStatusCommand(program);
  registerReleaseCommand(program);
  registerRolloutCommand(program);
  registerHistoryCommand(program);
  registerDiffCommand(program);
  registerRestoreCommand(program);
  registerExplainCommand(program);
  registerConfigCommand(program);
}
