"""End to end: tritonclient's gRPC ModelStreamInfer -> a real tritonserver ->
libtriton_vlcache.so -> the engine on the tiny checkpoints of testdata/."""

import json
import os
import subprocess
import threading

import numpy as np
import pytest

from triton_e2e import (REPO, Stream, generate, make_inputs, metric, read_metrics,
                        trace_timestamps, wait_for)

EOS = 2
GOLDEN_TOKENS = 16
LAYERS, KV_HEADS, HEAD_DIM, FP32_BYTES = 4, 4, 32, 4  # both tiny checkpoints
IMAGE_TOKENS = 64


def expected_greedy(golden_tokens, max_tokens):
    """The golden greedy run ignores eos; the engine stops at it. Returns the
    tokens the engine must produce (eos included) and the finish reason."""
    tokens = golden_tokens[:max_tokens]
    if EOS in tokens:
        return tokens[:tokens.index(EOS) + 1], "stop"
    return tokens, "length"


def check_stats(stats, prompt, completion_tokens, policy):
    prompt_tokens = len(prompt["input_ids"])
    assert stats["prompt_tokens"] == prompt_tokens
    assert stats["image_tokens"] == IMAGE_TOKENS * len(prompt["images"])
    assert stats["completion_tokens"] == completion_tokens
    assert stats["policy"] == policy
    assert stats["kv_tokens_full"] == LAYERS * KV_HEADS * prompt_tokens
    assert stats["kv_bytes_full"] == stats["kv_tokens_full"] * 2 * HEAD_DIM * FP32_BYTES
    assert stats["kv_bytes_kept"] == stats["kv_tokens_kept"] * 2 * HEAD_DIM * FP32_BYTES
    assert len(stats["layers"]) == LAYERS
    for phase in ("queue_ms", "prefill_ms", "compress_ms", "decode_ms"):
        assert stats[phase] >= 0, phase
    assert "kept_positions" not in stats  # only when asked for


# What the stats of the first response (sent right after compression) must
# already hold, equal to the final response's.
KNOWN_AFTER_COMPRESSION = ("prompt_tokens", "image_tokens", "policy", "keep_ratio", "budget_mode",
                           "kv_tokens_full", "kv_tokens_kept", "kv_bytes_full", "kv_bytes_kept",
                           "layers", "prefill_ms", "compress_ms")


def check_first_stats(got):
    """Only the first response (the one with the first token) carries early
    stats, and their KV figures are already the final ones."""
    assert len(got.early_stats) == 1, got.early_stats
    index, first = got.early_stats[0]
    assert index == 0 and len(got.responses[0]) >= 1
    assert first["kv_tokens_kept"] > 0
    for key in KNOWN_AFTER_COMPRESSION:
        assert first[key] == got.stats[key], key


@pytest.mark.parametrize("checkpoint,model", [("random", "tiny-llava"),
                                              ("trained", "tiny-llava-trained")])
def test_golden_prompts_stream_the_hf_greedy_tokens(server, golden_random, golden_trained,
                                                    checkpoint, model):
    golden = golden_random if checkpoint == "random" else golden_trained
    for prompt in golden["prompts"]:
        want, reason = expected_greedy(prompt["hf"]["greedy_16"], GOLDEN_TOKENS)
        got = generate(server.grpc_url, model,
                       make_inputs(prompt["input_ids"], prompt["pixels"],
                                   max_tokens=GOLDEN_TOKENS, policy="full"),
                       request_id=f"golden-{model}-{prompt['name']}")
        assert got.error is None, got.error
        # The random checkpoint never emits eos in its 16 golden tokens; the
        # trained one answers in one token then eos, so there the prefix up to
        # eos is what must match.
        assert got.tokens == want, prompt["name"]
        assert got.finish_reason == reason
        assert got.finals == 1
        # Streamed: one response per decode step, then the final one (no tokens).
        assert len(got.responses) == len(want) + 1
        assert all(len(chunk) >= 1 for chunk in got.responses[:-1])
        assert got.responses[-1] == []
        check_stats(got.stats, prompt, len(want), "full")
        assert got.stats["kv_tokens_kept"] == got.stats["kv_tokens_full"]
        check_first_stats(got)


