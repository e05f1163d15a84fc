#!/usr/bin/env node
import { Command } from 'commander';
import { registerControlCommands } from '../control/cli/index.js';
import { registerDemoCommand } from './demo.js';
import { registerStartCommand } from './start.js';
import { registerValidateCommand } from './validate.js';
import { readPackageVersion } from './version.js';

const program = new Command()
  .name('graygate')
  .description('A gray (canary) release gateway: sends each request to the stable or the candidate version, by rules you change live.')
  .version(readPackageVersion())
  .showHelpAfterError('(run with --help for usage)');

registerStartCommand(program);
registerValidateCommand(program);
registerDemoCommand(program);
registerControlCommands(program);

await program.parseAsync(process.argv);
