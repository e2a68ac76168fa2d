"""Distributed training on CPU (gloo): 2 processes of batch B/2 against 1 process of batch B."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from softref.config import ExperimentConfig
from softref.models.student import Student
from softref.train import train
from softref.train.data import Batch
from softref.train.distributed import cleanup_distributed, init_distributed, shard_batches
from softref.train.methods.cusa import training_losses

from test_trainer import STUDENT, experiment, make_benchmark

WORLD = 2
BATCH = 8
IMAGE_INDEX = [0, 0, 1, 2, 2, 3, 4, 4]  # image 2 has a caption in each half


# Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it.
pytestmark = pytest.mark.usefixtures("one_thread")


def _config(gather: bool) -> ExperimentConfig:
    return ExperimentConfig(name="ddp", dataset="d", student="tiny", method="cusa", image_teacher="i",
                            text_teacher="t", batch_size=BATCH, gather=gather)


def _make_batch(student: Student) -> Batch:
    generator = torch.Generator().manual_seed(0)
    captions = [f"a {c} shape with {n} dots" for c, n in zip("rgbcmykw", range(BATCH))]
    return Batch(
        images=torch.randn(BATCH, 3, 64, 64, generator=generator),
        tokens=student.tokenizer(captions),
        image_index=torch.tensor(IMAGE_INDEX),
        image_ids=tuple(str(i) for i in IMAGE_INDEX),
        text_ids=tuple(str(i) for i in range(BATCH)),
        teacher_image=torch.randn(BATCH, 24, generator=generator),
        teacher_text=torch.randn(BATCH, 12, generator=generator),
    )


def _slice(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(
        images=batch.images[start:stop],
        tokens=batch.tokens[start:stop],
        image_index=batch.image_index[start:stop],
        image_ids=batch.image_ids[start:stop],
        text_ids=batch.text_ids[start:stop],
        teacher_image=batch.teacher_image[start:stop],
        teacher_text=batch.teacher_text[start:stop],
    )


def _losses_and_grads(model: torch.nn.Module, student: Student, batch: Batch, cfg: ExperimentConfig) -> dict:
    student.zero_grad(set_to_none=True)
    terms = training_losses(model, batch, cfg)
    terms["total"].backward()
    return {
        "loss": {k: v.detach().clone() for k, v in terms.items()},
        "grads": {n: p.grad.detach().clone() for n, p in student.named_parameters() if p.grad is not None},
    }


def _train_tiny(bench: dict, out: Path):
    return train(experiment(epochs=1), STUDENT, bench["dataset_root"], bench["images_manifest"],
                 bench["texts_manifest"], bench["image_shards"], bench["text_shards"], out)


def _worker(rank: int, ports: tuple[int, int], workdir: str, bench: dict) -> None:
    port = ports[0]
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        assert ctx.is_distributed and ctx.backend == "gloo" and ctx.rank == rank
        student = Student("softref-tiny")
        student.load_state_dict(torch.load(Path(workdir) / "init.pt", weights_only=True))
        model = torch.nn.parallel.DistributedDataParallel(student)
        half = BATCH // WORLD
        batch = _slice(_make_batch(student), rank * half, (rank + 1) * half)
        results = {str(g): _losses_and_grads(model, student, batch, _config(g)) for g in (True, False)}
        torch.save(results, Path(workdir) / f"rank{rank}.pt")
    finally:
        cleanup_distributed(ctx)
    # The whole trainer under torchrun's environment (it joins and leaves its own group).
    os.environ["MASTER_PORT"] = str(ports[1])
    result = _train_tiny(bench, Path(workdir) / "run2")
    torch.save({"best_epoch": result.best_epoch, "completed": result.completed}, Path(workdir) / f"train{rank}.pt")


def _free_ports(count: int) -> tuple[int, ...]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return tuple(s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Student, Path, dict]:
    workdir = tmp_path_factory.mktemp("ddp")
    bench = make_benchmark(workdir / "bench")
    torch.manual_seed(0)
    student = Student("softref-tiny")
    torch.save(student.state_dict(), workdir / "init.pt")
    mp.spawn(_worker, args=(_free_ports(2), str(workdir), bench), nprocs=WORLD, join=True)
    ranks = [torch.load(workdir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return ranks, student, workdir, bench


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=lambda m: f"{key}: {m}")


def test_gathered_two_processes_match_one_process_of_the_full_batch(two_process_results) -> None:
    ranks, student, _, _ = two_process_results
    single = _losses_and_grads(student, student, _make_batch(student), _config(True))
    for result in ranks:
        _assert_close(result["True"]["loss"], single["loss"])
        # DDP averaged the gradients: both processes hold those of the full batch.
        _assert_close(result["True"]["grads"], single["grads"])


def test_ungathered_processes_average_their_own_losses(two_process_results) -> None:
    ranks, student, _, _ = two_process_results
    batch = _make_batch(student)
    half = BATCH // WORLD
    parts = [_losses_and_grads(student, student, _slice(batch, r * half, (r + 1) * half), _config(False))
             for r in range(WORLD)]
    for rank, result in enumerate(ranks):
        _assert_close(result["False"]["loss"], parts[rank]["loss"])
    mean_grads = {n: sum(p["grads"][n] for p in parts) / WORLD for n in parts[0]["grads"]}
    for result in ranks:
        _assert_close(result["False"]["grads"], mean_grads)


def test_trainer_under_two_processes_matches_one_process(two_process_results) -> None:
    _, _, workdir, bench = two_process_results
    run2 = workdir / "run2"
    # Only rank 0 wrote: the outputs, the resume state and the selected model, no temporary files.
    assert sorted(p.name for p in run2.iterdir()) == ["best.pt", "checkpoint.pt", "last.pt", "train_log.csv"]
    selected = [torch.load(workdir / f"train{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(s["completed"] for s in selected) and selected[0]["best_epoch"] == selected[1]["best_epoch"] == 1
    _train_tiny(bench, workdir / "run1")
    with open(workdir / "run1" / "train_log.csv", newline="") as a, open(run2 / "train_log.csv", newline="") as b:
        one, two = next(csv.DictReader(a)), next(csv.DictReader(b))
    assert one["step"] == two["step"]
    for term in ("total", "itr", "csa", "usa"):
        assert float(two[f"loss_{term}"]) == pytest.approx(float(one[f"loss_{term}"]), abs=1e-5)


def test_single_process_context_without_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = init_distributed("cpu")
    assert not ctx.is_distributed and ctx.is_main and ctx.device == torch.device("cpu")


@pytest.mark.parametrize("world", [1, 2, 4])
def test_process_batches_concatenate_to_the_global_batches(world: int) -> None:
    order = torch.randperm(23, generator=torch.Generator().manual_seed(1))
    single = shard_batches(order, 8)
    per_rank = [shard_batches(order, 8, r, world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    for k, global_batch in enumerate(single):
        joined = [i for r in range(world) for i in per_rank[r][k]]
        # Equal except for the padding of the last batch (taken from the start of the order).
        assert joined[: len(global_batch)] == global_batch
        assert len(joined) % world == 0 and len(joined) - len(global_batch) < world
        assert len({len(per_rank[r][k]) for r in range(world)}) == 1


def test_batch_size_must_divide_by_processes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        shard_batches(list(range(10)), 5, 0, 2)
