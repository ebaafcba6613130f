"""Serve the Hub stand-in until Ctrl-C, for trying csulora's Hub features (or a CI job) without the network.

    python -m scripts.tools.hub_standin --port 8088 --repo org/base=./base --repo org/aligned=./aligned \
        --writer hf_test_token=org

then, in another shell:

    export HF_ENDPOINT=http://127.0.0.1:8088 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_test_token
    csulora correct ./adapter --base org/base --aligned org/aligned --out safe --push-to-hub org/safe

The stand-in speaks the Hub's LFS transfer protocol, not Xet's: `huggingface_hub` pushes through Xet
unless HF_HUB_DISABLE_XET=1 is set. It keeps everything in memory; nothing is written outside a
temporary folder, which is removed on exit.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from .server import FakeHub


def _repo(value: str) -> tuple[str, Path]:
    repo_id, _, folder = value.partition("=")
    if not folder or "/" not in repo_id:
        raise argparse.ArgumentTypeError(f"{value!r}: expected ORG/NAME=FOLDER")
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{folder}: no such folder")
    return repo_id, path


def _writer(value: str) -> tuple[str, list[str]]:
    token, _, namespaces = value.partition("=")
    if not token or not namespaces:
        raise argparse.ArgumentTypeError(f"{value!r}: expected TOKEN=ORG[,ORG...]")
    return token, namespaces.split(",")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.tools.hub_standin", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8088, help="port on 127.0.0.1 (0: any free one); default 8088")
    parser.add_argument(
        "--repo",
        type=_repo,
        action="append",
        default=[],
        metavar="ORG/NAME=FOLDER",
        help="serve FOLDER as a model repo",
    )
    parser.add_argument(
        "--writer",
        type=_writer,
        action="append",
        default=[],
        metavar="TOKEN=ORG[,ORG]",
        help="TOKEN may create repos in and push to these namespaces",
    )
    args = parser.parse_args(argv)
    with FakeHub(port=args.port) as hub:
        for repo_id, folder in args.repo:
            commit = hub.push(repo_id, folder)
            print(f"serving {folder} as {repo_id} (commit {commit[:12]})")
        for token, namespaces in args.writer:
            hub.allow_writes(token, *namespaces)
        print(f"Hub stand-in at {hub.url}; in the shell that runs csulora:")
        print(f"  export HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1")
        print("Ctrl-C stops it.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped")


if __name__ == "__main__":
    main()
