"""`faregate prices import FILE` run as a command on a small LiteLLM-shaped price map: the
catalog it writes loads, prices what LiteLLM priced, and is dated by `--effective-from` (by
default today, UTC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from faregate.cli import main
from faregate.pricing import cost_of, load_catalog
from faregate.usage import Usage

LITELLM = {
    "sample_spec": {"input_cost_per_token": 0.0, "litellm_provider": "see docs", "mode": "chat"},
    "gpt-4o-mini": {
        "litellm_provider": "openai",
        "mode": "chat",
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "max_output_tokens": 16384,
    },
    "whisper-1": {
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "input_cost_per_second": 0.0001,
        "output_cost_per_second": 0.0001,
    },
    "gpt-4o-transcribe": {
        "litellm_provider": "openai",
        "mode": "audio_transcription",
        "input_cost_per_token": 2.5e-06,
        "input_cost_per_audio_token": 6e-06,
        "output_cost_per_token": 1e-05,
    },
}


@pytest.fixture
def price_map(tmp_path: Path) -> Path:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(LITELLM))
    return path


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_the_command_dates_the_imported_prices_by_effective_from(
    price_map: Path, tmp_path: Path
) -> None:
    out = tmp_path / "prices.yaml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, "-m", "faregate", "prices", "import", str(price_map),
         "--output", str(out), "--effective-from", "2025-01-15"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "imported 2 models" in run.stderr
    catalog = load_catalog([out], include_builtin=False)
    assert catalog.price_for("gpt-4o-mini", at=_at(date(2025, 1, 14))) is None
    price = catalog.price_for("gpt-4o-mini", at=_at(date(2025, 1, 15)))
    assert price is not None and price.effective_from == _at(date(2025, 1, 15))
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_of(usage, price, at=_at(date(2025, 2, 1))) == Decimal("0.75")
    whisper = catalog.price_for("whisper-1", at=_at(date(2025, 2, 1)))
    assert whisper is not None and whisper.per_second == Decimal("0.0001")
    assert catalog.price_for("gpt-4o-transcribe", at=_at(date(2025, 2, 1))) is None
    assert "skipped gpt-4o-transcribe: transcription priced per audio token" in out.read_text()


def test_without_effective_from_the_prices_apply_from_today_utc(
    price_map: Path, tmp_path: Path
) -> None:
    out = tmp_path / "prices.yaml"
    today = datetime.now(UTC).date()
    assert main(["prices", "import", str(price_map), "--output", str(out)]) == 0
    catalog = load_catalog([out], include_builtin=False)
    price = catalog.price_for("gpt-4o-mini", at=_at(today + timedelta(days=1)))
    assert price is not None and price.effective_from.date() in (today, datetime.now(UTC).date())
    assert catalog.price_for("gpt-4o-mini", at=_at(today) - timedelta(seconds=1)) is None


def test_a_bad_effective_from_is_refused_with_a_usage_error(
    price_map: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["prices", "import", str(price_map), "--effective-from", "15/01/2025"])
    assert exit_.value.code == 2
    assert "not a date (YYYY-MM-DD)" in capsys.readouterr().err
