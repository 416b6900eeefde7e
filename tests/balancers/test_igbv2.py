"""IGB v2: SAC-chosen log-loss weights (sum K), the gap-shrink reward, the schedule, the agent in checkpoints."""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal

import mtrl.balancers as B
from mtrl.balancers.igbv2 import DISCOUNT, TAU
from mtrl.errors import UserError

#: A schedule short enough for tests: base from 2 calls, random weights for 4, SAC training from call 5 every 3.
FAST = dict(base_step=2, random_steps=4, update_after=5, update_every=3, batch_size=8, buffer_size=16, hidden=[16, 16])


def scripted_losses(k, steps, seed=0):
    """Positive losses that shrink at per-task rates with a little noise."""
    gen = torch.Generator().manual_seed(seed)
    losses = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    rates = 0.9 + 0.09 * torch.rand(k, generator=gen, dtype=torch.float64)
    out = []
    for _ in range(steps):
        out.append(losses.clone())
        losses = losses * rates * (1 + 0.01 * torch.rand(k, generator=gen, dtype=torch.float64))
    return out


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 6), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_weights_are_positive_sum_to_k_and_give_log_loss_coefficients(seed, k, dtype):
    bal = B.make("igbv2", k, seed=seed, **FAST)
    for losses in scripted_losses(k, 12, seed):  # random phase, then the actor's samples, with training calls
        coef = bal.weights(losses.to(dtype))
        w = bal.last_weights
        assert coef.dtype == dtype and coef.shape == (k,)
        assert bool((w > 0).all()) and abs(float(w.sum()) - k) < 1e-5 * k
        torch.testing.assert_close(coef, (w / (k * losses)).to(dtype))
        assert abs(float(coef.double() @ losses) - 1.0) < 1e-5  # sum_i c_i l_i = sum_i w_i / K = 1


def test_actor_phase_samples_the_actor_on_the_raw_losses():
    """After the random phase, w = K softmax(mean + std * noise) of the actor evaluated on l (float32)."""
    k = 4
    bal = B.make("igbv2", k, seed=3, **{**FAST, "update_after": 100})
    sequence = scripted_losses(k, 6)
    for losses in sequence[: FAST["random_steps"]]:
        bal.weights(losses)
    losses = sequence[FAST["random_steps"]]
    generator = torch.Generator()
    generator.set_state(bal.generator.get_state())
    noise = torch.randn(1, k, generator=generator)
    h = bal.actor.trunk(losses.float()[None])
    u = bal.actor.mean(h) + bal.actor.log_std(h).clamp(-20, 2).exp() * noise
    bal.weights(losses)
    torch.testing.assert_close(bal.last_weights, (k * torch.softmax(u, -1))[0].double().detach())


def test_reward_is_the_slowest_normalised_gap_shrink():
    """Task 0's gap shrinks fastest: the largest per-task term; the reward (their min) is the slowest task's."""
    bal = B.make("igbv2", 3, seed=0, base_step=2, reward_scale=2.0)
    bal.weights(torch.tensor([1.0, 2.0, 4.0]))
    bal.weights(torch.tensor([3.0, 2.0, 2.0]))
    assert bal.last_reward is None and bal.buffer.size == 0  # no reward before the base is frozen
    base = torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(bal.base_losses, base)
    before = torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64)
    shrink = torch.tensor([0.1, 0.05, 0.02], dtype=torch.float64) * base  # task 0 shrinks fastest, task 2 slowest
    bal.weights(before)
    rewards = [bal.last_reward]  # [3, 2, 2] -> [2, 2, 3]: task 2's gap widened
    assert rewards[0] < 0
    for _ in range(4):
        after = before - shrink
        bal.weights(after)
        rewards.append(bal.last_reward)
        gaps = (before - after) / base
        torch.testing.assert_close(bal.last_gap_decrease, gaps)
        assert int(torch.argmax(bal.last_gap_decrease)) == 0 and int(torch.argmin(bal.last_gap_decrease)) == 2
        assert bal.last_reward > 0 and math.isclose(bal.last_reward, 2.0 * 0.02, rel_tol=1e-9)
        before = after
    grown = before * torch.tensor([0.5, 0.9, 1.1], dtype=torch.float64)  # one task's gap widens: negative reward
    bal.weights(grown)
    assert bal.last_reward < 0 and math.isclose(bal.last_reward, 2.0 * float((before[2] - grown[2]) / base[2]))
    torch.testing.assert_close(bal.buffer.reward[: bal.buffer.size], torch.tensor(rewards + [bal.last_reward]))
    torch.testing.assert_close(bal.buffer.next_state[bal.buffer.size - 1], grown.float())
    torch.testing.assert_close(bal.buffer.state[bal.buffer.size - 1], before.float())


def test_schedule_trains_the_agent_only_on_its_calls():
    bal = B.make("igbv2", 3, seed=1, **FAST)
    trained = []
    for t, losses in enumerate(scripted_losses(3, 15)):
        before = [p.clone() for p in bal.actor.parameters()]
        bal.weights(losses)
        trained.append(any(not torch.equal(a, b) for a, b in zip(before, bal.actor.parameters())))
        assert bal.buffer.size == max(0, t - FAST["base_step"] + 1)
    expected = [t >= FAST["update_after"] and t % FAST["update_every"] == 0 for t in range(15)]
    assert trained == expected


