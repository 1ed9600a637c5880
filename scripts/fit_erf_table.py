#!/usr/bin/env python3
"""Fits the interval table of the 16-lane GELU in src/ops/cpu/cpu_math.h (kErfTable): erf(z) on
[0, 4) cut into 16 intervals of 0.25, in each a polynomial in the position t in [0, 1) inside the
interval (z = (i + t) / 4), by reweighted least squares towards the largest errors (a discrete
minimax). Prints the error in exact and in float32 arithmetic (evaluated as the kernel does:
u = min(4 z, 16-), i = trunc(u), t = u - i, Horner) and the table, row k holding the sixteen
intervals' coefficients of t^k. Needs numpy only.

    python3 scripts/fit_erf_table.py [degree = 5]
"""
import math
import sys

import numpy as np

INTERVALS = 16
WIDTH = 0.25


def fit_interval(i, degree):
    t = np.linspace(0, 1, 4001)
    e = np.array([math.erf((i + v) * WIDTH) for v in t])
    basis = np.stack([t**k for k in range(degree + 1)], 1)
    weight, best = np.ones_like(t), None
    for _ in range(40):
        c, *_ = np.linalg.lstsq(basis * weight[:, None], e * weight, rcond=None)
        err = np.abs(basis @ c - e)
        if best is None or err.max() < best[0]:
            best = (err.max(), c)
        weight = weight * np.sqrt(err / err.mean())
        weight /= weight.mean()
    return best


def float_error(table):
    f = np.float32
    z = np.linspace(0, 6, 600001)
    u = np.minimum(z.astype(f) * f(1 / WIDTH), f(np.nextafter(f(INTERVALS), f(0))))
    i = np.trunc(u).astype(int)
    t = (u - i.astype(f)).astype(f)
    p = table[-1][i]
    for k in range(len(table) - 2, -1, -1):
        p = (p * t + table[k][i]).astype(f)
    ref = np.array([math.erf(v) for v in z.astype(f).astype(np.float64)])
    return np.abs(p - ref).max()


def main():
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fits = [fit_interval(i, degree) for i in range(INTERVALS)]
    table = np.array([c for _, c in fits]).T.astype(np.float32)
    print(f"max |error|: {max(e for e, _ in fits):.3g} exact, {float_error(table):.3g} in float32")
    for k, row in enumerate(table):
        print(f"t^{k}: " + ", ".join(f"{float(v):.9e}f" for v in row))


if __name__ == "__main__":
    main()
