"""Writes oracle.json: ids and texts from Hugging Face `tokenizers` for the
gateway's tokenizer tests. Run by `make gateway-oracle` (needs `pip install
tokenizers` and `make deps-gateway` for the downloaded tokenizer.json files);
the output is committed so the Go tests need no Python."""
import json
import random
import sys

from tokenizers import Tokenizer

TEXTS = [
    "Hello world",
    "USER: <image>\nWhat color is the circle? ASSISTANT:",
    "  leading spaces and trailing  ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "I'm sure they'll say DON'T, we've (re)done it",
    "numbers 1234567 and 3.14159, 1,000,000",
    "日本語のテキストと中文混合",
    "emoji 😀👍🏽 and family 👨‍👩‍👧",
    "accents: café naïve Ångström; decomposed: cafe\u0301",
    "<s>special</s> tokens <image><image> inline <unk>",
    "code: for (int i = 0; i < n; ++i) { x[i] += 2; }",
    "    indented\n        more",
    "a",
    " ",
    "",
    "Ünïcödé ☃ — “quotes” ‘single’ … ellipsis",
    "mixed 中文 English 123 😀 <|im_start|>user\nhi<|im_end|>",
    "x" * 50 + " " + "ab" * 40,
]


# Newer Mistral/Llama files express SentencePiece's space handling with a
# Metaspace pre-tokenizer and decoder instead of normalizers; the same edit is
# made in the Go test (metaspaceVariant) so both sides load the same file.
def metaspace_variant(path):
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["normalizer"] = None
    cfg["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    cfg["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    return Tokenizer.from_str(json.dumps(cfg))


def main():
    specs = [arg.split("=", 1) for arg in sys.argv[2:]]
    out = {}
    rng = random.Random(1234)
    for name, path in specs:
        if name.endswith("_metaspace"):
            tok = metaspace_variant(path)
        else:
            tok = Tokenizer.from_file(path)
        cases = []
        for text in TEXTS:
            ids = tok.encode(text, add_special_tokens=True).ids
            plain = tok.encode(text, add_special_tokens=False).ids
            cases.append({
                "text": text,
                "ids": ids,
                "ids_no_special": plain,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            })
        vocab = tok.get_vocab_size()
        random_decodes = []
        for _ in range(20):
            ids = [rng.randrange(vocab) for _ in range(rng.randrange(1, 12))]
            random_decodes.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
        out[name] = {"cases": cases, "random_decodes": random_decodes}
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
