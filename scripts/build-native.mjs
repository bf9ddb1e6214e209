#!/usr/bin/env node
// Builds native/peercred.c (SO_PEERCRED, flock and sd_notify) into build/peercred.node and
// native/aesgcm.c (AES-256-GCM contexts kept per DEK) into build/aesgcm.node (run by
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

/** Compiles native/<name>.c into build/<name>.node; returns whether it worked. */
function build(name, why) {
  const out = join(root, 'build', `${name}.node`);
  const r = spawnSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Werror', '-I', include, '-o', out, join(root, 'native', `${name}.c`)], {
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    console.warn(`build-native: ${cc} failed for ${name} (${r.error?.message ?? `exit ${r.status}`}); ${why}`);
    return false;
  }
  console.log(`build-native: built ${out}`);
  return true;
}

build('peercred', 'the gateway will identify Unix socket clients by file permissions only');
// AES-256-GCM with a key schedule set once per DEK (OpenSSL headers: Debian libssl-dev; the symbols
// are Node's own). Without it ENC/DEC use node:crypto, correct but slower for small values.
build('aesgcm', 'ENC and DEC will use node:crypto (slower for small values)');
