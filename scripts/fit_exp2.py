#!/usr/bin/env python3
"""Fits the polynomials of src/ops/cpu/cpu_math.h's vexp2_nonpos_of and vexp2_table_nonpos_of:
2^r ~ P(r), P(0) = 1, on [-h, h] (h = 1/2: r = x - round(x); h = 1/32 and 1/16:
r = x - round(L x) / L, the 16- and 8-lane forms with their tables), by Loeb's iteration on the
relative error (linearised least squares, reweighted towards the largest errors, a discrete
minimax). Prints the relative error in exact and in float32 arithmetic (Horner's scheme, as the
kernel runs it) and the coefficients rounded to float, lowest degree first. Needs numpy only.

    python3 scripts/fit_exp2.py [degree = 6] [h = 0.5]
"""
import sys

import numpy as np


def fit(degree, h):
    r = np.linspace(-h, h, 200001)
    f = 2.0**r
    weight, best = np.ones_like(r), None
    basis = np.stack([r**k for k in range(1, degree + 1)], 1)
    for _ in range(40):
        scale = weight / f
        sol, *_ = np.linalg.lstsq(basis * scale[:, None], (f - 1.0) * scale, rcond=None)
        c = np.concatenate([[1.0], sol])
        err = np.abs(sum(c[k] * r**k for k in range(degree + 1)) - f) / f
        if best is None or err.max() < best[0]:
            best = (err.max(), c.copy())
        weight = weight * (1.0 + 5.0 * err / err.max())
    return best


def float_error(c, h):
    f = np.float32
    r = np.linspace(-h, h, 200001).astype(f)
    p = np.full_like(r, f(c[-1]))
    for k in range(len(c) - 2, -1, -1):
        p = (p.astype(np.float64) * r + f(c[k])).astype(f)  # one rounding a step: an FMA
    ref = 2.0 ** r.astype(np.float64)
    return (np.abs(p - ref) / ref).max()


def main():
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    h = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    exact, c = fit(degree, h)
    print(f"max relative error: {exact:.3g} exact, {float_error(c, h):.3g} in float32")
    print("P:", ", ".join(f"{float(np.float32(v)):.15e}" for v in c))


if __name__ == "__main__":
    main()