def test_one_sac_step_matches_the_authors_update():
    """Reference: the authors' order and losses, with separate actor and temperature optimisers."""
    k, n = 3, 8
    bal = B.make("igbv2", k, seed=4, hidden=[8, 8])
    gen = torch.Generator().manual_seed(5)
    batch = (
        torch.rand(n, k, generator=gen),
        k * torch.softmax(torch.randn(n, k, generator=gen), -1),
        torch.randn(n, generator=gen),
        torch.rand(n, k, generator=gen),
    )
    actor, critic, target = copy.deepcopy(bal.actor), copy.deepcopy(bal.critic), copy.deepcopy(bal.critic_target)
    log_alpha = bal.log_alpha.detach().clone().requires_grad_(True)
    opt_actor = torch.optim.Adam(actor.parameters(), lr=3e-4)
    opt_critic = torch.optim.Adam(critic.parameters(), lr=3e-4)
    opt_alpha = torch.optim.Adam([log_alpha], lr=3e-4)
    noise_gen = torch.Generator()
    noise_gen.set_state(bal.generator.get_state())

    def sample(state):
        h = actor.trunk(state)
        mu, log_std = actor.mean(h), actor.log_std(h).clamp(-20, 2)
        dist = Normal(mu, log_std.exp())
        u = mu + log_std.exp() * torch.randn(len(state), k, generator=noise_gen)
        logp = dist.log_prob(u).sum(1) - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(1)
        return k * F.softmax(u, -1), logp

    for _ in range(3):
        s, a, r, s2 = batch
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            a2, logp2 = sample(s2)
            y = r + DISCOUNT * (torch.min(*target(s2, a2)) - alpha * logp2)
        q1, q2 = critic(s, a)
        opt_critic.zero_grad()
        (F.mse_loss(q1, y) + F.mse_loss(q2, y)).backward()
        opt_critic.step()
        new_a, logp = sample(s)
        opt_actor.zero_grad()
        (alpha * logp - torch.min(*critic(s, new_a))).mean().backward()
        opt_actor.step()
        opt_alpha.zero_grad()
        (-(log_alpha * (logp + (-k)).detach())).mean().backward()
        opt_alpha.step()
        with torch.no_grad():
            for p_t, p in zip(target.parameters(), critic.parameters()):
                p_t.copy_(TAU * p + (1 - TAU) * p_t)
        bal._sac_step(*batch)
    for mine, ref in ((bal.actor, actor), (bal.critic, critic), (bal.critic_target, target)):
        for p, q in zip(mine.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bal.log_alpha.detach(), log_alpha.detach())


def test_state_dict_round_trip_through_a_checkpoint_gives_identical_next_weights():
    k = 5
    sequence = scripted_losses(k, 30)
    bal = B.make("igbv2", k, seed=0, **FAST)
    for losses in sequence[:12]:
        bal.weights(losses)
    buffer = io.BytesIO()
    torch.save(bal.state_dict(), buffer)
    expected = [bal.weights(losses) for losses in sequence[12:]]  # spans several training calls
    buffer.seek(0)
    restored = B.make("igbv2", k, seed=99, **FAST)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    for losses, coef in zip(sequence[12:], expected):
        assert torch.equal(restored.weights(losses), coef)
    with pytest.raises(UserError, match="state_dict keys"):
        restored.load_state_dict({"loss_sum": 0})


def test_own_generator_leaves_the_global_rng_alone_and_seeds_reproduce():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    runs = []
    for seed in (7, 7, 8):
        bal = B.make("igbv2", 3, seed=seed, **FAST)
        runs.append(torch.stack([bal.weights(losses) for losses in scripted_losses(3, 12)]))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_non_finite_losses_are_not_stored_and_the_agent_stays_finite():
    bal = B.make("igbv2", 3, seed=2, **{**FAST, "random_steps": 0})
    sequence = scripted_losses(3, 14)
    sequence[6] = torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64)
    for losses in sequence:
        bal.weights(losses)
    assert bal.buffer.size == len(sequence) - FAST["base_step"] - 2  # both transitions touching the NaN dropped
    assert torch.isfinite(bal.buffer.state[: bal.buffer.size]).all()
    assert torch.isfinite(bal.last_weights).all() and all(torch.isfinite(p).all() for p in bal.actor.parameters())


@pytest.mark.parametrize(
    "opts, fragments",
    [
        ({"base_step": 0}, ["balancer.base_step=0", ">= 1"]),
        ({"update_every": 0}, ["balancer.update_every=0", ">= 1"]),
        ({"random_steps": -1}, ["random_steps", ">= 0"]),
        ({"buffer_size": 0}, ["buffer_size", ">= 1"]),
        ({"lr": 0.0}, ["balancer.lr=0.0", "> 0"]),
        ({"reward_scale": -1.0}, ["reward_scale", "> 0"]),
        ({"hidden": []}, ["balancer.hidden", "positive integer"]),
        ({"seed": -1}, ["balancer.seed=-1", ">= 0"]),
    ],
)
def test_bad_options_are_one_line_errors(opts, fragments):
    with pytest.raises(UserError) as info:
        B.make("igbv2", 3, **opts)
    assert "\n" not in str(info.value) and all(f in str(info.value) for f in fragments)
