"""Project exceptions: every user-facing failure is a ShortLVLMError with an actionable message."""


class ShortLVLMError(Exception):
    """Base class; the CLI prints the message (no traceback) and exits with code 2."""


class UnsupportedModelError(ShortLVLMError):
    """No adapter knows this architecture and no override says where its layers are."""


class InvalidLayerSelectionError(ShortLVLMError):
    """A requested set of layers cannot be removed (out of range, duplicates, all layers, ...)."""


class UnsafeCutError(InvalidLayerSelectionError):
    """Removing a layer would silently change what the model computes (e.g. Qwen3-VL deepstack)."""


class OutputExistsError(ShortLVLMError):
    """The output location exists and overwriting was not requested."""


class OutputWriteError(ShortLVLMError):
    """The output location cannot be written (permissions, read-only mount, full disk, file-size limit)."""


class OutputLockedError(ShortLVLMError):
    """Another run is writing the same output location."""


class ModelLoadError(ShortLVLMError):
    """A model or processor could not be loaded from the given name or path."""


class VerificationError(ShortLVLMError):
    """A saved checkpoint does not reproduce the in-memory model."""


class CaptureError(ShortLVLMError):
    """The capture pass cannot produce trustworthy statistics (no attention weights, NaN/Inf, ...)."""


class ScoringError(ShortLVLMError):
    """A scorer was asked for something it cannot do (unknown name, bad parameter, ...)."""


class CompensationError(ShortLVLMError):
    """SCP cannot be applied as asked (bad parameter, non-linear writer path, ...)."""


class TokenImportanceError(ScoringError, CompensationError):
    """A TIS setting is invalid; TIS is read by the layer scorer and by SCP, so it is an error of both."""
