"""The committed Sparkplug module is exactly what ``make proto`` makes from the .proto."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import ROOT

FOLDER = ROOT / "gateway" / "delivery" / "sparkplug"


def test_the_generated_module_is_reproducible_from_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        ["protoc", f"--proto_path={FOLDER}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         str(FOLDER / "sparkplug_b.proto")],
        check=True,
    )  # fmt: skip
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        assert (tmp_path / name).read_bytes() == (FOLDER / name).read_bytes(), name
