"""Build a tiny Qwen2 chat model in a folder, offline, in seconds: the real-vLLM tier's model.

Run with the vLLM venv's Python (it has ``tokenizers``, ``transformers`` and ``torch``):
``.venv-vllm/bin/python tests/real_vllm/build_tiny_model.py DIR``. The weights are random, so answers are noise,
but vLLM loads, schedules, streams and counts it exactly as it does a real checkpoint. head_dim is 64: vLLM's CPU
attention refuses 16. About 50 M parameters (100 MB): big enough that a token takes milliseconds, so the two
benchmark clients' own overheads do not decide their comparison, small enough to start in a minute.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog.",
    "for i in range(10):\n    print(i)\n",
    "class Session:\n    def __init__(self, name):\n        self.name = name\n",
    "the and for are but not you all any can had her was one our out day get has him his how man new now old",
    "see two way who did its let put say she too use map key row log sum max min",
    "import os, sys, json; print(json.dumps({'key': os.getcwd()}))",
]


def build(folder: Path) -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=512, hidden_size=1024, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=16,
        num_key_value_heads=4, head_dim=64, max_position_embeddings=32768, tie_word_embeddings=True,
        torch_dtype="bfloat16", bos_token_id=None, eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
