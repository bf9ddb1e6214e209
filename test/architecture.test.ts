import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');
const IMPORT_RE = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const ADAPTERS = join(ROOT, 'adapters');

/**
 * The folder a file belongs to: a folder under src/ ('' for src's top level, where the
 * assembly lives), or 'adapters' as one whole (its registry and settings list every cloud,
 * and each cloud uses their shared types, by design of the extension point).
 */
function folderOf(file: string): string {
  if (file.startsWith(`${ADAPTERS}/`)) return 'adapters';
  const rel = relative(SRC, file);
  return rel.includes('/') ? (rel.split('/')[0] as string) : '';
}

/** Folder → folders it imports from (static and dynamic imports), within src/ and adapters/. */
function folderGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const file of [...sourceFiles(SRC), ...sourceFiles(ADAPTERS)]) {
    const from = folderOf(file);
    const edges = graph.get(from) ?? new Set<string>();
    graph.set(from, edges);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT_RE)) {
      const target = resolve(dirname(file), (m[1] ?? m[2]) as string);
      if (!target.startsWith(`${SRC}/`) && !target.startsWith(`${ADAPTERS}/`)) continue;
      const to = folderOf(target);
      if (to !== from) edges.add(to);
    }
  }
  return graph;
}

function findCycle(graph: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === 'done') return undefined;
    if (state.get(node) === 'open') return [...path.slice(path.indexOf(node)), node];
    state.set(node, 'open');
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(node, 'done');
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
}

describe('code layout', () => {
  it('folders under src/ and adapters/ import each other without a cycle, and only the top level imports the assembly', () => {
    const graph = folderGraph();
    expect(graph.size).toBeGreaterThan(10); // the scan found the folders
    expect(findCycle(graph)).toBeUndefined();
    for (const [folder, edges] of graph) {
      if (folder !== '' && folder !== 'cli') expect(edges.has(''), `${folder} imports the top level`).toBe(false);
    }
  });

  it('the cycle check finds a cycle when there is one', () => {
    const graph = new Map([
      ['a', new Set(['b'])],
      ['b', new Set(['c'])],
      ['c', new Set(['a'])],
    ]);
    expect(findCycle(graph)).toEqual(['a', 'b', 'c', 'a']);
  });

  it('no source file is over 300 lines without saying why at its top', () => {
    const files = [...sourceFiles(SRC), ...sourceFiles(join(ROOT, 'adapters'))];
    const long = files.filter((f) => {
      const text = readFileSync(f, 'utf8');
      return text.split('\n').length > 300 && !/^\/\*\*?[^]*?Over 300 lines because/.test(text.slice(0, 2000));
    });
    expect(long.map((f) => relative(ROOT, f))).toEqual([]);
  });
});
