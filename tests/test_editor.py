import pytest
import torch

from kebench.editor import EditHandle, LoadedStateHandle, StackedHandle, WeightEditHandle


def test_weight_handle_restores_bit_exact_and_stacks(tiny_lm):
    model = tiny_lm.model
    name = tiny_lm.adapter.mlp_out_param_name(1)
    param = dict(model.named_parameters())[name]
    before = param.detach().clone()
    h1 = WeightEditHandle(model, [name])
    with torch.no_grad():
        param.add_(torch.randn_like(param) * 1e-3)
    after_first = param.detach().clone()
    h2 = WeightEditHandle(model, [name])
    with torch.no_grad():
        param.mul_(1.0001)
    stack = StackedHandle([h1, h2])
    state = stack.edited_state()
    assert torch.equal(state[name], param)
    stack.restore()
    assert torch.equal(param, before)
    assert not torch.equal(after_first, before)
    # a saved edit loads back on top of the unedited model and restores again
    loaded = LoadedStateHandle(model, state)
    assert torch.equal(param, state[name])
    loaded.restore()
    assert torch.equal(param, before)


class _Hook(EditHandle):
    """A hook edit's handle that only records whether it was undone."""

    def __init__(self, covers: bool = False) -> None:
        self.stats, self.restored, self.covers_previous_steps = {}, 0, covers

    def restore(self) -> None:
        self.restored += 1


def test_a_handle_that_covers_the_previous_steps_replaces_them_in_the_stack():
    first, second = _Hook(), _Hook()
    stack = StackedHandle([first, second])
    grown = _Hook(covers=True)  # a growing sequence's step: it serves the earlier steps' edits too
    stack.push(grown)
    assert stack.handles == [grown] and first.restored == second.restored == 1  # undone and let go
    stack.push(later := _Hook())
    assert stack.handles == [grown, later]
    stack.restore()
    assert grown.restored == later.restored == 1 and first.restored == 1
    # a weight edit cannot cover earlier steps: undoing them would write their saved weights over it
    weights = WeightEditHandle(torch.nn.Linear(2, 2), ["weight"])
    weights.covers_previous_steps = True
    with pytest.raises(TypeError, match="only hook edits"):
        StackedHandle([_Hook()]).push(weights)
