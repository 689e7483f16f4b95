"""Static checks of triton_models/ and the GPU template in deploy/triton/ (the
server-side checks of the same files happen when test_e2e.py loads them)."""

import re

import pytest

from triton_e2e import REPO

MODELS = REPO / "triton_models"
TEMPLATE = REPO / "deploy" / "triton" / "llava-1.5-7b-hf" / "config.pbtxt"


def block(config, section):
    """The text of `section [ ... ]` (inputs or outputs)."""
    match = re.search(rf"^{section} \[\n(.*?)^\]", config, re.S | re.M)
    assert match, f"no {section} block"
    return match.group(1)


def parameter(config, key):
    match = re.search(rf'key: "{key}", value: {{ string_value: "([^"]*)" }}', config)
    return match.group(1) if match else None


@pytest.mark.parametrize("name,checkpoint", [("tiny-llava", "tiny-llava-random"),
                                             ("tiny-llava-trained", "tiny-llava-trained")])
def test_tiny_models_serve_the_testdata_checkpoints_on_cpu(name, checkpoint):
    model = MODELS / name
    config = (model / "config.pbtxt").read_text()
    assert re.search(rf'^name: "{re.escape(name)}"$', config, re.M)
    assert 'backend: "vlcache"' in config
    assert re.search(r"^max_batch_size: 0\b", config, re.M)
    assert "model_transaction_policy { decoupled: true }" in config
    assert "kind: KIND_CPU" in config and "KIND_GPU" not in config
    assert (model / "1").is_dir()  # Triton loads version 1
    path = parameter(config, "checkpoint")
    assert path and not path.startswith("/"), "checkpoint must be relative to work in any clone"
    resolved = (model / path).resolve()
    assert resolved == (REPO / "testdata" / checkpoint).resolve()
    assert (resolved / "config.json").is_file() and (resolved / "model.safetensors").is_file()


def test_gpu_template_has_the_same_contract_as_the_tiny_models():
    tiny = (MODELS / "tiny-llava" / "config.pbtxt").read_text()
    template = TEMPLATE.read_text()
    for section in ("input", "output"):
        assert block(template, section) == block(tiny, section), section
    assert "kind: KIND_GPU" in template
    assert parameter(template, "device") == "cuda"
    assert parameter(template, "checkpoint").startswith("/")
    assert int(parameter(template, "kv_pool_bytes")) > int(parameter(tiny, "kv_pool_bytes"))
    assert "UNTESTED" in template
