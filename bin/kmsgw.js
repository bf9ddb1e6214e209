#!/usr/bin/env node
// Thin launcher so `npx kmsgw` and `npm start` run the compiled CLI (built by `npm install`).
// The compile cache keeps the CLI's start-up short for PostgreSQL hooks, which run it once per call.
import module from 'node:module';

module.enableCompileCache?.();
const { main } = await import('../dist/src/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
