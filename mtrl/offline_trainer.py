"""Offline multi-task training: multi-task CQL on a stored dataset, with none/all/cds/cds_zero data sharing.

    python train.py mode=offline dataset=data/x.h5 sharing=cds env.tasks=[reach-v3,push-v3] env.protocol=mtrl

No environment is stepped during training; evaluation runs the real environments with the same
code as evaluate.py. Steps are gradient updates: `total_steps`, `eval_every`, `checkpoint_every`
and `log_every` count updates in offline mode. Checkpoints, logs and resume work as online.
"""

from __future__ import annotations

import json
import numbers
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from envs import EnvSpec, build_env_spec
from envs.tasks import resolve_tasks
from mtrl import checkpoint
from mtrl.agents.cql import CQLAgent, CQLConfig
from mtrl.agents.sac import SACConfig
from mtrl.config import check_values, pick_device, rng_states, seed_everything, set_rng_states, to_plain
from mtrl.data.dataset import Dataset, load_dataset
from mtrl.data.sharing import RELABELLING_MODES, SharingStats, TransitionStore, check_mode, make_batch
from mtrl.errors import UserError
from mtrl.evaluation import EvalResult
from mtrl.logger import RunLogger
from mtrl.run_base import RunBase, crossed
from mtrl.trainer import build_balancers, network_encoder

RELABEL_CACHE = "relabelled_rewards.npz"


# ----------------------------------------------------------------------------------------- building
def offline_options(cfg: DictConfig) -> dict[str, Any]:
    """The validated offline options: dataset path, sharing mode, CQL config, CDS percentile, shared rows."""
    if cfg.get("dataset") in (None, "", "None", "null"):
        raise UserError("mode=offline needs dataset=<path to an .h5 dataset> (create one with python -m mtrl.data.collect)")
    mode = check_mode(cfg.sharing)
    off = to_plain(cfg.offline)
    percentile = off["cds_percentile"]
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
        raise UserError(f"offline.cds_percentile={percentile} is not allowed; expected a number in [0, 100]")
    shared = off["shared_per_task"]
    if shared is None:
        shared = cfg.batch_size_per_task
    if isinstance(shared, bool) or not isinstance(shared, int) or shared < 0:
        raise UserError(f"offline.shared_per_task={shared} is not allowed; expected null or an integer >= 0")
    cql = CQLConfig(alpha=off["cql_alpha"], num_actions=off["cql_num_actions"], temperature=off["cql_temperature"],
                    bc_updates=off["bc_updates"])
    return {"dataset": str(cfg.dataset), "sharing": mode, "cql": cql, "percentile": float(percentile),
            "shared_per_task": int(shared)}


def build_cql_agent(cfg: DictConfig, spec: EnvSpec, obs_dim: int, act_dim: int, cql: CQLConfig) -> CQLAgent:
    """The CQL agent on the SAC networks of cfg.agent / cfg.encoder, with cfg.balancer's balancers."""
    agent_cfg = to_plain(cfg.agent)
    unknown = sorted(set(agent_cfg) - set(SACConfig.__dataclass_fields__))
    if unknown:
        raise UserError(f"unknown agent option(s) {', '.join(unknown)}; allowed: {', '.join(SACConfig.__dataclass_fields__)}")
    agent = CQLAgent(obs_dim, act_dim, spec.task_names, SACConfig(**agent_cfg), network_encoder(cfg, "actor"),
                     pick_device(cfg.device), critic_encoder=network_encoder(cfg, "critic"), cql=cql)
    agent.set_balancers(*build_balancers(to_plain(cfg.balancer), agent.num_tasks))
    return agent


def dataset_env_spec(cfg: DictConfig, dataset_path: str, with_state: bool) -> tuple[EnvSpec, Dataset]:
    """Load the dataset for the config's tasks and build the env spec, checking protocol and goals agree."""
    env_cfg = to_plain(cfg.env)
    _, task_names = resolve_tasks(env_cfg["tasks"])
    dataset = load_dataset(dataset_path, tasks=task_names, with_state=with_state)
    protocol = env_cfg.get("protocol", "metaworld")
    if dataset.protocol.get("name") != protocol:
        raise UserError(f"dataset '{dataset.path}' was collected under protocol '{dataset.protocol.get('name')}'; "
                        f"this config has env.protocol={protocol} (set env.protocol={dataset.protocol.get('name')})")
    if env_cfg.get("goal_seed") is None:
        env_cfg["goal_seed"] = dataset.goal_seed
    spec = build_env_spec(env_cfg, cfg.seed)
    for name in spec.task_names:
        ours = [g.data for g in spec.goals[name][: spec.protocol.goals_per_task]]
        theirs = dataset.tasks[name].goals[: len(ours)]
        if ours != theirs:
            raise UserError(f"the dataset's goals for {name} differ from this config's (dataset: benchmark "
                            f"'{dataset.benchmark}', goal seed {dataset.goal_seed}; config: benchmark "
                            f"'{spec.benchmark}', goal seed {spec.goal_seed}); use the dataset's env.tasks and "
                            f"env.goal_seed={dataset.goal_seed}")
    return spec, dataset


