"""Corpus-scale engines for keyatten-lite (optional extras).

``keyatten_lite.distributed.ray_engine`` runs ``extract`` and ``idf fit`` on Ray Data
(``pip install 'keyatten-lite[ray]'``). Ray is imported only inside the functions, so importing this
package, or ``keyatten_lite`` itself, never needs it.
"""

from __future__ import annotations

__all__ = ["RayNotInstalledError", "expand_inputs", "ray_extract", "ray_idf_fit"]


def __getattr__(name: str):
    if name in __all__:
        from . import ray_engine

        return getattr(ray_engine, name)
    raise AttributeError(f"module 'keyatten_lite.distributed' has no attribute {name!r}")


def __dir__():
    return __all__
