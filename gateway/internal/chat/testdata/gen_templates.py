"""Writes templates_oracle.json: chat templates rendered by Jinja2 the way
transformers renders them (sandboxed, trim_blocks, lstrip_blocks), and the ids
Hugging Face `tokenizers` gives the rendered text (apply_chat_template
tokenises without adding special tokens). Needs `make deps-gateway` for the
Qwen3 files; run by `make gateway-oracle`; the output is committed."""
import json
import sys

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "What is 2+2? 答えて 😀"}],
    [{"role": "user", "content": "  spaced\n\nlines  "}, {"role": "assistant", "content": "ok"},
     {"role": "user", "content": "again"}],
]


def raise_exception(message):
    raise ValueError(message)


def main():
    out_path, name, tok_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(f"{tok_dir}/tokenizer_config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(cfg["chat_template"])
    tok = Tokenizer.from_file(f"{tok_dir}/tokenizer.json")
    cases = []
    for conv in CONVERSATIONS:
        text = template.render(messages=conv, add_generation_prompt=True,
                               bos_token=cfg.get("bos_token") or "", eos_token=cfg.get("eos_token") or "")
        cases.append({"messages": conv, "text": text, "ids": tok.encode(text, add_special_tokens=False).ids})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({name: cases}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
