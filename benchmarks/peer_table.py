"""The side-by-side speed table (docs/results/peer_speed.json) from the harness's output directories.

    python benchmarks/peer_table.py --update U64 U400 --round R1 R2 [--write docs/results/peer_speed.json]

Reads `../shared/peer/update_pair.sh` directories (mtrl-m0p1.json, peer-m0p1.json, mtrl-m1p0.json, peer-m1p0.json)
and `round.sh` directories (mtrl-loop.json, peer-loop.json, mtrl-update.json, peer-update.json) and prints one
JSON table: per size and pinning the update's CPU ms of both and their ratio, acting ms, and per round the
loops' CPU ms per vector step and env steps/s; with the machine and the commit measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def update_rows(directory: Path) -> list[dict]:
    rows = []
    for tag, pinning in (("m0p1", "mtrl core 0, reference core 1"), ("m1p0", "mtrl core 1, reference core 0")):
        ours, peer = read(directory / f"mtrl-{tag}.json"), read(directory / f"peer-{tag}.json")
        rows.append(
            {
                "run": directory.name,
                "hidden": ours["hidden"],
                "pinning": pinning,
                "mtrl_update_cpu_ms": ours["update_cpu_ms_mean"],
                "reference_update_cpu_ms": peer["update_cpu_ms_mean"],
                "cpu_ratio": round(ours["update_cpu_ms_mean"] / peer["update_cpu_ms_mean"], 3),
                "mtrl_update_plan": ours.get("update_plan"),
                "mtrl_first_call_s": ours.get("first_call_s"),
                "mtrl_act_ms": ours.get("act_ms_median"),
                "reference_act_ms": peer.get("sample_action_ms_median"),
            }
        )
    return rows


def round_row(directory: Path, pinning: str) -> dict:
    ours, peer = read(directory / "mtrl-loop.json"), read(directory / "peer-loop.json")
    return {
        "round": directory.name,
        "pinning": pinning,
        "hidden": ours.get("hidden"),
        "mtrl_loop_cpu_ms_per_vector_step": ours["step_cpu_ms_mean"],
        "reference_loop_cpu_ms_per_vector_step": peer["step_cpu_ms_mean"],
        "mtrl_env_steps_per_s": ours["env_steps_per_s"],
        "reference_env_steps_per_s": peer["env_steps_per_s"],
        "throughput_ratio": round(ours["env_steps_per_s"] / peer["env_steps_per_s"], 3),
        "mtrl_update_cpu_ms": read(directory / "mtrl-update.json")["update_cpu_ms_mean"],
        "reference_update_cpu_ms": read(directory / "peer-update.json")["update_cpu_ms_mean"],
    }


def machine() -> str:
    """The CPU model, its vector extensions and the core count (from /proc/cpuinfo where it exists)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model or platform.processor()} ({vector}), {info.count('processor')} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", nargs="+", type=Path, default=[])
    parser.add_argument("--round", nargs="*", type=Path, default=[], help="round.sh directories: core 0/1 first")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    pinnings = ("mtrl core 0, reference core 1", "mtrl core 1, reference core 0")
    table = {
        "what": "mtrl vs rainx0r/metaworld-algorithms MTSAC on the same MT10 work (../shared/peer), one thread each",
        "commit": commit,
        "machine": machine(),
        "update": [row for directory in args.update for row in update_rows(directory)],
        "loop": [round_row(directory, pinnings[i % 2]) for i, directory in enumerate(args.round)],
    }
    text = json.dumps(table, indent=1)
    print(text)
    if args.write:
        args.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
