"""Bad configuration is refused with one `error: <file>: <key path>: <message>` line per problem, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.config_errors import ConfigProblems, exit_on_config_problems, load_settings_checked
from quasar.cli import main
from remix.dsl import WorkflowConfigError


def serve(config: Path) -> tuple[int, str, str]:
    # catch_exceptions=False: any exception but SystemExit (a traceback for the operator) fails the test
    result = CliRunner().invoke(main, ["serve", "--config", str(config)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("prot: 6000\n", ["{file}: prot: unknown key (Extra inputs are not permitted); did you mean 'port'?"]),
        (
            "port: many\nmax_count: 0\n",
            [
                "{file}: port: Input should be a valid integer, unable to parse string as an integer (got 'many')",
                "{file}: max_count: Input should be greater than or equal to 1 (got 0)",
            ],
        ),
        (
            "tracing: {sample_ratio: 2}\n",
            ["{file}: tracing.sample_ratio: Input should be less than or equal to 1 (got 2)"],
        ),
        ("world_dir: [a]\n", ["{file}: world_dir: Input is not a valid path (got a list)"]),
        (
            "engines: {engines: {}, routes: {r: {targets: [{engine: e}]}}}\n",
            ["{file}: engines.routes.r.targets[0].model: Field required"],
        ),
        (
            "port: [1\n",
            [
                "{file}: line 2, column 1: invalid YAML: while parsing a flow sequence "
                "expected ',' or ']', but got '<stream end>'"
            ],
        ),
        ("- port\n- 1\n", ["{file}: a settings file must be a mapping of keys to values, got a list"]),
        ("42\n", ["{file}: a settings file must be a mapping of keys to values, got a number"]),
        ("1: 2\n", ["{file}: 1: keys must be strings"]),
    ],
    ids=["unknown-key", "wrong-types", "nested", "path-type", "engines", "yaml", "list", "scalar", "int-key"],
)
def test_serve_refuses_bad_settings_in_one_line_each(tmp_path: Path, text: str, lines: list[str]) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(text)
    code, stdout, stderr = serve(config)
    assert code == 2
    assert stderr.splitlines() == [f"error: {line.format(file=config)}" for line in lines]
    assert "Traceback" not in stderr + stdout
    assert "<class" not in stderr


def test_a_missing_settings_file_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = serve(tmp_path / "nope.yaml")
    assert (code, stderr) == (2, f"error: {tmp_path / 'nope.yaml'}: no such file\n")


def test_problems_outside_the_file_are_named_by_their_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("port: 7000\n")
    monkeypatch.setenv("QUASAR_MAX_IN_FLIGHT", "lots")
    with pytest.raises(ConfigProblems) as raised:
        load_settings_checked(config)
    assert raised.value.lines() == [
        "QUASAR_* environment or command-line options: max_in_flight: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')"
    ]


def test_a_good_file_loads(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("port: 7000\nengines: null\n")
    assert load_settings_checked(config).port == 7000


def test_workflow_errors_keep_their_file_and_key_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, exit_on_config_problems():
        raise WorkflowConfigError("wf/feed.yaml", [("steps[2].limit", "expected an integer"), ("", "bad")])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: wf/feed.yaml: steps[2].limit: expected an integer",
        "error: wf/feed.yaml: bad",
    ]


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), exit_on_config_problems():
        raise KeyError("a bug keeps its traceback")
