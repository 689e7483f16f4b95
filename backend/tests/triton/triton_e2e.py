"""Helpers for the end-to-end tests: a real tritonserver started through
scripts/triton-serve.sh, Triton's own gRPC streaming client, the golden data
of testdata/ and the server's Prometheus metrics."""

import dataclasses
import json
import os
import pathlib
import queue
import re
import signal
import subprocess
import time
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[3]
TESTDATA = REPO / "testdata"


def load_golden(checkpoint):
    """golden.json of a testdata checkpoint, with each prompt's images decoded."""
    root = TESTDATA / checkpoint
    golden = json.loads((root / "golden.json").read_text())
    for prompt in golden["prompts"]:
        prompt["pixels"] = np.stack(
            [np.asarray(Image.open(root / name).convert("RGB")) for name in prompt["images"]])
    return golden


def make_inputs(input_ids=None, images=None, max_tokens=None, policy=None, keep_ratio=None,
                temperature=None, input_ids_dtype="INT32", ignore_eos=None):
    """Contract inputs (docs/contract.md); None leaves an input out."""
    inputs = []

    def add(name, array, datatype):
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)

    if input_ids is not None:
        dtype = {"INT32": np.int32, "FP32": np.float32, "INT64": np.int64}[input_ids_dtype]
        add("input_ids", np.asarray(input_ids, dtype=dtype), input_ids_dtype)
    if images is not None:
        add("images", np.ascontiguousarray(images, dtype=np.uint8), "UINT8")
    if max_tokens is not None:
        add("max_tokens", np.array([max_tokens], dtype=np.int32), "INT32")
    if temperature is not None:
        add("temperature", np.array([temperature], dtype=np.float32), "FP32")
    if policy is not None:
        add("kv_policy", np.array([policy.encode()], dtype=object), "BYTES")
    if keep_ratio is not None:
        add("kv_keep_ratio", np.array([keep_ratio], dtype=np.float32), "FP32")
    if ignore_eos is not None:
        add("ignore_eos", np.array([ignore_eos], dtype=bool), "BOOL")
    return inputs


@dataclasses.dataclass
class Generation:
    """What one request's stream delivered."""
    responses: list = dataclasses.field(default_factory=list)  # output_ids of each response
    finals: int = 0  # responses flagged triton_final_response
    finish_reason: str = None
    stats: dict = None
    # (response index, stats) of every non-final response that carried stats
    early_stats: list = dataclasses.field(default_factory=list)
    error: str = None

    @property
    def tokens(self):
        return [t for chunk in self.responses for t in chunk]


class Stream:
    """One gRPC ModelStreamInfer stream of tritonclient (one request in flight
    at a time, so that error responses, which carry no request id, are ours)."""

    def __init__(self, url):
        self.client = grpcclient.InferenceServerClient(url)
        self.events = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.events.put((result, error)))

    def send(self, model, inputs, request_id=""):
        self.client.async_stream_infer(model, inputs, request_id=request_id,
                                       enable_empty_final_response=True)

    def next_response(self, timeout):
        return self.events.get(timeout=timeout)

    def collect(self, timeout=120):
        """Reads responses until the final one or an error."""
        generation = Generation()
        deadline = time.monotonic() + timeout
        while True:
            result, error = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            if error is not None:
                generation.error = str(error)
                return generation
            response = result.get_response()
            ids = result.as_numpy("output_ids")
            generation.responses.append([] if ids is None else ids.tolist())
            final = response.parameters["triton_final_response"].bool_param
            stats = result.as_numpy("stats")
            if not final and stats is not None:
                generation.early_stats.append((len(generation.responses) - 1,
                                               json.loads(stats[0])))
            if final:
                generation.finals += 1
                generation.finish_reason = result.as_numpy("finish_reason")[0].decode()
                generation.stats = json.loads(result.as_numpy("stats")[0])
                return generation

    def pending(self):
        return self.events.qsize()

    def close(self, cancel_requests=False):
        self.client.stop_stream(cancel_requests=cancel_requests)
        self.client.close()


def generate(url, model, inputs, request_id="", timeout=120):
    stream = Stream(url)
    try:
        stream.send(model, inputs, request_id)
        return stream.collect(timeout)
    finally:
        stream.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def read_metrics(metrics_url):
    """Prometheus text -> list of (name, labels dict, value)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def metric(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None if none."""
    values = [v for n, l, v in samples
              if n == name and all(l.get(k) == str(w) for k, w in labels.items())]
    return sum(values) if values else None


def trace_timestamps(trace_dir, request_id):
    """Triton's trace (mode=triton, log-frequency 1) of one request: a list of
    {"name", "ns"}; None until its file is written."""
    for path in pathlib.Path(trace_dir).glob("trace.json*"):
        try:
            entries = json.loads(path.read_text())
        except ValueError:
            continue  # being written
        ids = {e["id"] for e in entries if e.get("request_id") == request_id}
        if ids:
            return [t for e in entries if e["id"] in ids for t in e.get("timestamps", [])]
    return None


def wait_for(predicate, timeout, interval=0.1):
    """Polls predicate until it returns a truthy value; returns the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


@dataclasses.dataclass
class Server:
    pid: int
    http_port: int
    grpc_port: int
    metrics_port: int
    log: pathlib.Path
    trace_dir: pathlib.Path

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self):
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def http_get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def alive(self):
        try:
            state = pathlib.Path(f"/proc/{self.pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state

    def stop(self, timeout=60):
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        if not wait_for(lambda: not self.alive(), timeout, 0.2):
            os.kill(self.pid, signal.SIGKILL)
            wait_for(lambda: not self.alive(), 10, 0.2)


def start_server(model_repo, log, trace_dir, http_port, grpc_port, metrics_port):
    """scripts/triton-serve.sh with Triton's own tracing on for every request."""
    env = dict(os.environ)
    env.setdefault("VLCACHE_BUILD_DIR", str(REPO / "build"))
    command = [
        str(REPO / "scripts" / "triton-serve.sh"),
        "--http", str(http_port), "--grpc", str(grpc_port), "--metrics", str(metrics_port),
        "--model-repo", str(model_repo), "--log", str(log), "--ready-timeout", "240",
        "--",
        "--exit-timeout-secs=10",
        "--trace-config", "mode=triton",
        "--trace-config", f"triton,file={trace_dir / 'trace.json'}",
        "--trace-config", "triton,log-frequency=1",
        "--trace-config", "level=TIMESTAMPS",
        "--trace-config", "rate=1",
        "--trace-config", "count=-1",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    pid = int(done.stdout.strip().splitlines()[-1])
    return Server(pid, http_port, grpc_port, metrics_port, log, trace_dir)
