import json
import math

import numpy as np
import pytest
import torch

from invarlab.results import load_results, record_result, results_path


def test_results_accumulate_atomically_and_stay_strict_json(tmp_path):
    assert load_results(tmp_path) == {}
    record_result(tmp_path, "knn", "model", {"top1": torch.tensor(0.5), "top5": np.float32(0.75)}, {"k": 200})
    record_result(tmp_path, "knn", "random", {"top1": 0.1, "top5": float("nan")})
    record_result(tmp_path, "invariance", "model", {"viewpoint": {"top10": 40.0, "top25": 35.0}})
    data = json.loads(results_path(tmp_path).read_text(), parse_constant=pytest.fail)
    assert data["knn"]["model"] == {"top1": 0.5, "top5": 0.75}
    assert data["knn"]["random"]["top5"] == "nan" and math.isnan(float(data["knn"]["random"]["top5"]))
    assert data["_meta"] == {"knn": {"k": 200}}
    assert data["invariance"]["model"]["viewpoint"]["top25"] == 35.0
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_corrupt_results_name_the_file(tmp_path):
    results_path(tmp_path).write_text("{not json")
    with pytest.raises(ValueError, match=r"results\.json"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        record_result(tmp_path, "_meta", "model", {})
