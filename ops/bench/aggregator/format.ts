/** How the aggregator benchmark shows its figures. */
import { ratio as ratioOf } from '../common/figures.ts';

export const fixed = (digits: number) => (n: number) => n.toFixed(digits);
export const us = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} µs`;
export const ms = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} ms`;
/** Two decimals below 10×: the aggregator's ratios to the bare consumer are well under 1. */
export const ratio = (a: number, b: number) => ratioOf(a, b, 2);
