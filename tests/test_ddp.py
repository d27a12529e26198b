"""Fine-tuning under DistributedDataParallel keeps masks identical on every rank (two processes, gloo, CPU).

Each rank is this file run as ``python test_ddp.py ddp|fsdp2 RANK WORLD INIT_FILE OUTPUT``. The ranks see different
data shards and have different global RNG states, and prune with the *random* criterion (no seed), so
left alone they would choose different masks; the controller broadcasts rank 0's after every event.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPT = Path(__file__).resolve()
WORLD = 2


def worker(rank: int, world: int, init_file: str, output: str) -> None:
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from secateurs import prune
    from secateurs.core.masks import mask_state_dict, masked_parameters
    from secateurs.recovery import Gradual, PruningController, fit, mask_digest, masks_agree

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same data and the same initial model on both ranks
        x = torch.randn(256, 10)
        y = (x[:, 0] + x[:, 1] > 0).long()
        model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
        torch.manual_seed(100 + rank)  # from here on, each rank's RNG differs

        control = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
        prune(control, 0.5, method="random")  # without synchronisation: rank-dependent masks
        unsynced_agree = masks_agree(control)

        ddp = DistributedDataParallel(model)
        controller = PruningController(ddp, Gradual(0.7, begin=1, end=10, frequency=3), unit="step", method="random")
        result = fit(ddp, (x, y), epochs=3, controller=controller, lr=1e-2, batch_size=32, seed=3)
        agree = masks_agree(ddp)
        zeros = all(
            torch.equal(module._parameters[p].detach()[~mask], torch.zeros(int((~mask).sum())))
            for _, module, p, mask in masked_parameters(model)
        )
        torch.save({"digest": mask_digest(model), "masks": mask_state_dict(model), "state": model.state_dict(),
                    "agree": agree, "unsynced_agree": unsynced_agree, "zeros": zeros, "steps": result.steps,
                    "events": len(result.events)}, output)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_gloo_ranks_end_with_identical_masks_and_weights(tmp_path):
    results = launch("ddp", tmp_path)
    assert all(not r["unsynced_agree"] for r in results), "control: unsynchronised random masks should differ"
    assert all(r["agree"] and r["zeros"] for r in results)
    assert results[0]["digest"] == results[1]["digest"]
    assert results[0]["steps"] == 3 * 4 and results[0]["events"] == 3  # 128 samples per rank, batch 32; events at 4, 7, 10
    for name in results[0]["masks"]:
        assert torch.equal(results[0]["masks"][name], results[1]["masks"][name])
    for name in results[0]["state"]:
        assert torch.equal(results[0]["state"][name], results[1]["state"][name]), name


def fsdp2_worker(rank: int, world: int, init_file: str, output: str) -> None:
    """Masks set before ``fully_shard`` hold under FSDP2: the gradient hook zeroes pruned gradients on the
    all-gathered parameter, so sharded optimizer state at pruned positions never leaves zero."""
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from secateurs import prune
    from secateurs.core.masks import mask_state_dict, masked_parameters

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
        prune(model, 0.6)
        masks = {name: mask.clone() for name, _, _, mask in masked_parameters(model)}
        mesh = init_device_mesh("cpu", (world,))
        for layer in (model[0], model[2], model[4]):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        torch.manual_seed(rank)
        for _ in range(4):
            optimizer.zero_grad()
            model(torch.randn(8, 8)).pow(2).mean().backward()
            optimizer.step()
        drift = {}
        for name, module, param_name, _ in masked_parameters(model):
            full = module._parameters[param_name].full_tensor().detach()
            drift[name] = int((full[~masks[name]] != 0).sum())
        torch.save({"drift": drift, "masks": mask_state_dict(model)}, output)
    finally:
        dist.destroy_process_group()


def launch(mode: str, tmp_path: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    init_file = tmp_path / f"rendezvous-{mode}"
    outputs = [tmp_path / f"{mode}-rank{rank}.pt" for rank in range(WORLD)]
    processes = [
        subprocess.Popen([sys.executable, str(SCRIPT), mode, str(rank), str(WORLD), str(init_file), str(outputs[rank])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in range(WORLD)
    ]
    try:
        for process in processes:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return [torch.load(path) for path in outputs]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_masks_set_before_fully_shard_hold_under_fsdp2(tmp_path):
    pytest.importorskip("torch.distributed.fsdp", reason="needs FSDP2")
    results = launch("fsdp2", tmp_path)
    for result in results:
        assert result["drift"] == {"0.weight": 0, "2.weight": 0}
    for name in results[0]["masks"]:
        assert torch.equal(results[0]["masks"][name], results[1]["masks"][name])


if __name__ == "__main__":
    {"ddp": worker, "fsdp2": fsdp2_worker}[sys.argv[1]](int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