def relabel_dataset(dataset: Dataset, progress: bool = True) -> dict[tuple[int, int], np.ndarray]:
    """Task i's Meta-World reward of every other task j's transitions: {(i, j): rewards (N_j,)}."""
    from envs.relabel import RewardRelabeller

    names = dataset.task_names
    total = sum(len(dataset.tasks[j]) for i in names for j in names if i != j)
    out: dict[tuple[int, int], np.ndarray] = {}
    with tqdm(total=total, unit="transition", desc="relabel", disable=not progress, dynamic_ncols=True) as bar:
        for i, target in enumerate(names):
            relabeller = RewardRelabeller(target, dataset.tasks[target].goals)
            try:
                for j, source in enumerate(names):
                    if i != j:
                        out[(i, j)] = relabeller.rewards(dataset.tasks[source], same_task=False, progress=bar.update)
            finally:
                relabeller.close()
    return out


def build_store(dataset: Dataset, relabelled: dict[tuple[int, int], np.ndarray] | None) -> TransitionStore:
    tasks = [dataset.tasks[name] for name in dataset.task_names]
    return TransitionStore.from_arrays([t.obs for t in tasks], [t.action for t in tasks], [t.reward for t in tasks],
                                       [t.next_obs for t in tasks], [t.terminated for t in tasks], relabelled)


