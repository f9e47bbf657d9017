import torch

from kebench.optim import RowAdam


def test_row_adam_only_moves_the_rows_it_steps():
    params = torch.zeros(3, 4)
    opt = RowAdam(params, lr=0.1)
    opt.step(torch.ones(2, 4), torch.tensor([0, 2]))
    opt.step(torch.ones(1, 4), torch.tensor([0]))
    assert torch.equal(params[1], torch.zeros(4))
    assert torch.allclose(params[0], torch.full((4,), -0.2), atol=1e-6)
    assert torch.allclose(params[2], torch.full((4,), -0.1), atol=1e-6)


def test_row_adam_batch_equals_rows_fitted_alone():
    """Rows stepped together follow exactly the trajectories they follow when stepped alone."""
    torch.manual_seed(0)
    target = torch.randn(4, 6)
    together = torch.zeros(4, 6)
    opt = RowAdam(together, lr=0.05)
    alone = [torch.zeros(1, 6) for _ in range(4)]
    opts = [RowAdam(p, lr=0.05) for p in alone]
    for it in range(20):
        rows = torch.tensor([r for r in range(4) if it < 5 * (r + 1)])  # rows leave one after another
        opt.step(2 * (together[rows] - target[rows]), rows)
        for r in rows.tolist():
            opts[r].step(2 * (alone[r] - target[r : r + 1]), torch.tensor([0]))
    assert torch.equal(together, torch.cat(alone))
