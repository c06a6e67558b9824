"""Write a tiny llama-architecture GGUF model with random weights, for a real llama.cpp server
to load in tests (tests/test_discovery_real.py): 2 layers, 64-wide, a 314-token SentencePiece
vocab (the 256 byte tokens, the three specials and some letters), well under a megabyte. What it
says is garbage; that it loads and answers is all a test needs.

Run it with a Python that has the `gguf` and `numpy` packages (gguf-py, from PyPI), e.g. the
virtualenv that holds `llama-cpp-python[server]`:

    python tests/make_tiny_gguf.py OUT.gguf

It imports nothing from localrouter and needs no network.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX = 512
SEED = 38

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
SPACE = "\u2581"  # SentencePiece's word boundary


def vocab() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece ("llama") vocab: <unk>, <s>, </s>, the 256 byte fallbacks, then pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [UNKNOWN, CONTROL, CONTROL]
    tokens += [f"<0x{byte:02X}>" for byte in range(256)]
    types += [BYTE] * 256
    pieces = [SPACE, *string.ascii_lowercase, *(SPACE + c for c in string.ascii_lowercase)]
    pieces += [SPACE + "the", "."]  # every piece once: llama.cpp asserts the ids are unique
    tokens += pieces
    types += [NORMAL] * len(pieces)
    # Longer pieces score higher, so the tokenizer prefers them (scores are log-probabilities).
    scores = [0.0] * (len(tokens) - len(pieces)) + [-10.0 + len(p) for p in pieces]
    return tokens, scores, types


def write(path: Path) -> Path:
    import gguf  # only in the llama.cpp virtualenv (see the module docstring)
    import numpy as np

    tokens, scores, types = vocab()
    rng = np.random.default_rng(SEED)

    def weights(*shape: int) -> object:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> object:
        return np.ones(n, dtype=np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    # numpy shapes are (rows, columns) = (out, in): GGUF stores them reversed, as ggml wants.
    kv = N_EMBD // N_HEAD * N_HEAD_KV
    writer.add_tensor("token_embd.weight", weights(len(tokens), N_EMBD))
    for layer in range(N_LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones(N_EMBD))
        writer.add_tensor(f"{block}.attn_q.weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.attn_k.weight", weights(kv, N_EMBD))
        writer.add_tensor(f"{block}.attn_v.weight", weights(kv, N_EMBD))
        writer.add_tensor(f"{block}.attn_output.weight", weights(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones(N_EMBD))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", ones(N_EMBD))
    writer.add_tensor("output.weight", weights(len(tokens), N_EMBD))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT.gguf", file=sys.stderr)
        return 2
    print(write(Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
