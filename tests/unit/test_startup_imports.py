"""Start-up cost: optional features load their modules only when a runbook uses them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = textwrap.dedent(code) + "\nimport sys\nprint('--modules--', *sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return set(done.stdout.split("--modules--")[-1].split())


def test_templates_without_jinja_syntax_do_not_load_jinja():
    loaded = loaded_after("""
        from iacorch.runbook.templating import Templates
        templates = Templates()
        assert templates.references("{{ stages.net.outputs.id }}").stage_ids == {"net"}
        assert templates.render({"a": ["plain", 1]}, {}) == {"a": ["plain", 1]}
    """)
    assert "jinja2" not in loaded


def test_a_template_loads_jinja_when_it_renders():
    loaded = loaded_after("""
        from iacorch.runbook.templating import Templates
        assert Templates().render("{{ vars.n + 1 }}", {"vars": {"n": 1}}) == 2
    """)
    assert "jinja2" in loaded


ONE_STAGE = """\
version: 1
name: one
stages:
  s0:
    kind: deploy
    shell: {argv: ["true"]}
"""


def loaded_by_apply(tmp_path, runbook: str = ONE_STAGE) -> set[str]:
    """The modules `iacorch apply` of `runbook` loads, run in a fresh interpreter."""
    (tmp_path / "one.yaml").write_text(runbook)
    return loaded_after(f"""
        import os
        os.chdir({str(tmp_path)!r})
        os.environ["IACORCH_HOME"] = {str(tmp_path / "home")!r}
        from iacorch.cli.main import main
        try:
            main(["apply", "one.yaml", "-q"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """)


def test_apply_loads_no_module_of_a_feature_the_runbook_does_not_use(tmp_path):
    loaded = loaded_by_apply(tmp_path)
    unused = {"jinja2", "iacorch.engine.notify", "iacorch.engine.notify_events",
              "iacorch.engine.drift", "urllib.request", "iacorch.engine.undo_runner",
              "xml.etree.ElementTree"}
    assert not unused & loaded


def test_a_run_closes_its_store_although_start_up_objects_are_frozen(tmp_path):
    (tmp_path / "one.yaml").write_text(ONE_STAGE)
    home = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "iacorch", "apply", "one.yaml", "-q"], cwd=tmp_path,
                   env={**os.environ, "IACORCH_HOME": str(home)}, capture_output=True,
                   check=True)
    assert sorted(p.name for p in home.iterdir() if p.name.startswith("state.db")) == \
        ["state.db"], "the store's connection was not closed at exit (WAL files left)"


def test_main_called_from_python_gives_objects_back_to_the_collector(tmp_path, monkeypatch):
    from iacorch.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.yaml").write_text(ONE_STAGE)
    with pytest.raises(SystemExit):
        main(["validate", "one.yaml"])
    assert gc.get_freeze_count() == 0


def test_help_loads_no_driver_and_no_plugin():
    loaded = loaded_after("""
        from iacorch.cli.main import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
    """)
    # iacorch.model.actions loads when the registry is first read: --help never reads it
    assert not {"pulumi", "ansible_runner", "iacorch.model.actions"} & loaded
    assert not {m for m in loaded if m.startswith("iacorch.drivers.")}
