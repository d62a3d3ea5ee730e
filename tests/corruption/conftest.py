"""Fixtures of the corruption tests."""

import numpy as np
import pytest

from corruption_helpers import colour_images


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """Six 32x32 smooth colour images."""
    return colour_images()
