"""genie/models/quantize.py on its own: nearest-code lookup, the straight-through gradient, the commitment loss, and the
dead-code restart (codes unused for the configured window are re-initialised at batch inputs; used ones are kept)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genie.models.quantize import VectorQuantizer


def quantizer(num_codes: int = 8, code_dim: int = 4, seed: int = 0, **kwargs) -> VectorQuantizer:
    torch.manual_seed(seed)
    return VectorQuantizer(num_codes, code_dim, **kwargs)


def inputs_at_codes(vq: VectorQuantizer, ids: list[int], repeat: int = 16) -> torch.Tensor:
    """Inputs lying exactly on the given codes (scaled: the lookup is by cosine), so only those codes are used."""
    return 3.0 * vq.codes().detach()[torch.tensor(ids)].repeat(repeat, 1)


def test_ids_are_the_highest_cosine_codes_and_the_output_is_their_vectors():
    vq = quantizer(num_codes=16, code_dim=8).eval()
    z = torch.randn(4, 5, 8)
    out, ids, _ = vq(z)
    assert out.shape == z.shape and ids.shape == (4, 5) and ids.dtype == torch.long
    expected = (F.normalize(z, dim=-1) @ F.normalize(vq.codebook, dim=-1).T).argmax(-1)
    assert torch.equal(ids, expected)
    assert torch.allclose(out, vq.lookup(ids), atol=1e-6)
    assert torch.allclose(vq.lookup(ids).norm(dim=-1), torch.ones(4, 5))  # codes are unit vectors


def test_gradient_passes_straight_through_the_quantiser():
    vq = quantizer().eval()
    z = torch.randn(6, 4, requires_grad=True)
    weights = torch.randn(6, 4)
    out, _, _ = vq(z)
    (out * weights).sum().backward()
    # the output's gradient reaches z as if quantisation were the identity on the normalised input
    z_ref = z.detach().clone().requires_grad_(True)
    (F.normalize(z_ref, dim=-1) * weights).sum().backward()
    assert torch.allclose(z.grad, z_ref.grad, atol=1e-6)
    assert vq.codebook.grad is None  # the codebook learns from the VQ loss only


def test_vq_loss_is_codebook_plus_beta_times_commitment():
    beta = 0.25
    vq = quantizer(beta=beta).eval()
    z = torch.randn(10, 4, requires_grad=True)
    _, ids, loss = vq(z)
    error = (vq.lookup(ids) - F.normalize(z, dim=-1)).pow(2).mean()
    assert loss.item() == pytest.approx((1 + beta) * error.item(), rel=1e-5)
    # the commitment term (beta) pulls the encoder output to its code; the codebook term moves the code
    z_grad = torch.autograd.grad(loss, z, retain_graph=True)[0]
    code_grad = torch.autograd.grad(loss, vq.codebook)[0]
    assert z_grad.abs().sum() > 0 and code_grad.abs().sum() > 0
    vq_no_commit = quantizer(beta=0.0).eval()
    _, _, loss0 = vq_no_commit(z)
    (z_grad0,) = torch.autograd.grad(loss0, z, allow_unused=True)
    assert z_grad0 is None or torch.count_nonzero(z_grad0) == 0  # beta = 0: no gradient to the encoder
    code_grad0 = torch.autograd.grad(vq_no_commit(z)[2], vq_no_commit.codebook)[0]
    assert torch.allclose(code_grad0, code_grad, atol=1e-7)  # the codebook's gradient does not depend on beta


def test_codes_unused_for_the_restart_window_are_reinitialised_and_used_codes_kept():
    vq = quantizer(usage_decay=0.5, dead_fraction=0.03, restart_every=10).train()
    before = vq.codebook.detach().clone()
    batch = inputs_at_codes(vq, [0, 1, 2, 3])
    for _ in range(9):
        vq(batch)
    assert torch.equal(vq.codebook, before)  # nothing restarts before the window ends
    assert (vq.usage[4:] < 0.03 / 8).all() and (vq.usage[:4] > 0.2).all()
    vq(batch)  # call 10: the check runs
    assert torch.equal(vq.codebook[:4], before[:4])  # used codes are kept exactly
    assert not torch.isclose(vq.codebook[4:], before[4:]).all(-1).any()  # every dead code moved
    # restarted codes land on batch inputs (up to the 0.01 jitter) and start again at a uniform share of usage
    cosine = F.normalize(vq.codebook[4:], dim=-1) @ F.normalize(batch, dim=-1).T
    assert (cosine.max(-1).values > 0.99).all()
    assert torch.allclose(vq.usage[4:], torch.full((4,), 1 / 8))
    assert int(vq.calls) == 10


def test_restarts_land_where_the_codebook_fits_worst():
    vq = quantizer(usage_decay=0.5, restart_every=10).train()
    e = torch.eye(4)
    with torch.no_grad():  # codes 0 and 1 on two axes, codes 2..7 near the opposite of code 0: never chosen here
        vq.codebook[:2] = e[:2]
        vq.codebook[2:] = F.normalize(-e[0] + 0.05 * torch.randn(6, 4), dim=-1)
    fitted = 3 * e[:2].repeat(60, 1)  # exactly on codes 0 and 1: zero quantisation error
    far = F.normalize(0.3 * e[0] + e[2] + 0.1 * torch.randn(8, 4), dim=-1)  # nearest code 0, but far from it
    for _ in range(9):
        vq(fitted)
    before = vq.codebook.detach().clone()
    _, ids, _ = vq(torch.cat([fitted, far]))
    assert (ids[-8:] == 0).all()
    restarted = ~torch.isclose(vq.codebook, before).all(-1)
    assert restarted[2:].all() and not restarted[:2].any()
    # the 6 restarted codes sit on the 8 badly fitted inputs (drawn without replacement), none on the 120 fitted ones
    cosine = F.normalize(vq.codebook[2:], dim=-1) @ far.T
    assert (cosine.max(-1).values > 0.99).all()


def test_no_restart_in_eval_mode_or_when_disabled():
    vq = quantizer(usage_decay=0.5, restart_every=2).eval()
    before, usage = vq.codebook.detach().clone(), vq.usage.clone()
    for _ in range(6):
        vq(inputs_at_codes(vq, [0]))
    assert torch.equal(vq.codebook, before) and torch.equal(vq.usage, usage) and int(vq.calls) == 0
    off = quantizer(usage_decay=0.5, restart_every=0).train()
    before = off.codebook.detach().clone()
    for _ in range(6):
        off(inputs_at_codes(off, [0]))
    assert torch.equal(off.codebook, before) and int(off.calls) == 6  # usage is still tracked


def test_restart_schedule_continues_after_loading_a_state_dict():
    trained = quantizer(usage_decay=0.5, restart_every=10).train()
    for _ in range(9):
        trained(inputs_at_codes(trained, [0, 1]))
    resumed = quantizer(seed=1, usage_decay=0.5, restart_every=10).train()
    resumed(inputs_at_codes(resumed, [0]))  # its own host-side count is now 1
    resumed.load_state_dict(trained.state_dict())
    before = resumed.codebook.detach().clone()
    resumed(inputs_at_codes(resumed, [0, 1]))  # the 10th call of the loaded run: restarts the dead codes
    assert int(resumed.calls) == 10
    assert torch.equal(resumed.codebook[:2], before[:2]) and not torch.equal(resumed.codebook[2:], before[2:])
