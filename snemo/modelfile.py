"""Model files named on the command line: a ``.keras`` archive, checked before it is used.

:func:`check_keras_file` needs no TensorFlow (a script calls it before any work);
:func:`load_keras_model` loads in safe mode. Both raise ``ValueError`` naming the flag and the file.
"""

from __future__ import annotations

from pathlib import Path


def check_keras_file(path, *, flag: str) -> Path:
    """Check, without TensorFlow, that ``path`` (given by ``flag``) is an existing Keras archive; returns it.

    A ``.keras`` file is a zip archive written by ``model.save``. Raises ValueError naming the flag
    and the file: not found, a folder, or not a Keras archive.
    """
    import zipfile

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{flag} {path}: file not found")
    if not path.is_file():
        raise ValueError(f"{flag} {path}: a folder, not a .keras file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{flag} {path}: not a Keras archive (a .keras file is the zip written by model.save)")
    return path


def load_keras_model(path, *, flag: str):
    """Load the Keras model ``path`` given by ``flag`` (safe mode, not compiled); checked by :func:`check_keras_file`.

    Raises ValueError naming the flag and the file when it cannot be loaded.
    """
    import keras

    check_keras_file(path, flag=flag)
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # Keras raises many types for a damaged or foreign archive
        message = " ".join(str(err).split())
        raise ValueError(f"{flag} {path}: cannot be loaded as a Keras model ({message})") from None
