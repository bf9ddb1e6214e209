import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FileBackend } from '../../src/keystore/file/index.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { describeBackendConformance } from './conformance.js';

const tmp = useTmpDirs();
const readers = new Map<FileBackend, string>();

describeBackendConformance({
  name: 'file',
  // A second "host" of a folder store can only read it (the lock keeps a second writer out),
  // so the race rounds run two writers through one backend, which serialises them.
  open: async (same) => {
    if (same) return same;
    const dir = join(await tmp(), 'keys');
    const backend = await FileBackend.open(dir);
    readers.set(backend, dir);
    return backend;
  },
  unreachable: async () => {
    // A "folder" that is a file fails every call for every user (root ignores folder modes).
    const file = join(await tmp(), 'not-a-folder');
    await writeFile(file, 'x');
    return FileBackend.open(file, { readOnly: true });
  },
  putForeign: async (backend, name, body) => {
    await writeFile(join(readers.get(backend as FileBackend) as string, name), body);
  },
});
