#!/usr/bin/env python3
"""Smoke test of `vlcache-run --jsonl` on a real checkpoint: a valid request gets
a result line with output_ids and stats while stdin is still open (a caller may
feed the runner over time), a request with an invalid keep ratio and a line
that is not JSON each get an {"id", "error"} line, neither stops the others, and
the runner exits 0 at end of input. Usage: run_jsonl_smoke.py VLCACHE_RUN MODEL_DIR"""
import base64
import json
import queue
import random
import subprocess
import sys
import threading

TIMEOUT_S = 240


def main():
    binary, model = sys.argv[1], sys.argv[2]
    with open(model + "/config.json") as f:
        config = json.load(f)
    image_token = config["image_token_index"]
    per_image = config.get("image_seq_length", 64)
    size = config["vision_config"]["image_size"]
    rng = random.Random(0)
    pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
    ids = [1, 30, 225] + [image_token] * per_image + [13, 44, 87, 120, 9, 10, 11, 12, 14]
    valid = {"id": "ok-1", "input_ids": ids,
             "images": [{"height": size, "width": size,
                         "rgb_b64": base64.b64encode(pixels).decode()}],
             "max_tokens": 4, "policy": "vlcache", "keep_ratio": 0.5,
             "budget_mode": "exact", "return_kept_positions": True}
    invalid = dict(valid, id="bad-ratio", keep_ratio=1.5)
    proc = subprocess.Popen([binary, "--model", model, "--jsonl", "--threads", "2"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out_lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            out_lines.put(line)
        out_lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    raw = []
    try:
        proc.stdin.write(json.dumps(valid) + "\n")
        proc.stdin.flush()
        first = out_lines.get(timeout=TIMEOUT_S)  # stdin still open
        raw.append(first)
        proc.stdin.write(json.dumps(invalid) + "\n{not json\n")
        proc.stdin.close()
        while True:
            line = out_lines.get(timeout=TIMEOUT_S)
            if line is None:
                break
            raw.append(line)
        rc = proc.wait(timeout=TIMEOUT_S)
    except (queue.Empty, subprocess.TimeoutExpired):
        proc.kill()
        sys.exit("vlcache-run --jsonl did not answer within %d s (got %r)" % (TIMEOUT_S, raw))
    stderr = proc.stderr.read()
    if rc != 0:
        sys.exit("vlcache-run exited %d: %s" % (rc, stderr))
    stdout = "".join(l for l in raw if l)
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    by_id = {}
    for line in lines:
        by_id.setdefault(line.get("id"), []).append(line)
    problems = []

    def expect(cond, what):
        if not cond:
            problems.append(what)

    expect(len(lines) == 3, "expected 3 lines, got %d: %s" % (len(lines), stdout))
    expect(first is not None and json.loads(first).get("id") == "ok-1",
           "first line should be the valid request's result: %r" % first)
    ok = by_id.get("ok-1", [{}])[0]
    out = ok.get("output_ids")
    expect(isinstance(out, list) and 1 <= len(out) <= 4
           and all(isinstance(t, int) and 0 <= t < config["text_config"]["vocab_size"]
                   for t in out), "output_ids: %r" % (out,))
    expect(ok.get("finish_reason") in ("stop", "length"), "finish_reason: %r" % ok)
    stats = ok.get("stats", {})
    expect(stats.get("prompt_tokens") == len(ids), "stats.prompt_tokens: %r" % stats)
    expect(stats.get("image_tokens") == per_image, "stats.image_tokens: %r" % stats)
    expect(stats.get("policy") == "vlcache", "stats.policy: %r" % stats.get("policy"))
    expect(stats.get("completion_tokens") == len(out or []), "completion_tokens")
    layers = config["text_config"]["num_hidden_layers"]
    expect(len(stats.get("layers", [])) == layers, "stats.layers: %r" % stats.get("layers"))
    full, kept = stats.get("kv_tokens_full", 0), stats.get("kv_tokens_kept", 0)
    expect(0 < kept < full, "kv_tokens_kept %r vs full %r" % (kept, full))
    kp = stats.get("kept_positions", [])
    expect(len(kp) == layers and all(p == sorted(set(p)) for layer in kp for p in layer),
           "kept_positions")
    bad = by_id.get("bad-ratio", [{}])[0]
    expect("keep_ratio" in bad.get("error", "") and "output_ids" not in bad,
           "bad-ratio line: %r" % bad)
    junk = by_id.get(None, [{}])[0]
    expect("line 3" in junk.get("error", ""), "non-JSON line: %r" % junk)
    if problems:
        print(stdout)
        sys.exit("vlcache-run --jsonl smoke test failed:\n  " + "\n  ".join(problems))
    print("vlcache-run --jsonl: 1 result, 2 error lines, as expected")


if __name__ == "__main__":
    main()
