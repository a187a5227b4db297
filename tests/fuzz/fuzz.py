"""Coverage-guided fuzzing of one reader with atheris (libFuzzer): ``python tests/fuzz/fuzz.py TARGET [libFuzzer
flags] [CORPUS_DIR...]``. The address space is capped at (size after imports + ``FUZZ_AS_HEADROOM``, default 1 GiB)
with ``resource.setrlimit`` before the first input, so an input that makes a reader allocate is a finding (MemoryError)
rather than a machine brought down. Run every target deterministically with ``tests/fuzz/run.py``.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys

import atheris

# The code whose edges are counted. Each is imported inside the block: a module first imported later (a reader's lazy
# ``import zipfile`` at the first input) is not instrumented, and its edges silently drop out of the coverage count.
INSTRUMENTED = ["yolo_export", "yaml", "zipfile"]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports(include=INSTRUMENTED):
    for _name in INSTRUMENTED:
        importlib.import_module(_name)
    import targets

    targets.prepare(sys.argv[1] if len(sys.argv) > 1 else "")


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    name = sys.argv[1]
    fn = targets.TARGETS[name]
    try:
        fn(b"")  # warm the lazy imports of the reader before the cap
    except targets.ALLOWED:
        pass
    headroom = int(os.environ.get("FUZZ_AS_HEADROOM", 1 << 30))
    cap = _vm_size() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))

    def one(data: bytes) -> None:
        try:
            fn(data)
        except targets.ALLOWED as e:
            if "\n" in str(e).strip():
                raise AssertionError(f"a multi-line error: {e!r}") from None

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    try:
        main()
    except targets.ALLOWED:
        pass
