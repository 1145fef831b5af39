"""Build hook: generate the gRPC stubs from protos/ so generated code is never edited by hand."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def generate_grpc_stubs() -> None:
    from grpc_tools import protoc  # build-time dependency (pyproject build-system.requires)

    root = Path(__file__).parent
    include = str(Path(protoc.__file__).parent / "_proto")
    for proto in sorted((root / "protos").rglob("*.proto")):
        rel = proto.relative_to(root)
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{include}",
                f"--python_out={root}",
                f"--pyi_out={root}",
                f"--grpc_python_out={root}",
                str(rel),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed on {rel} (exit {code})")


class BuildWithProtos(build_py):
    def run(self) -> None:
        generate_grpc_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
