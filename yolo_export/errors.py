"""Errors the user sees. Each carries one line that says what went wrong and what to do."""


class YoloExportError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits non-zero."""


class MissingDependency(YoloExportError):
    """A backend library (a pip extra) is not installed."""

    def __init__(self, what: str, extra: str, detail: str = ""):
        msg = f"{what} needs the '{extra}' extra: pip install \"yolo-export[{extra}]\""
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)
        self.extra = extra


class NotAvailable(YoloExportError):
    """A backend cannot run on this machine (no GPU, not macOS, missing binary)."""


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
