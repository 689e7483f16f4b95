#!/usr/bin/env python3
"""Independent oracle for the KV-cache compression policies.

Written from docs/vlcache.md (sections 1, 2, 4) and the arithmetic spelled out
in docs/policies.md, not from the C++ (backend/src/kvcache/policy.cc). It builds
seeded random attention matrices (causal softmax of random logits, several
layers, 8 query heads sharing 4 KV heads, image spans), measures the scores and
the layer sparsity from the FULL matrices, and computes every policy's layer
budgets and kept positions. The C++ test (backend/tests/kvcache/policy_test.cc)
feeds the measured scores/sparsity to SelectKeep and must reproduce the kept
sets exactly.

  python3 policy_oracle.py --out cases.json     # write the cases
  python3 policy_oracle.py --check cases.json   # recompute and compare

The water-filling here deliberately uses bisection on the fill level, a
different route from the C++ (which solves on the piecewise-linear sum), so
that the two only agree when both follow the spec.
"""
import argparse
import json
import math
import sys

import numpy as np

P_SPARSE = 0.01          # Eq. 1 threshold
OBS_WINDOW = 32          # fallback query window / snapkv window
MIN_POST_VISION = 8      # fewer post-vision queries than this: use the window
MIN_FRACTION = 0.01      # beta clip lower bound (paper mode)
RECENT_FRACTION = 0.1    # vlcache recent window
SINKS = 4                # streamingllm
POOL_KERNEL = 5          # snapkv pooling
PYRAMID_TOP_DIVISOR = 20.0
TIE = 1e-9

POLICIES = ["full", "vlcache", "h2o", "snapkv", "streamingllm", "pyramidkv",
            "vlcache-scores", "vlcache-budget"]
RATIOS = [1.0, 0.4, 0.2, 0.1, 0.05, 0.01]
MODES = ["exact", "paper"]

# policy -> (which query rows score, layer budget, always-kept rule, pooled)
TABLE = {
    "full": (None, "full", "all", False),
    "vlcache": ("post", "sparsity", "vl_recent", False),
    "h2o": ("all", "uniform", "half_recent", False),
    "snapkv": ("window", "uniform", "snap_window", True),
    "streamingllm": (None, "uniform", "sinks", False),
    "pyramidkv": ("window", "pyramid", "snap_window", True),
    "vlcache-scores": ("post", "uniform", "vl_recent", False),
    "vlcache-budget": ("window", "sparsity", "snap_window", True),
}


def half_up(x):
    return int(math.floor(x + 0.5))


# ---------------------------------------------------------------- what rows


def post_vision_rows(m, v):
    """First row of P: [v, m) when at least 8 language queries follow the last
    image, else the last min(32, m) rows."""
    if v is not None and 0 <= v <= m and m - v >= MIN_POST_VISION:
        return v
    return m - min(OBS_WINDOW, m)


def plan(policy, m, v):
    rows, budget, _, _ = TABLE[policy]
    score = {None: -1, "post": post_vision_rows(m, v), "all": 0,
             "window": m - min(OBS_WINDOW, m)}[rows]
    sparsity = post_vision_rows(m, v) if budget == "sparsity" else -1
    return score, sparsity


# ---------------------------------------------------------------- measuring


def causal_softmax(logits):
    m = logits.shape[-1]
    mask = np.triu(np.ones((m, m), dtype=bool), k=1)
    x = np.where(mask, -np.inf, logits)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def measure(attn, kv_heads, score_begin, sparsity_begin):
    """attn: [q_heads, m, m] of one layer. Returns kv-head scores (float32) and
    gamma (mean over query heads of the sparse fraction of the causal entries
    of the rows >= sparsity_begin, pooled over the rows)."""
    q_heads, m, _ = attn.shape
    group = q_heads // kv_heads
    scores = None
    if score_begin >= 0:
        per_q = attn[:, score_begin:, :].sum(axis=1)          # [q_heads, m]
        summed = per_q.reshape(kv_heads, group, m).sum(axis=1)
        # 5 significant digits keep the committed file small; float32 as the
        # engine stores them.
        scores = np.array([[float("%.5g" % x) for x in row] for row in summed],
                          dtype=np.float32)
    gamma = None
    if sparsity_begin >= 0:
        fractions = []
        for h in range(q_heads):
            sparse = 0
            total = 0
            for q in range(sparsity_begin, m):
                row = attn[h, q, :q + 1]
                sparse += int((row < P_SPARSE * row.max()).sum())
                total += q + 1
            fractions.append(sparse / total)
        gamma = float(np.mean(fractions))
    return scores, gamma


# ---------------------------------------------------------------- budgets


