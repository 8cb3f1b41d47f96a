"""`vapi-trl env`: versions of the stack and the visible devices."""

import argparse
import platform


def make_parser(subparsers, name: str = "env", help: str = "") -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help, description=help)


def main(args: argparse.Namespace) -> int:
    import accelerate
    import datasets
    import peft
    import torch
    import transformers
    import trl

    import vapi_trl

    print(f"vapi-trl: {vapi_trl.__version__}")
    print(f"python: {platform.python_version()} ({platform.platform()})")
    for module in (torch, transformers, trl, accelerate, peft, datasets):
        print(f"{module.__name__}: {module.__version__}")
    print(f"cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            print(f"  cuda:{index}: {torch.cuda.get_device_name(index)}")
    return 0
