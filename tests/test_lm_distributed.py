"""LM-PPO under ``accelerate launch``: two CPU processes (gloo), data-parallel, replicas stay identical."""

from __future__ import annotations

import socket

import pytest
from accelerate_launch import launch, tiny_ppo_script

BODY = """
    def digest(model):
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode()); h.update(tensor.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    initial = digest(trainer.unwrapped_policy)
    history = trainer.train(2)
    rollout = trainer.collect()  # one more batch, to show that the processes sample different episodes
    report = {
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "rank": trainer.accelerator.process_index,
        "initial": initial,
        "policy": digest(trainer.unwrapped_policy),
        "value": digest(trainer.accelerator.unwrap_model(trainer.value_model)),
        "completion_ids": rollout.completion_ids.tolist(),
        "logged_reward_mean": [m["reward_mean"] for m in history],
        "reward_running_mean": trainer.reward_moments.mean,
        "shared_trunk_blocks": trainer.shared_trunk_blocks,
    }
    reports = [None] * trainer.accelerator.num_processes
    dist.all_gather_object(reports, report)
    if trainer.accelerator.is_main_process:
        with open(sys.argv[1], "w") as f:
            json.dump(reports, f)
    trainer.close()  # barrier, drop the DDP wrappers, destroy_process_group: a clean exit on every rank
    assert not dist.is_initialized()
    assert not isinstance(trainer.policy, torch.nn.parallel.DistributedDataParallel)
    assert not isinstance(trainer.value_model, torch.nn.parallel.DistributedDataParallel)
    """


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("frozen_blocks", [0, 1])
def test_two_process_data_parallel_run_keeps_replicas_identical(tmp_path, frozen_blocks):
    """Also with the policy's lower block frozen: the loss forwards then run its top block on the frozen trunk
    (the frozen trunk) through the DDP wrapper, and gradients are still synced."""
    script = tiny_ppo_script(num_envs=4, body=BODY, frozen_blocks=frozen_blocks)
    reports = launch(tmp_path, script, "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
                     "--main_process_port", str(free_port()))
    assert [r["rank"] for r in reports] == [0, 1]
    assert {r["distributed_type"] for r in reports} == {"DistributedType.MULTI_CPU"}
    assert {r["backend"] for r in reports} == {"gloo"}
    rank0, rank1 = reports
    assert rank0["initial"] == rank1["initial"]
    assert rank0["policy"] == rank1["policy"] != rank0["initial"]  # trained, and bit-identical on both replicas
    assert rank0["value"] == rank1["value"]
    assert rank0["completion_ids"] != rank1["completion_ids"]  # each process collects its own episodes
    # batch statistics are global: both processes log the same reward and keep the same running statistics
    assert rank0["logged_reward_mean"] == rank1["logged_reward_mean"]
    assert rank0["reward_running_mean"] == rank1["reward_running_mean"]
    assert {r["shared_trunk_blocks"] for r in reports} == {frozen_blocks}
