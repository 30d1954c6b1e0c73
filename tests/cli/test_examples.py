
import pytest
from helpers import REPO

from cdtsde.run import build_run, load_run_config

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_configurations_build(path, shared_data):
    config = load_run_config(path)
    model, train_set, preview_set, train_config = build_run(config, base_dir=path.parent)
    item = train_set[0]
    if model.data_kind == "target-only":  # zero-shot: the targets alone
        assert "source" not in item and model.data.source_channels is None
    else:
        assert item["source"].shape[0] == model.data.source_channels
    assert item["target"].shape[0] == model.data.target_channels
    assert len(train_set) > 0 and train_config.max_steps == config["train"]["max_steps"]