def water_fill(weights, total, cap):
    n = len(weights)
    total = max(n, min(n * cap, total))

    def filled(c):
        return [min(float(cap), max(1.0, c * w)) for w in weights]

    lo, hi = 0.0, 1.0
    while sum(filled(hi)) < total and hi < 1e300:
        hi *= 2.0
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if sum(filled(mid)) < total:
            lo = mid
        else:
            hi = mid
    share = filled(hi)
    k = [max(1, min(cap, int(math.floor(s)))) for s in share]
    frac = [s - kk for s, kk in zip(share, k)]
    while sum(k) < total:
        # largest remainder, ties (within TIE) to the lower layer
        best = None
        for i in range(n):
            if k[i] < cap and (best is None or frac[i] > frac[best] + TIE):
                best = i
        k[best] += 1
        frac[best] = -1.0
    while sum(k) > total:
        best = None
        for i in range(n):
            if k[i] > 1 and (best is None or frac[i] < frac[best] - TIE):
                best = i
        k[best] -= 1
        frac[best] = 2.0
    return k


def uniform_budget(alpha, m):
    return max(1, min(m, half_up(alpha * m)))


def budgets(policy, alpha, mode, L, m, sparsity):
    kind = TABLE[policy][1]
    if kind == "full" or alpha == 1.0:
        return [m] * L
    if kind == "uniform":
        return [uniform_budget(alpha, m)] * L
    if kind == "pyramid":
        k = uniform_budget(alpha, m)
        if L == 1:
            return [k]
        top = k / PYRAMID_TOP_DIVISOR
        bottom = 2.0 * k - top
        w = [bottom + (top - bottom) * l / (L - 1) for l in range(L)]
        return water_fill(w, k * L, m)
    d = [1.0 - g for g in sparsity]
    s = 0.0
    for x in d:
        s += x
    if not s > 0:
        d = [1.0] * L
        s = float(L)
    if mode == "exact":
        return water_fill(d, half_up(alpha * L * m), m)
    out = []
    for l in range(L):
        beta = alpha * L * d[l] / s
        beta = min(1.0, max(MIN_FRACTION, beta))
        out.append(max(1, min(m, half_up(beta * m))))
    return out


# ---------------------------------------------------------------- selection


def pooled(scores):
    m = len(scores)
    r = POOL_KERNEL // 2
    out = []
    for j in range(m):
        acc = 0.0
        n = 0
        for i in range(max(0, j - r), min(m, j + r + 1)):
            acc += float(scores[i])
            n += 1
        out.append(acc / n)
    return out


