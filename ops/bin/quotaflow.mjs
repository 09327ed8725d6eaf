#!/usr/bin/env node
// The `quotaflow` executable (package.json "bin"). quotaflow runs its TypeScript through tsx, so
// there is no build step between a clone and a working command.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../../src/cli/main.ts');
process.exit(await main(process.argv.slice(2)));
