#!/usr/bin/env node
// Thin launcher so `npx kmsgw` and `npm start` run the compiled CLI (built by `npm install`).
import { main } from '../dist/src/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
