"""SFT data files that are not what they should be: each is an ``SFTFormatError`` naming the
file and the line (never a decode error or a tokenizer crash later)."""

from __future__ import annotations

import pytest

from agents import load_model
from algorithms.training.sft import SFTFormatError, load_sft


@pytest.fixture(scope="module")
def tokenizer(tiny_chat):
    return load_model(tiny_chat)[1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"prompt": "hi", "response": "hello"}\n{"prompt": "caf\xe9", "response": "x"}\n', "line 2: not UTF-8"),
        (b'{"prompt": "hi", "response": 5}\n', "line 1: not an SFT record (every message needs a string"),
        (b'{"prompt": "hi\\ud800", "response": "ok"}\n', "line 1: not an SFT record (a message holds a NUL"),
        (b'{"messages": [{"role": "user"}]}\n', "line 1: not an SFT record"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 1: not an SFT record"),
        (b"\n\n", "no SFT records"),
    ],
)
def test_bad_sft_files_name_the_file_and_line(tokenizer, tmp_path, content, message):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(content)
    with pytest.raises(SFTFormatError) as error:
        load_sft(path, tokenizer)
    assert str(path) in str(error.value) and message in str(error.value)


def test_an_sft_file_with_a_bom_loads(tokenizer, tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "hi", "response": "hello"}\n')
    assert len(load_sft(path, tokenizer)) == 1
