import { randomFillSync } from 'node:crypto';

/**
 * Random query IDs, drawn in batches from the CSPRNG (RFC 5452 §9.2) to keep crypto off the
 * per-query cost. One per set of upstream sockets.
 */
export class RandomIds {
  private readonly buf = Buffer.allocUnsafe(8192);
  private pos = this.buf.length;

  next(): number {
    if (this.pos >= this.buf.length) {
      randomFillSync(this.buf);
      this.pos = 0;
    }
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
}
