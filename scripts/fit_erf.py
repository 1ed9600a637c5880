#!/usr/bin/env python3
"""Fits the rational erf of src/ops/cpu/cpu_math.h's GELU (vgelu_erf_term_of, which folds 1 / sqrt 2
into P): erf(z) ~ z P(z^2) / Q(z^2), Q(0) = 1, on [0, C], by Loeb's iteration (linearised least
squares, reweighted towards the largest errors, a discrete minimax). Prints the error in exact and
in float32 arithmetic and the coefficients rounded to float, lowest degree first. Needs numpy only.

    python3 scripts/fit_erf.py [P degree = 5] [Q degree = 5] [C = 4]
"""
import math
import sys

import numpy as np


def fit(p, q, c):
    x = np.concatenate([np.linspace(0, c, 20000), c * np.sin(np.linspace(0, np.pi / 2, 20000))])
    e = np.array([math.erf(v) for v in x])
    s = x * x
    weight, q_prev, best = np.ones_like(x), np.ones_like(x), None
    for _ in range(60):
        # Unknowns a0..ap, b1..bq; the residual x P(s) - erf Q(s) is linear in them.
        basis = np.hstack([np.stack([x * s**k for k in range(p + 1)], 1),
                           np.stack([-e * s**k for k in range(1, q + 1)], 1)])
        scale = np.sqrt(weight) / np.abs(q_prev)
        sol, *_ = np.linalg.lstsq(basis * scale[:, None], e * scale, rcond=None)
        a, b = sol[:p + 1], np.concatenate([[1.0], sol[p + 1:]])
        num = sum(a[k] * s**k for k in range(p + 1))
        den = sum(b[k] * s**k for k in range(q + 1))
        err = np.abs(x * num / den - e)
        if best is None or err.max() < best[0]:
            best = (err.max(), a.copy(), b.copy())
        weight = weight * err / err.mean()
        weight /= weight.mean()
        q_prev = den
    return best


def float_error(a, b, c):
    f = np.float32
    x = np.linspace(0, 6, 200001).astype(f)
    z = np.minimum(x, f(c))
    s = z * z
    num = np.full_like(s, f(a[-1]))
    for k in range(len(a) - 2, -1, -1):
        num = num * s + f(a[k])
    den = np.full_like(s, f(b[-1]))
    for k in range(len(b) - 2, -1, -1):
        den = den * s + f(b[k])
    ref = np.array([math.erf(float(v)) for v in x])
    return np.abs(z * num / den - ref).max()


def main():
    p = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    q = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    c = float(sys.argv[3]) if len(sys.argv) > 3 else 4.0
    exact, a, b = fit(p, q, c)
    print(f"max |error|: {exact:.3g} exact, {float_error(a, b, c):.3g} in float32")
    print("P:", ", ".join(f"{float(np.float32(v)):.15e}" for v in a))
    print("Q:", ", ".join(f"{float(np.float32(v)):.15e}" for v in b))


if __name__ == "__main__":
    main()
