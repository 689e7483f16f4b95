#!/usr/bin/env python3
"""Runs `vlcache-bench` at tiny sizes and checks its JSON has every field for
every run and capacity measurement (the figures themselves are not judged).
Usage: bench_smoke.py VLCACHE_BENCH MODEL_DIR"""
import json
import os
import subprocess
import sys
import tempfile

RUN_FIELDS = ["prompt_tokens", "image_tokens", "batch", "policy", "keep_ratio",
              "completion_tokens", "prefill_ms", "compress_ms", "decode_ms_per_step", "e2e_ms",
              "kv_bytes_full", "kv_bytes_kept", "kv_fraction_kept", "pool_used_bytes_peak",
              "prefill_time_vs_full", "decode_speedup_vs_full", "e2e_speedup_vs_full"]
FIT_FIELDS = ["prompt_tokens", "policy", "keep_ratio", "pool_bytes", "reserved_decode_tokens",
              "sequences", "at_least", "vs_full"]


def main():
    binary, model = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        cmd = [binary, "--model", model, "--prompt-tokens", "90,150", "--batch", "1,2",
               "--keep-ratios", "0.5,0.1", "--policies", "vlcache,h2o", "--tokens", "3",
               "--fit-pool-mb", "1", "--fit-max", "6", "--fit-tokens", "8", "--threads", "2",
               "--repeats", "2", "--out", out]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        if proc.returncode != 0:
            sys.exit("vlcache-bench exited %d:\n%s\n%s" % (proc.returncode, proc.stdout,
                                                           proc.stderr))
        with open(out) as f:
            doc = json.load(f)
    problems = []
    runs = doc.get("runs", [])
    # 2 lengths x 2 batches x (full + 2 policies x 2 ratios)
    if len(runs) != 2 * 2 * 5:
        problems.append("expected 20 runs, got %d" % len(runs))
    for r in runs:
        missing = [k for k in RUN_FIELDS if k not in r]
        if missing or "error" in r:
            problems.append("run %r: missing %s, error %r" % (r, missing, r.get("error")))
            continue
        if r["completion_tokens"] != 3:
            problems.append("run generated %d tokens, asked 3 (eos ignored)"
                            % r["completion_tokens"])
        if r["keep_ratio"] < 1 and not r["kv_bytes_kept"] < r["kv_bytes_full"]:
            problems.append("ratio %g kept %d of %d bytes" % (r["keep_ratio"],
                                                             r["kv_bytes_kept"],
                                                             r["kv_bytes_full"]))
    fits = doc.get("fit", [])
    if len(fits) != 5:
        problems.append("expected 5 capacity measurements, got %d" % len(fits))
    for f in fits:
        missing = [k for k in FIT_FIELDS if k not in f]
        if missing or "error" in f or f.get("sequences", 0) < 1:
            problems.append("fit %r: missing %s" % (f, missing))
    for key in ("prompt_tokens", "batch", "keep_ratios", "policies", "tokens", "repeats"):
        if key not in doc.get("settings", {}):
            problems.append("settings lacks %s" % key)
    if "kv_frac" not in proc.stdout:
        problems.append("no table printed")
    if problems:
        print(proc.stdout)
        sys.exit("vlcache-bench smoke test failed:\n  " + "\n  ".join(problems))
    print("vlcache-bench: %d runs and %d capacity rows with every field" % (len(runs), len(fits)))


if __name__ == "__main__":
    main()
