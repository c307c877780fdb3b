import pytest
import tiny
import torch

from genie.models.dynamics import DynamicsModel
from genie.models.sampling import RolloutState, generate


def tiny_dynamics(**kw) -> DynamicsModel:
    torch.manual_seed(0)
    return tiny.tiny_dynamics(num_codes=32, grid=4, num_actions=5, max_frames=6, depth=2, **kw).eval()


def test_cached_step_matches_full_forward():
    model = tiny_dynamics()
    ids = torch.randint(0, 32, (2, 5, 16))
    actions = torch.randint(0, 5, (2, 4))
    with torch.no_grad():
        full = model(ids, actions)[:, -1]
        cache = model.prefill(ids[:, :-1], actions[:, :-1])
        h, _ = model.transformer.step(model.embed(ids[:, -1:], actions[:, -1:], t0=4), cache)
        stepped = model.head(h)[:, 0]
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel", [1, 3])
def test_prev_frame_input_reaches_masked_tokens_and_the_cached_step_matches(kernel):
    """prev_frame_input: a masked token reads the token at its place in the previous frame (kernel 3: and its
    neighbours), in the full forward (training) and in the cached step (sampling) alike; without the option the
    same model ignores prev_ids."""
    model = tiny_dynamics(prev_frame_input=True, prev_frame_kernel=kernel)
    ids = torch.randint(0, 32, (2, 5, 16))
    actions = torch.randint(0, 5, (2, 4))
    inputs = ids.clone()
    inputs[:, -1, ::2] = model.mask_id  # half of the last frame masked
    prev = model.prev_frame_ids(ids)
    with torch.no_grad():
        full = model(inputs, actions, prev)[:, -1]
        cache = model.prefill(ids[:, :-1], actions[:, :-1])
        h, _ = model.transformer.step(model.embed(inputs[:, -1:], actions[:, -1:], t0=4, prev_ids=prev[:, -1:]), cache)
        torch.testing.assert_close(model.logits(h)[:, 0], full, atol=1e-4, rtol=1e-4)
        other = prev.clone()
        other[:, -1] = (other[:, -1] + 1) % 32  # another previous frame, read only by the masked tokens
        moved = model.embed(inputs, model.prev_actions(actions), prev_ids=other) - model.embed(
            inputs, model.prev_actions(actions), prev_ids=prev
        )
        assert moved[:, -1, ::2].abs().amax() > 0 and moved[:, -1, 1::2].abs().amax() == 0
        assert moved[:, :-1].abs().amax() == 0
        one = prev.clone()
        one[:, -1, 0] = (one[:, -1, 0] + 1) % 32  # only the top-left token; token 4 (masked) is below it
        below = model.embed(inputs, model.prev_actions(actions), prev_ids=one) - model.embed(
            inputs, model.prev_actions(actions), prev_ids=prev
        )
        assert (below[:, -1, 4].abs().amax() > 0) == (kernel > 1)
        model.cfg.prev_frame_input = False
        torch.testing.assert_close(model(inputs, actions, other), model(inputs, actions, prev))
    with pytest.raises(ValueError, match="prev_frame_kernel"):
        tiny_dynamics(prev_frame_input=True, prev_frame_kernel=kernel + 1)


def test_future_frames_do_not_change_past_logits():
    model = tiny_dynamics()
    ids = torch.randint(0, 32, (1, 5, 16))
    actions = torch.randint(0, 5, (1, 4))
    changed = ids.clone()
    changed[:, 3:] = torch.randint(0, 32, (1, 2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, actions)[:, :3], model(changed, actions)[:, :3])


def test_mask_ratio_per_frame_within_bounds():
    model = tiny_dynamics(mask_ratio_min=0.5)
    mask = model.random_mask(torch.zeros(64, 4, 16, dtype=torch.long))
    ratio = mask.float().mean(-1)
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 1.0
    assert ratio.std() > 0.05  # ratios differ between frames


