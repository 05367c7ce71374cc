"""The ``medunic`` command line.

Each sub-command lives next to the code it drives and is imported only when it is called, so that
``medunic --help`` stays fast. A command's entry point takes its own ``argv`` and returns an exit code.
Errors derived from :class:`monai_medunic.errors.MedUniCError` are printed as one clear line with a
non-zero exit, not as a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Sequence

from monai_medunic.errors import MedUniCError

# name -> ("module:function", one-line help). The function has the signature f(argv) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("monai_medunic.data.demo:cli_main", "generate the embedded synthetic bilingual CXR DICOM dataset"),
    "build-vocab": ("monai_medunic.text.vocab:cli_main", "extend a WordPiece vocabulary with a second language"),
    "demo": ("monai_medunic.demo:cli_main", "run the whole pipeline on the embedded demo data"),
    "evaluate": ("monai_medunic.metrics.report:cli_main", "evaluate a pre-trained bundle on a manifest"),
}


def _usage() -> str:
    lines = ["usage: medunic COMMAND [options]", "", "commands:"]
    width = max(len(n) for n in COMMANDS)
    for name, (_, text) in sorted(COMMANDS.items()):
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append("")
    lines.append("`medunic COMMAND --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"medunic: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except MedUniCError as err:
        print(f"medunic {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
