import { MAX_PREFIX_BYTES } from './names.js';

/** A parsed `keystore.url`. Prefixes are empty or end with `/`. */
export type StoreLocation =
  | { readonly kind: 'file'; readonly dir: string }
  | { readonly kind: 's3'; readonly bucket: string; readonly prefix: string }
  | { readonly kind: 'gs'; readonly bucket: string; readonly prefix: string }
  | { readonly kind: 'azblob'; readonly account: string; readonly container: string; readonly prefix: string };

export type StoreKind = StoreLocation['kind'];

const BUCKET_RE = /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/;
const AZURE_ACCOUNT_RE = /^[a-z0-9]{3,24}$/;
const AZURE_CONTAINER_RE = /^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$/;
// Object-name prefixes: no dot segments, no empty segments, nothing a URL would rewrite.
const PREFIX_RE = /^(?:[A-Za-z0-9_=+,;@-][A-Za-z0-9._=+,;@-]*\/)*$/;

const FORMS = 'file://<dir>, s3://<bucket>/<prefix>, gs://<bucket>/<prefix> or azblob://<account>/<container>/<prefix>';

/** Parses `keystore.url`; throws an Error naming what is wrong. A relative `file://` dir stays relative. */
export function parseStoreUrl(url: string): StoreLocation {
  const m = /^([a-z0-9]+):\/\/(.*)$/.exec(url);
  if (!m) throw new Error(`keystore.url ${JSON.stringify(url)} must be ${FORMS}`);
  const scheme = m[1] as string;
  const rest = m[2] as string;
  if (scheme === 'file') {
    if (rest === '') throw new Error('keystore.url file:// needs a folder, e.g. file:///var/lib/kmsgw/keys');
    return { kind: 'file', dir: rest };
  }
  const parts = rest.split('/');
  const take = (what: string, re: RegExp): string => {
    const part = parts.shift() ?? '';
    if (!re.test(part)) throw new Error(`keystore.url ${JSON.stringify(url)}: ${JSON.stringify(part)} is not a valid ${what}`);
    return part;
  };
  const prefixOf = (): string => {
    const joined = parts.join('/');
    const prefix = joined === '' || joined.endsWith('/') ? joined : `${joined}/`;
    if (!PREFIX_RE.test(prefix) || Buffer.byteLength(prefix) > MAX_PREFIX_BYTES) {
      throw new Error(
        `keystore.url ${JSON.stringify(url)}: prefix ${JSON.stringify(prefix)} must be /-separated names of A-Z a-z 0-9 . _ = + , ; @ - (no empty or dot segments), at most ${MAX_PREFIX_BYTES} bytes`,
      );
    }
    return prefix;
  };
  switch (scheme) {
    case 's3':
    case 'gs': {
      const bucket = take(`${scheme === 's3' ? 'S3' : 'Cloud Storage'} bucket name`, BUCKET_RE);
      return { kind: scheme, bucket, prefix: prefixOf() };
    }
    case 'azblob': {
      const account = take('Azure storage account name', AZURE_ACCOUNT_RE);
      const container = take('Azure blob container name', AZURE_CONTAINER_RE);
      return { kind: 'azblob', account, container, prefix: prefixOf() };
    }
    default:
      throw new Error(`keystore.url scheme ${JSON.stringify(scheme)} is not supported; use ${FORMS}`);
  }
}

/** The canonical URL of a location (what INFO shows). */
export function formatStoreUrl(location: StoreLocation): string {
  switch (location.kind) {
    case 'file':
      return `file://${location.dir}`;
    case 's3':
    case 'gs':
      return `${location.kind}://${location.bucket}/${location.prefix}`;
    case 'azblob':
      return `azblob://${location.account}/${location.container}/${location.prefix}`;
  }
}
