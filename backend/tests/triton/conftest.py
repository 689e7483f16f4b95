"""One real tritonserver for the whole end-to-end suite, loading the backend
built by CMake (VLCACHE_BUILD_DIR, default build/) and a model repository made
of triton_models/ plus one test-only model whose KV pool is smaller than the
context (tiny-llava-small-pool)."""

import pathlib
import re

import pytest

from triton_e2e import REPO, load_golden, start_server

# Loopback ports reserved for these tests (18000-18099 belong to the Triton tests).
HTTP_PORT, GRPC_PORT, METRICS_PORT = 18010, 18011, 18012
# 12 MiB = 3072 tokens of the tiny model's fp32 KV cache (4 KiB a token), less than
# its 4096-token context: a request within the context can still never fit, and
# two 2,500-token sequences cannot run at once.
SMALL_POOL_BYTES = 12 << 20


def _small_pool_model(repo: pathlib.Path):
    config = (REPO / "triton_models" / "tiny-llava" / "config.pbtxt").read_text()
    edits = [
        (r'name: "tiny-llava"', 'name: "tiny-llava-small-pool"'),
        (r'(key: "checkpoint", value: \{ string_value: )"[^"]*"',
         rf'\1"{REPO / "testdata" / "tiny-llava-random"}"'),
        (r'(key: "kv_pool_bytes", value: \{ string_value: )"[^"]*"', rf'\1"{SMALL_POOL_BYTES}"'),
        # 5 ms after every step: a 2000-token sequence stays alive for 10 s or more
        # (about 2 s otherwise), long enough to observe and cancel what waits behind it.
        (r'(\{ key: "shutdown_drain_ms", value: \{ string_value: "[^"]*" \} \})',
         r'\1,\n  { key: "step_delay_us", value: { string_value: "5000" } }'),
    ]
    for pattern, replacement in edits:
        config, count = re.subn(pattern, replacement, config)
        assert count == 1, f"triton_models/tiny-llava/config.pbtxt has no {pattern}"
    model = repo / "tiny-llava-small-pool"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    repo = root / "models"
    repo.mkdir()
    # The real model directories, so their relative checkpoint paths are tested too.
    for name in ("tiny-llava", "tiny-llava-trained"):
        (repo / name).symlink_to(REPO / "triton_models" / name)
    _small_pool_model(repo)
    trace_dir = root / "trace"
    trace_dir.mkdir()
    srv = start_server(repo, root / "tritonserver.log", trace_dir, HTTP_PORT, GRPC_PORT,
                       METRICS_PORT)
    try:
        yield srv
    finally:
        srv.stop()
        print(f"tritonserver log: {srv.log}")


@pytest.fixture(scope="session")
def golden_random():
    return load_golden("tiny-llava-random")


@pytest.fixture(scope="session")
def golden_trained():
    return load_golden("tiny-llava-trained")
