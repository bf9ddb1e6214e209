import { describe, expect, it } from 'vitest';
import { LineFramer, type FrameSink } from '../../src/protocol/framer.js';
import { prng } from '../helpers/prng.js';

type Event = { readonly line: string } | { readonly tooLarge: true };

/** A sink that records every event in order. */
function recorder(): FrameSink & { readonly events: Event[] } {
  const events: Event[] = [];
  return {
    events,
    line(text: string) {
      events.push({ line: text });
    },
    tooLarge() {
      events.push({ tooLarge: true });
    },
  };
}

/** Feeds `chunks` in order; checks the buffered cap after every push. */
function feed(max: number, chunks: readonly Buffer[]): Event[] {
  const framer = new LineFramer(max);
  const sink = recorder();
  for (const chunk of chunks) {
    framer.push(chunk, sink);
    expect(framer.buffered).toBeLessThanOrEqual(max);
  }
  return sink.events;
}

const L = (line: string): Event => ({ line });
const TOO: Event = { tooLarge: true };
const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');

function byteByByte(stream: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < stream.length; i++) out.push(stream.subarray(i, i + 1));
  return out;
}

function randomSplit(stream: Buffer, rand: () => number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < stream.length) {
    // Mostly small pieces, sometimes large ones, occasionally empty chunks.
    const r = rand();
    const size = r < 0.05 ? 0 : r < 0.8 ? 1 + Math.floor(rand() * 4) : 1 + Math.floor(rand() * 40);
    out.push(stream.subarray(at, Math.min(stream.length, at + size)));
    at += size;
  }
  return out;
}

/**
 * Independent model of what the framer must report for a stream prefix:
 * every LF-terminated segment is a line (one CR right before the LF stripped)
 * or one tooLarge if longer than `max` (CR included, LF excluded); an
 * unterminated tail longer than `max` has already produced its tooLarge.
 */
function model(max: number, stream: Buffer): { events: Event[]; buffered: number } {
  const events: Event[] = [];
  let start = 0;
  for (let i = 0; i < stream.length; i++) {
    if (stream[i] !== 0x0a) continue;
    const seg = stream.subarray(start, i);
    if (seg.length > max) events.push(TOO);
    else {
      const end = seg.length > 0 && seg[seg.length - 1] === 0x0d ? seg.length - 1 : seg.length;
      events.push(L(seg.toString('latin1', 0, end)));
    }
    start = i + 1;
  }
  const tail = stream.length - start;
  if (tail > max) events.push(TOO);
  return { events, buffered: tail > max ? 0 : tail };
}

/** Random stream biased towards the interesting bytes: LF, CR, high bytes, NUL. */
function randomStream(rand: () => number, length: number): Buffer {
  const palette = [0x0a, 0x0a, 0x0d, 0x0d, 0x61, 0x62, 0x20, 0x00, 0x80, 0xe9, 0xff];
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = palette[Math.floor(rand() * palette.length)] as number;
  return out;
}

describe('LineFramer construction', () => {
  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('rejects maxLineBytes %s', (max) => {
    expect(() => new LineFramer(max)).toThrow(RangeError);
  });

  it('accepts maxLineBytes 1 and starts with nothing buffered', () => {
    const framer = new LineFramer(1);
    expect(framer.maxLineBytes).toBe(1);
    expect(framer.buffered).toBe(0);
  });
});

describe('LineFramer splitting', () => {
  const stream = bytes('PING\r\nGET a\n\nENC k ZGF0YQ==\r\n\r\nlast');

  const expected: Event[] = [L('PING'), L('GET a'), L(''), L('ENC k ZGF0YQ=='), L('')];

  it('gives the same events whole, byte by byte and in random splits', () => {
    expect(feed(64, [stream])).toEqual(expected);
    expect(feed(64, byteByByte(stream))).toEqual(expected);
    for (let seed = 1; seed <= 50; seed++) {
      expect(feed(64, randomSplit(stream, prng(seed))), `seed ${seed}`).toEqual(expected);
    }
  });

  it('holds an unterminated tail until its LF arrives', () => {
    const framer = new LineFramer(64);
    const sink = recorder();
    framer.push(bytes('ab'), sink);
    framer.push(bytes('c'), sink);
    expect(sink.events).toEqual([]);
    expect(framer.buffered).toBe(3);
    framer.push(bytes('d\ne'), sink);
    expect(sink.events).toEqual([L('abcd')]);
    expect(framer.buffered).toBe(1);
    framer.push(bytes('\n'), sink);
    expect(sink.events).toEqual([L('abcd'), L('e')]);
    expect(framer.buffered).toBe(0);
  });

  it('ignores empty chunks', () => {
    expect(feed(8, [Buffer.alloc(0), bytes('a'), Buffer.alloc(0), bytes('\n'), Buffer.alloc(0)])).toEqual([L('a')]);
  });

  it('matches an independent model after every push, for random streams and splits', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const rand = prng(seed);
      const max = 1 + Math.floor(rand() * 8);
      const stream = randomStream(rand, Math.floor(rand() * 120));
      const whole = feed(max, [stream]);
      expect(whole, `seed ${seed} whole`).toEqual(model(max, stream).events);
      expect(feed(max, byteByByte(stream)), `seed ${seed} bytewise`).toEqual(whole);

      // Incremental check: after each chunk the events so far and the buffered
      // count equal the model's for the prefix seen so far.
      const framer = new LineFramer(max);
      const sink = recorder();
      let seen = 0;
      for (const chunk of randomSplit(stream, rand)) {
        framer.push(chunk, sink);
        seen += chunk.length;
        const want = model(max, stream.subarray(0, seen));
        expect(sink.events, `seed ${seed} prefix ${seen}`).toEqual(want.events);
        expect(framer.buffered, `seed ${seed} prefix ${seen}`).toBe(want.buffered);
        expect(framer.buffered).toBeLessThanOrEqual(max);
      }
      expect(sink.events).toEqual(whole);
    }
  });
});

