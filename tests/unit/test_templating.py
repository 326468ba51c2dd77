import pytest

from iacorch.model.status import StageStatus
from iacorch.runbook.templating import (
    Reference,
    StageOutputs,
    TemplateProblem,
    Templates,
    secret_env_name,
    shell_secret,
)

T = Templates()


def test_whole_expression_keeps_native_type():
    ctx = {"vars": {"replicas": 3, "regions": ["eu", "us"], "on": True}}
    assert T.render("{{ vars.replicas }}", ctx) == 3
    assert T.render("{{ vars.regions }}", ctx) == ["eu", "us"]
    assert T.render("{{ vars.on }}", ctx) is True
    assert T.render("{{ vars.replicas + 1 }}", ctx) == 4


def test_mixed_text_renders_to_text():
    ctx = {"vars": {"replicas": 3}}
    assert T.render("n={{ vars.replicas }}", ctx) == "n=3"
    assert T.render({"a": ["x{{ vars.replicas }}", 5]}, ctx) == {"a": ["x3", 5]}


def test_strict_undefined_fails_loudly():
    with pytest.raises(TemplateProblem, match="no attribute 'missing'"):
        T.render("{{ vars.missing }}", {"vars": {}})
    with pytest.raises(TemplateProblem):
        T.render("x {{ vars.missing }}", {"vars": {}})


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ vars.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
])
def test_sandbox_refuses_escapes(escape):
    with pytest.raises(TemplateProblem):
        T.render(escape, {"vars": {}})
    refs = T.references(escape) if "cycler" not in escape else None
    if refs is not None and "vars" in escape:
        assert refs.unsafe_attributes


def test_shell_mode_quotes_every_interpolation():
    ctx = {"vars": {"name": "x; rm -rf / $(id) `id` 'q'"}}
    script = T.render("echo {{ vars.name }}", ctx, shell=True)
    import shlex
    assert shlex.split(script) == ["echo", ctx["vars"]["name"]]


def test_shell_raw_filter_opts_out_of_quoting():
    assert T.render("ls {{ vars.flags | raw }}", {"vars": {"flags": "-l -a"}}, shell=True) \
        == "ls -l -a"


def test_references_found_in_ast():
    refs = T.references("{{ stages.net.outputs.subnet }}-{{ vars.env | upper }}"
                        "{% if secrets.token %}{{ stages['go-live'].outputs.region }}{% endif %}")
    assert Reference("stages", ("net", "outputs", "subnet")) in refs.items
    assert Reference("vars", ("env",)) in refs.items
    assert Reference("secrets", ("token",)) in refs.items
    assert Reference("stages", ("go-live", "outputs", "region")) in refs.items
    assert refs.stage_ids == {"net", "go-live"}


def test_computed_key_keeps_the_known_prefix():
    refs = T.references("{{ stages.web.outputs[vars.region] }}")
    assert Reference("stages", ("web", "outputs")) in refs.items
    assert Reference("vars", ("region",)) in refs.items


def test_syntax_error_is_a_template_problem():
    with pytest.raises(TemplateProblem, match="syntax"):
        T.references("{{ vars.x ")


@pytest.mark.parametrize(("source", "uses"), [
    ("{{ secrets.tok }}", []),
    ("curl -H 'X: {{ secrets.tok }}' {{ secrets['b'] }}", []),
    ("{% if vars.on %}{{ secrets.tok }}{% endif %}", []),
    ("{{ secrets.tok | urlencode }}", [("secrets.tok", "the `urlencode` filter")]),
    ("a {{ secrets.tok|upper }} {{ secrets.b }}", [("secrets.tok", "the `upper` filter")]),
    ("{{ secrets.tok is string }}", [("secrets.tok", "the `string` test")]),
    ("{{ 'Bearer ' ~ secrets.tok }}", [("secrets.tok", "an expression")]),
    ("{% if secrets.tok == 'x' %}y{% endif %}", [("secrets.tok", "an expression")]),
    ("{{ secrets.tok.upper() }}", [("secrets.tok", "`.upper`")]),
    ("{{ secrets.tok.x }}", [("secrets.tok", "`.x`")]),
    ("{{ secrets }}", [("secrets", "an expression")]),
    ("{% filter upper %}{{ secrets.tok }}{% endfilter %}",
     [("secrets.tok", "the `upper` filter of a `{% filter %}` block")]),
    ("{% set t %}{{ secrets.tok }}{% endset %}{{ t }}",
     [("secrets.tok", "a `{% set %}` block")]),
])
def test_secret_uses_other_than_a_bare_reference_are_found(source, uses):
    """In `shell.run` a secret is an environment reference: these would transform that."""
    found = T.references(source).secret_uses
    assert [(use.expression, use.how) for use in found] == uses


def test_a_shell_script_gets_a_secret_as_its_quoted_variable():
    assert T.render("echo {{ secrets.api_key }}", {"secrets": {"api_key": shell_secret("api-key")}},
                    shell=True) == 'echo "${IACORCH_SECRET_API_KEY}"'
    assert secret_env_name("db.pass-1") == "IACORCH_SECRET_DB_PASS_1"


def outputs_ctx(values, pending, status=StageStatus.SUCCEEDED):
    net = StageOutputs(values, stage_id="net", reference="net.outputs", pending=pending,
                       status=status)
    return {"stages": {"net": {"outputs": net}}}


def test_a_wrong_output_name_is_an_error_naming_the_outputs_there_are():
    ctx = outputs_ctx({"network_cidr": "10.0.0.0/16", "vpc_id": "v"}, frozenset())
    for source in ("{{ stages.net.outputs.network_cidrs }}",
                   "cidr={{ stages.net.outputs['network_cidrs'] }}",
                   "{% if stages.net.outputs.network_cidrs %}x{% endif %}"):
        with pytest.raises(TemplateProblem) as caught:
            T.render(source, ctx)
        problem = caught.value
        assert problem.message == "stage `net` has no output `network_cidrs`", source
        assert problem.hint == ("did you mean `network_cidr`? its outputs are: network_cidr, "
                                "vpc_id")
        assert not problem.after_apply and problem.reference == "net.outputs.network_cidrs"
    assert T.render("{{ stages.net.outputs.missing | default('d') }}", ctx) == "d"
    assert T.render("{{ stages.net.outputs.missing is defined }}", ctx) is False
    assert T.render("{{ stages.net.outputs.vpc_id }}", ctx) == "v"


def test_an_output_only_an_apply_will_tell_is_known_after_apply():
    with pytest.raises(TemplateProblem) as caught:
        T.render("{{ stages.net.outputs.id }}", outputs_ctx({"name": "a"}, frozenset({"id"})))
    assert caught.value.after_apply
    assert caught.value.message == "output `id` of stage `net` is known only after apply"
    with pytest.raises(TemplateProblem) as caught:   # a stage whose outputs may be any
        T.render("{{ stages.net.outputs.nmae }}", outputs_ctx({"name": "a"}, None))
    assert caught.value.after_apply
    assert caught.value.message == ("output `nmae` of stage `net` is known only after apply; "
                                    "its outputs so far: name, did you mean `name`?")


def test_a_stage_that_did_not_succeed_says_so():
    with pytest.raises(TemplateProblem, match=r"has no output `x` \(its status is skipped\)"):
        T.render("{{ stages.net.outputs.x }}", outputs_ctx({}, frozenset(), StageStatus.SKIPPED))
