"""predtext.backend.get_ops: one shared ops object per backend, clear errors for the others."""

import pytest

from predtext.backend import NumpyOps, get_ops


def test_the_cpu_backend_is_one_shared_ops_object():
    assert isinstance(get_ops(), NumpyOps) and get_ops("cpu") is get_ops()


@pytest.mark.parametrize("name", ["cupy", "gpu", "", None])
def test_a_backend_this_release_lacks_is_a_clear_error(name):
    with pytest.raises(ValueError, match="backend"):
        get_ops(name)
