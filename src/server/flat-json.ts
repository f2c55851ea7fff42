// The body every storefront sends to IssueCoupon, read without JSON.parse: a JSON object whose
// members are ASCII strings without escapes ({"couponId":"…","userId":"…"}). Anything else (an
// escape, a byte outside printable ASCII, a number, a nested value, a key the method does not
// have, a field given twice) is left to the general reading (server/short-path.ts decodeJson),
// which gives the same answer connect-es would. For a body read here, that reading gives the same
// message: JSON.parse of such a body is exactly these members.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const OPEN = 0x7b;
const CLOSE = 0x7d;

/** JSON's whitespace: space, tab, line feed, carriage return. */
const isSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

function skipSpace(body: Uint8Array, i: number): number {
  while (i < body.length && isSpace(body[i]!)) i++;
  return i;
}

/** The end (index of the closing quote) of an escape-free printable-ASCII string starting after its opening quote at `i`, or -1. */
function stringEnd(body: Uint8Array, i: number): number {
  for (; i < body.length; i++) {
    const c = body[i]!;
    if (c === QUOTE) return i;
    if (c < 0x20 || c > 0x7f || c === BACKSLASH) return -1;
  }
  return -1;
}

/**
 * The members of `body` by field local name, when it is a flat object of escape-free ASCII
 * strings whose keys all name a field (`fields`: JSON name and proto name to local name), each
 * field at most once; otherwise undefined.
 */
export function readFlatJson(body: Uint8Array, fields: ReadonlyMap<string, string>): Record<string, string> | undefined {
  const latin1 = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const init: Record<string, string> = {};
  let i = skipSpace(body, 0);
  if (body[i] !== OPEN) return undefined;
  i = skipSpace(body, i + 1);
  if (body[i] === CLOSE) return skipSpace(body, i + 1) === body.length ? init : undefined;
  for (;;) {
    if (body[i] !== QUOTE) return undefined;
    const keyEnd = stringEnd(body, i + 1);
    if (keyEnd < 0) return undefined;
    const local = fields.get(latin1.toString('latin1', i + 1, keyEnd));
    if (local === undefined || Object.hasOwn(init, local)) return undefined;
    i = skipSpace(body, keyEnd + 1);
    if (body[i] !== COLON) return undefined;
    i = skipSpace(body, i + 1);
    if (body[i] !== QUOTE) return undefined;
    const valueEnd = stringEnd(body, i + 1);
    if (valueEnd < 0) return undefined;
    init[local] = latin1.toString('latin1', i + 1, valueEnd);
    i = skipSpace(body, valueEnd + 1);
    if (body[i] === COMMA) { i = skipSpace(body, i + 1); continue; }
    if (body[i] !== CLOSE) return undefined;
    return skipSpace(body, i + 1) === body.length ? init : undefined;
  }
}
