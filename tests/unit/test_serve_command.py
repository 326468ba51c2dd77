"""`iacorch serve` without the server extra: a clear error naming the extra, exit 69."""

from __future__ import annotations

import sys

import pytest

from iacorch.cli.main import main
from iacorch.errors import ExitCode


def test_serve_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)   # as if not installed
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "0"])
    assert exited.value.code == ExitCode.TOOL_MISSING
    err = capsys.readouterr().err
    assert "uvicorn" in err and "pip install 'iacorch[server]'" in err
    assert "Traceback" not in err


def test_a_proxy_header_needs_a_trusted_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--trust-proxy-header", "X-Forwarded-User"])
    assert exited.value.code == ExitCode.BAD_INVOCATION
    assert "--trusted-proxy" in capsys.readouterr().err