def keep_one(policy, k, m, scores):
    if k >= m:
        return list(range(m))
    rule, is_pooled = TABLE[policy][2], TABLE[policy][3]
    sinks = 0
    if rule == "vl_recent":
        recent = math.ceil(k * RECENT_FRACTION - TIE)
    elif rule == "half_recent":
        recent = k // 2
    elif rule == "snap_window":
        recent = min(OBS_WINDOW, k // 2)
    elif rule == "sinks":
        sinks = min(SINKS, k)
        recent = k - sinks
    else:
        recent = m
    recent = min(recent, k)
    chosen = set(range(sinks)) | set(range(m - recent, m))
    need = k - len(chosen)
    if need > 0:
        value = pooled(scores) if is_pooled else [float(s) for s in scores]
        cands = sorted(range(sinks, m - recent), key=lambda j: (-value[j], j))
        chosen |= set(cands[:need])
    return sorted(chosen)


def select(policy, alpha, mode, L, H, m, scores, sparsity):
    k = budgets(policy, alpha, mode, L, m, sparsity)
    keep = [[keep_one(policy, k[l], m, scores[l][h] if scores is not None else None)
             for h in range(H)] for l in range(L)]
    return k, keep


def to_mask(positions, m):
    """Kept positions as hex: digit i holds positions 4i..4i+3, bit b = 4i+b."""
    bits = [0] * ((m + 3) // 4)
    for p in positions:
        bits[p // 4] |= 1 << (p % 4)
    return "".join("0123456789abcdef"[b] for b in bits)


# ---------------------------------------------------------------- cases

# (seed, layers, prompt_len, image spans [begin, end), logit style)
CASES = [
    (1, 4, 80, [(8, 64)], "random"),        # one image, 16 post-vision queries
    (2, 4, 80, [(4, 24), (28, 48), (52, 68)], "random"),  # three images, 12 after
    (3, 3, 72, [(10, 68)], "random"),       # 4 post-vision queries: window fallback
    (4, 4, 48, [], "random"),               # text only
    (5, 2, 20, [(2, 10)], "random"),        # shorter than the window
    (6, 4, 56, [(4, 36)], "uniform"),       # flat attention: ties everywhere
    (7, 5, 76, [(1, 57)], "peaked"),        # very sparse layers: clipping in paper mode
]


def attention(rng, L, H, m, style):
    out = []
    for l in range(L):
        if style == "uniform":
            logits = np.zeros((H, m, m))
        else:
            scale = rng.uniform(0.3, 5.0) if style == "random" else rng.uniform(4.0, 12.0)
            if style == "peaked" and l == 0:
                scale = 0.2  # one dense layer among sparse ones
            logits = rng.standard_normal((H, m, m)) * scale
            # keys that many queries like (sinks, salient patches)
            logits += rng.standard_normal((H, 1, m)) * scale * 0.5
        out.append(causal_softmax(logits))
    return out


def build_case(seed, L, m, spans, style, q_heads=8, kv_heads=4):
    rng = np.random.default_rng(seed)
    v = spans[-1][1] if spans else None
    attn = attention(rng, L, q_heads, m, style)
    # Measure every row set some policy asks for, keyed by its first row.
    scores = {}
    for policy in POLICIES:
        begin = plan(policy, m, v)[0]
        if begin >= 0 and str(begin) not in scores:
            scores[str(begin)] = [measure(attn[l], kv_heads, begin, -1)[0] for l in range(L)]
    sparsity = [measure(attn[l], kv_heads, -1, post_vision_rows(m, v))[1] for l in range(L)]
    return v, attn, scores, sparsity


def expected(L, H, m, v, scores, sparsity):
    plans = {}
    results = {}
    for policy in POLICIES:
        plans[policy] = list(plan(policy, m, v))
        begin = plans[policy][0]
        sc = scores[str(begin)] if begin >= 0 else None
        # Only the sparsity-aware budget reads the mode; the others store one
        # result that both modes must reproduce.
        modes = MODES if TABLE[policy][1] == "sparsity" else ["any"]
        for alpha in RATIOS:
            for mode in modes:
                k, keep = select(policy, alpha, mode, L, H, m, sc, sparsity)
                results["%s/%g/%s" % (policy, alpha, mode)] = {
                    "budget": k,
                    "keep": [[to_mask(keep[l][h], m) for h in range(H)] for l in range(L)],
                }
    return plans, results


def make_cases():
    cases = []
    for seed, L, m, spans, style in CASES:
        H = 4
        v, _, scores, sparsity = build_case(seed, L, m, spans, style)
        plans, results = expected(L, H, m, v, scores, sparsity)
        cases.append({
            "name": "seed%d-%s-L%d-m%d" % (seed, style, L, m),
            "seed": seed, "style": style, "num_layers": L, "num_kv_heads": H,
            "num_q_heads": 8, "prompt_len": m, "image_spans": spans,
            "post_vision_begin": -1 if v is None else v,
            # first score row -> [layer][kv_head][position], float32 values
            "scores": {k: [[[float(x) for x in row] for row in layer] for layer in val]
                       for k, val in scores.items()},
            "sparsity": sparsity,
            "plans": plans,
            "results": results,
        })
    return {
        "about": "made by backend/tests/oracles/policy_oracle.py --out; see docs/policies.md",
        "ratios": RATIOS, "modes": MODES, "policies": POLICIES,
        "cases": cases,
    }


def dump(doc, path):
    text = json.dumps(doc, separators=(",", ":"))
    # float32 values print shortest through np.float32 so the file stays small
    with open(path, "w") as f:
        f.write(text)
        f.write("\n")


def compact(doc):
    for case in doc["cases"]:
        case["scores"] = {k: [[[float("%.5g" % x) for x in row] for row in layer]
                              for layer in val] for k, val in case["scores"].items()}
    return doc


def check(path):
    with open(path) as f:
        stored = json.load(f)
    problems = []
    fresh = make_cases()
    for old, new in zip(stored["cases"], fresh["cases"]):
        name = old["name"]
        # Inputs: a new numpy may round exp() differently, so compare loosely.
        for rows, val in new["scores"].items():
            a = np.array(old["scores"][rows], dtype=np.float64)
            b = np.array(val, dtype=np.float64)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-6):
                problems.append("%s: %s scores differ from a fresh measurement" % (name, rows))
        if not np.allclose(old["sparsity"], new["sparsity"], rtol=0, atol=1e-6):
            problems.append("%s: sparsity differs from a fresh measurement" % name)
        # Outputs: recomputed exactly from the stored inputs.
        scores = {k: [np.array(layer, dtype=np.float32) for layer in v]
                  for k, v in old["scores"].items()}
        plans, results = expected(old["num_layers"], old["num_kv_heads"], old["prompt_len"],
                                  None if old["post_vision_begin"] < 0 else old["post_vision_begin"],
                                  scores, old["sparsity"])
        if plans != old["plans"]:
            problems.append("%s: plans differ" % name)
        for key, res in results.items():
            if res != old["results"].get(key):
                problems.append("%s: %s differs" % (name, key))
    if len(stored["cases"]) != len(fresh["cases"]):
        problems.append("stored file has %d cases, oracle makes %d"
                        % (len(stored["cases"]), len(fresh["cases"])))
    for p in problems[:20]:
        print(p, file=sys.stderr)
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the cases to this JSON file")
    ap.add_argument("--check", help="recompute and compare with this JSON file")
    args = ap.parse_args()
    if args.out:
        dump(compact(make_cases()), args.out)
    if args.check:
        if not check(args.check):
            print("policy oracle: %s does not match a fresh run" % args.check, file=sys.stderr)
            return 1
        print("policy oracle: %s matches" % args.check)
    if not args.out and not args.check:
        ap.error("give --out or --check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
