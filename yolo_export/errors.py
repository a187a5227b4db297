"""Errors the user sees. Each carries one line that says what went wrong and what to do."""


class YoloExportError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits non-zero."""


class NotAvailable(YoloExportError):
    """A backend cannot export or run on this machine (no GPU, not macOS, missing binary, missing extra)."""


class MissingDependency(NotAvailable):
    """A backend library (a pip extra) is not installed: the kind of NotAvailable that ``pip install`` fixes."""

    def __init__(self, what: str, extra: str, detail: str = ""):
        msg = f"{what} needs the '{extra}' extra: pip install \"yolo-export[{extra}]\""
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
        self.extra = extra


class ArgumentError(YoloExportError):
    """An argument a format does not take, or a combination it refuses."""


class CheckpointError(YoloExportError):
    """An unreadable, foreign, corrupt or unsafe checkpoint."""


class ImageError(YoloExportError):
    """An image that cannot be read or decoded."""


class DatasetError(YoloExportError):
    """A dataset with a bad layout."""


class VerificationError(YoloExportError):
    """An exported artefact disagrees with its source beyond the backend's tolerance."""


class DownloadError(YoloExportError):
    """A download failed (network, HTTP status, size or checksum)."""


class LimitError(YoloExportError):
    """A file asks for more than a budget allows (size, depth, count); the message names the override."""


class OutputError(YoloExportError):
    """An output path that would lose a file (the source model, a file the command reads, something that is not an
    artefact of the same format), or a write that failed (disk full, no permission). Nothing was changed."""


class MetadataError(YoloExportError):
    """An artefact whose metadata is missing, malformed or out of range."""


class FileError(YoloExportError):
    """A file or folder that could not be read or written (not found, permission, disk full)."""


# "Not found" is a FileError for every kind of input (its JSON ``type``); each is also its kind's class, so that
# ``except CheckpointError`` / ``except ImageError`` / ``except DatasetError`` keep catching it.
class CheckpointNotFound(FileError, CheckpointError):
    """A checkpoint path that does not exist (and is not a zoo name)."""


class ImageNotFound(FileError, ImageError):
    """An image path that does not exist."""


class DatasetNotFound(FileError, DatasetError):
    """A dataset path that does not exist."""


class Interrupted(YoloExportError):
    """The run was interrupted (Ctrl-C, SIGTERM); the line says what was kept and how to continue."""


class InternalError(YoloExportError):
    """Anything else: a defect of this tool or of a backend library (``--verbose`` shows the traceback)."""


# The ``type`` values of the CLI's JSON error document ``{"error": ..., "type": ...}``: these classes' names.
DOCUMENTED = ("YoloExportError", "ArgumentError", "MissingDependency", "NotAvailable", "CheckpointError",
              "ImageError", "DatasetError", "VerificationError", "DownloadError", "LimitError", "OutputError",
              "MetadataError", "FileError", "Interrupted", "InternalError")


def user_error(e: BaseException) -> YoloExportError:
    """The error the user sees for any exception: this project's own classes as they are; an ``OSError`` as a
    ``FileError`` in plain words; anything else as an ``InternalError`` whose line names no Python class."""
    import errno

    if isinstance(e, YoloExportError):
        if type(e).__name__ in DOCUMENTED:
            return e
        for cls in type(e).__mro__:  # a subclass (a plugin's): report the nearest documented class
            if cls.__name__ in DOCUMENTED:
                out = cls.__new__(cls)
                Exception.__init__(out, str(e))
                return out
    if isinstance(e, OSError):
        what = e.filename if e.filename is not None else ""
        if e.errno == errno.ENOSPC:
            return FileError(f"no space left on the device{f' writing {what}' if what else ''}; nothing was replaced "
                             "(free some space and run again)")
        reason = (e.strerror or str(e) or "input/output error").lower()
        return FileError(f"{what}: {reason}" if what else reason)
    if isinstance(e, RecursionError):
        return InternalError("input nested too deeply to read")
    if isinstance(e, MemoryError):
        return InternalError("out of memory")
    text = str(e).strip().splitlines()[0] if str(e).strip() else "unexpected failure"
    return InternalError(f"{text} (unexpected; run again with --verbose for the details)")


# What a backend library raises on bytes it cannot parse; a defect of this tool shows as one of the excluded kinds.
_DEFECTS = (AttributeError, NameError, ImportError, NotImplementedError, AssertionError)


class reading:  # noqa: N801 - used as ``with reading(path, ...)``
    """Around a backend library reading an artefact: what it raises on damaged or foreign bytes (its own exception
    classes, ``RuntimeError``, ``ValueError``, ``UnicodeDecodeError``...) becomes one line of ``cls`` naming the
    file. This project's errors, ``OSError`` (a ``FileError`` through ``user_error``), ``MemoryError``,
    ``RecursionError`` and the kinds a defect raises pass as they are (the original stays as ``__cause__``)."""

    def __init__(self, path, what: str, cls: type = None):
        self.path, self.what, self.cls = path, what, cls or FileError

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or not isinstance(e, Exception) or isinstance(
                e, (YoloExportError, OSError, MemoryError, RecursionError, *_DEFECTS)):
            return False
        first = (str(e).strip().splitlines() or ["no message"])[0][:200]
        raise self.cls(f"cannot read {self.path} as {self.what}: {first} (the file is damaged, or not that kind "
                       "of model)") from e
