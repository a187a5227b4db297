"""Issue 12's "already safe" list (zip-pickle attacks, TensorRT header and .pte trailer abuse, YAML Python tags, zoo
redirects and ../ names, external data and links leaving an artefact folder, truncated and bit-flipped artefacts),
through the real CLI in child processes, with the same checks as test_hostile_corpus.py (kept apart so that the two
halves run on different workers)."""

from __future__ import annotations

import sys

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the hostile corpus harness uses Linux inotify and /proc", allow_module_level=True)

from test_hostile_corpus import _params, check_case  # noqa: E402


@pytest.mark.parametrize("case", list(_params(rows=False)))
def test_safe_file(case, tmp_path):
    check_case(case, tmp_path)
