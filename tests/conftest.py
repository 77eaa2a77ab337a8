import os

import pytest
import torch

# CI has two cores; tests are written to be small, and one thread avoids oversubscription
# when several processes (DDP tests) run at once.
torch.set_num_threads(int(os.environ.get("STYTR_TEST_THREADS", "2")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
