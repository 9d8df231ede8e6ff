// Pure logic of the live charts: a bounded series and the SVG path for it.

/** The last `capacity` values. */
export class Series {
  private readonly values: number[] = [];

  constructor(readonly capacity: number) {}

  push(value: number): void {
    this.values.push(value);
    if (this.values.length > this.capacity) this.values.shift();
  }

  get points(): readonly number[] {
    return this.values;
  }

  get last(): number | undefined {
    return this.values[this.values.length - 1];
  }
}

/**
 * An SVG polyline `points` attribute for `values` in a `width`×`height` box, right-aligned (the
 * newest value at the right edge, `capacity` slots across), scaled to `max` (at least the
 * largest value, so the line never leaves the box).
 */
export function polylinePoints(values: readonly number[], capacity: number, width: number, height: number, max: number): string {
  if (values.length === 0) return "";
  const top = Math.max(max, ...values, Number.EPSILON);
  const step = capacity > 1 ? width / (capacity - 1) : 0;
  const offset = capacity - values.length;
  return values
    .map((value, i) => {
      const x = (offset + i) * step;
      const y = height - (Math.max(0, value) / top) * height;
      return `${round(x)},${round(y)}`;
    })
    .join(" ");
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
