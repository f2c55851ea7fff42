// Request validation shared by the handlers. Every failure is INVALID_ARGUMENT, reason INVALID_FIELD,
// naming the field; validation runs before anything is written.
import { invalidField } from './errors.ts';

export const MAX_ID_LENGTH = 128;
// C0 and C1 control characters, DEL, and the Unicode line/paragraph separators.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** An id: 1 to 128 characters, no control characters. */
export function requireId(field: string, value: string): string {
  if (value.length === 0) throw invalidField(field, 'must not be empty');
  if ([...value].length > MAX_ID_LENGTH) throw invalidField(field, `must be at most ${MAX_ID_LENGTH} characters`);
  if (CONTROL.test(value)) throw invalidField(field, 'must not contain control characters');
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
