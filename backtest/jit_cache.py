"""Numba's on-disk cache for this project's kernels, kept by source content instead of by path.

Numba caches a ``cache=True`` function next to its source, in ``__pycache__``. A cold compile
of every kernel takes about 100 s of CPU (the rules family's population kernel alone 45 s),
and every new copy of the code pays it again: a fresh clone, and above all every ``ray job submit --working-dir``,
whose package Ray unpacks into a new directory without ``__pycache__`` (it honours
``.gitignore``). Each island actor of such a job compiled the kernels from scratch before
generation 0.

This module puts the project's kernels in ``$EVOLVE_JIT_CACHE_DIR``, by default
``$EVOLVE_CACHE_DIR/numba`` (``$XDG_CACHE_HOME/evolve/numba`` or ``~/.cache/evolve/numba``),
one directory per package and version of its numba source: ``backtest-<hash>/`` where the
hash covers every module of the package that uses numba (this one aside). So any copy of the
same code on the machine shares one compiled set, and a change to any kernel module (not only
the file that defines a function, as numba itself checks) gives a fresh set. Numba still
checks the function's bytecode, argument types and CPU in its index. Concurrent writers are
safe: numba writes cache files atomically.

``evolve warm`` (``evolution/warm.py``) compiles every kernel of a version ahead and leaves
:func:`warm_marker` behind; ``./dev`` runs it after installing.

``NUMBA_CACHE_DIR`` set by the user, or ``EVOLVE_JIT_CACHE_DIR=off`` (or ``EVOLVE_CACHE_DIR=off``),
leaves numba's own choice in place. Functions outside this project are never affected. Old
versions are not pruned (about 3 MB each); remove ``~/.cache/evolve/numba`` to reclaim the space.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from numba.core import caching, config

CACHE_ENV = "EVOLVE_CACHE_DIR"
JIT_CACHE_ENV = "EVOLVE_JIT_CACHE_DIR"
OFF = ("off", "none", "0")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backtest", "evolution", "serving")


def jit_cache_dir() -> Path | None:
    """``$EVOLVE_JIT_CACHE_DIR``, else ``$EVOLVE_CACHE_DIR/numba`` (default ``~/.cache/evolve/numba``);
    None when turned off."""
    own = os.environ.get(JIT_CACHE_ENV, "").strip()
    if own:
        return None if own.lower() in OFF else Path(own).expanduser()
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured.lower() in OFF:
        return None
    if configured:
        return Path(configured).expanduser() / "numba"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evolve" / "numba"


def pin_jit_cache_dir() -> None:
    """Fix the kernel cache where it is now, in the environment (child processes and Ray workers
    inherit it), so that pointing ``EVOLVE_CACHE_DIR`` elsewhere later does not move it."""
    directory = jit_cache_dir()
    os.environ.setdefault(JIT_CACHE_ENV, str(directory) if directory else "off")


@functools.cache
def package_stamp(package_dir: Path) -> str:
    """Hash of the package's numba modules: their paths within the package and contents
    (once per package and process: every kernel of the package asks when it is defined)."""
    this_module = Path(__file__).resolve()
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts or path == this_module:
            continue  # this module says where kernels are kept, not what they compile to
        content = path.read_bytes()
        if b"numba" in content:
            digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def version_dir(base: Path, package: str) -> Path:
    """Where the kernels of this version of ``package`` are kept under ``base``."""
    return base / f"{package}-{package_stamp(PROJECT_ROOT / package)[:20]}"


def is_compiled(package: str = "backtest") -> bool | None:
    """Whether this version of the package's kernels was compiled on this machine already (its
    directory holds an index); None when this cache is off (numba's own cache: unknown). A
    fresh machine or a changed kernel module gives False: the first run compiles what it uses
    (the demo's kernels: about 45 s of CPU in each island), unless ``evolve warm`` ran."""
    base = jit_cache_dir()
    if base is None or config.CACHE_DIR:
        return None
    folder = version_dir(base, package)
    return folder.is_dir() and next(folder.rglob("*.nbi"), None) is not None


def kernel_packages() -> tuple[str, ...]:
    """The packages of ``PACKAGES`` that define numba kernels (a module of theirs uses numba)."""
    return tuple(p for p in PACKAGES if package_stamp(PROJECT_ROOT / p) != hashlib.sha256().hexdigest())


def warm_marker() -> Path | None:
    """The file that says every kernel of this version of the code was compiled on this kind of
    machine (``evolve warm`` writes it when it is done); None when this cache is off. Its name
    covers every kernel package's source, numba's and Python's versions and the CPU, which
    numba's compiled code depends on."""
    base = jit_cache_dir()
    if base is None or config.CACHE_DIR:
        return None
    import platform

    import llvmlite.binding as llvm
    import numba

    digest = hashlib.sha256()
    for package in kernel_packages():
        digest.update(f"{package}={package_stamp(PROJECT_ROOT / package)};".encode())
    digest.update(f"{numba.__version__};{platform.python_version()};{llvm.get_process_triple()};"
                  f"{llvm.get_host_cpu_name()}".encode())
    return base / f"warm-{digest.hexdigest()[:20]}.json"


def is_warm() -> bool | None:
    """Whether ``evolve warm`` compiled every kernel of this version of the code on this machine;
    None when this cache is off."""
    marker = warm_marker()
    return None if marker is None else marker.is_file()


class ContentCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Caches a function of this project in ``jit_cache_dir()/<package>-<stamp>/<subdir>``."""

    def __init__(self, py_func, py_file: str, base: Path, package: str, relative_dir: Path):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._stamp = package_stamp(PROJECT_ROOT / package)
        self._cache_path = str(version_dir(base, package) / relative_dir)

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self) -> str:
        return self._stamp

    @classmethod
    def from_function(cls, py_func, py_file):
        if config.CACHE_DIR:  # the user's NUMBA_CACHE_DIR wins
            return None
        base = jit_cache_dir()
        if base is None or not os.path.exists(py_file):
            return None
        try:
            relative = Path(py_file).resolve().relative_to(PROJECT_ROOT)
        except ValueError:
            return None
        if len(relative.parts) < 2 or relative.parts[0] not in PACKAGES:
            return None
        self = cls(py_func, py_file, base, relative.parts[0], relative.parent)
        try:
            self.ensure_cache_path()
        except OSError:  # not writable: numba's own locators take over
            return None
        return self


def install() -> None:
    """Put ``ContentCacheLocator`` first among numba's locators (once per process)."""
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in numba 0.61
    classes = impl._locator_classes
    if ContentCacheLocator not in classes:
        classes.insert(0, ContentCacheLocator)


install()  # on import: backtest/__init__.py imports this module before any kernel module
