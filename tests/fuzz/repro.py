"""Replay one input against a target outside the fuzzer and show what escaped.

    python tests/fuzz/repro.py TARGET FILE
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import targets  # noqa: E402


def main() -> int:
    name, path = sys.argv[1:3]
    try:
        targets.TARGETS[name](Path(path).read_bytes())
    except targets.ALLOWED as e:
        print(f"ours ({type(e).__name__}): {e}")
        return 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1
    print("no error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
