"""minimal/ngrpo_train.py's checkpoints when something goes wrong: a damaged checkpoint on --resume,
a run resumed on another kind of device, a disk that fills up while a checkpoint is saved."""

import errno
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_minimal_runs import flags
from test_minimal_trainer import tiny_config, tiny_folder, torch, trainer  # noqa: F401


@pytest.fixture(scope="module")
def finished_run(tiny_folder, tmp_path_factory):
    """A 2-step run with its checkpoint at step 2; copy it before changing it."""
    return trainer.train(tiny_config(tiny_folder, tmp_path_factory.mktemp("finished") / "run",
                                     steps=2))


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def cuda_generator_state(seed: int, offset: int) -> torch.Tensor:
    """A CUDA generator's state as torch.cuda's get_state() returns it: the Philox seed and offset
    as 16 bytes (a CPU tensor)."""
    return torch.from_numpy(np.array([seed, offset], dtype=np.uint64).view(np.uint8).copy())


# --------------------------------------------------------------------------------------------------
# A damaged checkpoint is said in one line, before anything is rewritten
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "another file"])
def test_a_damaged_checkpoint_is_refused_in_one_line_before_anything_is_rewritten(
        tiny_folder, finished_run, tmp_path, capsys, damage):
    run = copy_of(finished_run, tmp_path)
    checkpoint = run / "checkpoint.pt"
    data = checkpoint.read_bytes()
    if damage == "another file":
        torch.save({"weights": torch.ones(3)}, checkpoint)
    else:
        checkpoint.write_bytes({"empty": b"", "truncated": data[:len(data) // 2],
                                "garbage": b"\x80\x04not a checkpoint" * 50}[damage])
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        trainer.main(flags(tiny_folder, run, steps=3, resume=True))
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    what = {"empty": r"is empty \(a save cut short\?\)",
            "truncated": r"cannot be read, it is damaged or truncated \(RuntimeError: .*\)",
            "garbage": r"cannot be read, it is damaged or truncated \(\w+: .*\)",
            "another file": r"is not a checkpoint of this trainer \(no model, optimizer, step, "
                            r"prompt_rng\)"}[damage]
    assert re.fullmatch(rf"error: resume: {re.escape(str(checkpoint))} {what}; put back a good "
                        r"copy, delete it to resume from step 0, or start anew with --overwrite",
                        line), line
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    checkpoint.unlink()  # as the line says: the run then resumes from step 0
    trainer.main(flags(tiny_folder, run, steps=3, resume=True))
    assert [record["step"] for record in trainer.read_metrics(run)] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------------
# A run resumes on another kind of device
# --------------------------------------------------------------------------------------------------

def test_a_checkpoint_written_on_cuda_resumes_on_the_cpu_reproducibly(tiny_folder, finished_run,
                                                                     tmp_path, capsys):
    """A CUDA run's checkpoint (its generator state is CUDA's 16 bytes) resumed where only a CPU
    is: one line says what carries over, and two such resumes sample the same answers."""
    resumed = []
    for copy in ("first", "second"):
        run = Path(shutil.copytree(finished_run, tmp_path / copy))
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        state["generators"] = {"cuda": cuda_generator_state(seed=1, offset=4 * 40)}
        torch.save(state, run / "checkpoint.pt")
        capsys.readouterr()
        trainer.train(tiny_config(tiny_folder, run, steps=4, resume=True))
        said = [line for line in capsys.readouterr().out.splitlines() if "cuda" in line]
        assert said == ["resume: the checkpoint was saved on cuda and this run is on cpu: the "
                        "model, the optimizer and the prompt order continue as saved, but a cuda "
                        "random state cannot drive cpu sampling, so sampling continues from a cpu "
                        "stream seeded from it (reproducible, though not the answers the cuda run "
                        "would have sampled)"]
        resumed.append([{key: value for key, value in record.items()
                         if not key.startswith(("time/", "perf/", "memory/"))}
                        for record in trainer.read_metrics(run)])
    assert [record["step"] for record in resumed[0]] == [0, 1, 2, 3, 4]
    assert resumed[0] == resumed[1]


def test_the_sampling_generator_takes_the_state_its_device_kind_can_read():
    cpu = torch.Generator().manual_seed(7)
    torch.rand(5, generator=cpu)  # a state that is not a fresh seed's
    saved = {"cpu": cpu.get_state()}
    restored = torch.Generator()
    assert trainer.restore_generator(restored, saved) is None
    assert torch.equal(restored.get_state(), saved["cpu"])
    # CUDA's state on a CPU generator: seeded from the state's bytes.
    state = cuda_generator_state(seed=3, offset=64)
    restored = torch.Generator()
    line = trainer.restore_generator(restored, {"cuda": state})
    assert line.startswith("resume: the checkpoint was saved on cuda and this run is on cpu: ")
    seed = int.from_bytes(hashlib.sha256(bytes(state.tolist())).digest()[:8], "little")
    assert torch.equal(restored.get_state(), torch.Generator().manual_seed(seed).get_state())

    class CudaGenerator:  # what restore_generator may call on a CUDA generator, without a GPU
        device, seeds = torch.device("cuda"), []

        def set_state(self, state):
            raise AssertionError("a CPU state was given to a CUDA generator")

        def manual_seed(self, seed):
            self.seeds.append(seed)
    generator = CudaGenerator()
    line = trainer.restore_generator(generator, saved)
    assert line.startswith("resume: the checkpoint was saved on cpu and this run is on cuda: ")
    assert generator.seeds == [int.from_bytes(
        hashlib.sha256(saved["cpu"].numpy().tobytes()).digest()[:8], "little")]


# --------------------------------------------------------------------------------------------------
# A full disk while a checkpoint is saved
# --------------------------------------------------------------------------------------------------

def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(
        tiny_folder, tmp_path, monkeypatch, capsys):
    real_save, saves = torch.save, []

    def fills_the_disk_at_the_second_save(state, file):
        saves.append(state["step"])
        if len(saves) == 2:
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(state, file)
    monkeypatch.setattr(trainer.torch, "save", fills_the_disk_at_the_second_save)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        trainer.main(flags(tiny_folder, run, steps=4, checkpoint_every=2))
    assert stop.value.code == 1 and saves == [2, 4]
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert re.fullmatch(rf"error: step 4: no room in {re.escape(str(run))} for the checkpoint: it "
                        r"needs about \d+\.\d MiB and [\d.]+ [GMK]iB are free; the checkpoint of "
                        r"step 2 is intact: free space there, then continue with --resume",
                        line), line
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoint.pt", "config.json", "metrics.jsonl", "samples.jsonl"]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(trainer.torch, "save", real_save)
    trainer.main(flags(tiny_folder, run, steps=4, checkpoint_every=2, resume=True))
    assert [record["step"] for record in trainer.read_metrics(run)] == [0, 1, 2, 3, 4]


def test_a_disk_without_room_for_the_checkpoint_is_said_before_writing_it(tiny_folder, tmp_path,
                                                                          monkeypatch):
    """The space a checkpoint needs is the bytes of its tensors (tied weights once); with less
    free, nothing is written."""
    run = trainer.train(tiny_config(tiny_folder, tmp_path / "run", steps=2))
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    tied = state["model"]["lm_head.weight"]  # the embedding's storage too
    moments = [value for values in state["optimizer"]["state"].values()
               for value in values.values()]
    needed = sum(value.numel() * value.element_size() for value in state["model"].values()
                 if value.data_ptr() != tied.data_ptr()) + tied.numel() * 4 \
        + sum(value.numel() * value.element_size() for value in moments) \
        + state["generators"]["cpu"].numel()
    assert trainer.tensor_bytes(state) == needed
    free = shutil.disk_usage(tmp_path)._replace(free=needed - 1)
    monkeypatch.setattr(trainer.shutil, "disk_usage", lambda path: free)
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(trainer.SaveError, match=rf"^step 3: no room in {re.escape(str(run))} for "
                                                r"the checkpoint"):
        trainer.train(tiny_config(tiny_folder, run, steps=3, resume=True, checkpoint_every=1))
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not (run / "checkpoint.tmp").exists()


def test_a_model_built_twice_at_once_keeps_the_first_copy(tmp_path):
    """Two runs (or two test workers) that build the same cached model at once: the rename of the
    second onto the first's full folder fails, and its copy is dropped instead of crashing."""
    model = trainer.load_policy(trainer.model_folder(trainer.Config()), torch.device("cpu"),
                                "fp32")
    folder = tmp_path / "tiny"
    trainer.save_to_cache(model.model, model.tokenizer, folder)
    first = (folder / "model.safetensors").stat().st_mtime_ns
    trainer.save_to_cache(model.model, model.tokenizer, folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == first
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny"]
