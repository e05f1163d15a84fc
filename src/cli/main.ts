#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerControlCommands } from '../control/cli/index.js';
import { ExitCode } from '../control/cli/client.js';
import { registerDemoCommand } from './demo.js';
import { debugStack, oneLine } from './failure.js';
import { registerOpenRestyCommand } from './openresty.js';
import { registerStartCommand } from './start.js';
import { registerValidateCommand } from './validate.js';
import { readPackageVersion } from './version.js';

// A reader that stopped reading (`graygate status | head -1`) is not a failure of the command:
// what was left to print has no one to read it. The command still ends with its own exit code.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
}

// A bug that escapes every command's own handling: one line (the stack on request), exit 1. A
// running gateway (`start`) always prints the stack: a crash in production must be diagnosable.
const isGateway = process.argv[2] === 'start';
const onUnexpected = (error: unknown) => {
  const stack = isGateway && error instanceof Error && error.stack ? `${error.stack}\n` : debugStack(error);
  process.stderr.write(`graygate: unexpected error: ${oneLine((error as Error)?.message ?? String(error))}${isGateway ? '' : ' (GRAYGATE_DEBUG=1 prints its stack for a bug report)'}\n${stack}`);
  process.exit(1);
};
process.on('uncaughtException', onUnexpected);
process.on('unhandledRejection', onUnexpected);

const commandPath = (command: Command): string => (command.parent ? `${commandPath(command.parent)} ${command.name()}` : command.name());

/**
 * Commander's own complaints (unknown command or option, missing argument, bad choice) as one
 * line that says where the usage is, and exit 2: the usage code of every graygate command
 * (1 means "refused", which a typo is not).
 */
function speakPlainly(command: Command): void {
  command.configureOutput({
    outputError: (text, write) => write(`graygate: ${oneLine(text.replace(/^error: /, '')).replace(/\.$/, '')}; see \`${commandPath(command)} --help\`\n`),
  });
  command.exitOverride((error: CommanderError) => process.exit(error.exitCode === 0 ? ExitCode.ok : ExitCode.usage));
  for (const sub of command.commands) speakPlainly(sub);
}

const program = new Command()
  .name('graygate')
  .description('A gray (canary) release gateway: sends each request to the stable or the candidate version, by rules you change live.')
  .version(readPackageVersion());

registerStartCommand(program);
registerValidateCommand(program);
registerDemoCommand(program);
registerOpenRestyCommand(program);
registerControlCommands(program);
speakPlainly(program);

await program.parseAsync(process.argv);