def test_ignore_eos_generates_past_eos_like_transformers(server, golden_trained):
    """The trained checkpoint answers in one token, then eos; transformers' golden
    16 tokens were generated past eos (eos again and again). ignore_eos=true must
    give exactly those 16; without it the sequence stops at the first eos."""
    prompt = golden_trained["prompts"][1]
    hf = prompt["hf"]["greedy_16"]
    assert EOS in hf[:GOLDEN_TOKENS - 1]  # the premise: eos comes early
    inputs = dict(max_tokens=GOLDEN_TOKENS, policy="vlcache", keep_ratio=1.0)
    past = generate(server.grpc_url, "tiny-llava-trained",
                    make_inputs(prompt["input_ids"], prompt["pixels"], ignore_eos=True, **inputs))
    assert past.error is None, past.error
    assert past.tokens == hf[:GOLDEN_TOKENS] and past.finish_reason == "length"
    assert past.stats["completion_tokens"] == GOLDEN_TOKENS
    stopped = generate(server.grpc_url, "tiny-llava-trained",
                       make_inputs(prompt["input_ids"], prompt["pixels"], ignore_eos=False, **inputs))
    assert stopped.error is None, stopped.error
    assert (stopped.tokens, stopped.finish_reason) == expected_greedy(hf, GOLDEN_TOKENS)


