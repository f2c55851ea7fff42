// A Bloom filter over strings: "certainly not in the set" or "maybe in it". The gate's sold-out view
// (gate/sold-out-view.ts) keeps one per sold-out coupon in each process, so that a user who is
// certainly no winner is refused without Redis. Memory: `bitsPerItem` bits per winner (19.2 for a
// false-positive rate of 1 in 10,000: 24 KB for 10,000 winners, 2.4 MB for 1,000,000). Each "maybe"
// costs a Redis call, about five commands: at 1 in 1,000 that was half the view's Redis load per
// refusal (docs/performance.md).

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** 32-bit FNV-1a over UTF-16 code units, with a seed folded into the offset basis. */
function fnv1a(s: string, seed: number): number {
  let h = (FNV_OFFSET ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, FNV_PRIME);
  }
  // A final avalanche (murmur3's fmix32): FNV alone leaves the low bits of similar ids correlated.
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0;
}

export class BloomFilter {
  readonly bits: number;
  readonly hashes: number;
  private readonly words: Uint32Array;

  /** Sized for `expected` items at false-positive rate `rate` (Kirsch–Mitzenmacher double hashing). */
  constructor(expected: number, rate = 0.0001) {
    const n = Math.max(1, expected);
    // At least 1,024 bits: double hashing spreads poorly over a tiny table.
    this.bits = Math.max(1_024, Math.ceil((-n * Math.log(rate)) / (Math.LN2 * Math.LN2)));
    // The optimal count for the rate, never more (a floor-sized table would ask for hundreds).
    this.hashes = Math.max(1, Math.min(Math.round((this.bits / n) * Math.LN2), Math.ceil(-Math.log2(rate))));
    this.words = new Uint32Array(Math.ceil(this.bits / 32));
  }

  /** Bytes the filter holds. */
  get bytes(): number { return this.words.byteLength; }

  add(item: string): void {
    const h1 = fnv1a(item, 0);
    const h2 = fnv1a(item, 0x9e3779b9) | 1;
    for (let i = 0; i < this.hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) >>> 0;
      const at = bit % this.bits;
      this.words[at >>> 5]! |= 1 << (at & 31);
    }
  }

  /** False: certainly not added. True: added, or a false positive. */
  mayContain(item: string): boolean {
    const h1 = fnv1a(item, 0);
    const h2 = fnv1a(item, 0x9e3779b9) | 1;
    for (let i = 0; i < this.hashes; i++) {
      const at = ((h1 + Math.imul(i, h2)) >>> 0) % this.bits;
      if ((this.words[at >>> 5]! & (1 << (at & 31))) === 0) return false;
    }
    return true;
  }
}
