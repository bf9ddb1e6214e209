import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A certificate and its key: file paths (for the config) and PEM contents (for node:tls). */
export interface CertPair {
  readonly certPath: string;
  readonly keyPath: string;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** A throwaway PKI for mTLS tests, in its own temp folder. */
export interface TestPki {
  readonly dir: string;
  /** The CA the gateway trusts for client certificates; it also signs the server certificate. */
  readonly ca: CertPair;
  /** Server certificate for 127.0.0.1 and localhost, signed by `ca`. */
  readonly server: CertPair;
  /** Client certificate with CN `pg-cluster-1`, signed by `ca`. */
  readonly client: CertPair;
  /** Client certificate with CN `stranger` (no policy client), signed by `ca`. */
  readonly stranger: CertPair;
  /** Another CA, not trusted by the gateway. */
  readonly foreignCa: CertPair;
  /** Client certificate with CN `pg-cluster-1` as well, but signed by `foreignCa`. */
  readonly foreignClient: CertPair;
  /** Removes the folder. */
  dispose(): Promise<void>;
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new Error(`openssl ${args[0]} failed: ${stderr || String(err)}`, { cause: err });
  }
}

async function pair(dir: string, name: string): Promise<CertPair> {
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key`);
  return { certPath, keyPath, cert: await readFile(certPath), key: await readFile(keyPath) };
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function makeCa(dir: string, name: string, cn: string): Promise<CertPair> {
  await openssl([
    'req',
    '-x509',
    ...EC,
    '-keyout',
    join(dir, `${name}.key`),
    '-out',
    join(dir, `${name}.pem`),
    '-days',
    '2',
    '-subj',
    `/CN=${cn}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return pair(dir, name);
}

async function issue(dir: string, name: string, cn: string, ca: CertPair, extensions: string): Promise<CertPair> {
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await openssl(['req', '-new', ...EC, '-keyout', join(dir, `${name}.key`), '-out', csr, '-subj', `/CN=${cn}`]);
  await writeFile(ext, `${extensions}\n`);
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.certPath,
    '-CAkey',
    ca.keyPath,
    '-set_serial',
    `0x${randomBytes(8).toString('hex')}`,
    '-out',
    join(dir, `${name}.pem`),
    '-days',
    '2',
    '-extfile',
    ext,
  ]);
  return pair(dir, name);
}

const SERVER_EXT = [
  'basicConstraints=critical,CA:FALSE',
  'keyUsage=critical,digitalSignature',
  'extendedKeyUsage=serverAuth',
  'subjectAltName=DNS:localhost,IP:127.0.0.1',
].join('\n');
const CLIENT_EXT = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth'].join('\n');

/** Generates the PKI with openssl (P-256 keys, a few tens of ms). */
export async function makeTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'kg-pki-'));
  try {
    const ca = await makeCa(dir, 'ca', 'kmsgw test CA');
    const foreignCa = await makeCa(dir, 'foreign-ca', 'kmsgw foreign CA');
    const [server, client, stranger, foreignClient] = await Promise.all([
      issue(dir, 'server', 'localhost', ca, SERVER_EXT),
      issue(dir, 'client', 'pg-cluster-1', ca, CLIENT_EXT),
      issue(dir, 'stranger', 'stranger', ca, CLIENT_EXT),
      issue(dir, 'foreign-client', 'pg-cluster-1', foreignCa, CLIENT_EXT),
    ]);
    return { dir, ca, server, client, stranger, foreignCa, foreignClient, dispose: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
