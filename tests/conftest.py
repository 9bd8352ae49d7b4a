"""Test set-up: 8 fake CPU devices (set before JAX is imported), tiny configs, generated images."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_image_tree, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    """A small ImageFolder tree: 5 classes, 8 train / 3 val images each, plus odd files."""
    return make_image_tree(tmp_path_factory.mktemp("tree"), odd_files=True)


@pytest.fixture()
def config(image_tree, tmp_path):
    """A tiny-width config training on the generated tree, prepared under tmp_path."""
    return tiny_config(image_tree, tmp_path / "tfds")
