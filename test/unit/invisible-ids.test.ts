// The id rule (src/domain/ids.ts). docs/api.md#ids refuses `cafe` + U+0301
// "rather than silently being a second user who looks the same", and refuses format characters
// (zero-width spaces and joiners) for that reason. Default-ignorable code points that Unicode files
// under letters or marks pass the rule, and each makes a second user id that displays exactly as
// the first: variation selectors (Mn), the combining grapheme joiner (Mn), Mongolian free variation
// selectors (Mn), the Hangul fillers (Lo).
import { describe, expect, it } from 'vitest';
import { idProblem } from '../../src/domain/ids.ts';

const invisible = {
  'VARIATION SELECTOR-16 U+FE0F': '\uFE0F',
  'VARIATION SELECTOR-1 U+FE00': '\uFE00',
  'COMBINING GRAPHEME JOINER U+034F': '\u034F',
  'MONGOLIAN FREE VARIATION SELECTOR ONE U+180B': '\u180B',
  'HANGUL FILLER U+3164': '\u3164',
  'HANGUL CHOSEONG FILLER U+115F': '\u115F',
  'HALFWIDTH HANGUL FILLER U+FFA0': '\uFFA0',
};

describe('user and order ids', () => {
  it('never let a second user id look exactly like another (an invisible default-ignorable code point is refused)', () => {
    const accepted = Object.entries(invisible).filter(([, ch]) => idProblem(`bob${ch}`) === undefined).map(([name]) => name);
    expect(accepted).toEqual([]);
  });
});
