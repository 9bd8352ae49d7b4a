"""Test set-up: 8 fake CPU devices (set before JAX is imported), one compilation cache for the
session, tiny configs, generated images."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Most of a tiny run's time is XLA compiling the same few programs, again in every process a
# test starts (a 2-step CLI run: 21.6 s cold, 8.0 s with a warm cache). One persistent JAX
# compilation cache for the session, inherited by those processes, compiles each program once;
# the executables are the same, so are the results. Removed when the session ends.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="alexnet_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")

import signal  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_image_tree, signal_masks, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    """A small ImageFolder tree: 5 classes, 8 train / 3 val images each, plus odd files."""
    return make_image_tree(tmp_path_factory.mktemp("tree"), odd_files=True)


@pytest.fixture()
def config(image_tree, tmp_path):
    """A tiny-width config training on the generated tree, prepared under tmp_path."""
    return tiny_config(image_tree, tmp_path / "tfds")


def sigint_state() -> tuple:
    """This process's SIGINT as a child started now would inherit it (ignored, blocked) and
    its Python-level handler."""
    bit, masks = 1 << (signal.SIGINT - 1), signal_masks()
    return (bool(masks["SigIgn"] & bit), bool(masks["SigBlk"] & bit),
            signal.getsignal(signal.SIGINT))


@pytest.fixture(autouse=True)
def sigint_left_as_found(request):
    """Warns, naming the test, when a test leaves SIGINT changed in the suite's process: every
    process a later test starts inherits an ignored or blocked SIGINT (a Ctrl-C test hung so,
    twice, in full runs)."""
    before = sigint_state()
    yield
    after = sigint_state()
    if after != before:
        warnings.warn(f"{request.node.nodeid} left SIGINT changed in the test process "
                      f"(ignored, blocked, handler): {before} -> {after}", stacklevel=1)
