#!/usr/bin/env node
// Builds native/peercred.c (SO_PEERCRED, flock and sd_notify) into build/peercred.node (run by
// `npm install` through `prepare`). A plain N-API module compiled with the system C compiler
// against the node-api-headers package: node-gyp would fetch Node's full headers from the
// network, which a closed build machine cannot reach, and N-API needs none of them. Without a
// compiler the gateway still runs: it says so at start, governs its socket by file permissions
// only, and locks its key store with an abstract Unix socket instead of flock.
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
if (process.platform !== 'linux') {
  console.warn('build-native: SO_PEERCRED addon is Linux-only; skipped');
  process.exit(0);
}
let include;
try {
  include = createRequire(import.meta.url)('node-api-headers').include_dir;
} catch {
  console.warn('build-native: node-api-headers not installed (production install?); peer-credential addon not built');
  process.exit(0);
}
mkdirSync(join(root, 'build'), { recursive: true });
const cc = process.env.CC || 'cc';
const out = join(root, 'build', 'peercred.node');
const r = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-I', include, '-o', out, join(root, 'native', 'peercred.c')], {
  stdio: 'inherit',
});
if (r.status !== 0) {
  console.warn(
    `build-native: ${cc} failed (${r.error?.message ?? `exit ${r.status}`}); the gateway will identify Unix socket clients by file permissions only`,
  );
  process.exit(0);
}
console.log(`build-native: built ${out}`);
