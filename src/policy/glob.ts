import { z } from 'zod';

/**
 * Globs for key ids and KEK URIs: `*` matches any run of characters (slashes
 * included), `?` exactly one; everything else is literal and the match is anchored.
 */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/** A test for "matches any of these globs". */
export function matchesAny(globs: readonly string[]): (text: string) => boolean {
  const patterns = globs.map(globToRegExp);
  return (text) => patterns.some((re) => re.test(text));
}

/** A KEK URI glob in the config: no spaces. */
export const KekGlobSchema = z.string().regex(/^\S{1,2048}$/, 'must be a KEK URI glob such as aws-kms://arn:aws:kms:*');
