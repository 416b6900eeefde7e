"""Meta-World's reward of task i on stored transitions (for sharing data across tasks offline).

Meta-World v3 computes a step's reward in `env.evaluate_state(obs, action)` (reward version "v2",
the default, which is stateless between steps). That function reads three kinds of input:

1. the observation and action it is given (e.g. the object position `obs[4:7]`, the gripper
   opening `obs[3]`, the gripper effort `action[3]`);
2. episode constants set by `reset()` for the current goal: `_target_pos` (the goal),
   `obj_init_pos`, `init_tcp`, `init_left_pad`, `maxPushDist`, ... ;
3. the live MuJoCo state: the gripper's fingertip sites (`tcp_center`), the pads' positions, and
   for some tasks an object read from the simulator (contacts in `touching_main_object`, door /
   lever / nail joint angles, object sites such as the peg head, `_get_pos_objects()`).

The relabeller keeps one raw environment of the target task i and, for each stored transition,
sets those inputs and calls Meta-World's own `evaluate_state(next_obs, action)` (the reward of a
step is evaluated on the observation *after* it, as `env.step` does):

* Episode constants: the env is reset with one of task i's goals (the goal data are stored in the
  dataset). Own-task data use the transition's goal; shared data use goal `goal_index mod G_i`
  (goal 0 under the `mtrl` protocol, the same index under `metaworld`).
* Own-task transitions (source task == i): the full MuJoCo state stored after the step (qpos, qvel,
  mocap pose) is restored and the actuator controls are set from the action, then `mj_forward`.
  This reproduces the reward the environment returned **exactly up to the float32 rounding of the
  stored observation** (|error| ~ 1e-6; checked by the tests).
* Shared transitions (source task j != i): the robot is the same Sawyer arm in every Meta-World
  scene, so the 9 arm and gripper joints (qpos/qvel, found by joint name in both models) and the
  mocap pose are copied from the stored state into task i's scene, whose own objects stay at their
  reset pose, then `mj_forward`. What is exact: everything that depends on the robot (hand and
  fingertip positions, pads, the gripper) and on the stored observation/action, with task i's own
  goal and constants. What is an approximation, because task i's objects never existed in task j's
  scene: (a) reward terms read from the observation's object slots use task j's objects (the
  observation is the one task i's networks see, so reward and state stay consistent); (b) the
  reward terms that read task i's objects from the simulator see them untouched at their reset
  pose: contacts (`touching_main_object`: coffee-push/pull, hand-insert, pick-place(-wall), push,
  push-back, push-wall, shelf-place, soccer, stick-pull/push, sweep, sweep-into-goal), the door
  joint (door-open), the lever joint (lever-pull), the hammer head / nail (hammer), the peg head
  (peg-insertion-side), the nut (assembly, disassemble), the stick end (stick-pull),
  `_get_pos_objects()` (dial-turn, handle-press(-side), window-open/close). For tasks whose reward
  depends only on the robot and the goal (e.g. reach-v3) the shared reward is exact.
* `terminated` is never relabelled (Meta-World v3 never terminates an episode).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import metaworld
import mujoco
import numpy as np

from envs.goals import Goal

ARM_JOINTS = ("right_j0", "right_j1", "right_j2", "right_j3", "right_j4", "right_j5", "right_j6", "r_close", "l_close")


def arm_indices(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """qpos and qvel addresses of the Sawyer arm and gripper joints (by name; their order differs per scene)."""
    ids = [model.joint(name).id for name in ARM_JOINTS]
    return (
        np.array([model.jnt_qposadr[i] for i in ids], np.int64),
        np.array([model.jnt_dofadr[i] for i in ids], np.int64),
    )


def capture_state(env: Any) -> dict[str, np.ndarray]:
    """The MuJoCo state of a Meta-World env (raw or wrapped) after a step: qpos, qvel, mocap pose."""
    data = env.unwrapped.data
    return {
        "qpos": data.qpos.copy(),
        "qvel": data.qvel.copy(),
        "mocap_pos": data.mocap_pos.copy(),
        "mocap_quat": data.mocap_quat.copy(),
    }


class RewardRelabeller:
    """Computes Meta-World's reward of `task_name` for stored transitions of any task (see module doc)."""

    def __init__(self, task_name: str, goals: Sequence[Goal | bytes]):
        if not goals:
            raise ValueError(f"relabelling {task_name} needs at least one of its goals")
        self.task_name = task_name
        self.goals = [g if isinstance(g, Goal) else Goal(env_name=task_name, data=bytes(g)) for g in goals]
        self.env = metaworld.ALL_V3_ENVIRONMENTS[task_name]()
        self.model, self.data = self.env.model, self.env.data
        self.arm_qpos, self.arm_qvel = arm_indices(self.model)

    def _reset(self, goal_index: int) -> None:
        self.env.set_task(self.goals[goal_index])
        self.env.reset()

    def _evaluate(self, next_obs: np.ndarray, action: np.ndarray) -> float:
        self.data.ctrl[:] = (action[-1], -action[-1])
        mujoco.mj_forward(self.model, self.data)
        reward, _info = self.env.evaluate_state(next_obs.astype(np.float64), action)
        return float(reward)

    def rewards(
        self, source: Any, same_task: bool | None = None, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Rewards of this task for every transition of `source`, as float32 (N,).

        `source` is a `mtrl.data.TaskData` (or any object with `name`, `next_obs`, `action`,
        `goal_index`, `qpos`, `qvel`, `mocap_pos`, `mocap_quat`, `arm_qpos_index`, `arm_qvel_index`).
        `same_task` defaults to `source.name == task_name` and selects the full-state restore.
        """
        same = (source.name == self.task_name) if same_task is None else same_task
        if getattr(source, "qpos", None) is None:
            raise ValueError(f"transitions of {source.name} carry no simulator state; they cannot be relabelled")
        n = len(source.reward) if hasattr(source, "reward") else len(source.action)
        out = np.empty(n, np.float32)
        goal_of = np.asarray(source.goal_index, np.int64) % len(self.goals)
        src_qpos_idx = np.asarray(source.arm_qpos_index, np.int64)
        src_qvel_idx = np.asarray(source.arm_qvel_index, np.int64)
        if not same and (len(src_qpos_idx) != len(ARM_JOINTS) or len(src_qvel_idx) != len(ARM_JOINTS)):
            raise ValueError(f"transitions of {source.name} do not record the arm's joint addresses")
        done = 0
        for goal in np.unique(goal_of):
            rows = np.flatnonzero(goal_of == goal)
            self._reset(int(goal))
            for row in rows:
                if same:
                    self.data.qpos[:] = source.qpos[row]
                    self.data.qvel[:] = source.qvel[row]
                else:
                    self.data.qpos[self.arm_qpos] = source.qpos[row][src_qpos_idx]
                    self.data.qvel[self.arm_qvel] = source.qvel[row][src_qvel_idx]
                self.data.mocap_pos[:] = source.mocap_pos[row]
                self.data.mocap_quat[:] = source.mocap_quat[row]
                out[row] = self._evaluate(source.next_obs[row], np.asarray(source.action[row], np.float64))
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress(1000)
        if progress is not None and done % 1000:
            progress(done % 1000)
        return out

    def close(self) -> None:
        self.env.close()
