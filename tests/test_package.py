import inspect
import os
import subprocess
import sys

import pytest
from trl import GRPOTrainer

import vapi_trl
from vapi_trl.cli import COMMANDS


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_public_api():
    from vapi_trl import VAPiConfig, VAPiTrainer

    assert issubclass(VAPiTrainer, GRPOTrainer)
    assert VAPiConfig.__mro__[1].__name__ == "GRPOConfig"
    assert vapi_trl.__version__


@pytest.mark.parametrize(
    ("method", "parameters"),
    [
        ("_generate_and_score_completions", ["self", "inputs"]),
        ("_compute_loss", ["self", "model", "inputs"]),
        ("_prepare_inputs", ["self", "generation_batch"]),
        ("create_model_card", ["self", "model_name", "dataset_name", "tags"]),
    ],
)
def test_overridden_grpo_methods_keep_their_signature(method, parameters):
    # VAPiTrainer overrides private GRPOTrainer methods; a TRL release that changes them must fail here, loudly.
    assert list(inspect.signature(getattr(GRPOTrainer, method)).parameters) == parameters


def test_cli_help_for_every_command():
    result = subprocess.run([sys.executable, "-m", "vapi_trl.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "COMMAND" in result.stdout
    from vapi_trl.cli import main

    for name in COMMANDS:
        # Training commands hand their arguments to TrlParser inside `main`, so run the real entry point.
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0, name


def test_env_command_prints_versions(capsys):
    from vapi_trl.cli import main

    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "trl: 1.16" in out and "vapi-trl" in out


def test_configuration_page_is_up_to_date():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_config_doc.py"), "--check"])
    assert result.returncode == 0, "docs/configuration.md is stale: run python scripts/make_config_doc.py"


def test_ci_installs_as_the_readme_says():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    for command in ("pip install torch==2.14.1 torchvision==0.29.1", 'pip install -e ".[dev]"', "python -m pytest -q"):
        assert command in readme and command in ci
