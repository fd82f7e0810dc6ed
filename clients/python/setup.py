"""Build steps of tokend-client that pyproject.toml cannot declare.

* The gRPC stubs are generated from tokend's proto with grpcio-tools while
  the package is built (``build_py``), into ``tokend_client/_proto``; none
  are checked in. The proto is ``../../proto/tokend/v1/tokend.proto`` in a
  checkout of tokend, or ``proto/tokend/v1/tokend.proto`` in an sdist
  (``sdist`` copies it in).
* The version is tokend's: ``[package] version`` of ``../../Cargo.toml``, or
  the sdist's ``PKG-INFO``.
* The runtime requirements follow the generator: the generated code refuses
  a grpcio older than the grpcio-tools that made it, and a protobuf older
  than its protoc, so those are the lower bounds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO = Path("tokend/v1/tokend.proto")
# The generated modules, by name, as they land in tokend_client/_proto.
GENERATED = ("tokend_pb2.py", "tokend_pb2.pyi", "tokend_pb2_grpc.py")
# The one import protoc's gRPC plugin writes, for the proto's own package
# path; inside tokend_client it becomes relative.
ABSOLUTE_IMPORT = "from tokend.v1 import tokend_pb2 as"
RELATIVE_IMPORT = "from . import tokend_pb2 as"


def proto_root() -> Path:
    """The include directory holding ``tokend/v1/tokend.proto``."""
    # An sdist's own copy first: an unpacked sdist's grandparent is no checkout.
    candidates = (HERE / "proto", REPO / "proto")
    for root in candidates:
        if (root / PROTO).is_file():
            return root
    raise SystemExit(
        f"tokend-client: {PROTO} is in none of {', '.join(str(c) for c in candidates)}; "
        "build from a checkout of tokend (clients/python) or from its sdist"
    )


def tokend_version() -> str:
    """tokend's version: the sdist's PKG-INFO, else Cargo.toml's ``[package] version``."""
    pkg_info = HERE / "PKG-INFO"
    if pkg_info.is_file():
        match = re.search(r"^Version: (\S+)$", pkg_info.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    cargo = REPO / "Cargo.toml"
    if cargo.is_file():
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - depends on the interpreter
            import tomli as tomllib
        with cargo.open("rb") as f:
            package = tomllib.load(f).get("package", {})
        if package.get("name") == "tokend" and "version" in package:
            return str(package["version"])
    raise SystemExit(
        f"tokend-client: no version: {pkg_info} does not exist and {cargo} is not tokend's"
    )


_generated: Optional[Dict[str, str]] = None


def generated() -> Dict[str, str]:
    """The generated modules' text by file name, made once per build."""
    global _generated
    if _generated is None:
        _generated = _generate()
    return _generated


def _generate() -> Dict[str, str]:
    root = proto_root()
    with tempfile.TemporaryDirectory(prefix="tokend-client-protoc-") as out:
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{root}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(
                f"tokend-client: {' '.join(command)} failed ({result.returncode}); "
                f"is grpcio-tools installed in the build environment?\n{result.stderr}"
            )
        files = {name: (Path(out) / PROTO.parent / name).read_text() for name in GENERATED}
    grpc_module = files["tokend_pb2_grpc.py"]
    if ABSOLUTE_IMPORT not in grpc_module:
        raise SystemExit(
            f"tokend-client: the generated tokend_pb2_grpc.py has no `{ABSOLUTE_IMPORT}` "
            "line to make relative; this grpcio-tools writes its imports differently"
        )
    files["tokend_pb2_grpc.py"] = grpc_module.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
    return files


def _found(pattern: str, text: str, what: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if not match:
        raise SystemExit(f"tokend-client: cannot find {what} in the generated stubs")
    return match.group(1)


def requirements() -> List[str]:
    """grpcio and protobuf, no older than what the generated code demands."""
    files = generated()
    grpc_version = _found(
        r"^GRPC_GENERATED_VERSION = '([^']+)'$", files["tokend_pb2_grpc.py"], "grpcio's version"
    )
    protobuf_version = _found(
        r"^# Protobuf Python Version: (\S+)$", files["tokend_pb2.py"], "protobuf's version"
    )
    return [f"grpcio>={grpc_version}", f"protobuf>={protobuf_version}"]


class BuildPyWithStubs(build_py):
    """``build_py`` that also writes the generated stubs into ``_proto``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # An editable install imports from src/: the stubs go there
            # (ignored by .gitignore).
            target = HERE / "src" / "tokend_client" / "_proto"
        else:
            target = Path(self.build_lib) / "tokend_client" / "_proto"
        target.mkdir(parents=True, exist_ok=True)
        for name, text in generated().items():
            (target / name).write_text(text)

    def get_outputs(self, include_bytecode: bool = True) -> List[str]:
        outputs = super().get_outputs(include_bytecode)
        target = Path(self.build_lib) / "tokend_client" / "_proto"
        return outputs + [str(target / name) for name in GENERATED]


class SdistWithProto(sdist):
    """``sdist`` that carries the proto, which lives outside this project."""

    def make_release_tree(self, base_dir: str, files: List[str]) -> None:
        super().make_release_tree(base_dir, files)
        dest = Path(base_dir) / "proto" / PROTO
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto_root() / PROTO, dest)


setup(
    version=tokend_version(),
    install_requires=requirements(),
    cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProto},
)
