"""`faregate demo` (what `make run` runs), as a user starts it: a process of its own, the
bundled configuration, a demo key printed; every kind of request it configures answers."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import free_port


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * int(8000 * seconds))
    return out.getvalue()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port, mock_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAREGATE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "faregate", "demo", "--port", str(port),
         "--mock-port", str(mock_port), "--data-dir", str(tmp_path / "var")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    key, lines, deadline = None, [], time.monotonic() + 60
    while key is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        found = re.search(r"demo API key : (\S+)", line)
        key = found.group(1) if found else None
    try:
        assert key, "".join(lines)
        yield f"http://127.0.0.1:{port}", key
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def test_every_kind_the_demo_configures_answers(demo: tuple[str, str]) -> None:
    url, key = demo
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        models = {m.id for m in client.models.list().data}
        for model in ("gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash", "mistral-small"):
            assert model in models
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=5
            )
            assert reply.choices[0].message.content and reply.usage
        assert client.embeddings.create(model="text-embedding-3-small", input="hi").data
        image = client.images.generate(model="dall-e-3", prompt="a fox", n=1)
        assert image.data and image.data[0].url
        assert client.moderations.create(input="a quiet walk").results
        text = client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", _wav(1.0), "audio/wav")
        )
        assert isinstance(text.text, str)
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as claude:
        message = claude.messages.create(
            model="claude-sonnet-4", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
        assert message.content and message.usage.output_tokens == 5
