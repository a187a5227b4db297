"""Which of a set of files did any process open, read or write? (Linux inotify through ctypes; sees reads done by
child processes and native libraries too, which an audit hook would not.)"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

IN_ACCESS, IN_MODIFY, IN_OPEN = 0x1, 0x2, 0x20
IN_NONBLOCK = 0o4000
_EVENT = struct.Struct("iIII")


class Watch:
    def __init__(self, paths):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.wd = {}
        for p in paths:
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(str(p)), IN_ACCESS | IN_MODIFY | IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {p}")
            self.wd[wd] = str(p)

    def touched(self) -> dict[str, set[str]]:
        """{path: {"open", "read", "write"}} for every watched file some process touched since the watch began."""
        out: dict[str, set[str]] = {}
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            i = 0
            while i < len(buf):
                wd, mask, _cookie, n = _EVENT.unpack_from(buf, i)
                i += _EVENT.size + n
                kinds = {k for bit, k in ((IN_OPEN, "open"), (IN_ACCESS, "read"), (IN_MODIFY, "write"))
                         if mask & bit}
                if wd in self.wd and kinds:
                    out.setdefault(self.wd[wd], set()).update(kinds)
        return out

    def close(self):
        os.close(self.fd)
