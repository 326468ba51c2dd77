"""Start-up cost: optional features load their modules only when a runbook uses them."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = textwrap.dedent(code) + "\nimport sys\nprint('\\n'.join(sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return set(done.stdout.split())


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
