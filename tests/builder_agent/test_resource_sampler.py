"""Resource samples from the engine's one-shot stats: CPU from the change between two of them
(as `docker stats` computes it), memory without reclaimable cache."""

from __future__ import annotations

from typing import Any

from gobuild.builder_agent.resource_sampler import ResourceSample, sample_from_stats

MIB = 1024 * 1024


def stats(total: int, system: int, *, usage: int = 100 * MIB, **memory: Any) -> dict[str, Any]:
    return {
        "cpu_stats": {
            "cpu_usage": {"total_usage": total},
            "system_cpu_usage": system,
            "online_cpus": 2,
        },
        "memory_stats": {"usage": usage, "limit": 512 * MIB, **memory},
    }


def test_cpu_is_the_share_of_one_cpu_between_two_samples() -> None:
    # Half a second of CPU time while the host's two CPUs ran a second each: 50% of one CPU.
    before = stats(total=1_000_000_000, system=10_000_000_000)
    after = stats(total=1_500_000_000, system=12_000_000_000, stats={"inactive_file": 20 * MIB})
    assert sample_from_stats(before, after) == ResourceSample(
        cpu_percent=50.0, memory_bytes=80 * MIB, memory_limit_bytes=512 * MIB
    )


def test_cgroup_v1_cache_is_left_out_of_memory_too() -> None:
    before = stats(total=0, system=0)
    after = stats(total=0, system=1_000, stats={"total_inactive_file": 30 * MIB})
    sample = sample_from_stats(before, after)
    assert sample is not None and sample.memory_bytes == 70 * MIB and sample.cpu_percent == 0.0


def test_no_sample_without_a_baseline_or_from_an_exited_container() -> None:
    assert sample_from_stats(None, stats(total=1, system=1)) is None
    exited = {"cpu_stats": {"cpu_usage": {}}, "memory_stats": {}}
    assert sample_from_stats(stats(total=1, system=1), exited) is None
