// Validation of what callers send, shared by the RPC handlers and the Kafka consumers. Every
// failure is a DomainError INVALID_FIELD naming the field; validation runs before anything is written.
import { invalidField } from './errors.ts';

export const MAX_ID_LENGTH = 128;
// C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

// The id alphabet: letters, combining marks and digits of any script (Unicode L, M and N), plus
// - _ . : @ / + =  (enough for UUIDs, e-mail addresses, URNs, base64 and base64url).
// Everything else is refused, in particular:
//   - controls, whitespace and format characters (Cc, Z*, Cf): bidi overrides and isolates,
//     zero-width spaces and joiners, soft hyphens. They make two ids that look the same differ,
//     or make one id display as another in logs and consoles;
//   - surrogates, private use and unassigned code points (Cs, Co, Cn): no stable meaning;
//   - symbols (S*: emoji, U+FFFD) and other punctuation, among them '|', the separator of the
//     "<user>|<order>" and "<user>|<seq>" members the gate keeps in Redis, and '{' '}', Redis
//     Cluster's hash-tag braces.
// Ids are compared code point by code point, so an id must also be in Unicode NFC: "é" as one code
// point and as "e" + U+0301 would otherwise be two users who look like one.
const ID = /^[\p{L}\p{M}\p{N}\-_.:@/+=]+$/u;
const ID_CHAR = /^[\p{L}\p{M}\p{N}\-_.:@/+=]$/u;
const LEADING_MARK = /^\p{M}/u;
// Letters and marks Unicode says to render invisibly (variation selectors, the combining grapheme
// joiner, Hangul fillers): each would make a second id that displays exactly as the first.
const INVISIBLE = /\p{Default_Ignorable_Code_Point}/u;

const describe = (ch: string) => `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

/** What is wrong with an id, or undefined when it is a valid one. */
export function idProblem(value: string): string | undefined {
  if (value.length === 0) return 'must not be empty';
  const chars = [...value];
  if (chars.length > MAX_ID_LENGTH) return `must be at most ${MAX_ID_LENGTH} characters`;
  const bad = ID.test(value) ? undefined : chars.find((ch) => !ID_CHAR.test(ch));
  if (bad !== undefined) return `must contain only letters, marks, digits and - _ . : @ / + = (found ${describe(bad)})`;
  if (LEADING_MARK.test(value)) return 'must not start with a combining mark';
  const invisible = chars.find((ch) => INVISIBLE.test(ch));
  if (invisible !== undefined) return `must not contain invisible characters (found ${describe(invisible)})`;
  if (value.normalize('NFC') !== value) return 'must be in Unicode normalization form NFC';
  return undefined;
}

/** An id: 1 to 128 characters of the id alphabet, in NFC (see idProblem). */
export function requireId(field: string, value: string): string {
  const problem = idProblem(value);
  if (problem) throw invalidField(field, problem);
  return value;
}

export function requireIntInRange(field: string, value: bigint | number, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw invalidField(field, `must be between ${min} and ${max}, got ${String(value)}`);
  return n;
}

export function requireText(field: string, value: string, maxLength: number): string {
  if (value.trim().length === 0) throw invalidField(field, 'must not be empty');
  if ([...value].length > maxLength) throw invalidField(field, `must be at most ${maxLength} characters`);
  if (CONTROL.test(value)) throw invalidField(field, 'must not contain control characters');
  return value;
}

// Coupon ids: one canonical spelling per coupon.
// A coupon id is a UUID in its hyphenated form (8-4-4-4-12 hexadecimal digits), accepted in any letter
// case: Swift's UUID().uuidString and Windows GUID tools write upper case, and ids typed into grpcurl
// come in any case. Every entry point turns it into the lower-case form (RFC 9562's output form)
// before it touches Redis, Kafka keys, the ledger, logs or metrics, so two spellings of one UUID can
// never open two gates. Other forms PostgreSQL would also read (braces, no hyphens, "urn:uuid:") are
// refused, so that exactly one family of strings names a coupon. See docs/api.md#ids.
// User ids and order ids, on the contrary, are exact strings (idProblem): compared code point by
// code point, so "Bob" and "bob" are two users. Their alphabet leaves out '|', '{', '}' and line
// breaks, the separators of the Redis members "<user>|<seq>" and "<user>|<order>", the hash-tag
// braces and the outbox's "<user>\n<value>", so two different ids never map to one key or member.
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Whether `s` is a coupon id in any letter case. */
export const isUuid = (s: string) => UUID.test(s);

/** The canonical (lower-case) spelling of a coupon id, or undefined when `s` is not a coupon id. */
export const canonicalCouponId = (s: string): string | undefined => (UUID.test(s) ? s.toLowerCase() : undefined);

/** A coupon id from a caller, in its canonical spelling; INVALID_FIELD when it is not a UUID. */
export function requireCouponId(field: string, value: string): string {
  const id = canonicalCouponId(value);
  if (id === undefined) throw invalidField(field, value.length === 0 ? 'must not be empty' : 'must be a UUID: 8-4-4-4-12 hexadecimal digits, such as 3f2b6c1e-9a0d-4c5e-8f1a-2b3c4d5e6f70');
  return id;
}
