/**
 * Key id ↔ object name for object stores: `<prefix><escaped id>.json`. Characters
 * other than A-Z a-z 0-9 . _ - are written %XX, so `/` and `:` never make folders or
 * dot segments (Azure and GCS URLs would normalise `..`). Escaping is per character,
 * so the escaped form of an id prefix is a prefix of the escaped id: listing by id
 * prefix is listing by name prefix. A 256-character id escapes to at most 768 + 5
 * characters, inside every store's 1024-byte limit together with a prefix of up to
 * 250 bytes (the config allows no longer prefix).
 */
export const OBJECT_SUFFIX = '.json';

/** Longest object-name prefix `keystore.url` may give. */
export const MAX_PREFIX_BYTES = 250;

export function escapeId(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

/** The object name of `id` under `prefix` (which is empty or ends with `/`). */
export function objectNameFor(prefix: string, id: string): string {
  return `${prefix}${escapeId(id)}${OBJECT_SUFFIX}`;
}

const ESCAPED_NAME_RE = /^(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+$/;

/** The key id an object name under `prefix` holds, or undefined for any other object. */
export function idFromObjectName(prefix: string, name: string): string | undefined {
  if (!name.startsWith(prefix) || !name.endsWith(OBJECT_SUFFIX)) return undefined;
  const escaped = name.slice(prefix.length, name.length - OBJECT_SUFFIX.length);
  if (!ESCAPED_NAME_RE.test(escaped)) return undefined;
  const id = decodeURIComponent(escaped);
  // Only the canonical spelling counts: `%61` for `a` is some other object.
  return escapeId(id) === escaped ? id : undefined;
}