def test_sampler_is_deterministic_under_a_seed():
    model = tiny_dynamics()
    context = torch.randint(0, 32, (3, 2, 16))
    context_actions = torch.randint(0, 5, (3, 1))
    actions = torch.randint(0, 5, (3, 7))  # longer than max_frames: exercises the sliding window

    def run(seed):
        return generate(
            model,
            context,
            context_actions,
            actions,
            steps=4,
            temperature=1.0,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (3, 7, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 32


def test_rollout_state_keeps_window():
    model = tiny_dynamics()
    state = RolloutState(model, torch.randint(0, 32, (1, 3, 16)), torch.randint(0, 5, (1, 2)))
    for _ in range(6):
        state.step(torch.tensor([1]), steps=2)
        assert state.ids.shape[1] <= model.cfg.max_frames
        assert state.actions.shape[1] == state.ids.shape[1] - 1


def test_full_window_slides_by_the_chosen_number_of_frames():
    model = tiny_dynamics()  # max_frames 6
    for slide, expected_lengths in ((1, [6, 6, 6, 6]), (3, [4, 5, 6, 4])):
        state = RolloutState(model, torch.randint(0, 32, (1, 5, 16)), torch.randint(0, 5, (1, 4)), slide=slide)
        state.step(torch.tensor([0]), steps=2)  # the window is now full (6 frames)
        lengths = []
        for _ in range(4):
            state.step(torch.tensor([1]), steps=2)
            lengths.append(state.ids.shape[1])
            assert state.actions.shape[1] == state.ids.shape[1] - 1
        assert lengths == expected_lengths


def test_a_slide_re_encodes_the_kept_frames_exactly():
    # after the window slides, the next frame is what a fresh rollout from the kept frames would make
    model = tiny_dynamics()
    ids, actions = torch.randint(0, 32, (2, 6, 16)), torch.randint(0, 5, (2, 5))
    state = RolloutState(model, ids[:, :5], actions[:, :4], slide=3)
    state.step(actions[:, 4], steps=3, temperature=0.0)  # fills the window
    kept_ids, kept_actions = state.ids[:, -3:].clone(), state.actions[:, -2:].clone()
    after_slide = state.step(torch.tensor([2, 3]), steps=3, temperature=0.0)
    fresh = RolloutState(model, kept_ids, kept_actions).step(torch.tensor([2, 3]), steps=3, temperature=0.0)
    assert torch.equal(after_slide, fresh)


def test_sliding_by_half_the_window_re_encodes_less_often():
    model = tiny_dynamics()
    calls = {"prefill": 0}
    prefill = model.prefill

    def counting_prefill(*args):
        calls["prefill"] += 1
        return prefill(*args)

    model.prefill = counting_prefill
    counts = {}
    for slide in (1, 3):
        calls["prefill"] = 0
        state = RolloutState(model, torch.randint(0, 32, (1, 1, 16)), torch.zeros(1, 0, dtype=torch.long), slide=slide)
        for _ in range(17):
            state.step(torch.tensor([1]), steps=1)
        counts[slide] = calls["prefill"]
    assert counts == {1: 1 + 12, 3: 1 + 4}  # the reset, then one re-encode per `slide` frames once full


def test_slide_outside_the_window_is_refused():
    model = tiny_dynamics()
    with pytest.raises(ValueError, match="slide must be in 1..5"):
        RolloutState(model, torch.randint(0, 32, (1, 1, 16)), torch.zeros(1, 0, dtype=torch.long), slide=6)


def test_compiled_sampling_pass_matches_eager_as_the_cache_grows():
    model = tiny_dynamics()
    ids, actions = torch.randint(0, 32, (2, 6, 16)), torch.randint(0, 5, (2, 5))
    with torch.no_grad():
        eager = []
        for t in range(1, 5):  # caches of 1..4 frames: the compiled pass must take every length
            cache = model.prefill(ids[:, :t], actions[:, : t - 1])
            eager.append(model.frame_pass(model.embed(ids[:, t : t + 1], actions[:, t - 1 : t], t0=t), cache)[0])
        model.compile_sampling()
        for t in range(1, 5):
            cache = model.prefill(ids[:, :t], actions[:, : t - 1])
            compiled, kv = model._compiled_pass(model.embed(ids[:, t : t + 1], actions[:, t - 1 : t], t0=t), cache)
            torch.testing.assert_close(compiled, eager[t - 1], atol=1e-4, rtol=1e-4)
            assert len(kv) == model.cfg.depth
        # and a whole compiled rollout, through the window's slides
        new = generate(
            model,
            ids[:, :2],
            actions[:, :1],
            torch.randint(0, 5, (2, 7)),
            steps=2,
            temperature=1.0,
            generator=torch.Generator().manual_seed(0),
        )
    assert new.shape == (2, 7, 16) and int(new.min()) >= 0 and int(new.max()) < 32


@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_motion_weight_weighs_the_tokens_that_changed_since_the_previous_frame(weight):
    model = tiny.tiny_dynamics(motion_weight=weight)
    ids = torch.randint(0, 64, (2, 1, 64)).repeat(1, 4, 1)
    ids[:, 2:, :10] = (ids[:, 2:, :10] + 1) % 64  # ten tokens change at frame 2 (and stay changed at frame 3)
    actions = torch.randint(0, 8, (2, 3))
    torch.manual_seed(0)
    loss, stats = model.loss(ids, actions)
    torch.manual_seed(0)
    mask = model.random_mask(ids)  # the mask loss() drew
    ce = torch.nn.functional.cross_entropy(
        model(torch.where(mask, model.mask_id, ids), actions).flatten(0, 2), ids.flatten(), reduction="none"
    ).view_as(ids)
    changed = torch.zeros_like(mask)
    changed[:, 2, :10] = True
    w = mask * torch.where(changed, weight, 1.0)
    torch.testing.assert_close(loss, (ce * w).sum() / w.sum())
    assert set(stats) == {"masked_acc", "moving_acc"} and 0 <= stats["moving_acc"] <= 1


def test_classifier_free_guidance_weighs_the_action_against_the_null_action():
    """guidance w: logits = null + w * (action - null). At w=0 only the null-action pass counts, so every action gives
    the same next frame (later frames differ: the past keeps its actions); at w=1 sampling is the plain conditional
    one; the trained null action is what action_dropout puts in place of a frame's action."""
    model = tiny_dynamics(temperature=0.0)
    context = torch.randint(0, 32, (1, 2, 16)).expand(5, -1, -1)
    context_actions = torch.zeros(5, 1, dtype=torch.long)
    actions = torch.arange(5)[:, None].expand(-1, 3)  # each row holds another action
    plain = generate(model, context, context_actions, actions, steps=4)
    assert len({tuple(r.flatten().tolist()) for r in plain}) > 1  # the untrained model still reads the action
    model.cfg.guidance = 0.0
    null = generate(model, context, context_actions, actions, steps=4)
    assert all(torch.equal(r[0], null[0, 0]) for r in null)
    model.cfg.guidance = 1.0
    assert torch.equal(generate(model, context, context_actions, actions, steps=4), plain)
    model.cfg.guidance = 3.0
    assert not torch.equal(generate(model, context, context_actions, actions, steps=4), plain)

    # training with action_dropout 0.999 sees the null action (row num_actions) in place of nearly every action
    model.cfg.action_dropout = 0.999
    ids, acts = torch.randint(0, 32, (2, 4, 16)), torch.randint(0, 5, (2, 3))
    torch.manual_seed(1)
    dropped, _ = model.loss(ids, acts)
    torch.manual_seed(1)
    nulled, _ = model.loss(ids, torch.full_like(acts, 5))
    assert dropped.item() == pytest.approx(nulled.item(), rel=1e-4)