describe('LineFramer CR handling', () => {
  it.each<[string, string, Event[]]>([
    ['CRLF', 'a\r\n', [L('a')]],
    ['bare CRLF is an empty line', '\r\n', [L('')]],
    ['only one CR is stripped', 'a\r\r\n', [L('a\r')]],
    ['CR not right before LF is kept (start)', '\ra\n', [L('\ra')]],
    ['CR not right before LF is kept (middle)', 'a\rb\n', [L('a\rb')]],
    ['CR then space then LF keeps the CR', 'a\r \n', [L('a\r ')]],
    ['LF CR: the CR belongs to the next line', 'a\n\rb\n', [L('a'), L('\rb')]],
    ['CR without LF emits nothing', 'a\r', []],
  ])('%s', (_name, input, want) => {
    const stream = bytes(input);
    expect(feed(16, [stream])).toEqual(want);
    expect(feed(16, byteByByte(stream))).toEqual(want);
  });

  it('strips a CR that ends one chunk when the LF starts the next', () => {
    expect(feed(16, [bytes('abc\r'), bytes('\nx\n')])).toEqual([L('abc'), L('x')]);
    expect(feed(16, [bytes('\r'), bytes('\n')])).toEqual([L('')]);
  });

  it('counts the CR towards the cap (the cap excludes only the LF)', () => {
    expect(feed(3, [bytes('abc\r\n')])).toEqual([TOO]);
    expect(feed(3, [bytes('ab\r\n')])).toEqual([L('ab')]);
    expect(feed(1, [bytes('\r\n')])).toEqual([L('')]);
  });
});

describe('LineFramer empty lines', () => {
  it('reports every empty line', () => {
    const stream = bytes('\n\n\na\n\n');
    const want = [L(''), L(''), L(''), L('a'), L('')];
    expect(feed(4, [stream])).toEqual(want);
    expect(feed(4, byteByByte(stream))).toEqual(want);
  });
});

