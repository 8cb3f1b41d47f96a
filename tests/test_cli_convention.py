"""One CLI convention (issue 13, item 5) and the training scripts' fast `--help` (issue 16)."""

import argparse
import os
import subprocess
import sys

import pytest

from tests.test_bad_input import run_cli, snapshot
from vapi_trl import cli
from vapi_trl.commands import script_help
from vapi_trl.commands._common import option_spellings


ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_cli_help  # noqa: E402  (a script, not a package: found through sys.path)


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of subcommand `name` as `vapi-trl` builds it (training scripts: their TrlParser)."""
    if name in cli.SCRIPT_COMMANDS:
        return make_cli_help.live_parsers()[name]
    root = cli.build_parser([name])
    (subparsers,) = [action for action in root._actions if isinstance(action, argparse._SubParsersAction)]
    return subparsers.choices[name]


@pytest.fixture(scope="module")
def training_parsers():
    return make_cli_help.live_parsers()


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_has_both_spellings_snake_case_first(name, training_parsers):
    parser = training_parsers[name] if name in cli.SCRIPT_COMMANDS else command_parser(name)
    checked = 0
    for action in parser._actions:
        long_names = [option for option in action.option_strings if option.startswith("--")]
        for option in long_names:
            assert set(option_spellings(option)) <= set(action.option_strings), (name, option, action.option_strings)
            checked += 1
        if long_names:
            primary = long_names[0]
            assert "-" not in primary[2:], f"{name}: {primary} should be --snake_case first"
    assert checked > 0 or name == "env"


def test_example_scripts_follow_the_convention(training_parsers):
    for name, parser in training_parsers.items():
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    assert set(option_spellings(option)) <= set(action.option_strings), (name, option)


@pytest.mark.parametrize(
    "argv, dest, value",
    [
        (["demo", "--num-generations", "3"], "num_generations", 3),
        (["demo", "--num_generations", "3"], "num_generations", 3),
        (["sample-geneval", "--model", "m", "--metadata", "p.jsonl", "--output_dir", "o", "--batch-size", "2"],
         "batch_size", 2),
        (["sample-geneval", "--model_name_or_path", "m", "--metadata_file", "p.jsonl", "--output-dir", "o",
          "--n_samples", "5"], "num_images", 5),
        (["tokenize", "--image_tokenizer_path", "t", "--train_dir", "d", "--output_dir", "o", "--images-per-class",
          "2"], "images_per_class", 2),
        (["tokenize", "--image-tokenizer-path", "t", "--dataset", "d", "--output_dir", "o"], "dataset_name", "d"),
        # The converters' official LlamaGen / VAR names are aliases of the config names.
        (["convert-llamagen", "--gpt-ckpt", "g.pt", "--output_dir", "o"], "gpt_ckpt", "g.pt"),
        (["convert-llamagen", "--output_dir", "o", "--dim", "64"], "hidden_size", 64),
        (["convert-llamagen", "--output_dir", "o", "--n-layer", "2"], "num_hidden_layers", 2),
        (["convert-llamagen", "--output_dir", "o", "--n_head", "4"], "num_attention_heads", 4),
        (["convert-llamagen", "--output_dir", "o", "--n-kv-head", "2"], "num_key_value_heads", 2),
        (["convert-llamagen", "--output_dir", "o", "--rope-base", "500"], "rope_theta", 500.0),
        (["convert-llamagen", "--output_dir", "o", "--no-verify"], "verify", False),
        (["convert-var", "--vae-ckpt", "v.pth", "--output_dir", "o", "--num-heads", "4"], "num_attention_heads", 4),
        (["fid", "a.npz", "b.npz", "--output_file", "r.json"], "output_file", "r.json"),
    ],
)  # fmt: skip
def test_every_spelling_parses_to_the_same_option(argv, dest, value):
    assert getattr(cli.build_parser(argv).parse_args(argv), dest) == value


@pytest.mark.parametrize(
    "argv, dest",
    [
        (["demo", "--out", "x"], "output_dir"),
        (["convert-llamagen", "--out", "x"], "output_dir"),
        (["convert-var", "--vae_ckpt", "v.pth", "--out", "x"], "output_dir"),
        (["tokenize", "--image_tokenizer_path", "t", "--train_dir", "d", "--out", "x"], "output_dir"),
        (["encode-captions", "--tar_shards", "s", "--out", "x"], "output_dir"),
        (["sample", "--model_name_or_path", "m", "--image_tokenizer_path", "t", "--out", "x"], "output_dir"),
        (["sample-geneval", "--model_name_or_path", "m", "--metadata_file", "p", "--out", "x"], "output_dir"),
        (["fid", "a.npz", "b.npz", "--out", "x"], "output_file"),
        (["fid", "a.npz", "b.npz", "--output", "x"], "output_file"),
    ],
)
def test_deprecated_output_spellings_still_work_and_warn_once(argv, dest, capsys):
    old = argv[-2]
    args = cli.build_parser(argv).parse_args([*argv, old, "x"])  # given twice: one warning
    assert getattr(args, dest) == "x"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    expected = (
        f"vapi-trl {argv[0]}: warning: {old} is deprecated and will be removed in vapi-trl 0.3; use --{dest} (the "
        "same option)."
    )
    assert warnings == [expected]


def test_deprecated_out_still_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.arrow").write_bytes(b"earlier dataset")
    before = snapshot(tmp_path)
    code, err = run_cli(
        ["tokenize", "--image_tokenizer_path", "t", "--train_dir", "d", "--out", str(tmp_path)], capsys
    )
    assert code == 2 and "--out is deprecated" in err
    assert f"vapi-trl tokenize: error: --output_dir {str(tmp_path)!r} is not empty" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before


def test_training_commands_run_as_trl_scripts(monkeypatch):
    # The arguments after the command name reach the script's `main(argv)` untouched (options of the root parser
    # before it still apply), as `trl <command>` passes them on.
    from vapi_trl.commands import train_c2i

    seen = []
    monkeypatch.setattr(train_c2i, "main", lambda argv: seen.append(argv) or 0)
    tail = ["--learning_rate", "1e-6", "--debug", "-h-like", "--config", "r.yaml", "--", "x"]
    assert cli.main(["--debug", "train-c2i", *tail]) == 0
    assert seen == [tail]


# ---------------------------------------------------------------------------------------------------------------------
# --help of the training scripts from the committed spec
# ---------------------------------------------------------------------------------------------------------------------


def test_script_help_spec_is_up_to_date():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "make_cli_help.py"), "--check"], check=False
    )
    assert result.returncode == 0, "vapi_trl/commands/script_help.json is stale: run python scripts/make_cli_help.py"


@pytest.mark.parametrize("columns", ["80", "197"])
def test_static_help_prints_what_the_trl_parser_prints(columns, monkeypatch, training_parsers):
    monkeypatch.setenv("COLUMNS", columns)  # argparse wraps to the terminal width: both parsers format live
    for name, parser in training_parsers.items():
        spec = script_help.load_spec(name)
        assert spec is not None, name
        assert script_help.static_parser(spec).format_help() == parser.format_help(), name


def test_static_help_is_printed_only_when_it_is_accurate(monkeypatch, capsys):
    assert script_help.help_requested(["--learning_rate", "1", "-h"])
    assert not script_help.help_requested(["--config", "recipe.yaml", "--help"])  # the YAML changes the defaults
    assert not script_help.help_requested(["--", "--help"])
    monkeypatch.setattr(script_help, "installed_versions", lambda: {"trl": "0.0", "transformers": "0.0"})
    assert script_help.load_spec("train-c2i") is None
    script_help.exit_if_help_requested("train-c2i", ["--help"])  # no spec for these versions: returns
    assert capsys.readouterr().out == ""


def test_training_help_imports_no_heavy_library():
    code = (
        "import sys, contextlib, io, runpy\n"
        "from vapi_trl.cli import main\n"
        "for argv in (['train-c2i', '--help'], ['train-t2i', '-h'], ['demo', '--help'], ['tokenize', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "for script in ('train_llamagen_c2i', 'train_llamagen_t2i', 'train_var_c2i', 'train_janus'):\n"
        f"    sys.argv = [{os.path.join(ROOT, 'examples')!r} + '/' + script + '.py', '--help']\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "    assert '--context_noise_prob' in out.getvalue(), script\n"
        "print(sorted(name for name in ('torch', 'transformers', 'trl', 'datasets') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `vapi-trl <command> ...` line of the bash blocks in the README, docs/ and the command docstrings."""
    import glob
    import re
    import shlex

    pages = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]
    pages += glob.glob(os.path.join(ROOT, "vapi_trl", "commands", "*.py")) + glob.glob(
        os.path.join(ROOT, "examples", "*.py")
    )
    found = []
    for page in pages:
        with open(page, encoding="utf-8") as file:
            text = file.read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                if tokens[:1] == ["vapi-trl"] and len(tokens) > 2:
                    found.append((os.path.relpath(page, ROOT), tokens[1:]))
    return found


def test_docs_show_one_dialect(capsys):
    commands = documented_commands()
    assert {argv[0] for _, argv in commands} >= {
        "demo",
        "convert-llamagen",
        "convert-var",
        "tokenize",
        "sample",
        "fid",
    }
    for page, argv in commands:
        if argv[0] in cli.SCRIPT_COMMANDS:
            continue  # parsed by TrlParser, whose options all have both spellings
        cli.build_parser(argv).parse_args(argv)  # exits on an unknown option
        assert "warning" not in capsys.readouterr().err, (page, argv)  # no deprecated spelling
        for token in argv:
            assert not (token.startswith("--") and "-" in token[2:]), (page, argv, "use the --snake_case spelling")