def test_two_concurrent_streams_with_different_keep_ratios(server, golden_random):
    prompt = golden_random["prompts"][2]  # 8 frames, 527 ids
    results = {}

    def run(ratio):
        results[ratio] = generate(
            server.grpc_url, "tiny-llava",
            make_inputs(prompt["input_ids"], prompt["pixels"], max_tokens=GOLDEN_TOKENS,
                        policy="vlcache", keep_ratio=ratio),
            request_id=f"ratio-{ratio}")

    threads = [threading.Thread(target=run, args=(ratio,)) for ratio in (1.0, 0.25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    full, quarter = results[1.0], results[0.25]
    assert full.error is None and quarter.error is None, (full.error, quarter.error)

    assert full.tokens == prompt["hf"]["greedy_16"]
    assert full.finish_reason == "length" and full.finals == 1
    check_stats(full.stats, prompt, GOLDEN_TOKENS, "vlcache")
    assert full.stats["keep_ratio"] == pytest.approx(1.0)
    assert full.stats["kv_tokens_kept"] == full.stats["kv_tokens_full"]

    assert len(quarter.tokens) == GOLDEN_TOKENS
    assert quarter.finish_reason == "length" and quarter.finals == 1
    check_stats(quarter.stats, prompt, GOLDEN_TOKENS, "vlcache")
    assert quarter.stats["keep_ratio"] == pytest.approx(0.25)
    kept = quarter.stats["kv_tokens_kept"] / quarter.stats["kv_tokens_full"]
    assert kept == pytest.approx(0.25, abs=0.02), kept
    assert all(0 < layer["budget"] < len(prompt["input_ids"]) for layer in quarter.stats["layers"])
    check_first_stats(full)
    check_first_stats(quarter)
    assert quarter.early_stats[0][1]["kv_tokens_kept"] < quarter.early_stats[0][1]["kv_tokens_full"]

    # Continuous batching: the two sequences were in the engine at the same time
    # (from Triton's traces: each one's prefill starts before the other's decode ends).
    spans = []
    for ratio in (1.0, 0.25):
        stamps = wait_for(lambda: trace_timestamps(server.trace_dir, f"ratio-{ratio}"), 30, 0.2)
        assert stamps, f"no trace for ratio-{ratio}"
        at = {t["name"]: t["ns"] for t in stamps}
        spans.append((at["VLCACHE_PREFILL_START"], at["VLCACHE_DECODE_END"]))
    assert max(start for start, _ in spans) < min(end for _, end in spans), spans


def _pool(server, model="tiny-llava"):
    samples = read_metrics(server.metrics_url)
    return {
        "capacity": metric(samples, "vlcache_kv_pool_capacity_bytes", model=model),
        "free": metric(samples, "vlcache_kv_pool_free_bytes", model=model),
        "running": metric(samples, "vlcache_sequences_running", model=model),
        "cancelled": metric(samples, "vlcache_sequences_finished_total", model=model,
                            reason="cancelled"),
    }


def test_cancelled_stream_frees_its_kv_blocks(server, golden_random):
    prompt = golden_random["prompts"][2]
    idle = wait_for(lambda: (lambda p: p if p["running"] == 0 else None)(_pool(server)), 60)
    assert idle, "another sequence is still running"
    assert idle["capacity"] > 0 and idle["free"] == idle["capacity"]

    stream = Stream(server.grpc_url)
    # Far more tokens than the test waits for: the stream is closed mid-generation.
    stream.send("tiny-llava", make_inputs(prompt["input_ids"], prompt["pixels"], max_tokens=3000,
                                          policy="full"), request_id="to-cancel")
    for _ in range(3):
        result, error = stream.next_response(timeout=120)
        assert error is None, error
        assert len(result.as_numpy("output_ids")) == 1
    busy = _pool(server)
    assert busy["running"] == 1
    assert busy["free"] < busy["capacity"]  # the sequence holds KV blocks

    stream.close(cancel_requests=True)

    # The gauges move on the serving thread, the counter when the final
    # response is sent: wait for both.
    freed = wait_for(lambda: (lambda p: p if p["running"] == 0 and p["free"] == p["capacity"]
                              and p["cancelled"] == idle["cancelled"] + 1
                              else None)(_pool(server)), 60)
    # Blocks back in the pool, and through a cancel (the counter), not a finish.
    assert freed, f"KV blocks not returned after cancellation: {_pool(server)}, before {idle}"
    status, _ = server.http_get("/v2/health/ready")
    assert status == 200



def test_cancelled_while_waiting_for_pool_space(server, golden_random):
    """On the 12 MiB-pool model one 8-frame prompt + 2000 tokens holds most of
    the pool, so a second one waits; cancelling the waiting one ends it without
    touching the running one."""
    prompt = golden_random["prompts"][2]
    model = "tiny-llava-small-pool"
    inputs = make_inputs(prompt["input_ids"], prompt["pixels"], max_tokens=2000, policy="full")

    def state():
        samples = read_metrics(server.metrics_url)
        return {
            "running": metric(samples, "vlcache_sequences_running", model=model),
            "waiting": metric(samples, "vlcache_sequences_waiting", model=model),
            "free": metric(samples, "vlcache_kv_pool_free_bytes", model=model),
            "capacity": metric(samples, "vlcache_kv_pool_capacity_bytes", model=model),
            "cancelled": metric(samples, "vlcache_sequences_finished_total", model=model,
                                reason="cancelled"),
        }

    before = state()
    # Both streams are connected up front, so the second request follows the
    # holder's first token at once (the model's step_delay_us keeps the holder
    # alive for seconds; see conftest.py).
    running = Stream(server.grpc_url)
    waiting = Stream(server.grpc_url)
    running.send(model, inputs, request_id="holds-the-pool")
    first, error = running.next_response(timeout=120)
    assert error is None, error
    waiting.send(model, inputs, request_id="waits")
    queued = wait_for(lambda: (lambda s: s if s["waiting"] == 1 else None)(state()), 60, 0.01)
    assert queued and queued["running"] == 1, state()

    waiting.close(cancel_requests=True)
    after = wait_for(lambda: (lambda s: s if s["waiting"] == 0
                              and s["cancelled"] == before["cancelled"] + 1 else None)(state()), 60)
    assert after, f"{state()}, before {before}"
    assert after["running"] == 1  # the running one goes on
    # It is still streaming: more tokens arrive after the other was cancelled.
    result, error = running.next_response(timeout=60)
    assert error is None and len(result.as_numpy("output_ids")) == 1

    running.close(cancel_requests=True)
    idle = wait_for(lambda: (lambda s: s if s["running"] == 0 and s["free"] == s["capacity"]
                             and s["cancelled"] == before["cancelled"] + 2 else None)(state()), 60)
    assert idle, f"{state()}, before {before}"


def test_bad_requests_get_errors_while_another_stream_completes(server, golden_random):
    p0, p1, p2 = golden_random["prompts"]
    good = Stream(server.grpc_url)
    good.send("tiny-llava", make_inputs(p2["input_ids"], p2["pixels"], max_tokens=48,
                                        policy="full"), request_id="survivor")
    first, error = good.next_response(timeout=120)  # the good sequence is decoding
    assert error is None, error

    ids = p1["input_ids"]
    cases = [
        ("missing input_ids", "tiny-llava", make_inputs(None, p1["pixels"]), ["input_ids"]),
        ("input_ids as FP32", "tiny-llava", make_inputs(ids, p1["pixels"], input_ids_dtype="FP32"),
         ["input_ids", "INT32"]),
        ("input_ids 2-D", "tiny-llava", make_inputs([ids], p1["pixels"]), ["input_ids", "shape"]),
        ("ratio 0", "tiny-llava", make_inputs(ids, p1["pixels"], keep_ratio=0.0),
         ["kv_keep_ratio", "(0, 1]"]),
        ("ratio 1.5", "tiny-llava", make_inputs(ids, p1["pixels"], keep_ratio=1.5),
         ["kv_keep_ratio", "(0, 1]"]),
        ("unknown policy", "tiny-llava", make_inputs(ids, p1["pixels"], policy="lru"),
         ["kv_policy", "lru"]),
        ("fewer images than placeholders", "tiny-llava", make_inputs(ids, p1["pixels"][:1]),
         ["images"]),
        ("more images than placeholders", "tiny-llava",
         make_inputs(p0["input_ids"], p1["pixels"]), ["images"]),
        ("images of the wrong size", "tiny-llava",
         make_inputs(ids, np.ascontiguousarray(p1["pixels"][:, :56, :56])), ["images", "112"]),
        ("prompt longer than the context", "tiny-llava",
         make_inputs([1] + [5] * 5000, max_tokens=4), ["input_ids", "context"]),
        ("KV pool can never hold it", "tiny-llava-small-pool",
         make_inputs(p2["input_ids"], p2["pixels"], max_tokens=3000, policy="full"), ["pool"]),
    ]
    bad = Stream(server.grpc_url)
    for what, model, inputs, words in cases:
        bad.send(model, inputs, request_id=what)
        got = bad.collect(timeout=60)
        assert got.error is not None, f"{what}: no error, got {got}"
        for word in words:
            assert word in got.error, f"{what}: '{word}' not in '{got.error}'"

    # The small-pool model still serves what fits: only that request was refused.
    fits = generate(server.grpc_url, "tiny-llava-small-pool",
                    make_inputs(p0["input_ids"], p0["pixels"], max_tokens=4, policy="full"))
    assert fits.error is None and fits.tokens == p0["hf"]["greedy_16"][:4]

    rest = good.collect(timeout=180)
    good.close()
    assert rest.error is None, rest.error
    tokens = first.as_numpy("output_ids").tolist() + rest.tokens
    assert len(tokens) == 48 and rest.finish_reason == "length"
    assert tokens[:GOLDEN_TOKENS] == p2["hf"]["greedy_16"]
    assert bad.pending() == 0  # each error was the request's only response
    bad.close()
    status, _ = server.http_get("/v2/health/ready")
    assert status == 200


def test_tritons_own_metrics_and_statistics_still_count(server, golden_random):
    prompt = golden_random["prompts"][0]
    before = read_metrics(server.metrics_url)
    ok = generate(server.grpc_url, "tiny-llava",
                  make_inputs(prompt["input_ids"], prompt["pixels"], max_tokens=4, policy="full"))
    refused = generate(server.grpc_url, "tiny-llava",
                       make_inputs(prompt["input_ids"], prompt["pixels"], keep_ratio=2.0))
    assert ok.error is None and refused.error is not None
    after = read_metrics(server.metrics_url)

    def delta(name):
        return (metric(after, name, model="tiny-llava") or 0) - \
               (metric(before, name, model="tiny-llava") or 0)

    assert delta("nv_inference_request_success") == 1
    assert delta("nv_inference_request_failure") == 1
    assert delta("nv_inference_count") >= 1
    assert delta("vlcache_sequences_finished_total") == 1  # the refused one never started

    status, body = server.http_get("/v2/models/tiny-llava/stats")
    assert status == 200
    stats = json.loads(body)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["inference_stats"]["fail"]["count"]) >= 1


def test_engine_phases_are_triton_trace_activities(server, golden_random):
    prompt = golden_random["prompts"][1]
    got = generate(server.grpc_url, "tiny-llava",
                   make_inputs(prompt["input_ids"], prompt["pixels"], max_tokens=2),
                   request_id="traced")
    assert got.error is None

    timestamps = wait_for(lambda: trace_timestamps(server.trace_dir, "traced"), 30, 0.2)
    assert timestamps, f"no trace for request 'traced' in {server.trace_dir}"
    names = [t["name"] for t in timestamps]
    phases = ["VLCACHE_QUEUE_START", "VLCACHE_QUEUE_END", "VLCACHE_PREFILL_START", "VLCACHE_PREFILL_END",
              "VLCACHE_COMPRESS_START", "VLCACHE_COMPRESS_END", "VLCACHE_DECODE_START",
              "VLCACHE_DECODE_END"]
    for phase in phases:
        assert phase in names, f"{phase} not in {names}"
    instants = [next(t["ns"] for t in timestamps if t["name"] == p) for p in phases]
    assert instants == sorted(instants)  # laid end to end, in order
    assert "REQUEST_START" in names and "COMPUTE_START" in names  # Triton's own still there


def test_serve_script_refuses_ports_in_use(server):
    done = subprocess.run(
        [str(REPO / "scripts" / "triton-serve.sh"), "--http", str(server.http_port),
         "--grpc", "18019", "--metrics", "18018"],
        env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"127.0.0.1:{server.http_port} is already in use" in done.stderr
    assert done.stdout == ""  # no PID: nothing was started
    status, _ = server.http_get("/v2/health/ready")
    assert status == 200