describe('LineFramer size cap', () => {
  const max = 10;
  const exact = 'x'.repeat(max);
  const over = 'y'.repeat(max + 1);

  it('accepts a line of exactly maxLineBytes, whole and byte by byte', () => {
    const stream = bytes(`${exact}\n`);
    expect(feed(max, [stream])).toEqual([L(exact)]);
    expect(feed(max, byteByByte(stream))).toEqual([L(exact)]);
  });

  it('accepts exactly maxLineBytes spread over chunks ending on the cap', () => {
    expect(feed(max, [bytes(exact.slice(0, 4)), bytes(exact.slice(4)), bytes('\n')])).toEqual([L(exact)]);
  });

  it('reports max+1 once, drops it up to the next LF, then reads the next line', () => {
    const stream = bytes(`${over}\nnext\n`);
    const want = [TOO, L('next')];
    expect(feed(max, [stream])).toEqual(want);
    expect(feed(max, byteByByte(stream))).toEqual(want);
    for (let seed = 1; seed <= 30; seed++) {
      expect(feed(max, randomSplit(stream, prng(seed))), `seed ${seed}`).toEqual(want);
    }
  });

  it('reports tooLarge as soon as the cap is passed, before any LF', () => {
    const framer = new LineFramer(max);
    const sink = recorder();
    framer.push(bytes(exact), sink);
    expect(sink.events).toEqual([]);
    expect(framer.buffered).toBe(max);
    framer.push(bytes('z'), sink);
    expect(sink.events).toEqual([TOO]);
    expect(framer.buffered).toBe(0);
    // Everything up to the LF is dropped, including what looks like a line.
    framer.push(bytes('PING PING PING'), sink);
    expect(sink.events).toEqual([TOO]);
    expect(framer.buffered).toBe(0);
    framer.push(bytes('tail\nPING\n'), sink);
    expect(sink.events).toEqual([TOO, L('PING')]);
  });

  it('gives exactly one tooLarge for a huge line in many chunks', () => {
    const framer = new LineFramer(max);
    const sink = recorder();
    for (let i = 0; i < 1000; i++) {
      framer.push(Buffer.alloc(7, 0x41), sink);
      expect(framer.buffered).toBeLessThanOrEqual(max);
    }
    framer.push(bytes('\r'), sink);
    framer.push(bytes('\nok\r\n'), sink);
    expect(sink.events).toEqual([TOO, L('ok')]);
    expect(framer.buffered).toBe(0);
  });

  it('gives exactly one tooLarge for a huge line fed byte by byte', () => {
    const stream = Buffer.concat([Buffer.alloc(5000, 0x42), bytes('\nok\n')]);
    expect(feed(max, byteByByte(stream))).toEqual([TOO, L('ok')]);
  });

  it('reports each of several oversize lines in one chunk, keeping the good ones', () => {
    const stream = bytes(`${over}\na\n${over}${over}\n${exact}\n\n`);
    const want = [TOO, L('a'), TOO, L(exact), L('')];
    expect(feed(max, [stream])).toEqual(want);
    expect(feed(max, byteByByte(stream))).toEqual(want);
  });

  it('counts bytes already buffered from earlier chunks against the cap', () => {
    expect(feed(max, [bytes('xxxxxx'), bytes('xxxxx\nok\n')])).toEqual([TOO, L('ok')]);
    expect(feed(max, [bytes('xxxxx'), bytes('xxxxx\nok\n')])).toEqual([L('x'.repeat(10)), L('ok')]);
  });

  it('never buffers more than maxLineBytes, even for one huge chunk', () => {
    const framer = new LineFramer(max);
    const sink = recorder();
    framer.push(Buffer.alloc(1 << 20, 0x43), sink);
    expect(framer.buffered).toBe(0);
    expect(sink.events).toEqual([TOO]);
  });

  it('works with maxLineBytes 1', () => {
    expect(feed(1, [bytes('a\nbc\n\nd\n')])).toEqual([L('a'), TOO, L(''), L('d')]);
  });
});

describe('LineFramer latin1', () => {
  it('maps every byte 0x00-0xff except LF to the character with that code', () => {
    const all: number[] = [];
    for (let b = 0; b < 256; b++) if (b !== 0x0a && b !== 0x0d) all.push(b);
    const stream = Buffer.concat([Buffer.from(all), bytes('\n')]);
    const events = feed(512, byteByByte(stream));
    expect(events).toHaveLength(1);
    const text = (events[0] as { line: string }).line;
    expect(text).toHaveLength(all.length);
    expect([...text].map((c) => c.charCodeAt(0))).toEqual(all);
  });

  it('does not decode UTF-8: each byte is one character', () => {
    // "é" as UTF-8 is c3 a9; split across chunks it must still give two chars.
    expect(feed(8, [Buffer.from([0x61, 0xc3]), Buffer.from([0xa9, 0x0a])])).toEqual([L('a\u00c3\u00a9')]);
    expect(feed(8, [Buffer.from([0xff, 0x80, 0x0d, 0x0a])])).toEqual([L('\u00ff\u0080')]);
  });
});

describe('LineFramer reset()', () => {
  it('drops an unfinished line', () => {
    const framer = new LineFramer(16);
    const sink = recorder();
    framer.push(bytes('GET abc'), sink);
    expect(framer.buffered).toBe(7);
    framer.reset();
    expect(framer.buffered).toBe(0);
    framer.push(bytes('PING\n'), sink);
    expect(sink.events).toEqual([L('PING')]);
  });

  it('drops a partial line held in several chunks', () => {
    const framer = new LineFramer(16);
    const sink = recorder();
    framer.push(bytes('a'), sink);
    framer.push(bytes('b'), sink);
    framer.push(bytes('c\r'), sink);
    framer.reset();
    framer.push(bytes('\n'), sink);
    expect(sink.events).toEqual([L('')]);
  });

  it('is harmless on an idle framer', () => {
    const framer = new LineFramer(4);
    const sink = recorder();
    framer.reset();
    framer.push(bytes('ab\n'), sink);
    expect(sink.events).toEqual([L('ab')]);
  });

  it('reset() also forgets an oversize line being discarded', () => {
    const framer = new LineFramer(4);
    const sink = recorder();
    framer.push(bytes('toolong'), sink);
    expect(sink.events).toEqual([TOO]);
    framer.reset();
    framer.push(bytes('PING\n'), sink);
    expect(sink.events).toEqual([TOO, L('PING')]);
  });
});
