"""ngrpo_sim/experiments/trainer_runs.py reads run folders that older trainers wrote: keys and
advantage names from before the project's one vocabulary come back under today's names, nothing else
changes."""

import json

import pytest

from ngrpo_sim.experiments import trainer_runs

OLD_STEP = {"step": 1, "reward": 0.25, "accuracy": 0.25, "all_wrong_share": 0.5,
            "all_right_share": 0.0, "all_wrong_learned_share": 0.5, "entropy": 0.7,
            "clipfrac_low": 0.01}
NEW_STEP = {"step": 1, "reward": 0.25, "sampled_accuracy": 0.25, "share_all_wrong": 0.5,
            "share_all_correct": 0.0, "share_all_wrong_learned": 0.5, "entropy": 0.7,
            "clipfrac_low": 0.01}


def test_old_metric_keys_are_read_under_their_new_names(tmp_path):
    evaluation = {"step": 0, "eval/pass@1": 0.1, "eval/pass_auc": 20.0}
    (tmp_path / "old-seed1").mkdir()
    (tmp_path / "new-seed1").mkdir()
    (tmp_path / "old-seed1" / "metrics.jsonl").write_text(
        json.dumps(evaluation) + "\n" + json.dumps(OLD_STEP) + "\n")
    (tmp_path / "new-seed1" / "metrics.jsonl").write_text(
        json.dumps(evaluation) + "\n" + json.dumps(NEW_STEP) + "\n")
    assert trainer_runs.read_run(tmp_path / "old-seed1") == [evaluation, NEW_STEP]
    assert trainer_runs.read_run(tmp_path / "new-seed1") == [evaluation, NEW_STEP]
    runs = trainer_runs.read_comparison(tmp_path)
    assert runs["old"] == runs["new"] == [[evaluation, NEW_STEP]]


@pytest.mark.parametrize("old, new", [("calibrated", "ngrpo"), ("z_score", "grpo"),
                                      ("quantile", "qae"), ("asymre", "shifted_baseline"),
                                      ("rloo", "rloo")])
def test_an_older_inspected_step_reads_with_estimator_names_and_default_knobs(tmp_path, old, new):
    record = {"step": 3, "method": "m", "advantage": old, "r_max": 1.0, "clip_low": 0.2,
              "clip_high": 0.28, "minibatches": 2,
              "groups": [{"prompt": "1+1=", "trained": True,
                          "answers": [{"tokens": ["2", "<eos>"], "reward": 1.0, "advantage": 0.5,
                                       "minibatch": 0, "ratio": [1.0, 1.0],
                                       "clip": [None, None]}]}]}
    path = tmp_path / trainer_runs.INSPECT_FOLDER / trainer_runs.inspection_file_name(3)
    path.parent.mkdir()
    path.write_text(json.dumps(record))
    step = trainer_runs.read_inspection(tmp_path, 3)
    assert (step.advantage, step.virtual_samples, step.ddof) == (new, 1, 1)
    path.write_text(json.dumps({**record, "advantage": new, "virtual_samples": 3, "ddof": 0}))
    step = trainer_runs.read_inspection(tmp_path, 3)
    assert (step.advantage, step.virtual_samples, step.ddof) == (new, 3, 0)
