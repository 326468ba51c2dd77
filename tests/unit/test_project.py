"""The project root: one rule, whatever directory a command runs from."""

from __future__ import annotations

from pathlib import Path

import pytest

from iacorch.project import project_root, state_dir


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """home/work/repo/{plans,stacks/sub}, with HOME at home/."""
    monkeypatch.delenv("IACORCH_PROJECT", raising=False)
    monkeypatch.delenv("IACORCH_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    repo = tmp_path / "home" / "work" / "repo"
    for sub in ("plans", "stacks/sub"):
        (repo / sub).mkdir(parents=True)
    (repo / "plans" / "site.yaml").write_text("version: 1\n")
    return repo


def test_the_git_repository_is_the_project_from_any_directory(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / ".git").mkdir()
    (tree / "plans" / ".iacorch").mkdir()      # left behind by an older iacorch: no marker
    for cwd in (tree, tree / "plans", tree / "stacks" / "sub"):
        monkeypatch.chdir(cwd)
        assert project_root() == tree
        assert project_root(tree / "plans" / "site.yaml") == tree
        assert state_dir() == tree / ".iacorch"


def test_without_git_the_directory_holding_state_is_found_from_below(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    assert project_root(tree / "plans" / "site.yaml") == tree   # the runbook is inside cwd
    (tree / ".iacorch").mkdir()                                 # the first apply made it
    monkeypatch.chdir(tree / "plans")
    assert project_root() == tree
    assert project_root(Path("site.yaml")) == tree


def test_a_runbook_outside_the_current_directory_is_its_own_project(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert project_root(tree / "plans" / "site.yaml") == tree / "plans"
    assert project_root() == elsewhere


def test_home_and_its_state_are_never_the_project(
        tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home" / ".git").mkdir()       # a dotfiles repository
    (tmp_path / "home" / ".iacorch").mkdir()   # a stray state directory
    monkeypatch.chdir(tree)
    assert project_root() == tree


def test_the_environment_overrides(tree: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / ".git").mkdir()
    monkeypatch.chdir(tree / "plans")
    monkeypatch.setenv("IACORCH_PROJECT", str(tree / "stacks"))
    assert project_root() == tree / "stacks"
    monkeypatch.setenv("IACORCH_HOME", str(tmp_path / "state"))
    assert state_dir() == tmp_path / "state"
