"""Unpickling the CIFAR batch files without trusting them to run code.

The CIFAR "python version" files are pickles, and ``pickle.load`` will call any importable
function a file names. A file in a shared data folder is not necessarily the published one,
so we use an Unpickler whose ``find_class`` resolves only what numpy arrays need:

* ``_reconstruct``, ``ndarray`` and ``dtype`` - how numpy pickles an array (the real files were
  written by Python 2 with numpy 1, which calls the module ``numpy.core.multiarray``; numpy 2
  calls it ``numpy._core.multiarray``; both are accepted);
* ``_frombuffer`` - the same for protocol-5 pickles, in case someone re-saved the files;
* ``scalar`` - numpy scalars, which re-saved label lists sometimes contain;
* ``_codecs.encode`` - how Python 3 writes ``bytes`` at protocol 2; allowed only with the
  latin-1 codec, which is all it is used for (other codecs, e.g. zlib, are refused).

Dicts, lists, str, bytes and ints need no ``find_class`` at all. Anything else raises
``pickle.UnpicklingError`` naming the refused global.
"""

from __future__ import annotations

import pickle
from typing import IO, Any, Callable

import numpy as np


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with codec {encoding!r} in a data file")
    return text.encode("latin-1", errors)


def _numpy_globals() -> dict[str, Callable[..., Any]]:
    # Take the functions from numpy's own reduce output rather than importing by module path:
    # that path moved between numpy 1 and 2 and importing numpy.core warns on numpy 2.
    reconstruct = np.array(0).__reduce_ex__(2)[0]
    frombuffer = np.array(0).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    found: dict[str, Callable[..., Any]] = {"ndarray": np.ndarray, "dtype": np.dtype}
    for name, obj in (("_reconstruct", reconstruct), ("_frombuffer", frombuffer), ("scalar", scalar)):
        if getattr(obj, "__name__", "") == name:  # guard against a future numpy changing its reduce
            found[name] = obj
    return found


_NUMPY_MODULES = {
    "numpy": ("ndarray", "dtype"),
    "numpy.core.multiarray": ("_reconstruct", "scalar", "ndarray", "dtype"),
    "numpy._core.multiarray": ("_reconstruct", "scalar", "ndarray", "dtype"),
    "numpy.core.numeric": ("_frombuffer",),
    "numpy._core.numeric": ("_frombuffer",),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    _numpy = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if name in _NUMPY_MODULES.get(module, ()) and name in self._numpy:
            return self._numpy[name]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a data file: only numpy arrays and plain "
            "Python containers are allowed in dataset pickles"
        )


def load_numpy_pickle(file: IO[bytes]) -> Any:
    """``pickle.load(file, encoding="bytes")`` restricted to data (see the module docstring).

    ``encoding="bytes"`` keeps Python 2 ``str`` objects (dict keys such as ``b"data"`` and the
    raw array buffers) as bytes, which is what the numpy buffers require.
    """
    return NumpyOnlyUnpickler(file, encoding="bytes").load()