# ----------------------------------------------------------------------------------------- trainer
class OfflineTrainer(RunBase):
    """Owns one offline run: dataset, CQL agent, sharing, logger, evaluation env; resumable."""

    step_unit = "update"

    def __init__(self, cfg: DictConfig, run_dir: Path):
        check_values(cfg)
        if cfg.mode != "offline":
            raise UserError(f"mode={cfg.mode}: the offline trainer needs mode=offline")
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.options = offline_options(cfg)
        resume_state = self._load_resume_state()
        seed_everything(cfg.seed, cfg.torch_threads)
        self.sharing = self.options["sharing"]
        needs_rewards = self.sharing in RELABELLING_MODES
        self.spec, self.dataset = dataset_env_spec(cfg, self.options["dataset"], with_state=needs_rewards)
        self.num_tasks = len(self.spec.task_names)
        self.obs_dim, self.act_dim = self.dataset.obs_dim, self.dataset.act_dim
        self.agent = build_cql_agent(cfg, self.spec, self.obs_dim, self.act_dim, self.options["cql"])
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.stop_requested = False
        if resume_state is not None:
            self._restore(resume_state)
        relabelled = self._relabelled_rewards() if needs_rewards and self.num_tasks > 1 else None
        self.store = build_store(self.dataset, relabelled)
        self.dataset.tasks = {}  # the store holds the transitions now; keep only the metadata

    # ----- relabelling (cached in the run directory) --------------------------------------------------
    def _relabelled_rewards(self) -> dict[tuple[int, int], np.ndarray]:
        cache = self.run_dir / RELABEL_CACHE
        key = json.dumps({"dataset_id": self.dataset.dataset_id, "tasks": self.spec.task_names})
        if cache.is_file():
            try:
                with np.load(cache) as data:
                    if str(data["key"]) == key:
                        return {(i, j): data[f"r_{i}_{j}"] for i in range(self.num_tasks)
                                for j in range(self.num_tasks) if i != j}
            except Exception:  # a damaged cache is recomputed
                pass
        relabelled = relabel_dataset(self.dataset, progress=bool(self.cfg.progress))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp.npz")
        np.savez(tmp, key=np.array(key), **{f"r_{i}_{j}": v for (i, j), v in relabelled.items()})
        tmp.replace(cache)
        return relabelled

    # ----- resume -----------------------------------------------------------------------------------------
    def _load_resume_state(self) -> dict[str, Any] | None:
        if self.cfg.resume is None:
            return None
        _, state = checkpoint.load(self.cfg.resume)
        if state.get("mode") != "offline":
            raise UserError(f"checkpoint in '{self.cfg.resume}' is from an online run; mode=offline resumes offline runs only")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self._check_resumed_env(state)
        saved = state["dataset"]
        if saved["dataset_id"] != self.dataset.dataset_id:
            raise UserError(f"checkpoint was trained on dataset '{saved['path']}' (id {saved['dataset_id']}); "
                            f"dataset={self.dataset.path} is a different dataset (id {self.dataset.dataset_id})")
        if state["sharing"] != self.sharing:
            raise UserError(f"checkpoint was trained with sharing={state['sharing']}; this config has "
                            f"sharing={self.sharing}")
        self.agent.load_state_dict(state["agent"])
        self.step = int(state["step"])
        set_rng_states(state["rng"])
        self.rng.bit_generator.state = state["sampler_rng"]

    def save_checkpoint(self) -> Path:
        state = {
            "mode": "offline",
            "config": to_plain(self.cfg),
            "env": self.spec.describe(),
            "dims": {"obs": self.obs_dim, "act": self.act_dim},
            "agent": self.agent.state_dict(),
            "updates": self.step,
            "update_budget": 0.0,
            "rng": rng_states(),
            "sampler_rng": self.rng.bit_generator.state,
            "env_action_rng": np.random.default_rng(self.cfg.seed).bit_generator.state,
            "dataset": {"path": str(self.dataset.path), "dataset_id": self.dataset.dataset_id},
            "sharing": self.sharing,
            "replay": None,
        }
        return checkpoint.save(self.run_dir, self.step, state, self.cfg.keep_checkpoints)

    # ----- the loop -------------------------------------------------------------------------------------
    def sample(self):
        """One batch under the configured sharing mode (CDS filters with the agent's conservative Q)."""
        return make_batch(self.store, self.sharing, self.rng, self.cfg.batch_size_per_task,
                          self.options["shared_per_task"], q_fn=self.agent.conservative_q,
                          percentile=self.options["percentile"], device=self.agent.device)

    def run(self) -> EvalResult | None:
        """Train for total_steps updates (or until a signal), evaluating and checkpointing on schedule."""
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        describe = {**self.spec.describe(), "dataset": {"path": str(self.dataset.path),
                                                        "dataset_id": self.dataset.dataset_id},
                    "sharing": self.sharing}
        (self.run_dir / "env.json").write_text(json.dumps(describe, indent=2))
        log = RunLogger(self.run_dir, self.spec.task_names, cfg.total_steps, self.step, cfg.progress)
        log.bar.unit = "update"
        log.bar.set_description(f"offline[{self.sharing}]", refresh=False)
        result: EvalResult | None = None
        last_ckpt = last_eval = -1
        k = self.num_tasks
        shared_sum, candidate_sum = np.zeros(k), np.zeros(k)
        threshold_sum, threshold_n = np.zeros(k), 0
        clock, clock_step = time.perf_counter(), self.step
        metrics: dict[str, Any] = {}
        batch = None
        with self._session(log):
            while self.step < cfg.total_steps and not self.stop_requested:
                batch, stats = self.sample()
                metrics = self.agent.update(batch)
                shared_sum += stats.shared
                candidate_sum += stats.candidates
                if np.isfinite(stats.threshold).all():
                    threshold_sum += stats.threshold
                    threshold_n += 1
                before, self.step = self.step, self.step + 1
                log.advance(1)
                if crossed(before, self.step, cfg.log_every):
                    now = time.perf_counter()
                    log.scalar("perf/updates_per_s", (self.step - clock_step) / max(now - clock, 1e-9), self.step)
                    clock, clock_step = now, self.step
                    for name, values in metrics.items():
                        log.per_task(f"sac/{name}", values, self.step)
                    penalty = self.agent.last_penalty()
                    if penalty is not None:
                        log.per_task("cql/penalty", penalty, self.step)
                    self._log_sharing(log, shared_sum, candidate_sum, threshold_sum, threshold_n)
                    shared_sum[:], candidate_sum[:], threshold_sum[:], threshold_n = 0, 0, 0, 0
                    log.balancer(self.agent.diagnostics(batch), self.step)
                if cfg.eval_every and crossed(before, self.step, cfg.eval_every):
                    result = self._log_eval(log)
                    last_eval = self.step
                if cfg.checkpoint_every and crossed(before, self.step, cfg.checkpoint_every):
                    self.save_checkpoint()
                    last_ckpt = self.step
            result = self._wrap_up(log, result, last_eval, last_ckpt)
        return result

    def _log_sharing(self, log: RunLogger, shared: np.ndarray, candidates: np.ndarray, threshold: np.ndarray,
                     threshold_n: int) -> None:
        """sharing/fraction/<task>: shared / candidate transitions since the last log; sharing/threshold (cds)."""
        if self.sharing == "none" or candidates.sum() == 0:
            return
        fraction = shared / np.maximum(candidates, 1)
        log.per_task("sharing/fraction", fraction, self.step)
        log.show(shared=f"{fraction.mean():.2f}")
        if threshold_n:
            log.per_task("sharing/threshold", threshold / threshold_n, self.step)

def train_offline(cfg: DictConfig, run_dir: Path) -> EvalResult | None:
    """Build an offline trainer from the config and run it."""
    return OfflineTrainer(cfg, run_dir).run()


__all__ = ["OfflineTrainer", "train_offline", "build_cql_agent", "relabel_dataset", "SharingStats"]
