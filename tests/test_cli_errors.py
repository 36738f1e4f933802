"""The command line answers bad input and unwritable paths with a clear error (exit 2), never
a traceback, and never prints a webhook signing key anyone could compute."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from faregate.cli import main
from faregate.store.db import migrate
from faregate.webhooks.signing import derived_hmac_key


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAREGATE_ADMIN_KEY", "FAREGATE_SECRET_KEY", "FAREGATE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_the_webhook_key_of_a_demo_is_read_from_its_data_directory(
    tmp_path: Path, bare_env: None
) -> None:
    data = tmp_path / "var"
    code, _, err = _run(["webhooks", "hmac-key", "--data-dir", str(data)])
    # No secret anywhere: the key would be derived from a public word. It was printed.
    assert code == 2 and "anyone can compute" in err
    data.mkdir()
    (data / "admin_key").write_text("fg_admin_demo\n")
    code, out, _ = _run(["webhooks", "hmac-key", "--data-dir", str(data)])
    assert code == 0 and out.strip() == derived_hmac_key("fg_admin_demo")


def test_a_configured_secret_wins_over_a_demos_key(
    tmp_path: Path, bare_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "admin_key").write_text("fg_admin_demo")
    monkeypatch.setenv("FAREGATE_SECRET_KEY", "the-secret")
    code, out, _ = _run(["webhooks", "hmac-key", "--data-dir", str(tmp_path)])
    assert code == 0 and out.strip() == derived_hmac_key("the-secret")


def test_bad_amounts_and_unwritable_paths_are_errors_not_tracebacks(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    migrate(url)
    db = ["--database-url", url]
    code, _, err = _run(["wallets", "top-up", "w_1", "--credits", "NaN", *db])
    assert (code, err.strip()) == (2, "error: paid_credits: invalid_amount")
    code, _, err = _run(["spend", "--format", "csv", "-o", "/nonexistent/dir/x.csv", *db])
    assert code == 2 and err.startswith("error: No such file or directory")


def test_customers_made_on_the_command_line_are_checked_as_the_api_checks_them(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    migrate(url)
    db = ["--database-url", url]
    for args, field in [
        (["cur", "--currency", "dollars"], "currency"),
        ([""], "external_id"),
        (["c" * 256], "external_id"),
    ]:
        code, _, err = _run(["customers", "create", *args, *db])
        assert code == 2 and f"'{field}'" in err, (args, err)
    code, out, _ = _run(["customers", "create", "acme", "--currency", "eur", *db])
    assert code == 0 and '"currency": "EUR"' in out
