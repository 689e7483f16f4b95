#!/usr/bin/env python3
"""vlcache-run against Hugging Face on golden prompt 0 of a fixture: the PNG is
decoded by vlcache-run itself, --ignore-eos keeps all 16 greedy tokens, and
--dump-logits writes the last prompt position's logits, which must match HF's
within 1e-3 (max abs). The same with --compress-after (full policy keeps
everything, so the logits after the continuation are still HF's). An image of
the wrong size is refused with a message naming both sizes.
Usage: run_golden_parity.py VLCACHE_RUN MODEL_DIR"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

TIMEOUT_S = 240
TOLERANCE = 1e-3


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_S)


def write_png(path, width, height):
    """A grey RGB PNG, written with the standard library only."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + b"\x80" * (3 * width) for _ in range(height))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(rows)))
        f.write(chunk(b"IEND", b""))


def check_run(binary, model, prompt, extra, dump, failures, label):
    ids = prompt["input_ids"]
    args = [binary, "--model", model, "--input-ids", ",".join(map(str, ids)),
            "--policy", "full", "--max-tokens", "16", "--ignore-eos", "--dump-logits", dump]
    for image in prompt["images"]:
        args += ["--image", os.path.join(model, image)]
    proc = run(args + extra)
    if proc.returncode != 0:
        failures.append(f"{label}: exit {proc.returncode}: {proc.stderr.strip()}")
        return
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    want = prompt["hf"]["greedy_16"]
    if result["output_ids"] != want:
        failures.append(f"{label}: output_ids {result['output_ids']}, HF {want}")
    if result["finish_reason"] != "length":
        failures.append(f"{label}: finish_reason {result['finish_reason']}, want length")
    ours = np.fromfile(dump, dtype="<f4")
    theirs = np.asarray(prompt["hf"]["last_logits"], dtype=np.float32)
    if ours.shape != theirs.shape:
        failures.append(f"{label}: dumped {ours.size} logits, HF has {theirs.size}")
        return
    diff = float(np.max(np.abs(ours - theirs)))
    print(f"{label}: max |logits - HF| = {diff:.3g}")
    if not diff <= TOLERANCE:
        failures.append(f"{label}: max abs logit difference {diff} > {TOLERANCE}")


def main():
    binary, model = sys.argv[1], sys.argv[2]
    with open(os.path.join(model, "golden.json")) as f:
        golden = json.load(f)
    prompt = golden["prompts"][0]
    image_token = golden["image_token_id"]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "logits.f32")
        check_run(binary, model, prompt, [], dump, failures, "whole prompt")
        last_image = max(i for i, t in enumerate(prompt["input_ids"]) if t == image_token)
        os.remove(dump)
        check_run(binary, model, prompt, ["--compress-after", str(last_image + 1)], dump,
                  failures, f"compress-after {last_image + 1}")

        small = os.path.join(tmp, "small.png")
        write_png(small, 16, 16)
        with open(os.path.join(model, "config.json")) as f:
            size = json.load(f)["vision_config"]["image_size"]
        proc = run([binary, "--model", model, "--input-ids",
                    ",".join(map(str, prompt["input_ids"])), "--image", small])
        if proc.returncode == 0 or "16x16" not in proc.stderr or f"{size}x{size}" not in proc.stderr:
            failures.append(f"a 16x16 PNG: exit {proc.returncode}, stderr {proc.stderr.strip()!r}; "
                            f"want a refusal naming 16x16 and {size}x{size}")
    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
